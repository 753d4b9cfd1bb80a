package secpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Security is the DNSSEC status of a successful DNS answer (checklist DNS01).
// Bogus and indeterminate answers are never represented as a Security value:
// they are returned as errors.
type Security int

const (
	// Insecure means the answer is not known to be DNSSEC-validated: the
	// resolver did not set AD, or its AD bit is not trusted.
	Insecure Security = iota
	// Secure means the trusted validating resolver set the AD bit.
	Secure
)

// String returns "insecure" or "secure".
func (s Security) String() string {
	switch s {
	case Insecure:
		return "insecure"
	case Secure:
		return "secure"
	default:
		return fmt.Sprintf("Security(%d)", int(s))
	}
}

// weakest returns the weaker of two security states (DNS04).
func weakest(a, b Security) Security {
	if a == Secure && b == Secure {
		return Secure
	}
	return Insecure
}

const (
	defaultResolverAddr    = "127.0.0.1:53"
	defaultTimeout         = 5 * time.Second
	defaultMaxCacheEntries = 10000

	// ednsUDPSize is the EDNS0 payload size advertised in queries; 1232
	// avoids IP fragmentation (DNS flag day 2020).
	ednsUDPSize = 1232

	// maxCNAMEs bounds the CNAME chain followed by Lookup.
	maxCNAMEs = 8

	// Negative answers are cached between these bounds (RFC 2308 §5).
	minNegativeTTL = time.Second
	maxNegativeTTL = time.Hour
	// maxPositiveTTL caps how long a positive answer is kept.
	maxPositiveTTL = 24 * time.Hour
)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Addr is the "host:port" of the resolver. A missing port means 53; an
	// empty Addr means "127.0.0.1:53".
	Addr string
	// TrustAD declares the resolver at Addr validating, so its AD bit is
	// trusted even when Addr is not a loopback address. See NewResolver.
	TrustAD bool
	// Timeout bounds one query attempt; 0 means 5s.
	Timeout time.Duration
	// Logger receives the start-up line and debug messages; nil means
	// slog.Default().
	Logger *slog.Logger
	// MaxCacheEntries bounds the answer cache; 0 means 10000, a negative
	// value disables caching.
	MaxCacheEntries int
	// Observe, if set, is called once per Lookup (answers from the cache
	// included) with the query type and the outcome: OutcomeSecure,
	// OutcomeInsecure, OutcomeNXDomain or OutcomeError. It is called from
	// concurrent lookups and must be cheap (metrics count with it).
	Observe func(qtype uint16, outcome string)
}

// Outcomes of a Lookup as reported to ResolverConfig.Observe.
const (
	OutcomeSecure   = "secure"   // a DNSSEC-validated answer (records or NODATA)
	OutcomeInsecure = "insecure" // an answer not known to be validated
	OutcomeNXDomain = "nxdomain" // the name does not exist
	OutcomeError    = "error"    // the lookup failed (SERVFAIL, timeout, ...)
)

// Resolver sends queries to one recursive resolver and reports the DNSSEC
// status of each answer. It is safe for concurrent use.
type Resolver struct {
	addr    string
	trustAD bool
	timeout time.Duration
	log     *slog.Logger
	udp     *dns.Client
	tcp     *dns.Client
	cache   *cache
	observe func(qtype uint16, outcome string) // nil: none
	now     func() time.Time                   // replaced by tests
}

// NewResolver returns a Resolver for cfg. The AD bit of answers is trusted
// when cfg.TrustAD is true or when the host part of cfg.Addr is a loopback
// IP address (127.0.0.0/8 or ::1), since the path to a local resolver cannot
// be tampered with (RFC 4035 §4.9.3, RFC 7672 §2.1). Otherwise
// every answer is Insecure, which disables DANE. The decision is logged once,
// here (checklist DNS03).
func NewResolver(cfg ResolverConfig) *Resolver {
	addr := normalizeAddr(cfg.Addr)
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	maxEntries := cfg.MaxCacheEntries
	if maxEntries == 0 {
		maxEntries = defaultMaxCacheEntries
	}
	r := &Resolver{
		addr:    addr,
		trustAD: adTrusted(addr, cfg.TrustAD),
		timeout: timeout,
		log:     logger,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsUDPSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
		cache:   newCache(maxEntries),
		observe: cfg.Observe,
		now:     time.Now,
	}
	switch {
	case r.trustAD && cfg.TrustAD:
		logger.Info("DNS resolver configured; its AD bit is trusted (declared validating)",
			"resolver", addr, "trust_ad", true)
	case r.trustAD:
		logger.Info("DNS resolver configured; its AD bit is trusted (loopback address)",
			"resolver", addr, "trust_ad", true)
	default:
		logger.Warn("DNS resolver is neither loopback nor declared validating: its AD bit is ignored, all answers are insecure and DANE is disabled",
			"resolver", addr, "trust_ad", false)
	}
	return r
}

// TrustsAD reports whether the resolver's AD bit is trusted.
func (r *Resolver) TrustsAD() bool { return r.trustAD }

// normalizeAddr adds the default port to addr when it has none.
func normalizeAddr(addr string) string {
	if addr == "" {
		return defaultResolverAddr
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), "53")
}

// adTrusted is the trust decision of NewResolver (DNS03): explicit
// configuration, or a loopback IP address.
func adTrusted(addr string, explicit bool) bool {
	if explicit {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false // a host name could resolve anywhere
	}
	return ip.Unmap().IsLoopback()
}

// Answer is the result of one lookup.
type Answer struct {
	// Name is the queried name, canonical (lowercase, trailing dot).
	Name string
	// Records holds the records of the requested type owned by the end of
	// the CNAME chain. It is empty for NXDOMAIN and NODATA.
	Records []dns.RR
	// CNAMEs lists the targets of the CNAME chain that was followed, in
	// order; it is empty when Name had no CNAME.
	CNAMEs []string
	// Security is the weakest status over every answer of the chain (DNS04).
	Security Security
	// NXDomain is true when the name (the end of the chain) does not exist.
	NXDomain bool
	// TTL is how long the answer may be used: the minimum TTL of the
	// records used, or for negative answers the SOA negative TTL bounded to
	// 1s..1h (RFC 2308 §5). Answers served from the cache carry the
	// remaining time.
	TTL time.Duration
}

// Target returns the name at the end of the CNAME chain (Name when there is
// no chain).
func (a Answer) Target() string {
	if len(a.CNAMEs) == 0 {
		return a.Name
	}
	return a.CNAMEs[len(a.CNAMEs)-1]
}

// ErrInvalidName is returned (wrapped) for a name that is not a valid domain
// name. It is not a *LookupError and not temporary.
var ErrInvalidName = errors.New("invalid domain name")

var (
	errMalformed      = errors.New("malformed answer")
	errCNAMELoop      = errors.New("CNAME loop")
	errCNAMETooLong   = fmt.Errorf("CNAME chain longer than %d", maxCNAMEs)
	errTruncatedOnTCP = errors.New("truncated answer over TCP")
)

// LookupError is a failed lookup: the resolver answered with an error code
// (SERVFAIL, REFUSED, FORMERR, ...), did not answer in time, could not be
// reached, or sent a malformed answer. A failed lookup is never turned into
// an empty answer (checklist DNS02); it is a temporary failure.
type LookupError struct {
	Name     string // the name whose query failed (may be a CNAME target)
	Qtype    uint16
	Resolver string
	// Rcode is the response code when the resolver answered with an error
	// code, and -1 when the failure has another cause (see Err).
	Rcode int
	// Err is the underlying cause when Rcode is -1: a network error, a
	// timeout, the context's error, or a description of the malformed answer.
	Err error
}

func (e *LookupError) Error() string {
	q := dns.TypeToString[e.Qtype]
	if q == "" {
		q = fmt.Sprintf("TYPE%d", e.Qtype)
	}
	if e.Rcode >= 0 {
		rc := dns.RcodeToString[e.Rcode]
		if rc == "" {
			rc = fmt.Sprintf("RCODE%d", e.Rcode)
		}
		return fmt.Sprintf("DNS %s %s: resolver %s answered %s", q, e.Name, e.Resolver, rc)
	}
	return fmt.Sprintf("DNS %s %s: resolver %s: %v", q, e.Name, e.Resolver, e.Err)
}

// Unwrap returns the underlying cause, if any.
func (e *LookupError) Unwrap() error { return e.Err }

// Temporary reports true: a failed lookup may succeed later.
func (e *LookupError) Temporary() bool { return true }

// Timeout reports whether the resolver did not answer in time.
func (e *LookupError) Timeout() bool {
	if e.Err == nil {
		return false
	}
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// IsTemporary reports whether err is (or wraps) a temporary lookup failure.
// Every *LookupError is temporary.
func IsTemporary(err error) bool {
	var le *LookupError
	return errors.As(err, &le) && le.Temporary()
}

// canonicalName lowercases name and makes it fully qualified.
func canonicalName(name string) (string, error) {
	n := strings.ToLower(dns.Fqdn(strings.TrimSpace(name)))
	if _, ok := dns.IsDomainName(n); !ok || n == "." && name != "." {
		return "", fmt.Errorf("%q: %w", name, ErrInvalidName)
	}
	return n, nil
}

// LookupTXT returns the TXT records of name, each one string as TXTValue
// gives it. NXDOMAIN and NODATA are no records; every other failure is an
// error.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ans, err := r.Lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range ans.Records {
		if t, ok := rr.(*dns.TXT); ok {
			txts = append(txts, TXTValue(t))
		}
	}
	return txts, nil
}

// TXTValue returns the value of a TXT record: its character-strings
// joined, as RFC 6376 §3.6.2.2 (DKIM), RFC 8461 §3.1 (MTA-STS) and RFC 8460
// §3 (TLS-RPT) read them, with the presentation escapes miekg/dns puts in
// dns.TXT.Txt ("\"", "\\", "\DDD") undone, so the bytes are those on the
// wire.
func TXTValue(t *dns.TXT) string {
	var b strings.Builder
	for _, s := range t.Txt {
		b.WriteString(unescapeTXT(s))
	}
	return b.String()
}

// unescapeTXT undoes the presentation escapes of one character-string.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isASCIIDigit(s[i+1]) && isASCIIDigit(s[i+2]) && isASCIIDigit(s[i+3]) {
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v <= 0xff {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isASCIIDigit(c byte) bool { return '0' <= c && c <= '9' }

// Lookup queries qtype for name. The query carries EDNS0 (payload 1232) with
// the DO bit and the AD bit (RFC 6840 §5.7); a truncated UDP answer is
// retried over TCP and a timed-out attempt is retried once. CNAMEs are
// followed (at most 8), re-querying the target when the resolver did not
// include its records. Positive and negative answers are cached no longer
// than their TTL (DNS04).
//
// NXDOMAIN and NODATA are successful answers. Every other failure is a
// *LookupError (DNS02), wrapped with the queried name when it concerns a
// CNAME target. An invalid name yields an error wrapping ErrInvalidName.
func (r *Resolver) Lookup(ctx context.Context, name string, qtype uint16) (Answer, error) {
	a, err := r.lookup(ctx, name, qtype)
	if r.observe != nil {
		r.observe(qtype, lookupOutcome(a, err))
	}
	return a, err
}

// lookupOutcome classifies a Lookup result for ResolverConfig.Observe.
func lookupOutcome(a Answer, err error) string {
	switch {
	case err != nil:
		return OutcomeError
	case a.NXDomain:
		return OutcomeNXDomain
	case a.Security == Secure:
		return OutcomeSecure
	}
	return OutcomeInsecure
}

// lookup implements Lookup.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (Answer, error) {
	cname, err := canonicalName(name)
	if err != nil {
		return Answer{}, fmt.Errorf("lookup %s: %w", dns.TypeToString[qtype], err)
	}
	now := r.now()
	if a, ok := r.cache.get(cname, qtype, now); ok {
		return a, nil
	}
	a, lerr := r.resolve(ctx, cname, qtype)
	if lerr != nil {
		if lerr.Name != cname {
			// The failure is about a CNAME target: say which name led there.
			return Answer{}, fmt.Errorf("lookup %s %s: %w", dns.TypeToString[qtype], cname, lerr)
		}
		return Answer{}, lerr
	}
	if a.TTL > 0 {
		r.cache.put(cname, qtype, a, now.Add(a.TTL), now)
	}
	return a, nil
}

// resolve performs the queries for one Lookup, following the CNAME chain.
func (r *Resolver) resolve(ctx context.Context, name string, qtype uint16) (Answer, *LookupError) {
	a := Answer{Name: name, Security: Secure}
	ttl := time.Duration(-1) // unset
	useTTL := func(secs uint32) {
		d := ttlDuration(secs)
		if ttl < 0 || d < ttl {
			ttl = d
		}
	}
	seen := map[string]bool{name: true}
	cur := name
	for {
		resp, lerr := r.exchange(ctx, cur, qtype)
		if lerr != nil {
			return Answer{}, lerr
		}
		if !r.trustAD || !resp.AuthenticatedData {
			a.Security = Insecure
		}
		// Walk the chain through this response's answer section.
		progressed := false
		for {
			recs := rrsOf(resp.Answer, cur, qtype)
			if len(recs) > 0 {
				for _, rr := range recs {
					useTTL(rr.Header().Ttl)
				}
				a.Records = recs
				a.TTL = boundPositive(ttl)
				return a, nil
			}
			if qtype == dns.TypeCNAME {
				break
			}
			target, cnTTL, ok := cnameOf(resp.Answer, cur)
			if !ok {
				break
			}
			if seen[target] {
				return Answer{}, r.lerr(cur, qtype, -1, errCNAMELoop)
			}
			if len(a.CNAMEs) == maxCNAMEs {
				return Answer{}, r.lerr(name, qtype, -1, errCNAMETooLong)
			}
			seen[target] = true
			a.CNAMEs = append(a.CNAMEs, target)
			useTTL(cnTTL)
			cur = target
			progressed = true
		}
		if progressed && resp.Rcode == dns.RcodeSuccess {
			// The chain ends at a target whose records were not included:
			// ask for the target itself (the resolver may not have chased
			// the CNAME, or the answer may be NODATA for the target).
			continue
		}
		// Negative answer for cur: NXDOMAIN, or NODATA (RFC 2308 §2.2).
		// With a CNAME chain, the RCODE refers to the last name (RFC 6604 §3).
		a.NXDomain = resp.Rcode == dns.RcodeNameError
		neg, ok := negativeTTL(resp)
		if !ok {
			// No SOA: the negative answer must not be cached (RFC 2308 §5).
			a.TTL = 0
			return a, nil
		}
		if ttl >= 0 && ttl < neg {
			neg = ttl // a CNAME of the chain expires first
		}
		a.TTL = neg
		return a, nil
	}
}

// exchange sends one query for name/qtype, over UDP first, then TCP when
// the answer is truncated. A timed-out attempt is retried once.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, *LookupError) {
	if err := ctx.Err(); err != nil {
		return nil, r.lerr(name, qtype, -1, err)
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.AuthenticatedData = true // RFC 6840 §5.7: ask for the AD bit
	q.SetEdns0(ednsUDPSize, true)

	client := r.udp
	var resp *dns.Msg
	for attempt := 0; ; attempt++ {
		var err error
		resp, _, err = client.ExchangeContext(ctx, q.Copy(), r.addr)
		if err == nil {
			if resp.Truncated && client == r.udp {
				r.log.Debug("DNS answer truncated, retrying over TCP", "name", name, "type", dns.TypeToString[qtype])
				client = r.tcp
				attempt = -1
				continue
			}
			break
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, r.lerr(name, qtype, -1, cerr)
		}
		var ne net.Error
		if attempt == 0 && errors.As(err, &ne) && ne.Timeout() {
			r.log.Debug("DNS query timed out, retrying", "name", name, "type", dns.TypeToString[qtype], "resolver", r.addr)
			continue
		}
		return nil, r.lerr(name, qtype, -1, err)
	}
	if err := checkResponse(resp, name, qtype); err != nil {
		return nil, r.lerr(name, qtype, -1, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return resp, nil
	default:
		return nil, r.lerr(name, qtype, resp.Rcode, nil)
	}
}

// checkResponse rejects answers that do not answer the question asked.
func checkResponse(resp *dns.Msg, name string, qtype uint16) error {
	switch {
	case !resp.Response:
		return fmt.Errorf("%w: QR bit not set", errMalformed)
	case resp.Opcode != dns.OpcodeQuery:
		return fmt.Errorf("%w: opcode %d", errMalformed, resp.Opcode)
	case resp.Truncated:
		return errTruncatedOnTCP
	case len(resp.Question) != 1:
		return fmt.Errorf("%w: %d questions", errMalformed, len(resp.Question))
	}
	q := resp.Question[0]
	if !strings.EqualFold(q.Name, name) || q.Qtype != qtype || q.Qclass != dns.ClassINET {
		return fmt.Errorf("%w: question %s %s does not match the query", errMalformed, q.Name, dns.TypeToString[q.Qtype])
	}
	return nil
}

func (r *Resolver) lerr(name string, qtype uint16, rcode int, err error) *LookupError {
	return &LookupError{Name: name, Qtype: qtype, Resolver: r.addr, Rcode: rcode, Err: err}
}

// rrsOf returns the records of type qtype owned by name.
func rrsOf(rrs []dns.RR, name string, qtype uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == qtype && h.Class == dns.ClassINET && strings.EqualFold(h.Name, name) {
			out = append(out, rr)
		}
	}
	return out
}

// cnameOf returns the canonical target of name's CNAME in rrs.
func cnameOf(rrs []dns.RR, name string) (string, uint32, bool) {
	for _, rr := range rrs {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
			return strings.ToLower(dns.Fqdn(c.Target)), c.Hdr.Ttl, true
		}
	}
	return "", 0, false
}

// negativeTTL is the negative caching TTL of a response: the minimum of the
// SOA's TTL and its MINIMUM field (RFC 2308 §5), bounded to 1s..1h.
func negativeTTL(resp *dns.Msg) (time.Duration, bool) {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			d := ttlDuration(min(soa.Hdr.Ttl, soa.Minttl))
			return min(max(d, minNegativeTTL), maxNegativeTTL), true
		}
	}
	return 0, false
}

func boundPositive(d time.Duration) time.Duration {
	return min(max(d, 0), maxPositiveTTL)
}

// ttlDuration converts a TTL; values with the top bit set count as 0
// (RFC 2181 §8).
func ttlDuration(secs uint32) time.Duration {
	if secs > 1<<31-1 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

package secpolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

// testTimeout is the per-attempt timeout of test resolvers.
const testTimeout = 250 * time.Millisecond

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestResolver returns a resolver using srv, trusted because it is on
// loopback.
func newTestResolver(t *testing.T, srv *testnet.DNSServer) *Resolver {
	t.Helper()
	r := NewResolver(ResolverConfig{Addr: srv.Addr(), Timeout: testTimeout, Logger: discardLogger()})
	if !r.TrustsAD() {
		t.Fatalf("loopback resolver %s not trusted", srv.Addr())
	}
	return r
}

// fakeClock replaces Resolver.now in cache tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func recordStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.MX:
			out = append(out, fmt.Sprintf("%d %s", rr.Preference, rr.Mx))
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestSecurityString(t *testing.T) {
	if Insecure.String() != "insecure" || Secure.String() != "secure" || Security(7).String() != "Security(7)" {
		t.Errorf("String: %v %v %v", Insecure, Secure, Security(7))
	}
}

func TestDNS01_ADBitFromTrustedResolver(t *testing.T) {
	z := testnet.NewZone(
		"mx.signed.test. 300 IN A 127.0.0.2",
		"mx.unsigned.test. 300 IN A 127.0.0.3",
	)
	z.Sign("signed.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		want     Security
		records  int
		nxdomain bool
	}{
		{"signed positive", "mx.signed.test", dns.TypeA, Secure, 1, false},
		{"signed NODATA", "mx.signed.test", dns.TypeAAAA, Secure, 0, false},
		{"signed NXDOMAIN", "nope.signed.test", dns.TypeA, Secure, 0, true},
		{"unsigned positive", "mx.unsigned.test", dns.TypeA, Insecure, 1, false},
		{"unsigned NODATA", "mx.unsigned.test", dns.TypeAAAA, Insecure, 0, false},
		{"unsigned NXDOMAIN", "nope.unsigned.test", dns.TypeA, Insecure, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := r.Lookup(context.Background(), tt.qname, tt.qtype)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if a.Security != tt.want || len(a.Records) != tt.records || a.NXDomain != tt.nxdomain {
				t.Errorf("got security %v, %d records, NXDomain %v; want %v, %d, %v",
					a.Security, len(a.Records), a.NXDomain, tt.want, tt.records, tt.nxdomain)
			}
			if a.Name != tt.qname+"." {
				t.Errorf("Name = %q", a.Name)
			}
		})
	}

	// DNS01: every query asks for DNSSEC data (DO) and the AD bit.
	for _, q := range srv.Queries() {
		if !q.DO || !q.AD {
			t.Errorf("query %v: DO=%v AD=%v, want both set", q, q.DO, q.AD)
		}
	}
}

func TestDNS02_ServfailIsError(t *testing.T) {
	z := testnet.NewZone(
		"alias.test. 300 IN CNAME target.test.",
		"target.test. 300 IN A 127.0.0.2",
		"ok.test. 300 IN A 127.0.0.2",
	)
	z.Sign("test.")
	z.Fail("servfail.test.", dns.TypeMX, dns.RcodeServerFailure)
	z.Fail("refused.test.", dns.TypeMX, dns.RcodeRefused)
	z.Fail("formerr.test.", dns.TypeMX, dns.RcodeFormatError)
	z.Fail("notimp.test.", dns.TypeMX, dns.RcodeNotImplemented)
	z.Fail("target.test.", dns.TypeTXT, dns.RcodeServerFailure)
	z.Drop("dropped.test.", dns.TypeMX)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int // -1: no rcode, timeout
		timeout bool
	}{
		{"SERVFAIL (bogus)", "servfail.test", dns.TypeMX, dns.RcodeServerFailure, false},
		{"REFUSED", "refused.test", dns.TypeMX, dns.RcodeRefused, false},
		{"FORMERR", "formerr.test", dns.TypeMX, dns.RcodeFormatError, false},
		{"NOTIMP", "notimp.test", dns.TypeMX, dns.RcodeNotImplemented, false},
		{"SERVFAIL at the end of a CNAME chain", "alias.test", dns.TypeTXT, dns.RcodeServerFailure, false},
		{"timeout", "dropped.test", dns.TypeMX, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := r.Lookup(context.Background(), tt.qname, tt.qtype)
			if err == nil {
				t.Fatalf("Lookup succeeded: %+v", a)
			}
			var le *LookupError
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T) is not a *LookupError", err, err)
			}
			if le.Rcode != tt.rcode || le.Timeout() != tt.timeout || le.Qtype != tt.qtype {
				t.Errorf("LookupError = %+v (timeout %v), want rcode %d timeout %v", le, le.Timeout(), tt.rcode, tt.timeout)
			}
			if !IsTemporary(err) {
				t.Errorf("IsTemporary(%v) = false", err)
			}
			if a.Records != nil || a.NXDomain || a.Security != Insecure {
				t.Errorf("failed lookup returned data: %+v", a)
			}
			if !strings.Contains(err.Error(), strings.ToLower(tt.qname)) {
				t.Errorf("error %q does not name %s", err, tt.qname)
			}
		})
	}

	// Errors are not cached: once the zone heals, the answer comes through.
	z.Restore("servfail.test.", dns.TypeMX)
	z.Add("servfail.test. 300 IN MX 10 ok.test.")
	if a, err := r.Lookup(context.Background(), "servfail.test", dns.TypeMX); err != nil || len(a.Records) != 1 {
		t.Errorf("after repair: %+v, %v", a, err)
	}
	if IsTemporary(nil) || IsTemporary(errors.New("x")) {
		t.Error("IsTemporary true for a non-lookup error")
	}
}

// startRawDNS runs a UDP server on loopback that answers each query with
// reply(query, raw query bytes).
func startRawDNS(t *testing.T, reply func(q *dns.Msg, raw []byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			_, _ = pc.WriteTo(reply(q, buf[:n]), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func TestDNS02_MalformedAnswerIsError(t *testing.T) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		return b
	}
	tests := []struct {
		name  string
		reply func(q *dns.Msg, raw []byte) []byte
	}{
		{"unparsable", func(q *dns.Msg, raw []byte) []byte {
			// The query's ID and a header promising records that are absent.
			return []byte{raw[0], raw[1], 0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0, 3, 'f', 'o'}
		}},
		{"other question", func(q *dns.Msg, _ []byte) []byte {
			m := new(dns.Msg).SetQuestion("other.test.", dns.TypeMX)
			m.Id, m.Response = q.Id, true
			return pack(m)
		}},
		{"other type", func(q *dns.Msg, _ []byte) []byte {
			m := new(dns.Msg).SetQuestion(q.Question[0].Name, dns.TypeA)
			m.Id, m.Response = q.Id, true
			return pack(m)
		}},
		{"no QR bit", func(q *dns.Msg, _ []byte) []byte {
			m := new(dns.Msg).SetReply(q)
			m.Response = false
			return pack(m)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startRawDNS(t, tt.reply)
			r := NewResolver(ResolverConfig{Addr: addr, Timeout: testTimeout, Logger: discardLogger()})
			a, err := r.Lookup(context.Background(), "malformed.test", dns.TypeMX)
			var le *LookupError
			if !errors.As(err, &le) || le.Rcode != -1 || le.Err == nil {
				t.Fatalf("Lookup = %+v, %v; want a *LookupError with a cause", a, err)
			}
			if le.Timeout() {
				t.Errorf("malformed answer reported as timeout: %v", err)
			}
		})
	}
}

func TestDNS02_UnreachableResolverIsError(t *testing.T) {
	// A UDP port with no listener: the kernel answers "port unreachable".
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	r := NewResolver(ResolverConfig{Addr: addr, Timeout: testTimeout, Logger: discardLogger()})
	_, err = r.Lookup(context.Background(), "example.test", dns.TypeMX)
	if !IsTemporary(err) {
		t.Fatalf("Lookup error = %v, want a temporary *LookupError", err)
	}
}

func TestDNS03_UntrustedResolverADIgnored(t *testing.T) {
	trust := []struct {
		addr     string
		explicit bool
		want     bool
	}{
		{"127.0.0.1:53", false, true},
		{"127.0.0.53:53", false, true},
		{"127.255.255.254:5353", false, true},
		{"[::1]:53", false, true},
		{"[::ffff:127.0.0.1]:53", false, true},
		{"192.0.2.53:53", false, false},
		{"[2001:db8::53]:53", false, false},
		{"10.0.0.1:53", false, false},
		{"localhost:53", false, false}, // a name, not a loopback IP
		{"resolver.example:53", false, false},
		{"192.0.2.53:53", true, true},
		{"resolver.example:53", true, true},
	}
	for _, tt := range trust {
		if got := adTrusted(tt.addr, tt.explicit); got != tt.want {
			t.Errorf("adTrusted(%q, %v) = %v, want %v", tt.addr, tt.explicit, got, tt.want)
		}
	}
	if r := NewResolver(ResolverConfig{Addr: "192.0.2.53:53", Logger: discardLogger()}); r.TrustsAD() {
		t.Error("non-loopback resolver without TrustAD is trusted")
	}
	if r := NewResolver(ResolverConfig{Addr: "192.0.2.53:53", TrustAD: true, Logger: discardLogger()}); !r.TrustsAD() {
		t.Error("TrustAD resolver is not trusted")
	}

	// A resolver whose AD bit is not trusted reports every answer insecure,
	// although the server sets AD. (Tests may only use loopback servers,
	// which are trusted, so the decision is overridden here.)
	z := testnet.NewZone("mx.signed.test. 300 IN A 127.0.0.2")
	z.Sign("signed.test.")
	srv := testnet.StartDNS(t, z)
	trusted := newTestResolver(t, srv)
	untrusted := newTestResolver(t, srv)
	untrusted.trustAD = false
	for _, tc := range []struct {
		r    *Resolver
		want Security
	}{{trusted, Secure}, {untrusted, Insecure}} {
		a, err := tc.r.Lookup(context.Background(), "mx.signed.test", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if a.Security != tc.want {
			t.Errorf("trustAD=%v: Security = %v, want %v", tc.r.trustAD, a.Security, tc.want)
		}
	}
}

// recordingHandler keeps the log records it is given.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) atLeast(level slog.Level) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.records {
		if r.Level >= level {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func TestDNS03_LogsTrustOnceAtStartup(t *testing.T) {
	z := testnet.NewZone("a.test. 300 IN A 127.0.0.2")
	srv := testnet.StartDNS(t, z)

	tests := []struct {
		name    string
		cfg     ResolverConfig
		level   slog.Level
		trusted string
	}{
		{"loopback", ResolverConfig{Addr: srv.Addr()}, slog.LevelInfo, "true"},
		{"declared validating", ResolverConfig{Addr: "192.0.2.53:53", TrustAD: true}, slog.LevelInfo, "true"},
		{"untrusted", ResolverConfig{Addr: "192.0.2.53:53"}, slog.LevelWarn, "false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &recordingHandler{}
			cfg := tt.cfg
			cfg.Logger = slog.New(h)
			cfg.Timeout = testTimeout
			r := NewResolver(cfg)
			recs := h.atLeast(slog.LevelInfo)
			if len(recs) != 1 {
				t.Fatalf("%d log records at start-up, want 1", len(recs))
			}
			if recs[0].Level != tt.level || attr(recs[0], "trust_ad") != tt.trusted || attr(recs[0], "resolver") != cfg.Addr {
				t.Errorf("log record %v %q resolver=%q trust_ad=%q", recs[0].Level, recs[0].Message, attr(recs[0], "resolver"), attr(recs[0], "trust_ad"))
			}
			if cfg.Addr == srv.Addr() {
				for range 3 {
					if _, err := r.Lookup(context.Background(), "a.test", dns.TypeA); err != nil {
						t.Fatal(err)
					}
				}
				if n := len(h.atLeast(slog.LevelInfo)); n != 1 {
					t.Errorf("%d log records after lookups, want still 1", n)
				}
			}
		})
	}
}

func TestNewResolverDefaults(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "127.0.0.1:53"},
		{"127.0.0.53", "127.0.0.53:53"},
		{"::1", "[::1]:53"},
		{"[::1]", "[::1]:53"},
		{"127.0.0.1:5353", "127.0.0.1:5353"},
	}
	for _, tt := range tests {
		r := NewResolver(ResolverConfig{Addr: tt.in, Logger: discardLogger()})
		if r.addr != tt.want || !r.TrustsAD() || r.timeout != defaultTimeout || r.cache.max != defaultMaxCacheEntries {
			t.Errorf("NewResolver(%q): addr %q trust %v timeout %v cache %d", tt.in, r.addr, r.TrustsAD(), r.timeout, r.cache.max)
		}
	}
}

func TestDNS04_CacheBoundedByTTL(t *testing.T) {
	z := testnet.NewZone(
		"cached.test. 30 IN A 127.0.0.5",
		"zero.test. 0 IN A 127.0.0.5",
		"lowmin.test. 3600 IN SOA ns.lowmin.test. host.lowmin.test. 1 3600 600 86400 5",
		"highmin.test. 86400 IN SOA ns.highmin.test. host.highmin.test. 1 3600 600 86400 86400",
	)
	z.Sign("test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)
	clock := newFakeClock()
	r.now = clock.Now
	ctx := context.Background()

	lookup := func(name string, qtype uint16) Answer {
		t.Helper()
		a, err := r.Lookup(ctx, name, qtype)
		if err != nil {
			t.Fatalf("Lookup %s: %v", name, err)
		}
		return a
	}

	t.Run("positive", func(t *testing.T) {
		a := lookup("cached.test", dns.TypeA)
		if a.TTL != 30*time.Second || !slices.Equal(recordStrings(a.Records), []string{"127.0.0.5"}) {
			t.Fatalf("first answer %+v", a)
		}
		z.Remove("cached.test.", dns.TypeA)
		z.Add("cached.test. 30 IN A 127.0.0.6")

		clock.Advance(10 * time.Second)
		a = lookup("cached.test", dns.TypeA)
		if got := recordStrings(a.Records); !slices.Equal(got, []string{"127.0.0.5"}) {
			t.Errorf("within TTL: %v, want the cached 127.0.0.5", got)
		}
		if a.TTL != 20*time.Second || a.Records[0].Header().Ttl != 20 {
			t.Errorf("cached TTL %v / record TTL %d, want the remaining 20s", a.TTL, a.Records[0].Header().Ttl)
		}
		a.Records[0].(*dns.A).A[3] = 99 // callers cannot alter the cache
		if n := srv.QueryCount("cached.test.", dns.TypeA); n != 1 {
			t.Errorf("%d queries within TTL, want 1", n)
		}

		clock.Advance(20 * time.Second) // the TTL has run out
		a = lookup("cached.test", dns.TypeA)
		if got := recordStrings(a.Records); !slices.Equal(got, []string{"127.0.0.6"}) {
			t.Errorf("after TTL: %v, want the new 127.0.0.6", got)
		}
		if n := srv.QueryCount("cached.test.", dns.TypeA); n != 2 {
			t.Errorf("%d queries, want 2", n)
		}
	})

	t.Run("TTL 0 is not cached", func(t *testing.T) {
		lookup("zero.test", dns.TypeA)
		lookup("zero.test", dns.TypeA)
		if n := srv.QueryCount("zero.test.", dns.TypeA); n != 2 {
			t.Errorf("%d queries, want 2", n)
		}
	})

	t.Run("negative", func(t *testing.T) {
		a := lookup("later.test", dns.TypeA)
		if !a.NXDomain || a.TTL != 60*time.Second { // the harness's SOA: TTL and MINIMUM 60
			t.Fatalf("negative answer %+v", a)
		}
		z.Add("later.test. 300 IN A 127.0.0.7")
		clock.Advance(59 * time.Second)
		if a := lookup("later.test", dns.TypeA); !a.NXDomain {
			t.Errorf("negative answer not cached within its TTL: %+v", a)
		}
		clock.Advance(time.Second)
		if a := lookup("later.test", dns.TypeA); a.NXDomain || len(a.Records) != 1 {
			t.Errorf("negative answer outlived its TTL: %+v", a)
		}
	})

	t.Run("negative TTL bounds", func(t *testing.T) {
		tests := []struct {
			name string
			want time.Duration
		}{
			{"x.lowmin.test", 5 * time.Second}, // min(SOA TTL, MINIMUM), RFC 2308 §5
			{"x.highmin.test", time.Hour},      // capped at 1h
		}
		for _, tt := range tests {
			if a := lookup(tt.name, dns.TypeA); a.TTL != tt.want {
				t.Errorf("%s: TTL %v, want %v", tt.name, a.TTL, tt.want)
			}
		}
	})
}

func TestDNS04_CacheSizeBounded(t *testing.T) {
	z := testnet.NewZone()
	for i := range 5 {
		z.Add(fmt.Sprintf("h%d.test. 300 IN A 127.0.0.%d", i, i+1))
	}
	srv := testnet.StartDNS(t, z)
	r := NewResolver(ResolverConfig{Addr: srv.Addr(), Timeout: testTimeout, Logger: discardLogger(), MaxCacheEntries: 3})
	ctx := context.Background()
	for i := range 5 {
		if _, err := r.Lookup(ctx, fmt.Sprintf("h%d.test", i), dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.len(); n != 3 {
		t.Errorf("cache holds %d entries, want 3", n)
	}
	// The newest entries stay...
	for i := 2; i < 5; i++ {
		name := fmt.Sprintf("h%d.test", i)
		if _, err := r.Lookup(ctx, name, dns.TypeA); err != nil {
			t.Fatal(err)
		}
		if n := srv.QueryCount(name, dns.TypeA); n != 1 {
			t.Errorf("%s: %d queries, want 1 (cached)", name, n)
		}
	}
	// ...the oldest was evicted.
	if _, err := r.Lookup(ctx, "h0.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if n := srv.QueryCount("h0.test", dns.TypeA); n != 2 {
		t.Errorf("h0.test: %d queries, want 2 (evicted)", n)
	}
	if n := r.cache.len(); n > 3 {
		t.Errorf("cache grew to %d entries", n)
	}

	noCache := NewResolver(ResolverConfig{Addr: srv.Addr(), Timeout: testTimeout, Logger: discardLogger(), MaxCacheEntries: -1})
	for range 2 {
		if _, err := noCache.Lookup(ctx, "h0.test", dns.TypeAAAA); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.QueryCount("h0.test", dns.TypeAAAA); n != 2 {
		t.Errorf("disabled cache: %d queries, want 2", n)
	}
}

func TestDNS04_CNAMEWeakestLink(t *testing.T) {
	z := testnet.NewZone(
		"mx.signed.test. 300 IN A 127.0.0.2",
		"mx.unsigned.test. 300 IN A 127.0.0.3",
		"a.signed.test. 20 IN CNAME mx.signed.test.",
		"b.signed.test. 300 IN CNAME a.signed.test.",
		"c.signed.test. 300 IN CNAME b.signed.test.",
		"to-unsigned.signed.test. 300 IN CNAME mx.unsigned.test.",
		"to-signed.unsigned.test. 300 IN CNAME mx.signed.test.",
		"nochase.signed.test. 300 IN CNAME mx.signed.test.",
		"nochase-unsigned.signed.test. 300 IN CNAME mx.unsigned.test.",
		"nochase.unsigned.test. 300 IN CNAME mx.signed.test.",
		"dangling.signed.test. 300 IN CNAME gone.signed.test.",
		"nodata.signed.test. 300 IN CNAME mx.signed.test.",
	)
	z.Sign("signed.test.")
	z.CNAMEOnly("nochase.signed.test.")
	z.CNAMEOnly("nochase-unsigned.signed.test.")
	z.CNAMEOnly("nochase.unsigned.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		security Security
		cnames   []string
		records  []string
		nxdomain bool
		ttl      time.Duration
	}{
		{"signed chain", "c.signed.test", dns.TypeA, Secure,
			[]string{"b.signed.test.", "a.signed.test.", "mx.signed.test."}, []string{"127.0.0.2"}, false, 20 * time.Second},
		{"signed alias, unsigned target", "to-unsigned.signed.test", dns.TypeA, Insecure,
			[]string{"mx.unsigned.test."}, []string{"127.0.0.3"}, false, 300 * time.Second},
		{"unsigned alias, signed target", "to-signed.unsigned.test", dns.TypeA, Insecure,
			[]string{"mx.signed.test."}, []string{"127.0.0.2"}, false, 300 * time.Second},
		{"re-query when not chased, signed", "nochase.signed.test", dns.TypeA, Secure,
			[]string{"mx.signed.test."}, []string{"127.0.0.2"}, false, 300 * time.Second},
		{"re-query when not chased, unsigned target", "nochase-unsigned.signed.test", dns.TypeA, Insecure,
			[]string{"mx.unsigned.test."}, []string{"127.0.0.3"}, false, 300 * time.Second},
		{"re-query when not chased, unsigned alias", "nochase.unsigned.test", dns.TypeA, Insecure,
			[]string{"mx.signed.test."}, []string{"127.0.0.2"}, false, 300 * time.Second},
		{"target NXDOMAIN", "dangling.signed.test", dns.TypeA, Secure,
			[]string{"gone.signed.test."}, nil, true, 60 * time.Second},
		{"target NODATA", "nodata.signed.test", dns.TypeAAAA, Secure,
			[]string{"mx.signed.test."}, nil, false, 60 * time.Second},
		{"CNAME query is not followed", "c.signed.test", dns.TypeCNAME, Secure,
			nil, []string{"c.signed.test.\t300\tIN\tCNAME\tb.signed.test."}, false, 300 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := r.Lookup(context.Background(), tt.qname, tt.qtype)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if a.Security != tt.security {
				t.Errorf("Security = %v, want %v", a.Security, tt.security)
			}
			if !slices.Equal(a.CNAMEs, tt.cnames) {
				t.Errorf("CNAMEs = %v, want %v", a.CNAMEs, tt.cnames)
			}
			if got := recordStrings(a.Records); !slices.Equal(got, tt.records) {
				t.Errorf("Records = %v, want %v", got, tt.records)
			}
			if a.NXDomain != tt.nxdomain || a.TTL != tt.ttl {
				t.Errorf("NXDomain %v TTL %v, want %v %v", a.NXDomain, a.TTL, tt.nxdomain, tt.ttl)
			}
			want := tt.qname + "."
			if len(tt.cnames) > 0 {
				want = tt.cnames[len(tt.cnames)-1]
			}
			if a.Target() != want {
				t.Errorf("Target = %q, want %q", a.Target(), want)
			}
		})
	}
	if n := srv.QueryCount("mx.signed.test.", dns.TypeA); n != 2 {
		t.Errorf("unchased CNAME target queried %d times, want 2", n)
	}
}

func TestDNS04_CNAMEChainLimits(t *testing.T) {
	z := testnet.NewZone("end.test. 300 IN A 127.0.0.2")
	// long0 -> long1 -> ... -> long9 -> end: 10 CNAMEs.
	for i := range 10 {
		next := fmt.Sprintf("long%d.test.", i+1)
		if i == 9 {
			next = "end.test."
		}
		z.Add(fmt.Sprintf("long%d.test. 300 IN CNAME %s", i, next))
	}
	z.Add("loop1.test. 300 IN CNAME loop2.test.", "loop2.test. 300 IN CNAME loop1.test.")
	z.CNAMEOnly("loop1.test.")
	z.CNAMEOnly("loop2.test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)
	ctx := context.Background()

	// long2 has 8 CNAMEs to end.test: allowed.
	if a, err := r.Lookup(ctx, "long2.test", dns.TypeA); err != nil || len(a.CNAMEs) != 8 || len(a.Records) != 1 {
		t.Errorf("8 CNAMEs: %+v, %v", a, err)
	}
	for _, tt := range []struct {
		name string
		want error
	}{
		{"long1.test", errCNAMETooLong}, // 9 CNAMEs
		{"loop1.test", errCNAMELoop},
	} {
		_, err := r.Lookup(ctx, tt.name, dns.TypeA)
		var le *LookupError
		if !errors.As(err, &le) || !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want *LookupError with %v", tt.name, err, tt.want)
		}
	}
}

func TestDNS_TCPFallbackOnTruncation(t *testing.T) {
	z := testnet.NewZone("forced.test. 300 IN MX 10 mx.forced.test.")
	for i := range 120 {
		z.Add(fmt.Sprintf("big.test. 300 IN A 127.0.%d.%d", i/250, i%250+1))
	}
	z.Truncate("forced.test.")
	z.Sign("test.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		records int
	}{
		{"forced TC bit", "forced.test", dns.TypeMX, 1},
		{"answer larger than 1232 bytes", "big.test", dns.TypeA, 120},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.ResetQueries()
			a, err := r.Lookup(context.Background(), tt.qname, tt.qtype)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if len(a.Records) != tt.records || a.Security != Secure {
				t.Errorf("%d records, %v; want %d, secure", len(a.Records), a.Security, tt.records)
			}
			var protos []string
			for _, q := range srv.Queries() {
				protos = append(protos, q.Proto)
			}
			if !slices.Equal(protos, []string{"udp", "tcp"}) {
				t.Errorf("transports %v, want [udp tcp]", protos)
			}
		})
	}
}

func TestDNS_TimeoutIsError(t *testing.T) {
	z := testnet.NewZone("slow.test. 300 IN MX 10 mx.slow.test.")
	z.Drop("slow.test.", dns.TypeMX)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)

	start := time.Now()
	_, err := r.Lookup(context.Background(), "slow.test", dns.TypeMX)
	elapsed := time.Since(start)
	var le *LookupError
	if !errors.As(err, &le) || !le.Timeout() || !IsTemporary(err) {
		t.Fatalf("err = %v, want a timeout *LookupError", err)
	}
	if n := srv.QueryCount("slow.test.", dns.TypeMX); n != 2 {
		t.Errorf("%d attempts, want 2 (one retry)", n)
	}
	if elapsed < 2*testTimeout || elapsed > 10*testTimeout {
		t.Errorf("took %v, want about 2×%v", elapsed, testTimeout)
	}

	// The retry succeeds when the server answers again.
	z.Restore("slow.test.", dns.TypeMX)
	if a, err := r.Lookup(context.Background(), "slow.test", dns.TypeMX); err != nil || len(a.Records) != 1 {
		t.Errorf("after restore: %+v, %v", a, err)
	}
}

func TestDNS_ContextIsHonoured(t *testing.T) {
	z := testnet.NewZone("slow.test. 300 IN MX 10 mx.slow.test.")
	z.Drop("slow.test.", dns.TypeMX)
	srv := testnet.StartDNS(t, z)
	r := NewResolver(ResolverConfig{Addr: srv.Addr(), Timeout: 10 * time.Second, Logger: discardLogger()})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Lookup(ctx, "slow.test", dns.TypeMX); !errors.Is(err, context.Canceled) || !IsTemporary(err) {
		t.Errorf("cancelled context: err = %v", err)
	}
	if n := srv.QueryCount("slow.test.", dns.TypeMX); n != 0 {
		t.Errorf("%d queries with a cancelled context", n)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Lookup(ctx, "slow.test", dns.TypeMX)
	if !IsTemporary(err) || time.Since(start) > 2*time.Second {
		t.Errorf("deadline: err = %v after %v", err, time.Since(start))
	}
}

func TestDNS_NamesAreCanonical(t *testing.T) {
	z := testnet.NewZone("example.test. 300 IN MX 10 MX1.Example.TEST.")
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)
	for _, name := range []string{"Example.TEST", "example.test.", "EXAMPLE.test."} {
		a, err := r.Lookup(context.Background(), name, dns.TypeMX)
		if err != nil || a.Name != "example.test." || len(a.Records) != 1 {
			t.Errorf("Lookup(%q) = %+v, %v", name, a, err)
		}
	}
	if n := srv.QueryCount("example.test.", dns.TypeMX); n != 1 {
		t.Errorf("%d queries for one name in different spellings, want 1 (cached)", n)
	}
	for _, bad := range []string{"", "a..b", strings.Repeat("x", 64) + ".test"} {
		_, err := r.Lookup(context.Background(), bad, dns.TypeMX)
		if !errors.Is(err, ErrInvalidName) || IsTemporary(err) {
			t.Errorf("Lookup(%q): err = %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestLookupErrorMessage(t *testing.T) {
	e := &LookupError{Name: "x.test.", Qtype: dns.TypeMX, Resolver: "127.0.0.1:53", Rcode: dns.RcodeServerFailure}
	if got := e.Error(); got != "DNS MX x.test.: resolver 127.0.0.1:53 answered SERVFAIL" {
		t.Errorf("Error() = %q", got)
	}
	e = &LookupError{Name: "x.test.", Qtype: dns.TypeTLSA, Resolver: "127.0.0.1:53", Rcode: -1, Err: io.ErrUnexpectedEOF}
	if got := e.Error(); !strings.Contains(got, "TLSA x.test.") || !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Errorf("Error() = %q", got)
	}
}

func TestUnescapeTXT(t *testing.T) {
	tests := map[string]string{
		`plain`:        "plain",
		`a\"b`:         `a"b`,
		`a\\b`:         `a\b`,
		`a\059b`:       "a;b",
		`\233`:         "\xe9",
		`trailing\`:    `trailing\`,
		`\999`:         "999",
		`\05`:          "05",
		`v=STSv1\059 `: "v=STSv1; ",
	}
	for in, want := range tests {
		if got := unescapeTXT(in); got != want {
			t.Errorf("unescapeTXT(%q) = %q, want %q", in, got, want)
		}
	}
}

// LookupTXT gives the bytes on the wire, character-strings joined: the
// DKIM, TLS-RPT and MTA-STS readers see what the publisher wrote.
func TestLookupTXTJoinsAndUnescapes(t *testing.T) {
	z := testnet.NewZone(
		`txt.test. 300 IN TXT "v=DKIM1; k=rsa; " "p=AB\"C\\D\009E"`,
		`txt.test. 300 IN TXT "second"`,
	)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)
	got, err := r.LookupTXT(context.Background(), "txt.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{"second", "v=DKIM1; k=rsa; p=AB\"C\\D\tE"}
	if !slices.Equal(got, want) {
		t.Errorf("LookupTXT = %q, want %q", got, want)
	}
	for _, name := range []string{"missing.test", "txt.test."} {
		if _, err := r.LookupTXT(context.Background(), name); err != nil {
			t.Errorf("LookupTXT(%s): %v", name, err)
		}
	}
}

package inbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resolver is the DNS access Check needs. A name without records (NXDOMAIN
// or NODATA) gives no records and no error; an error means the lookup
// failed and says nothing about the records.
type Resolver interface {
	// LookupTXT returns the TXT records of name, each one's strings
	// joined.
	LookupTXT(ctx context.Context, name string) ([]string, error)
	// LookupMX returns the MX host names of domain in preference order.
	LookupMX(ctx context.Context, domain string) ([]string, error)
	// LookupHost returns the IPv4 and IPv6 addresses of host.
	LookupHost(ctx context.Context, host string) ([]netip.Addr, error)
}

// Status is the outcome of one check.
type Status string

// Values of Status.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// CheckResult is the outcome of one check of Check.
type CheckResult struct {
	// Check names what was checked, such as "_mta-sts TXT".
	Check string
	// Status is ok, warn or fail.
	Status Status
	// Message says what was found.
	Message string
	// Fix says what to do; empty for ok.
	Fix string
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Resolver answers the DNS queries. Required.
	Resolver Resolver
	// Policy is the policy this relay serves for the domain; nil checks
	// what is published without comparing it with a configuration.
	Policy *PolicyConfig
	// ReportURL is the rua URI this relay receives reports at; empty
	// skips that comparison.
	ReportURL string
	// RootCAs verify the policy host's certificate; nil means the system
	// roots.
	RootCAs *x509.CertPool
	// Port is the HTTPS port of the policy host; 0 means 443. Tests
	// change it.
	Port int
	// Timeout bounds each network step; 0 means 10s.
	Timeout time.Duration
}

// maxPolicyBytes bounds a fetched policy; RFC 8461 §3.3 lets senders
// limit policies to 64 KiB.
const maxPolicyBytes = 64 << 10

// Check verifies live what a domain publishes for MTA-STS and TLS-RPT, as
// a sender would see it: the _mta-sts TXT record (one, well-formed, id
// matching the policy served), the policy host (resolves, serves the policy
// over HTTPS with a valid certificate, the same policy as configured), the
// domain's MX hosts (each matches a policy mx pattern), and the _smtp._tls
// TXT record (one, well-formed, pointing at ReportURL). Every result
// carries a fix when it is not ok.
func Check(ctx context.Context, domain string, opts CheckOptions) []CheckResult {
	c := &checker{domain: normalizeDomain(domain), opts: opts}
	if c.opts.Port == 0 {
		c.opts.Port = 443
	}
	if c.opts.Timeout <= 0 {
		c.opts.Timeout = 10 * time.Second
	}
	if opts.Policy != nil {
		p := *opts.Policy
		p.Domain = c.domain
		c.want = renderPolicy(normalizePolicy(p))
		c.wantID = PolicyID(c.want)
	}
	c.checkSTSRecord(ctx)
	addrs := c.checkPolicyHost(ctx)
	c.checkPolicyFetch(ctx, addrs)
	c.checkMX(ctx)
	c.checkTLSRPTRecord(ctx)
	return c.results
}

type checker struct {
	domain  string
	opts    CheckOptions
	want    []byte // the configured policy file, nil when not configured
	wantID  string
	fetched *PolicyConfig // the policy served, when it could be fetched
	results []CheckResult
}

func (c *checker) add(check string, st Status, msg, fix string) {
	c.results = append(c.results, CheckResult{Check: check, Status: st, Message: msg, Fix: fix})
}

func (c *checker) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.Timeout)
}

// stsRecordFix is the record to publish, as text for a fix.
func (c *checker) stsRecordFix() string {
	id := c.wantID
	if id == "" {
		id = "<policy id from `relayctl dns records " + c.domain + "`>"
	}
	return fmt.Sprintf("publish _mta-sts.%s. TXT \"v=STSv1; id=%s\"", c.domain, id)
}

// checkSTSRecord checks _mta-sts.<domain> (RFC 8461 §3.1).
func (c *checker) checkSTSRecord(ctx context.Context) {
	const check = "_mta-sts TXT"
	name := "_mta-sts." + c.domain
	sctx, cancel := c.step(ctx)
	txts, err := c.opts.Resolver.LookupTXT(sctx, name)
	cancel()
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("lookup of %s failed: %v", name, err),
			"make sure the domain's name servers answer, then run the check again")
		return
	}
	// Records that do not start with v=STSv1 are not MTA-STS records.
	var sts []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			sts = append(sts, t)
		}
	}
	switch len(sts) {
	case 0:
		c.add(check, StatusFail, fmt.Sprintf("%s has no v=STSv1 TXT record: senders do not look for a policy", name), c.stsRecordFix())
		return
	case 1:
	default:
		c.add(check, StatusFail, fmt.Sprintf("%s has %d v=STSv1 TXT records: senders then act as if there were no policy (RFC 8461 §3.1)", name, len(sts)),
			"keep exactly one: "+c.stsRecordFix())
		return
	}
	fields, err := parseTagList(sts[0])
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("%s %q is malformed: %v", name, sts[0], err), c.stsRecordFix())
		return
	}
	if fields["v"] != "STSv1" {
		c.add(check, StatusFail, fmt.Sprintf("%s %q does not start with v=STSv1;", name, sts[0]), c.stsRecordFix())
		return
	}
	id := fields["id"]
	if !validPolicyID(id) {
		c.add(check, StatusFail, fmt.Sprintf("%s %q has no valid id (1 to 32 letters and digits)", name, sts[0]), c.stsRecordFix())
		return
	}
	switch {
	case c.wantID == "":
		c.add(check, StatusOK, fmt.Sprintf("%s: v=STSv1, id=%s (no policy for %s in this relay's configuration to compare with)", name, id, c.domain), "")
	case id != c.wantID:
		c.add(check, StatusFail, fmt.Sprintf("%s has id=%s, but the policy this relay serves has id %s: senders that cached an older policy will not fetch this one", name, id, c.wantID),
			"update the record: "+c.stsRecordFix())
	default:
		c.add(check, StatusOK, fmt.Sprintf("%s: v=STSv1, id=%s matches the served policy", name, id), "")
	}
}

func validPolicyID(id string) bool {
	if len(id) < 1 || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// parseTagList parses "k1=v1; k2=v2;" records (RFC 8461 §3.1, RFC 8460
// §3): fields separated by ";" with optional spaces, a trailing ";"
// allowed, each key once.
func parseTagList(s string) (map[string]string, error) {
	fields := make(map[string]string)
	parts := strings.Split(s, ";")
	for i, part := range parts {
		part = strings.Trim(part, " \t")
		if part == "" {
			if i == len(parts)-1 && i > 0 {
				break // trailing ";"
			}
			return nil, errors.New("empty field")
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("field %q is not key=value", part)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("field %q appears twice", k)
		}
		fields[k] = v
	}
	return fields, nil
}

// checkPolicyHost checks that mta-sts.<domain> resolves.
func (c *checker) checkPolicyHost(ctx context.Context) []netip.Addr {
	const check = "policy host"
	host := PolicyHost(c.domain)
	fix := fmt.Sprintf("publish %s. as a CNAME to this relay's host name, or A/AAAA records with its addresses", host)
	sctx, cancel := c.step(ctx)
	addrs, err := c.opts.Resolver.LookupHost(sctx, host)
	cancel()
	switch {
	case err != nil:
		c.add(check, StatusFail, fmt.Sprintf("lookup of %s failed: %v", host, err), fix)
		return nil
	case len(addrs) == 0:
		c.add(check, StatusFail, fmt.Sprintf("%s has no address: senders cannot fetch the policy", host), fix)
		return nil
	}
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	c.add(check, StatusOK, fmt.Sprintf("%s resolves to %s", host, strings.Join(strs, ", ")), "")
	return addrs
}

// checkPolicyFetch fetches the policy as a sender does (RFC 8461 §3.3):
// HTTPS with a certificate valid for the policy host, no redirects, 200,
// text/plain, a valid policy.
func (c *checker) checkPolicyFetch(ctx context.Context, addrs []netip.Addr) {
	const check = "policy"
	host := PolicyHost(c.domain)
	where := "https://" + host + PolicyPath
	if len(addrs) == 0 {
		c.add(check, StatusFail, "not fetched: "+host+" has no address", "fix the policy host first")
		return
	}
	body, err := c.fetch(ctx, host, addrs)
	if err != nil {
		var certErr *tls.CertificateVerificationError
		var hostErr x509.HostnameError
		if errors.As(err, &certErr) || errors.As(err, &hostErr) {
			c.add(check, StatusFail, fmt.Sprintf("%s: the certificate is not valid: %v", where, err),
				fmt.Sprintf("give [inbound] a certificate for %s from a public CA (cert_file/key_file, or acme = true)", host))
			return
		}
		c.add(check, StatusFail, fmt.Sprintf("%s: %v", where, err),
			fmt.Sprintf("make sure port 443 of %s reaches the relay's [inbound] listener and that %s has an [[inbound.mta_sts]] policy", host, c.domain))
		return
	}
	p, err := ParsePolicy(body)
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("%s: invalid policy: %v", where, err), "serve the policy from this relay ([[inbound.mta_sts]])")
		return
	}
	c.fetched = &p
	if c.want != nil && !bytes.Equal(body, c.want) {
		c.add(check, StatusFail, fmt.Sprintf("%s serves a policy that differs from this relay's configuration (served: mode %s, max_age %d, mx %s)", where, p.Mode, p.MaxAge, strings.Join(p.MX, " ")),
			fmt.Sprintf("point %s at this relay, or restart the relay after editing relay.toml", host))
		return
	}
	if p.MaxAge < MinRecommendedMaxAge {
		c.add(check, StatusWarn, fmt.Sprintf("%s: valid, mode %s, but max_age %d is less than a day: senders hold the policy only briefly (RFC 8461 §3.2 recommends weeks)", where, p.Mode, p.MaxAge),
			"raise max_age to 604800 (a week) or more once the policy works")
		return
	}
	c.add(check, StatusOK, fmt.Sprintf("%s: valid certificate, mode %s, max_age %d, %d mx pattern(s)", where, p.Mode, p.MaxAge, len(p.MX)), "")
}

// fetch GETs the policy from the first address that answers.
func (c *checker) fetch(ctx context.Context, host string, addrs []netip.Addr) ([]byte, error) {
	dialer := &net.Dialer{Timeout: c.opts.Timeout}
	port := strconv.Itoa(c.opts.Port)
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for _, a := range addrs {
				conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig:     &tls.Config{ServerName: host, RootCAs: c.opts.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: c.opts.Timeout,
		ForceAttemptHTTP2:   true,
		DisableKeepAlives:   true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		Timeout:   c.opts.Timeout,
		// RFC 8461 §3.3: senders do not follow redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	u := &url.URL{Scheme: "https", Host: host, Path: PolicyPath}
	if c.opts.Port != 443 {
		u.Host = net.JoinHostPort(host, port)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if loc := resp.Header.Get("Location"); loc != "" {
			return nil, fmt.Errorf("answered %s, redirecting to %s: senders do not follow redirects", resp.Status, loc)
		}
		return nil, fmt.Errorf("answered %s, not 200 OK", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("Content-Type is %q, not text/plain (RFC 8461 §3.2)", resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if len(body) > maxPolicyBytes {
		return nil, fmt.Errorf("policy is larger than %d bytes", maxPolicyBytes)
	}
	return body, nil
}

// checkMX checks that every MX host of the domain matches the policy
// (RFC 8461 §4.1): the policy served when it could be fetched, else the
// configured one.
func (c *checker) checkMX(ctx context.Context) {
	const check = "MX hosts"
	var p *PolicyConfig
	switch {
	case c.fetched != nil:
		p = c.fetched
	case c.opts.Policy != nil:
		q := normalizePolicy(*c.opts.Policy)
		p = &q
	default:
		c.add(check, StatusWarn, "not checked: no policy was fetched or configured", "fix the policy checks above first")
		return
	}
	if p.Mode == ModeNone {
		c.add(check, StatusOK, "not checked: the policy's mode is none", "")
		return
	}
	sctx, cancel := c.step(ctx)
	hosts, err := c.opts.Resolver.LookupMX(sctx, c.domain)
	cancel()
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("MX lookup of %s failed: %v", c.domain, err), "make sure the domain's name servers answer, then run the check again")
		return
	}
	if len(hosts) == 0 {
		c.add(check, StatusWarn, c.domain+" has no MX records: mail goes to the domain's own address, which must match a policy mx pattern",
			"publish the domain's MX records")
		return
	}
	var bad []string
	for _, h := range hosts {
		if !slices.ContainsFunc(p.MX, func(pat string) bool { return MatchMX(pat, h) }) {
			bad = append(bad, normalizeDomain(h))
		}
	}
	if len(bad) == 0 {
		c.add(check, StatusOK, fmt.Sprintf("every MX host matches the policy: %s", strings.Join(trimDots(hosts), ", ")), "")
		return
	}
	st, effect := StatusFail, "senders that enforce the policy will not deliver to them"
	if p.Mode == ModeTesting {
		st, effect = StatusWarn, "in enforce mode senders would not deliver to them; in testing mode they report failures"
	}
	c.add(check, st, fmt.Sprintf("MX host(s) %s match no mx pattern of the policy (%s): %s", strings.Join(bad, ", "), strings.Join(p.MX, " "), effect),
		fmt.Sprintf("add them to mx in the [[inbound.mta_sts]] table of %s (and publish the new id), or correct the MX records", c.domain))
}

func trimDots(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = normalizeDomain(n)
	}
	return out
}

// checkTLSRPTRecord checks _smtp._tls.<domain> (RFC 8460 §3).
func (c *checker) checkTLSRPTRecord(ctx context.Context) {
	const check = "_smtp._tls TXT"
	name := "_smtp._tls." + c.domain
	rua := c.opts.ReportURL
	if rua == "" {
		rua = "https://<report host><report path>"
	}
	fix := fmt.Sprintf("publish %s. TXT \"v=TLSRPTv1; rua=%s\"", name, rua)
	sctx, cancel := c.step(ctx)
	txts, err := c.opts.Resolver.LookupTXT(sctx, name)
	cancel()
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("lookup of %s failed: %v", name, err), "make sure the domain's name servers answer, then run the check again")
		return
	}
	var rpt []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=TLSRPTv1") {
			rpt = append(rpt, t)
		}
	}
	switch len(rpt) {
	case 0:
		c.add(check, StatusFail, name+" has no v=TLSRPTv1 TXT record: senders send no TLS reports", fix)
		return
	case 1:
	default:
		c.add(check, StatusFail, fmt.Sprintf("%s has %d v=TLSRPTv1 records: senders then send no reports (RFC 8460 §3)", name, len(rpt)), "keep exactly one: "+fix)
		return
	}
	fields, err := parseTagList(rpt[0])
	if err == nil && fields["v"] != "TLSRPTv1" {
		err = errors.New("it does not start with v=TLSRPTv1;")
	}
	var uris []string
	if err == nil {
		uris, err = parseRUA(fields["rua"])
	}
	if err != nil {
		c.add(check, StatusFail, fmt.Sprintf("%s %q is malformed: %v", name, rpt[0], err), fix)
		return
	}
	if c.opts.ReportURL != "" && !slices.Contains(uris, c.opts.ReportURL) {
		c.add(check, StatusWarn, fmt.Sprintf("%s sends reports to %s, not to this relay (%s)", name, strings.Join(uris, ", "), c.opts.ReportURL),
			fmt.Sprintf("add %s to rua (comma-separated) if this relay should receive the reports", c.opts.ReportURL))
		return
	}
	c.add(check, StatusOK, fmt.Sprintf("%s: rua=%s", name, strings.Join(uris, ",")), "")
}

// parseRUA parses the rua field: comma-separated mailto: or https: URIs
// (RFC 8460 §3).
func parseRUA(v string) ([]string, error) {
	if v == "" {
		return nil, errors.New("no rua field")
	}
	var uris []string
	for u := range strings.SplitSeq(v, ",") {
		u = strings.Trim(u, " \t")
		pu, err := url.Parse(u)
		switch {
		case err != nil:
			return nil, fmt.Errorf("rua %q: %w", u, err)
		case pu.Scheme == "https" && pu.Host != "":
		case pu.Scheme == "mailto" && strings.Contains(pu.Opaque, "@"):
		default:
			return nil, fmt.Errorf("rua %q is neither an https: nor a mailto: URI", u)
		}
		uris = append(uris, u)
	}
	return uris, nil
}

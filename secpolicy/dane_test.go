package secpolicy

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
)

// ---------------------------------------------------------------------------
// Helpers

// assocData computes the certificate association data of a TLSA record with
// the given selector and matching type for cert.
func assocData(sel, mt uint8, cert *x509.Certificate) []byte {
	var data []byte
	switch sel {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	}
	switch mt {
	case MatchSHA256:
		h := sha256.Sum256(data)
		return h[:]
	case MatchSHA512:
		h := sha512.Sum512(data)
		return h[:]
	}
	return data
}

// tlsaRR builds a TLSA record for cert under owner.
func tlsaRR(owner string, ttl uint32, usage, sel, mt uint8, cert *x509.Certificate) *dns.TLSA {
	return rawTLSA(owner, ttl, usage, sel, mt, hex.EncodeToString(assocData(sel, mt, cert)))
}

// rawTLSA builds a TLSA record with the given hex data, as it came from DNS.
func rawTLSA(owner string, ttl uint32, usage, sel, mt uint8, hexData string) *dns.TLSA {
	return &dns.TLSA{
		Hdr:          dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
		Usage:        usage,
		Selector:     sel,
		MatchingType: mt,
		Certificate:  hexData,
	}
}

// record is the TLSARecord of a TLSA RR for cert.
func record(usage, sel, mt uint8, cert *x509.Certificate) TLSARecord {
	return newTLSARecord(tlsaRR("_25._tcp.x.test", 300, usage, sel, mt, cert))
}

// chainOf parses the chain a server would send for cert.
func chainOf(t *testing.T, cert tls.Certificate) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// verifyChain runs the DANE verifier with names and the usable ones of recs
// on cert's chain, as VerifyConnection would.
func verifyChain(t *testing.T, cert tls.Certificate, names []string, recs ...TLSARecord) (*daneVerifier, error) {
	t.Helper()
	v := &daneVerifier{names: names, now: time.Now}
	for _, r := range recs {
		if r.Unusable != "" {
			t.Fatalf("test record %s is unusable: %s", r, r.Unusable)
		}
		v.records = append(v.records, r)
	}
	return v, v.verify(tls.ConnectionState{PeerCertificates: chainOf(t, cert)})
}

// refNames are the reference identifiers used by the verifier tests: the
// TLSA base domain (an MX host that is a CNAME to a hoster's name), the
// original MX host name and the recipient domain.
var refNames = []string{"mail.hoster.test", "mx1.dest.test", "dest.test"}

// daneEnv is a DNS server, a resolver trusting it, and a DANE policy.
type daneEnv struct {
	zone  *testnet.Zone
	srv   *testnet.DNSServer
	r     *Resolver
	p     *Policy
	clock *fakeClock
}

func newDANEEnv(t *testing.T, records ...string) *daneEnv {
	t.Helper()
	z := testnet.NewZone(records...)
	srv := testnet.StartDNS(t, z)
	r := newTestResolver(t, srv)
	clock := newFakeClock()
	r.now = clock.Now
	return &daneEnv{zone: z, srv: srv, r: r, p: NewPolicy(PolicyConfig{Resolver: r, DANE: true}), clock: clock}
}

// hostPolicy resolves domain like the delivery engine does (MX, then the
// host's addresses) and returns the policy of its MX host named host.
func (e *daneEnv) hostPolicy(t *testing.T, domain, host string) (HostPolicy, error) {
	t.Helper()
	ctx := context.Background()
	mx, err := e.r.LookupMX(ctx, domain)
	if err != nil {
		t.Fatalf("LookupMX(%s): %v", domain, err)
	}
	for _, h := range mx.Hosts {
		if h.Name != dns.Fqdn(host) {
			continue
		}
		ha, err := e.r.LookupHost(ctx, h.Name)
		if err != nil {
			t.Fatalf("LookupHost(%s): %v", h.Name, err)
		}
		return e.p.ForHost(ctx, Destination{
			Domain: domain, Host: h.Name,
			MXSecure: mx.Security == Secure, HostSecure: ha.Security == Secure,
		})
	}
	t.Fatalf("%s is not an MX host of %s: %+v", host, domain, mx.Hosts)
	return HostPolicy{}, nil
}

// tlsaQueries returns the names of the TLSA queries received, in order.
func (e *daneEnv) tlsaQueries() []string {
	var out []string
	for _, q := range e.srv.Queries() {
		if q.Type == dns.TypeTLSA {
			out = append(out, q.Name)
		}
	}
	return out
}

// handshake runs a TLS handshake between a client using cfg and a server
// using srvCfg over a loopback TCP connection. It returns the SNI the
// server saw and the client's error.
func handshake(t *testing.T, cfg *tls.Config, srvCfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var (
		mu  sync.Mutex
		sni string
	)
	srvCfg = srvCfg.Clone()
	srvCfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		sni = h.ServerName
		mu.Unlock()
		return nil, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		_ = sc.SetDeadline(deadline)
		s := tls.Server(sc, srvCfg)
		if s.Handshake() != nil {
			return
		}
		// Read until the client goes away, so that a TLS 1.3 client can
		// finish (and verify) before the connection closes.
		buf := make([]byte, 16)
		_, _ = s.Read(buf)
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = cc.SetDeadline(deadline)
	c := tls.Client(cc, cfg)
	err = c.Handshake()
	cc.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	return sni, err
}

func serverConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// ---------------------------------------------------------------------------
// DANE06: usable and unusable records (RFC 7672 §3.1.3, RFC 6698 §2.1)

func TestDANE06_RecordUsability(t *testing.T) {
	h32 := strings.Repeat("ab", 32)
	h64 := strings.Repeat("cd", 64)
	full := strings.Repeat("01", 91) // any length is fine for an exact match

	type tc struct {
		u, s, m uint8
		data    string
		usable  bool
		why     string // a word of Unusable
	}
	var tests []tc
	// Every combination of the usable usages, selectors and matching types.
	for _, u := range []uint8{UsageDANETA, UsageDANEEE} {
		for _, s := range []uint8{SelectorCert, SelectorSPKI} {
			tests = append(tests,
				tc{u, s, MatchFull, full, true, ""},
				tc{u, s, MatchSHA256, h32, true, ""},
				tc{u, s, MatchSHA512, h64, true, ""},
			)
		}
	}
	tests = append(tests,
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, strings.ToUpper(h32), true, ""},
		// PKIX usages are not for SMTP.
		tc{UsagePKIXTA, SelectorCert, MatchSHA256, h32, false, "PKIX"},
		tc{UsagePKIXTA, SelectorSPKI, MatchFull, full, false, "PKIX"},
		tc{UsagePKIXEE, SelectorSPKI, MatchSHA256, h32, false, "PKIX"},
		tc{UsagePKIXEE, SelectorCert, MatchSHA512, h64, false, "PKIX"},
		// Unknown usages, selectors, matching types.
		tc{4, SelectorSPKI, MatchSHA256, h32, false, "usage"},
		tc{255, SelectorSPKI, MatchSHA256, h32, false, "usage"},
		tc{UsageDANEEE, 2, MatchSHA256, h32, false, "selector"},
		tc{UsageDANETA, 255, MatchSHA256, h32, false, "selector"},
		tc{UsageDANEEE, SelectorSPKI, 3, h32, false, "matching type"},
		tc{UsageDANEEE, SelectorSPKI, 255, h64, false, "matching type"},
		// Digest lengths that do not fit the matching type.
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, h32[:62], false, "SHA-256"},
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, h32 + "00", false, "SHA-256"},
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, h64, false, "SHA-256"},
		tc{UsageDANETA, SelectorCert, MatchSHA512, h32, false, "SHA-512"},
		tc{UsageDANETA, SelectorCert, MatchSHA512, h64[:126], false, "SHA-512"},
		// Malformed data.
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, "zz" + h32[2:], false, "malformed"},
		tc{UsageDANEEE, SelectorSPKI, MatchSHA256, h32[1:], false, "malformed"},
		tc{UsageDANEEE, SelectorSPKI, MatchFull, "", false, "malformed"},
		tc{UsageDANETA, SelectorCert, MatchFull, "-", false, "malformed"},
	)
	for _, tt := range tests {
		name := fmt.Sprintf("%d %d %d len %d", tt.u, tt.s, tt.m, len(tt.data))
		t.Run(name, func(t *testing.T) {
			rec := newTLSARecord(rawTLSA("_25._tcp.mx.test", 300, tt.u, tt.s, tt.m, tt.data))
			if got := rec.Unusable == ""; got != tt.usable {
				t.Fatalf("usable = %v (%q), want %v", got, rec.Unusable, tt.usable)
			}
			if !tt.usable && !strings.Contains(rec.Unusable, tt.why) {
				t.Errorf("Unusable %q, want it to say %q", rec.Unusable, tt.why)
			}
			if rec.Usage != tt.u || rec.Selector != tt.s || rec.MatchingType != tt.m {
				t.Errorf("record %+v", rec)
			}
			if rec.Params() != fmt.Sprintf("%d %d %d", tt.u, tt.s, tt.m) {
				t.Errorf("Params %q", rec.Params())
			}
		})
	}
}

// TestDANE06_UnusableRecordsIgnoredInRRset: a secure RRset mixing usable
// and unusable records gives DANE with the usable ones only; an unusable
// record that would match the certificate (PKIX-EE of the leaf) does not
// authenticate it.
func TestDANE06_UnusableRecordsIgnoredInRRset(t *testing.T) {
	ca := testnet.NewCA(t)
	good := ca.Issue("mx1.dest.test")
	other := testnet.SelfSigned(t, "mx1.dest.test")
	e := newDANEEnv(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
	)
	e.zone.Sign("dest.test.")
	owner := "_25._tcp.mx1.dest.test."
	e.zone.AddRR(
		tlsaRR(owner, 300, UsagePKIXEE, SelectorSPKI, MatchSHA256, other.Leaf), // unusable, would match "other"
		tlsaRR(owner, 300, UsageDANEEE, SelectorSPKI, MatchSHA256, good.Leaf),
		rawTLSA(owner, 300, UsageDANEEE, 7, MatchSHA256, strings.Repeat("00", 32)),
	)
	hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if hp.Kind != KindDANE || !hp.Authenticated || !hp.RequireTLS || hp.TLSA == nil || !hp.TLSA.Usable {
		t.Fatalf("policy %+v, want authenticated DANE", hp)
	}
	if len(hp.TLSA.Records) != 3 {
		t.Errorf("TLSA records %v, want all 3 reported", hp.TLSA.Records)
	}
	unusable := 0
	for _, r := range hp.TLSA.Records {
		if r.Unusable != "" {
			unusable++
		}
	}
	if unusable != 2 {
		t.Errorf("%d unusable records, want 2: %+v", unusable, hp.TLSA.Records)
	}
	if _, err := handshake(t, hp.TLSConfig, serverConfig(good)); err != nil {
		t.Errorf("handshake with the DANE-EE certificate: %v", err)
	}
	hp2, _ := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if _, err := handshake(t, hp2.TLSConfig, serverConfig(other)); err == nil {
		t.Error("a certificate matched only by a PKIX-EE(1) record was accepted")
	}
}

// ---------------------------------------------------------------------------
// DANE09: DANE-EE

func TestDANE09_EEMatches(t *testing.T) {
	ca := testnet.NewCA(t)
	leaf := ca.Issue("mx1.dest.test")
	inter := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, IncludeRoot: true})
	past := time.Now().Add(-48 * time.Hour)
	expiredWrong := ca.IssueWith(testnet.IssueOptions{Names: []string{"wrong.example"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
	future := time.Now().Add(48 * time.Hour)
	notYet := ca.IssueWith(testnet.IssueOptions{Names: []string{"wrong.example"}, NotBefore: future, NotAfter: future.Add(time.Hour)})
	selfSigned := testnet.SelfSigned(t, "nothing.to.do.with.it")

	tests := []struct {
		name string
		cert tls.Certificate
		s, m uint8
	}{
		{"3 1 1 SPKI SHA-256", leaf, SelectorSPKI, MatchSHA256},
		{"3 0 2 full cert SHA-512", leaf, SelectorCert, MatchSHA512},
		{"3 0 0 full cert", leaf, SelectorCert, MatchFull},
		{"3 1 0 full SPKI", leaf, SelectorSPKI, MatchFull},
		{"3 0 1 cert SHA-256", leaf, SelectorCert, MatchSHA256},
		{"3 1 2 SPKI SHA-512", leaf, SelectorSPKI, MatchSHA512},
		{"3 1 1 with a chain sent", inter, SelectorSPKI, MatchSHA256},
		{"3 1 1 expired and wrongly named", expiredWrong, SelectorSPKI, MatchSHA256},
		{"3 0 1 expired and wrongly named", expiredWrong, SelectorCert, MatchSHA256},
		{"3 1 1 not yet valid", notYet, SelectorSPKI, MatchSHA256},
		{"3 1 1 self-signed, other name", selfSigned, SelectorSPKI, MatchSHA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := record(UsageDANEEE, tt.s, tt.m, tt.cert.Leaf)
			v, err := verifyChain(t, tt.cert, refNames, rec)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if want := "DANE-EE " + rec.Params(); !strings.HasPrefix(v.matched, want) {
				t.Errorf("matched %q, want it to start with %q", v.matched, want)
			}
		})
	}
}

// TestDANE09_EEMatchesOnlyTheLeaf: a DANE-EE record matching a CA
// certificate of the chain, not the leaf, authenticates nothing.
func TestDANE09_EEMatchesOnlyTheLeaf(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, IncludeRoot: true})
	for _, c := range []*x509.Certificate{ca.Intermediate(), ca.Certificate()} {
		_, err := verifyChain(t, cert, refNames, record(UsageDANEEE, SelectorSPKI, MatchSHA256, c))
		var de *DANEError
		if !errors.As(err, &de) || de.ResultType != "validation-failure" {
			t.Errorf("3 1 1 of %s: err %v, want a validation-failure", c.Subject.CommonName, err)
		}
	}
}

func TestDANE09_NoMatchMessage(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	other := testnet.SelfSigned(t, "mx1.dest.test")
	_, err := verifyChain(t, cert, refNames, record(UsageDANEEE, SelectorSPKI, MatchSHA256, other.Leaf))
	var de *DANEError
	if !errors.As(err, &de) {
		t.Fatalf("err %v (%T), want *DANEError", err, err)
	}
	if de.ResultType != "validation-failure" {
		t.Errorf("result type %q", de.ResultType)
	}
	if want := "TLSA 3 1 1 matched no certificate in the chain"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	// Several records: the message lists them.
	_, err = verifyChain(t, cert, refNames,
		record(UsageDANEEE, SelectorSPKI, MatchSHA256, other.Leaf),
		record(UsageDANETA, SelectorCert, MatchSHA256, other.Leaf))
	if err == nil || !strings.Contains(err.Error(), "3 1 1") || !strings.Contains(err.Error(), "2 0 1") {
		t.Errorf("error %v, want both records named", err)
	}
	// No certificate at all.
	v := &daneVerifier{records: []TLSARecord{record(UsageDANEEE, SelectorSPKI, MatchSHA256, other.Leaf)}, now: time.Now}
	if err := v.verify(tls.ConnectionState{}); err == nil {
		t.Error("empty chain verified")
	}
}

// ---------------------------------------------------------------------------
// DANE10: DANE-TA

func TestDANE10_TrustAnchor(t *testing.T) {
	ca := testnet.NewCA(t)
	root, inter := ca.Certificate(), ca.Intermediate()
	issue := func(names ...string) tls.Certificate {
		return ca.IssueWith(testnet.IssueOptions{Names: names, IncludeIntermediate: true})
	}
	past := time.Now().Add(-48 * time.Hour)
	future := time.Now().Add(48 * time.Hour)
	expired := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, NotBefore: past, NotAfter: past.Add(time.Hour)})
	notYet := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, NotBefore: future, NotAfter: future.Add(time.Hour)})
	withRoot := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, IncludeRoot: true})
	leafOnly := ca.Issue("mx1.dest.test") // signed by the root, chain = leaf only
	otherCA := testnet.NewCA(t)
	// Signed by the intermediate, which the server does not send.
	trimmed := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
	trimmed.Certificate = trimmed.Certificate[:1]

	tests := []struct {
		name     string
		cert     tls.Certificate
		rec      TLSARecord
		ok       bool
		resultTy string // when !ok
		msg      string // when !ok: part of the error
	}{
		{"2 0 1 intermediate, name = TLSA base domain", issue("mail.hoster.test"), record(2, 0, 1, inter), true, "", ""},
		{"2 0 1 intermediate, name = original MX host", issue("mx1.dest.test"), record(2, 0, 1, inter), true, "", ""},
		{"2 0 1 intermediate, name = recipient domain", issue("dest.test"), record(2, 0, 1, inter), true, "", ""},
		{"2 0 1 intermediate, wildcard for the MX host", issue("*.dest.test"), record(2, 0, 1, inter), true, "", ""},
		{"2 0 1 intermediate, wildcard for the base domain", issue("*.hoster.test"), record(2, 0, 1, inter), true, "", ""},
		{"2 0 1 intermediate, name among others", issue("a.example", "MX1.Dest.Test"), record(2, 0, 1, inter), true, "", ""},
		{"2 1 1 intermediate SPKI", issue("mx1.dest.test"), record(2, 1, 1, inter), true, "", ""},
		{"2 0 2 intermediate", issue("mx1.dest.test"), record(2, 0, 2, inter), true, "", ""},
		{"2 0 0 intermediate sent", issue("mx1.dest.test"), record(2, 0, 0, inter), true, "", ""},
		{"2 0 1 root sent", withRoot, record(2, 0, 1, root), true, "", ""},
		{"2 1 1 root sent", withRoot, record(2, 1, 1, root), true, "", ""},
		{"2 1 0 root key not sent, leaf only", leafOnly, record(2, 1, 0, root), true, "", ""},
		{"2 1 0 root key not sent, intermediate sent", issue("mx1.dest.test"), record(2, 1, 0, root), true, "", ""},
		{"2 0 0 root cert not sent, leaf only", leafOnly, record(2, 0, 0, root), true, "", ""},
		{"2 1 0 intermediate key not sent", trimmed, record(2, 1, 0, inter), true, "", ""},
		{"2 0 0 intermediate cert not sent", trimmed, record(2, 0, 0, inter), true, "", ""},
		{"2 0 0 root cert not sent, intermediate sent", issue("mx1.dest.test"), record(2, 0, 0, root), true, "", ""},

		// RFC 8460 §4.3: a name mismatch is reported as certificate-host-mismatch.
		{"wrong name", issue("other.test"), record(2, 0, 1, inter), false, "certificate-host-mismatch", "do not match"},
		{"wildcard does not match its own base", issue("*.mx1.dest.test"), record(2, 0, 1, inter), false, "", "do not match"},
		{"only an IP address", ca.IssueWith(testnet.IssueOptions{Names: []string{"192.0.2.1"}, IncludeIntermediate: true}), record(2, 0, 1, inter), false, "", "do not match"},
		{"expired leaf", expired, record(2, 0, 1, inter), false, "certificate-expired", "TLSA 2 0 1"},
		{"leaf not yet valid", notYet, record(2, 0, 1, inter), false, "certificate-expired", "TLSA 2 0 1"},
		{"2 0 1 root not sent", issue("mx1.dest.test"), record(2, 0, 1, root), false, "validation-failure", "matched no certificate"},
		{"2 1 1 root key not sent", leafOnly, record(2, 1, 1, root), false, "validation-failure", "matched no certificate"},
		{"2 0 1 of another CA", issue("mx1.dest.test"), record(2, 0, 1, otherCA.Intermediate()), false, "validation-failure", "matched no certificate"},
		{"2 1 0 key of another CA", leafOnly, record(2, 1, 0, otherCA.Certificate()), false, "validation-failure", ""},
		{"2 0 0 cert of another CA", leafOnly, record(2, 0, 0, otherCA.Certificate()), false, "validation-failure", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := verifyChain(t, tt.cert, refNames, tt.rec)
			if tt.ok {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if !strings.HasPrefix(v.matched, "DANE-TA "+tt.rec.Params()) {
					t.Errorf("matched %q", v.matched)
				}
				return
			}
			if err == nil {
				t.Fatalf("verified (%s), want a failure", v.matched)
			}
			var de *DANEError
			if !errors.As(err, &de) {
				t.Fatalf("err %v (%T), want *DANEError", err, err)
			}
			if tt.resultTy != "" && de.ResultType != tt.resultTy {
				t.Errorf("result type %q, want %q (%v)", de.ResultType, tt.resultTy, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

// TestDANE10_WildcardMatchesOneLabel: "*" stands for exactly one
// leftmost label of a reference identifier.
func TestDANE10_WildcardMatchesOneLabel(t *testing.T) {
	ca := testnet.NewCA(t)
	ta := record(2, 0, 1, ca.Intermediate())
	tests := []struct {
		cert  string
		names []string
		ok    bool
	}{
		{"*.b.dest.test", []string{"a.b.dest.test"}, true},
		{"*.dest.test", []string{"a.b.dest.test"}, false},
		{"*.test", []string{"mx1.dest.test"}, false},
		{"*.test", []string{"mx1.dest.test", "", "dest.test"}, true},
		{"*.dest.test", []string{"dest.test"}, false},
		{"mx*.dest.test", []string{"mx1.dest.test"}, false},
	}
	for _, tt := range tests {
		cert := ca.IssueWith(testnet.IssueOptions{Names: []string{tt.cert}, IncludeIntermediate: true})
		_, err := verifyChain(t, cert, tt.names, ta)
		if (err == nil) != tt.ok {
			t.Errorf("certificate %s for %v: %v, want ok=%v", tt.cert, tt.names, err, tt.ok)
		}
	}
}

// TestDANE10_LeafValidityUsesPolicyClock: the dates of the leaf are checked
// against the policy's clock.
func TestDANE10_LeafValidityUsesPolicyClock(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
	v := &daneVerifier{records: []TLSARecord{record(2, 0, 1, ca.Intermediate())}, names: refNames}
	cs := tls.ConnectionState{PeerCertificates: chainOf(t, cert)}
	v.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	if err := v.verify(cs); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("two days later: %v, want the leaf expired", err)
	}
	v.now = time.Now
	if err := v.verify(cs); err != nil {
		t.Errorf("now: %v", err)
	}
}

// ---------------------------------------------------------------------------
// DANE13: order does not matter, one match is enough

func TestDANE13_AnyMatchingRecordInAnyOrder(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
	wrongName := ca.IssueWith(testnet.IssueOptions{Names: []string{"other.test"}, IncludeIntermediate: true})
	other := testnet.SelfSigned(t, "x.test")
	otherCA := testnet.NewCA(t)

	nonMatching := []TLSARecord{
		record(3, 1, 1, other.Leaf),
		record(3, 0, 2, other.Leaf),
		record(2, 0, 1, otherCA.Intermediate()),
		record(2, 1, 0, otherCA.Certificate()),
	}
	matching := []TLSARecord{
		record(3, 1, 1, cert.Leaf),
		record(2, 0, 1, ca.Intermediate()),
		record(2, 0, 0, ca.Certificate()),
	}
	for _, m := range matching {
		recs := append(slices.Clone(nonMatching), m)
		// Every rotation puts the matching record at another place.
		for i := range recs {
			rot := append(slices.Clone(recs[i:]), recs[:i]...)
			if _, err := verifyChain(t, cert, refNames, rot...); err != nil {
				t.Errorf("records %v: %v", rot, err)
			}
			rev := slices.Clone(rot)
			slices.Reverse(rev)
			if _, err := verifyChain(t, cert, refNames, rev...); err != nil {
				t.Errorf("records %v: %v", rev, err)
			}
		}
	}
	// A TA record that finds its anchor but fails the name check does not
	// stop a matching DANE-EE record, in either order.
	ee := record(3, 1, 1, wrongName.Leaf)
	ta := record(2, 0, 1, ca.Intermediate())
	for _, recs := range [][]TLSARecord{{ta, ee}, {ee, ta}} {
		v, err := verifyChain(t, wrongName, refNames, recs...)
		if err != nil || !strings.HasPrefix(v.matched, "DANE-EE") {
			t.Errorf("records %v: %v (matched %q)", recs, err, v.matched)
		}
	}
	// And without a match, the outcome does not depend on the order either.
	for _, recs := range [][]TLSARecord{nonMatching, slices.Concat(nonMatching[2:], nonMatching[:2])} {
		if _, err := verifyChain(t, cert, refNames, recs...); err == nil {
			t.Errorf("records %v matched", recs)
		}
	}
}

// ---------------------------------------------------------------------------
// DANE01–DANE05, DANE07, DANE11 through ForHost with the in-process DNS

const tlsaName = "_25._tcp.mx1.dest.test."

func TestDANE01_OnlyWithSecureMXAndAddresses(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	tests := []struct {
		name    string
		setup   func(z *testnet.Zone)
		domain  string
		host    string
		tlsa    string // TLSA owner name
		want    Kind
		queries int // TLSA queries expected
	}{
		{
			name: "secure MX and A",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
				z.Sign("dest.test.")
			},
			domain: "dest.test", host: "mx1.dest.test", tlsa: tlsaName, want: KindDANE, queries: 1,
		},
		{
			name: "insecure MX, secure host",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN MX 10 mx1.hoster.test.", "mx1.hoster.test. 300 IN A 127.0.0.11")
				z.Sign("hoster.test.")
			},
			domain: "dest.test", host: "mx1.hoster.test", tlsa: "_25._tcp.mx1.hoster.test.", want: KindOpportunistic, queries: 0,
		},
		{
			name: "secure MX, insecure host",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN MX 10 mx1.hoster.test.", "mx1.hoster.test. 300 IN A 127.0.0.11")
				z.Sign("dest.test.")
			},
			domain: "dest.test", host: "mx1.hoster.test", tlsa: "_25._tcp.mx1.hoster.test.", want: KindOpportunistic, queries: 0,
		},
		{
			name: "secure MX, host a secure CNAME to an insecure name",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN CNAME mx.hoster.test.", "mx.hoster.test. 300 IN A 127.0.0.11")
				z.Sign("dest.test.")
			},
			domain: "dest.test", host: "mx1.dest.test", tlsa: tlsaName, want: KindOpportunistic, queries: 0,
		},
		{
			name: "implicit MX with secure A",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN A 127.0.0.11")
				z.Sign("dest.test.")
			},
			domain: "dest.test", host: "dest.test", tlsa: "_25._tcp.dest.test.", want: KindDANE, queries: 1,
		},
		{
			name: "implicit MX with insecure A",
			setup: func(z *testnet.Zone) {
				z.Add("dest.test. 300 IN A 127.0.0.11")
			},
			domain: "dest.test", host: "dest.test", tlsa: "_25._tcp.dest.test.", want: KindOpportunistic, queries: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t)
			tt.setup(e.zone)
			e.zone.AddRR(tlsaRR(tt.tlsa, 300, 3, 1, 1, cert.Leaf))
			hp, err := e.hostPolicy(t, tt.domain, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if hp.Kind != tt.want {
				t.Errorf("kind %s (%s), want %s", hp.Kind, hp.Reason, tt.want)
			}
			if n := e.srv.QueryCount(tt.tlsa, dns.TypeTLSA); n != tt.queries {
				t.Errorf("%d TLSA queries for %s, want %d", n, tt.tlsa, tt.queries)
			}
			if got := len(e.tlsaQueries()); got != tt.queries {
				t.Errorf("TLSA queries %v, want %d", e.tlsaQueries(), tt.queries)
			}
			if tt.want == KindOpportunistic && (hp.RequireTLS || hp.Authenticated || hp.TLSA != nil) {
				t.Errorf("no-DANE policy %+v", hp)
			}
		})
	}
}

// TestDANE01_DestinationFlags: ForHost itself makes no TLSA query when the
// caller says the MX RRset or the host's addresses are insecure.
func TestDANE01_DestinationFlags(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	for _, d := range []Destination{
		{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: false, HostSecure: true},
		{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: false},
		{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: false, HostSecure: false},
	} {
		hp, err := e.p.ForHost(context.Background(), d)
		if err != nil || hp.Kind != KindOpportunistic || hp.TLSA != nil {
			t.Errorf("%+v: %+v, %v; want opportunistic", d, hp, err)
		}
	}
	if q := e.tlsaQueries(); len(q) != 0 {
		t.Errorf("TLSA queries %v, want none", q)
	}
	hp, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindDANE {
		t.Errorf("all secure: %+v, %v; want dane", hp, err)
	}
}

func TestDANE01_DisabledMakesNoTLSAQuery(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	e.p = NewPolicy(PolicyConfig{Resolver: e.r, DANE: false})
	hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if hp.Kind != KindOpportunistic || !strings.Contains(hp.Reason, "disabled") {
		t.Errorf("policy %+v, want opportunistic because DANE is disabled", hp)
	}
	if q := e.tlsaQueries(); len(q) != 0 {
		t.Errorf("TLSA queries %v with DANE disabled", q)
	}
	// A dane-only route cannot be met with DANE disabled.
	if _, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", Security: SecurityDANEOnly, MXSecure: true, HostSecure: true}); err == nil {
		t.Error("dane-only met with DANE disabled")
	}
}

func TestDANE02_CNAMEExpandedNameFirst(t *testing.T) {
	ca := testnet.NewCA(t)
	certA := ca.Issue("mail.hoster.test")
	certB := ca.Issue("mx1.dest.test")
	base := []string{
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN CNAME mail.hoster.test.",
		"mail.hoster.test. 300 IN A 127.0.0.11",
	}
	expanded := "_25._tcp.mail.hoster.test."
	tests := []struct {
		name      string
		at        []string // owners of TLSA records
		signed    []string
		wantKind  Kind
		wantBase  string
		wantCert  tls.Certificate
		wantQuery []string
	}{
		{
			name: "records at both names: the expanded name wins",
			at:   []string{expanded, tlsaName}, signed: []string{"dest.test.", "hoster.test."},
			wantKind: KindDANE, wantBase: "mail.hoster.test", wantCert: certA,
			wantQuery: []string{expanded},
		},
		{
			name: "records only at the expanded name",
			at:   []string{expanded}, signed: []string{"dest.test.", "hoster.test."},
			wantKind: KindDANE, wantBase: "mail.hoster.test", wantCert: certA,
			wantQuery: []string{expanded},
		},
		{
			name: "records only at the original name",
			at:   []string{tlsaName}, signed: []string{"dest.test.", "hoster.test."},
			wantKind: KindDANE, wantBase: "mx1.dest.test", wantCert: certB,
			wantQuery: []string{expanded, tlsaName},
		},
		{
			name: "no records at all",
			at:   nil, signed: []string{"dest.test.", "hoster.test."},
			wantKind: KindOpportunistic, wantQuery: []string{expanded, tlsaName},
		},
		{
			name: "insecure CNAME target: no DANE, no query",
			at:   []string{expanded, tlsaName}, signed: []string{"dest.test."},
			wantKind: KindOpportunistic, wantQuery: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t, base...)
			for _, s := range tt.signed {
				e.zone.Sign(s)
			}
			for _, owner := range tt.at {
				c := certB
				if owner == expanded {
					c = certA
				}
				e.zone.AddRR(tlsaRR(owner, 300, 3, 1, 1, c.Leaf))
			}
			hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
			if err != nil {
				t.Fatal(err)
			}
			if hp.Kind != tt.wantKind {
				t.Fatalf("kind %s (%s), want %s", hp.Kind, hp.Reason, tt.wantKind)
			}
			if q := e.tlsaQueries(); !slices.Equal(q, tt.wantQuery) {
				t.Errorf("TLSA queries %v, want %v", q, tt.wantQuery)
			}
			if tt.wantKind != KindDANE {
				return
			}
			if got := strings.TrimSuffix(hp.TLSA.BaseDomain, "."); got != tt.wantBase {
				t.Errorf("base domain %q, want %q", hp.TLSA.BaseDomain, tt.wantBase)
			}
			if hp.TLSA.Name != "_25._tcp."+tt.wantBase+"." {
				t.Errorf("TLSA name %q", hp.TLSA.Name)
			}
			// DANE11: SNI is the TLSA base domain.
			if hp.TLSConfig.ServerName != tt.wantBase {
				t.Errorf("SNI %q, want %q", hp.TLSConfig.ServerName, tt.wantBase)
			}
			sni, err := handshake(t, hp.TLSConfig, serverConfig(tt.wantCert))
			if err != nil {
				t.Errorf("handshake with the certificate of the base domain's records: %v", err)
			}
			if sni != tt.wantBase {
				t.Errorf("server saw SNI %q, want %q", sni, tt.wantBase)
			}
		})
	}
}

// TestDANE02_PortInQueryName: the TLSA query names the port.
func TestDANE02_PortInQueryName(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR("_2525._tcp.mx1.dest.test.", 300, 3, 1, 1, cert.Leaf))
	hp, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test", Port: 2525, MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindDANE || hp.TLSA.Name != "_2525._tcp.mx1.dest.test." {
		t.Fatalf("port 2525: %+v, %v", hp, err)
	}
	hp, err = e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic {
		t.Fatalf("port 25: %+v, %v", hp, err)
	}
	if q := e.tlsaQueries(); !slices.Equal(q, []string{"_2525._tcp.mx1.dest.test.", tlsaName}) {
		t.Errorf("TLSA queries %v", q)
	}
}

func TestDANE03_SecureUsableRecordsMandateDANE(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if hp.Kind != KindDANE || !hp.RequireTLS || !hp.Authenticated || hp.PlainFallback {
		t.Fatalf("policy %+v, want mandatory authenticated DANE without fallback", hp)
	}
	c := hp.TLSConfig
	if c == nil || c.VerifyConnection == nil || c.MinVersion < tls.VersionTLS12 || c.ServerName != "mx1.dest.test" {
		t.Fatalf("TLS config %+v", c)
	}
	if hp.TLSA == nil || hp.TLSA.Name != tlsaName || !hp.TLSA.Usable || len(hp.TLSA.Records) != 1 {
		t.Errorf("TLSA %+v", hp.TLSA)
	}
	if hp.Verified() != "" {
		t.Errorf("Verified %q before any handshake", hp.Verified())
	}
	sni, err := handshake(t, c, serverConfig(cert))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if sni != "mx1.dest.test" {
		t.Errorf("SNI %q", sni)
	}
	if !strings.HasPrefix(hp.Verified(), "DANE-EE 3 1 1") {
		t.Errorf("Verified %q", hp.Verified())
	}
	// A certificate that does not match fails the handshake.
	hp2, _ := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	_, err = handshake(t, hp2.TLSConfig, serverConfig(ca.Issue("mx1.dest.test")))
	var de *DANEError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "TLSA 3 1 1 matched no certificate in the chain") {
		t.Errorf("handshake with another certificate: %v", err)
	}
	if hp2.Verified() != "" {
		t.Errorf("Verified %q after a failed handshake", hp2.Verified())
	}
}

// TestTLS04_DANERequiresTLS12: DANE and dane-unauth never negotiate less
// than TLS 1.2.
func TestTLS04_DANERequiresTLS12(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11", "mx2.dest.test. 300 IN A 127.0.0.12")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	e.zone.AddRR(tlsaRR("_25._tcp.mx2.dest.test.", 300, 1, 1, 1, cert.Leaf))
	old := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	for _, host := range []string{"mx1.dest.test", "mx2.dest.test"} {
		hp, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: host, MXSecure: true, HostSecure: true})
		if err != nil {
			t.Fatal(err)
		}
		if hp.TLSConfig.MinVersion < tls.VersionTLS12 {
			t.Errorf("%s (%s): MinVersion %x", host, hp.Kind, hp.TLSConfig.MinVersion)
		}
		if _, err := handshake(t, hp.TLSConfig, old); err == nil {
			t.Errorf("%s (%s): handshake with a TLS 1.1 server succeeded", host, hp.Kind)
		}
	}
}

func TestDANE04_NoDANEWithoutSecureRecords(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	tests := []struct {
		name  string
		setup func(z *testnet.Zone)
	}{
		{"secure NXDOMAIN", func(z *testnet.Zone) {}},
		{"secure NODATA", func(z *testnet.Zone) {
			z.Add(tlsaName + ` 300 IN TXT "not a TLSA record"`)
		}},
		{"secure empty non-terminal", func(z *testnet.Zone) {
			z.Add("x." + tlsaName + ` 300 IN TXT "below"`)
		}},
		{"TLSA in an insecure zone, through a CNAME", func(z *testnet.Zone) {
			z.Add(tlsaName + " 300 IN CNAME _25._tcp.mx.unsigned.test.")
			z.AddRR(tlsaRR("_25._tcp.mx.unsigned.test.", 300, 3, 1, 1, cert.Leaf))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
			e.zone.Sign("dest.test.")
			tt.setup(e.zone)
			hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
			if err != nil {
				t.Fatal(err)
			}
			if hp.Kind != KindOpportunistic || hp.RequireTLS || hp.TLSA != nil || !hp.PlainFallback {
				t.Errorf("policy %+v, want opportunistic", hp)
			}
			if e.srv.QueryCount(tlsaName, dns.TypeTLSA) != 1 {
				t.Errorf("TLSA queries %v, want one for %s", e.tlsaQueries(), tlsaName)
			}
		})
	}
	// An insecure TLSA answer when the caller vouches for the MX and the
	// host (for example a configured next hop in an unsigned zone).
	e := newDANEEnv(t, "gw.unsigned.test. 300 IN A 127.0.0.11")
	e.zone.AddRR(tlsaRR("_25._tcp.gw.unsigned.test.", 300, 3, 1, 1, cert.Leaf))
	hp, err := e.p.ForHost(context.Background(), Destination{Domain: "partner.test", Host: "gw.unsigned.test", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic || hp.TLSA != nil {
		t.Errorf("insecure TLSA: %+v, %v; want opportunistic", hp, err)
	}
}

func TestDANE05_TLSALookupFailureSkipsHost(t *testing.T) {
	tests := []struct {
		name  string
		setup func(z *testnet.Zone)
	}{
		{"SERVFAIL", func(z *testnet.Zone) { z.Fail(tlsaName, dns.TypeTLSA, dns.RcodeServerFailure) }},
		{"REFUSED", func(z *testnet.Zone) { z.Fail(tlsaName, dns.TypeTLSA, dns.RcodeRefused) }},
		{"timeout", func(z *testnet.Zone) { z.Drop(tlsaName, dns.TypeTLSA) }},
		{"SERVFAIL at the end of a CNAME", func(z *testnet.Zone) {
			z.Add(tlsaName + " 300 IN CNAME _25._tcp.mx.hoster.test.")
			z.Fail("_25._tcp.mx.hoster.test.", dns.TypeTLSA, dns.RcodeServerFailure)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
			e.zone.Sign("dest.test.")
			e.zone.Sign("hoster.test.")
			tt.setup(e.zone)
			hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
			if err == nil {
				t.Fatalf("policy %+v, want an error (host skipped)", hp)
			}
			if !strings.Contains(err.Error(), "TLSA lookup") {
				t.Errorf("error %q does not say the TLSA lookup failed", err)
			}
			// DNS02: a failure is never "no records"; it is temporary.
			if !IsTemporary(err) {
				t.Errorf("IsTemporary(%v) = false", err)
			}
			// Also with a dane-only route or a route demanding less.
			if _, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true, Security: SecurityDANEOnly}); err == nil {
				t.Error("dane-only: no error")
			}
		})
	}
}

// TestDANE05_ExpandedNameFailureIsNotSkipped: with a secure CNAME, a failed
// TLSA lookup at the expanded name fails the host even when the original
// name has records: the failure is never taken for "no records".
func TestDANE05_ExpandedNameFailureIsNotSkipped(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN CNAME mail.hoster.test.",
		"mail.hoster.test. 300 IN A 127.0.0.11",
	)
	e.zone.Sign("dest.test.")
	e.zone.Sign("hoster.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	e.zone.Fail("_25._tcp.mail.hoster.test.", dns.TypeTLSA, dns.RcodeServerFailure)
	if hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test"); err == nil {
		t.Errorf("policy %+v, want an error", hp)
	}
}

func TestDANE07_OnlyUnusableRecords(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	tests := []struct {
		name string
		rrs  []*dns.TLSA
	}{
		{"usages 0 and 1", []*dns.TLSA{
			tlsaRR(tlsaName, 300, UsagePKIXTA, SelectorCert, MatchSHA256, ca.Certificate()),
			tlsaRR(tlsaName, 300, UsagePKIXEE, SelectorSPKI, MatchSHA256, cert.Leaf),
		}},
		{"unknown selector and matching type", []*dns.TLSA{
			rawTLSA(tlsaName, 300, UsageDANEEE, 3, MatchSHA256, strings.Repeat("11", 32)),
			rawTLSA(tlsaName, 300, UsageDANEEE, SelectorSPKI, 9, strings.Repeat("11", 32)),
		}},
		{"bad digest length", []*dns.TLSA{
			rawTLSA(tlsaName, 300, UsageDANEEE, SelectorSPKI, MatchSHA256, strings.Repeat("11", 20)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
			e.zone.Sign("dest.test.")
			for _, rr := range tt.rrs {
				e.zone.AddRR(rr)
			}
			hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
			if err != nil {
				t.Fatal(err)
			}
			if hp.Kind != KindDANEUnauth || !hp.RequireTLS || hp.Authenticated || hp.PlainFallback {
				t.Fatalf("policy %+v, want mandatory unauthenticated TLS", hp)
			}
			if hp.TLSA == nil || hp.TLSA.Usable || len(hp.TLSA.Records) != len(tt.rrs) {
				t.Errorf("TLSA %+v", hp.TLSA)
			}
			if hp.TLSConfig == nil || hp.TLSConfig.MinVersion < tls.VersionTLS12 || hp.TLSConfig.ServerName != "mx1.dest.test" {
				t.Errorf("TLS config %+v", hp.TLSConfig)
			}
			// Any certificate will do.
			sni, err := handshake(t, hp.TLSConfig, serverConfig(testnet.SelfSigned(t, "unrelated.example")))
			if err != nil {
				t.Errorf("handshake with an unrelated self-signed certificate: %v", err)
			}
			if sni != "mx1.dest.test" {
				t.Errorf("SNI %q", sni)
			}
			if hp.Verified() != "" {
				t.Errorf("Verified %q for unauthenticated TLS", hp.Verified())
			}
			// A dane-only route never gets less than mandatory TLS here.
			hp2, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true, Security: SecurityDANEOnly})
			if err == nil && (!hp2.RequireTLS || hp2.Authenticated) {
				t.Errorf("dane-only with unusable records: %+v", hp2)
			}
			t.Logf("dane-only route with only unusable records: kind %q, err %v", hp2.Kind, err)
		})
	}
}

// TestDANE11_SNIIsBaseDomain: SNI is sent for DANE, dane-unauth and for the
// original MX name when the records are there.
func TestDANE11_SNIIsBaseDomain(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.IssueWith(testnet.IssueOptions{Names: []string{"mail.hoster.test"}, IncludeIntermediate: true})
	e := newDANEEnv(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN CNAME mail.hoster.test.",
		"mail.hoster.test. 300 IN A 127.0.0.11",
	)
	e.zone.Sign("dest.test.")
	e.zone.Sign("hoster.test.")
	e.zone.AddRR(tlsaRR("_25._tcp.mail.hoster.test.", 300, 2, 0, 1, ca.Intermediate()))
	hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if err != nil {
		t.Fatal(err)
	}
	sni, err := handshake(t, hp.TLSConfig, serverConfig(cert))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if sni != "mail.hoster.test" {
		t.Errorf("SNI %q, want the TLSA base domain mail.hoster.test", sni)
	}
	if !strings.Contains(hp.Verified(), "DANE-TA 2 0 1") || !strings.Contains(hp.Verified(), "mail.hoster.test") {
		t.Errorf("Verified %q", hp.Verified())
	}
}

// TestDANE10_ReferenceIdentifiersFromForHost: the policy's verifier accepts
// a DANE-TA certificate for the base domain, the MX host or the recipient
// domain, and nothing else.
func TestDANE10_ReferenceIdentifiersFromForHost(t *testing.T) {
	ca := testnet.NewCA(t)
	e := newDANEEnv(t,
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN CNAME mail.hoster.test.",
		"mail.hoster.test. 300 IN A 127.0.0.11",
	)
	e.zone.Sign("dest.test.")
	e.zone.Sign("hoster.test.")
	e.zone.AddRR(tlsaRR("_25._tcp.mail.hoster.test.", 300, 2, 0, 1, ca.Intermediate()))
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"mail.hoster.test", true},
		{"mx1.dest.test", true},
		{"dest.test", true},
		{"*.dest.test", true},
		{"*.hoster.test", true},
		{"hoster.test", false},
		{"other.dest.test", false},
		{"*.mail.hoster.test", false},
		{"other.test", false},
	} {
		hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
		if err != nil {
			t.Fatal(err)
		}
		cert := ca.IssueWith(testnet.IssueOptions{Names: []string{tc.name}, IncludeIntermediate: true})
		_, err = handshake(t, hp.TLSConfig, serverConfig(cert))
		if (err == nil) != tc.ok {
			t.Errorf("certificate for %s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestDANE14_TLSANotCachedPastTTL(t *testing.T) {
	ca := testnet.NewCA(t)
	certA := ca.Issue("mx1.dest.test")
	certB := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 1, 3, 1, 1, certA.Leaf))
	dest := Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true}
	matches := func(cert tls.Certificate) bool {
		t.Helper()
		hp, err := e.p.ForHost(context.Background(), dest)
		if err != nil || hp.Kind != KindDANE {
			t.Fatalf("ForHost: %+v, %v", hp, err)
		}
		_, err = handshake(t, hp.TLSConfig, serverConfig(cert))
		return err == nil
	}
	if !matches(certA) {
		t.Fatal("certificate A does not match its record")
	}
	// Key rollover: record B replaces record A.
	e.zone.Remove(tlsaName, dns.TypeTLSA)
	e.zone.AddRR(tlsaRR(tlsaName, 1, 3, 1, 1, certB.Leaf))
	// Within the TTL a cached answer may be used...
	e.clock.Advance(500 * time.Millisecond)
	_ = matches(certA)
	// ...but never past it.
	e.clock.Advance(501 * time.Millisecond)
	if !matches(certB) {
		t.Error("after the TTL, the new record is not used")
	}
	if matches(certA) {
		t.Error("after the TTL, the old record still authenticates")
	}
	if n := e.srv.QueryCount(tlsaName, dns.TypeTLSA); n < 2 {
		t.Errorf("%d TLSA queries, want a new one after the TTL", n)
	}

	// TTL 0: looked up for every connection.
	e.zone.Remove(tlsaName, dns.TypeTLSA)
	e.zone.AddRR(tlsaRR(tlsaName, 0, 3, 1, 1, certA.Leaf))
	e.clock.Advance(2 * time.Second)
	before := e.srv.QueryCount(tlsaName, dns.TypeTLSA)
	for range 3 {
		if !matches(certA) {
			t.Fatal("TTL 0 record does not match")
		}
	}
	if n := e.srv.QueryCount(tlsaName, dns.TypeTLSA) - before; n != 3 {
		t.Errorf("%d TLSA queries for 3 policies with TTL 0, want 3", n)
	}

	// A record removed: after the TTL, no DANE any more.
	e.zone.Remove(tlsaName, dns.TypeTLSA)
	e.zone.AddRR(tlsaRR(tlsaName, 1, 3, 1, 1, certA.Leaf))
	e.clock.Advance(2 * time.Second)
	_ = matches(certA)
	e.zone.Remove(tlsaName, dns.TypeTLSA)
	e.clock.Advance(1001 * time.Millisecond)
	hp, err := e.p.ForHost(context.Background(), dest)
	if err != nil || hp.Kind != KindOpportunistic {
		t.Errorf("after removal and TTL: %+v, %v", hp, err)
	}
}

// TestDANE14_CNAMETTLBoundsTLSA: a TLSA RRset reached through a CNAME is
// cached no longer than the CNAME (DNS04).
func TestDANE14_CNAMETTLBoundsTLSA(t *testing.T) {
	ca := testnet.NewCA(t)
	certA := ca.Issue("mx1.dest.test")
	certB := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11", tlsaName+" 1 IN CNAME _25._tcp.a.tlsa.test.")
	e.zone.Sign("dest.test.")
	e.zone.Sign("tlsa.test.")
	e.zone.AddRR(tlsaRR("_25._tcp.a.tlsa.test.", 300, 3, 1, 1, certA.Leaf))
	e.zone.AddRR(tlsaRR("_25._tcp.b.tlsa.test.", 300, 3, 1, 1, certB.Leaf))
	dest := Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true}
	hp, err := e.p.ForHost(context.Background(), dest)
	if err != nil || hp.Kind != KindDANE {
		t.Fatalf("%+v, %v", hp, err)
	}
	e.zone.Remove(tlsaName, dns.TypeCNAME)
	e.zone.Add(tlsaName + " 1 IN CNAME _25._tcp.b.tlsa.test.")
	e.clock.Advance(1001 * time.Millisecond)
	hp, err = e.p.ForHost(context.Background(), dest)
	if err != nil || hp.Kind != KindDANE {
		t.Fatalf("%+v, %v", hp, err)
	}
	if _, err := handshake(t, hp.TLSConfig, serverConfig(certB)); err != nil {
		t.Errorf("after the CNAME's TTL the records at its new target are not used: %v", err)
	}
}

// ---------------------------------------------------------------------------
// DNS01–DNS04 as far as TLSA lookups go

func TestDNS01_TLSAQueriesAskForDNSSEC(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	if hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test"); err != nil || hp.Kind != KindDANE {
		t.Fatalf("%+v, %v", hp, err)
	}
	n := 0
	for _, q := range e.srv.Queries() {
		if !q.DO || !q.AD {
			t.Errorf("query %v: DO=%v AD=%v", q, q.DO, q.AD)
		}
		if q.Type == dns.TypeTLSA {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d TLSA queries", n)
	}
	// The same TLSA records without AD are not DANE (DNS01: insecure).
	e2 := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11")
	e2.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	hp, err := e2.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic {
		t.Errorf("TLSA without AD: %+v, %v", hp, err)
	}
}

func TestDNS02_TLSAFailureNeverNoRecords(t *testing.T) {
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.Fail(tlsaName, dns.TypeTLSA, dns.RcodeServerFailure)
	dest := Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true}
	for i := range 2 { // not cached as "no records" either
		hp, err := e.p.ForHost(context.Background(), dest)
		var le *LookupError
		if !errors.As(err, &le) || le.Rcode != dns.RcodeServerFailure {
			t.Fatalf("round %d: %+v, %v; want a SERVFAIL LookupError", i, hp, err)
		}
	}
	if n := e.srv.QueryCount(tlsaName, dns.TypeTLSA); n != 2 {
		t.Errorf("%d TLSA queries, want 2 (failures are not cached)", n)
	}
}

func TestDNS03_UntrustedResolverNeverDANE(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	// Tests can only reach loopback servers, which are trusted; the trust
	// decision is overridden as NewResolver would make it for a remote
	// resolver without trust_ad.
	e.r.trustAD = false
	if e.r.TrustsAD() {
		t.Fatal("override failed")
	}
	// The whole way: the MX answer (AD=1 from the server) counts as
	// insecure, and no TLSA query is made.
	hp, err := e.hostPolicy(t, "dest.test", "mx1.dest.test")
	if err != nil || hp.Kind != KindOpportunistic {
		t.Errorf("policy %+v, %v; want opportunistic", hp, err)
	}
	// Even when a caller claims the MX and host are secure.
	hp, err = e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic || !strings.Contains(hp.Reason, "not trusted") {
		t.Errorf("policy %+v, %v; want opportunistic because AD is not trusted", hp, err)
	}
	if q := e.tlsaQueries(); len(q) != 0 {
		t.Errorf("TLSA queries %v with an untrusted resolver", q)
	}
	// And a resolver built for a remote address without trust_ad.
	remote := NewResolver(ResolverConfig{Addr: "192.0.2.53:53", Logger: discardLogger()})
	p := NewPolicy(PolicyConfig{Resolver: remote, DANE: true})
	hp, err = p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic {
		t.Errorf("remote untrusted resolver: %+v, %v", hp, err)
	}
	// Without any resolver, no DANE either.
	hp, err = NewPolicy(PolicyConfig{DANE: true}).ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindOpportunistic {
		t.Errorf("no resolver: %+v, %v", hp, err)
	}
}

func TestDNS04_TLSAChainWeakestLink(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	tests := []struct {
		name   string
		signed []string
		want   Kind
	}{
		{"all links signed", []string{"dest.test.", "tlsa.test.", "deep.test."}, KindDANE},
		{"middle link unsigned", []string{"dest.test.", "deep.test."}, KindOpportunistic},
		{"last link unsigned", []string{"dest.test.", "tlsa.test."}, KindOpportunistic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDANEEnv(t,
				"mx1.dest.test. 300 IN A 127.0.0.11",
				tlsaName+" 300 IN CNAME _25._tcp.mx.tlsa.test.",
				"_25._tcp.mx.tlsa.test. 300 IN CNAME _25._tcp.mx.deep.test.",
			)
			for _, s := range tt.signed {
				e.zone.Sign(s)
			}
			e.zone.AddRR(tlsaRR("_25._tcp.mx.deep.test.", 300, 3, 1, 1, cert.Leaf))
			hp, err := e.p.ForHost(context.Background(), Destination{Domain: "dest.test", Host: "mx1.dest.test.", MXSecure: true, HostSecure: true})
			if err != nil || hp.Kind != tt.want {
				t.Errorf("%+v, %v; want %s", hp, err, tt.want)
			}
			if tt.want == KindDANE && strings.TrimSuffix(hp.TLSA.BaseDomain, ".") != "mx1.dest.test" {
				// The TLSA base domain is the name queried, not the alias
				// target of the TLSA record.
				t.Errorf("base domain %q", hp.TLSA.BaseDomain)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Route security dane-only at the policy level

func TestDANE03_DANEOnlyRoute(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("mx1.dest.test")
	e := newDANEEnv(t, "mx1.dest.test. 300 IN A 127.0.0.11", "mx2.dest.test. 300 IN A 127.0.0.12")
	e.zone.Sign("dest.test.")
	e.zone.AddRR(tlsaRR(tlsaName, 300, 3, 1, 1, cert.Leaf))
	ctx := context.Background()
	hp, err := e.p.ForHost(ctx, Destination{Domain: "dest.test", Host: "mx1.dest.test.", Security: SecurityDANEOnly, MXSecure: true, HostSecure: true})
	if err != nil || hp.Kind != KindDANE {
		t.Errorf("dane-only with DANE: %+v, %v", hp, err)
	}
	_, err = e.p.ForHost(ctx, Destination{Domain: "dest.test", Host: "mx2.dest.test.", Security: SecurityDANEOnly, MXSecure: true, HostSecure: true})
	if err == nil || !strings.Contains(err.Error(), "dane-only") {
		t.Errorf("dane-only without TLSA: %v", err)
	}
	_, err = e.p.ForHost(ctx, Destination{Domain: "dest.test", Host: "mx1.dest.test.", Security: SecurityDANEOnly, MXSecure: false, HostSecure: true})
	if err == nil {
		t.Error("dane-only with an insecure MX: no error")
	}
}

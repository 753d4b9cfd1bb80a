package deliver

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
)

// ---------------------------------------------------------------------------
// DANE helpers

// The recipient whom every receiver defers with 451 keeps a message in
// the queue after bob's delivery, so that its attempt records can be read.
const daneLater = "later@dest.test"

var daneLaterReply = rcptReplies(map[string]*smtp.SMTPError{daneLater: reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})

// daneTLSA is a TLSA record for cert under owner, with the association
// data computed as the selector and matching type say.
func daneTLSA(owner string, ttl uint32, usage, sel, mt uint8, cert *x509.Certificate) *dns.TLSA {
	data := cert.Raw
	if sel == 1 {
		data = cert.RawSubjectPublicKeyInfo
	}
	switch mt {
	case 1:
		h := sha256.Sum256(data)
		data = h[:]
	case 2:
		h := sha512.Sum512(data)
		data = h[:]
	}
	return &dns.TLSA{
		Hdr:          dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: ttl},
		Usage:        usage,
		Selector:     sel,
		MatchingType: mt,
		Certificate:  hex.EncodeToString(data),
	}
}

const (
	tlsaMX1 = "_25._tcp.mx1.dest.test."
	tlsaMX2 = "_25._tcp.mx2.dest.test."
)

// oneSignedMX publishes dest.test, DNSSEC-signed, with mx1 (127.0.0.11) as
// its only MX.
func (f *fixture) oneSignedMX() {
	f.zone.Add(
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
	)
	f.zone.Sign("dest.test.")
}

// twoSignedMX is twoMX, DNSSEC-signed.
func (f *fixture) twoSignedMX() {
	f.twoMX()
	f.zone.Sign("dest.test.")
}

// firstRound waits until message id was attempted once (or left the
// queue) and returns its record, nil when it is gone.
func (f *fixture) firstRound(id string) *queue.Message {
	f.t.Helper()
	var rec *queue.Message
	f.waitFor(func() bool {
		var err error
		rec, err = f.q.Get(id)
		if err != nil {
			rec = nil
			return true
		}
		return len(rec.Attempts) > 0 && !f.q.Leased(id)
	})
	return rec
}

// attemptsAt returns the attempts made at host.
func attemptsAt(rec *queue.Message, host string) []queue.Attempt {
	var out []queue.Attempt
	for _, a := range rec.Attempts {
		if hostName(a) == host {
			out = append(out, a)
		}
	}
	return out
}

// checkSNI checks that every ClientHello the receiver got named want.
func checkSNI(t *testing.T, r *testnet.SMTPReceiver, want string) {
	t.Helper()
	names := r.ServerNames()
	if len(names) == 0 {
		t.Errorf("no TLS handshake seen by %s", r.Addr())
	}
	for _, n := range names {
		if n != want {
			t.Errorf("SNI %q, want %q (all: %q)", n, want, names)
		}
	}
}

// ---------------------------------------------------------------------------
// DANE-EE (DANE09) with SNI (DANE11) and the attempt record (TLS07)

func TestDANE09_EEMatchDelivers(t *testing.T) {
	tests := []struct {
		name string
		cert func(f *fixture) tls.Certificate
		s, m uint8
	}{
		{"3 1 1 SPKI SHA-256", func(f *fixture) tls.Certificate { return f.ca.Issue("mx1.dest.test") }, 1, 1},
		{"3 0 2 full cert SHA-512", func(f *fixture) tls.Certificate { return f.ca.Issue("mx1.dest.test") }, 0, 2},
		{"3 0 0 full cert", func(f *fixture) tls.Certificate { return f.ca.Issue("mx1.dest.test") }, 0, 0},
		{"3 1 1 expired, wrongly named certificate", func(f *fixture) tls.Certificate {
			past := time.Now().Add(-72 * time.Hour)
			return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"wrong.example"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
		}, 1, 1},
		{"3 1 1 self-signed certificate", func(f *fixture) tls.Certificate { return testnet.SelfSigned(t, "whatever.example") }, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneSignedMX()
			cert := tt.cert(f)
			f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, tt.s, tt.m, cert.Leaf))
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			got := mx1.Messages()
			if len(got) != 1 || !got[0].TLS || got[0].TLSVersion < tls.VersionTLS12 {
				t.Fatalf("received %+v, want one message over TLS 1.2+", got)
			}
			// DANE11: SNI is the TLSA base domain, here the MX host.
			if got[0].ServerName != "mx1.dest.test" {
				t.Errorf("SNI %q, want mx1.dest.test", got[0].ServerName)
			}
			checkSNI(t, mx1, "mx1.dest.test")
			a := rec.Attempts[0]
			if a.Policy != "dane" || a.Host != "mx1.dest.test" || a.IP != "127.0.0.11" || a.TLSVersion == "" {
				t.Errorf("attempt %+v", a)
			}
			if want := "ok: DANE-EE 3 " + string(rune('0'+tt.s)) + " " + string(rune('0'+tt.m)); !strings.HasPrefix(a.Verification, want) {
				t.Errorf("verification %q, want it to start with %q", a.Verification, want)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// DANE12: a host failing DANE makes the relay try the next MX

func TestDANE12_MismatchOnFirstMXDeliversAtSecond(t *testing.T) {
	f := newEngineFixture(t)
	f.twoSignedMX()
	cert1 := f.ca.Issue("mx1.dest.test")
	cert2 := f.ca.Issue("mx2.dest.test")
	other := testnet.SelfSigned(t, "mx1.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, other.Leaf))
	f.zone.AddRR(daneTLSA(tlsaMX2, 300, 3, 1, 1, cert2.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert1, RcptReply: daneLaterReply})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &cert2, RcptReply: daneLaterReply})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", daneLater)
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
	if n := len(mx1.Messages()); n != 0 {
		t.Errorf("mx1 failed DANE but got %d messages", n)
	}
	if mx1.Connections() != 1 {
		t.Errorf("mx1: %d connections, want 1 (no cleartext retry)", mx1.Connections())
	}
	if got := mx2.Messages(); len(got) != 1 || !got[0].TLS || !slices.Equal(got[0].To, []string{"bob@dest.test"}) {
		t.Errorf("mx2 received %+v", got)
	}
	first := attemptsAt(rec, "mx1.dest.test")
	if len(first) != 1 {
		t.Fatalf("attempts at mx1: %+v", first)
	}
	a := first[0]
	if a.Policy != "dane" || a.Result != "deferred" {
		t.Errorf("mx1 attempt %+v", a)
	}
	if !strings.Contains(a.Error, "TLSA 3 1 1 matched no certificate in the chain") {
		t.Errorf("mx1 attempt error %q, want the DANE failure", a.Error)
	}
	if !strings.HasPrefix(a.Verification, "failed") {
		t.Errorf("mx1 verification %q", a.Verification)
	}
	second := attemptsAt(rec, "mx2.dest.test")
	if len(second) == 0 || second[0].Policy != "dane" || !strings.HasPrefix(second[0].Verification, "ok: DANE-EE") {
		t.Errorf("mx2 attempts %+v", second)
	}
}

func TestDANE12_AllMXFailDANEDefer(t *testing.T) {
	f := newEngineFixture(t)
	f.twoSignedMX()
	cert1 := f.ca.Issue("mx1.dest.test")
	cert2 := f.ca.Issue("mx2.dest.test")
	other := testnet.SelfSigned(t, "x.example")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, other.Leaf))
	f.zone.AddRR(daneTLSA(tlsaMX2, 300, 3, 1, 1, other.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert1})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &cert2})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	if n := len(mx1.Messages()) + len(mx2.Messages()); n != 0 {
		t.Fatalf("%d messages delivered although every MX failed DANE", n)
	}
	if mx1.Connections() != 1 || mx2.Connections() != 1 {
		t.Errorf("connections mx1 %d mx2 %d, want 1 each (no cleartext retry)", mx1.Connections(), mx2.Connections())
	}
	r := rcpt(rec, "bob@dest.test")
	if !strings.Contains(r.LastError, "TLSA 3 1 1 matched no certificate in the chain") {
		t.Errorf("LastError %q", r.LastError)
	}
	for _, a := range rec.Attempts {
		if a.Policy != "dane" || a.Result != "deferred" {
			t.Errorf("attempt %+v", a)
		}
	}
	if d := f.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs for a deferral", len(d))
	}
	// At the end of the queue lifetime the DSN says why.
	f.clock.advance(f.opts.QueueLifetime + time.Minute)
	f.waitGone(m.ID)
	if n := len(mx1.Messages()) + len(mx2.Messages()); n != 0 {
		t.Fatalf("%d messages delivered on the last try", n)
	}
	d := f.oneDSN()
	dr := dsnRecipient(t, d.rep, "bob@dest.test")
	if dr["Action"] != "failed" {
		t.Errorf("DSN recipient %v", dr)
	}
	if !strings.Contains(dr["Diagnostic-Code"]+d.rep.Human, "TLSA 3 1 1 matched no certificate in the chain") {
		t.Errorf("DSN does not say why:\n%v\n%s", dr, d.rep.Human)
	}
}

// ---------------------------------------------------------------------------
// DANE08: STARTTLS and a successful handshake are mandatory

func TestDANE08_NoSTARTTLSNeverCleartext(t *testing.T) {
	tests := []struct {
		name    string
		rcv     func(f *fixture) testnet.SMTPOptions
		wantErr []string
	}{
		{"STARTTLS not offered", func(*fixture) testnet.SMTPOptions { return testnet.SMTPOptions{} },
			[]string{"STARTTLS not offered", "TLSA"}},
		{"handshake fails", func(*fixture) testnet.SMTPOptions { return testnet.SMTPOptions{TLSConfig: &tls.Config{}} },
			[]string{"TLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneSignedMX()
			cert := f.ca.Issue("mx1.dest.test")
			f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert.Leaf))
			mx1 := f.receiver("127.0.0.11", tt.rcv(f))
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test")
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
			if n := len(mx1.Messages()); n != 0 {
				t.Fatalf("%d messages delivered in cleartext to a DANE host", n)
			}
			if mx1.Connections() != 1 {
				t.Errorf("%d connections, want 1: no cleartext retry", mx1.Connections())
			}
			r := rcpt(rec, "bob@dest.test")
			for _, w := range tt.wantErr {
				if !strings.Contains(r.LastError, w) {
					t.Errorf("LastError %q, want it to contain %q", r.LastError, w)
				}
			}
			for _, a := range rec.Attempts {
				if a.Policy != "dane" || a.Result != "deferred" {
					t.Errorf("attempt %+v", a)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// DANE07: only unusable records: TLS mandatory, not authenticated

func TestDANE07_OnlyUnusableRecords(t *testing.T) {
	t.Run("no STARTTLS", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneSignedMX()
		cert := f.ca.Issue("mx1.dest.test")
		f.zone.AddRR(daneTLSA(tlsaMX1, 300, 1, 1, 1, cert.Leaf), daneTLSA(tlsaMX1, 300, 0, 0, 1, f.ca.Certificate()))
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if n := len(mx1.Messages()); n != 0 {
			t.Fatalf("%d messages delivered in cleartext", n)
		}
		if mx1.Connections() != 1 {
			t.Errorf("%d connections, want 1", mx1.Connections())
		}
		if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, "STARTTLS not offered") {
			t.Errorf("LastError %q", r.LastError)
		}
		if a := rec.Attempts[0]; a.Policy != "dane-unauth" {
			t.Errorf("attempt policy %q, want dane-unauth", a.Policy)
		}
	})
	t.Run("STARTTLS with any certificate", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneSignedMX()
		cert := f.ca.Issue("mx1.dest.test")
		f.zone.AddRR(daneTLSA(tlsaMX1, 300, 1, 1, 1, cert.Leaf), daneTLSA(tlsaMX1, 300, 3, 9, 1, cert.Leaf))
		served := testnet.SelfSigned(t, "unrelated.example")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &served, RcptReply: daneLaterReply})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test", daneLater)
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
		got := mx1.Messages()
		if len(got) != 1 || !got[0].TLS || got[0].TLSVersion < tls.VersionTLS12 {
			t.Fatalf("received %+v", got)
		}
		checkSNI(t, mx1, "mx1.dest.test")
		a := rec.Attempts[0]
		if a.Policy != "dane-unauth" || strings.HasPrefix(a.Verification, "ok") {
			t.Errorf("attempt policy %q verification %q, want dane-unauth, not verified", a.Policy, a.Verification)
		}
	})
}

// ---------------------------------------------------------------------------
// DANE05: a failed TLSA lookup skips the host

func TestDANE05_TLSAServfailSkipsHost(t *testing.T) {
	f := newEngineFixture(t)
	f.twoSignedMX()
	cert1 := f.ca.Issue("mx1.dest.test")
	cert2 := f.ca.Issue("mx2.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert1.Leaf))
	f.zone.AddRR(daneTLSA(tlsaMX2, 300, 3, 1, 1, cert2.Leaf))
	f.zone.Fail(tlsaMX1, dns.TypeTLSA, dns.RcodeServerFailure)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert1, RcptReply: daneLaterReply})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &cert2, RcptReply: daneLaterReply})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", daneLater)
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
	if mx1.Connections() != 0 {
		t.Errorf("%d connections to the host whose TLSA lookup failed", mx1.Connections())
	}
	if got := mx2.Messages(); len(got) != 1 {
		t.Errorf("mx2 received %d messages", len(got))
	}
	first := attemptsAt(rec, "mx1.dest.test")
	if len(first) == 0 || !strings.Contains(first[0].Error, "TLSA lookup") || first[0].IP != "" || first[0].Result != "deferred" {
		t.Errorf("attempts at mx1 %+v, want one skipped for the TLSA lookup", first)
	}
}

func TestDANE05_EveryTLSALookupFailsDefers(t *testing.T) {
	f := newEngineFixture(t)
	f.twoSignedMX()
	f.zone.Fail(tlsaMX1, dns.TypeTLSA, dns.RcodeServerFailure)
	f.zone.Fail(tlsaMX2, dns.TypeTLSA, dns.RcodeServerFailure)
	cert := testnet.SelfSigned(t, "mx.dest.test")
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &cert})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	if n := mx1.Connections() + mx2.Connections(); n != 0 {
		t.Errorf("%d connections although no TLSA lookup succeeded", n)
	}
	if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, "TLSA lookup") {
		t.Errorf("LastError %q", r.LastError)
	}
}

// ---------------------------------------------------------------------------
// DANE01 / DANE04: no DANE without secure MX, addresses and TLSA records

func TestDANE04_NoDANEOpportunisticDelivery(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *fixture, wrong *x509.Certificate)
		// noQuery: no TLSA query at all (DANE01).
		noQuery bool
	}{
		{"insecure MX", func(f *fixture, wrong *x509.Certificate) {
			f.zone.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
			f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, wrong))
		}, true},
		{"secure MX, insecure MX host", func(f *fixture, wrong *x509.Certificate) {
			f.zone.Add("dest.test. 300 IN MX 10 mx1.hoster.test.", "mx1.hoster.test. 300 IN A 127.0.0.11")
			f.zone.Sign("dest.test.")
			f.zone.AddRR(daneTLSA("_25._tcp.mx1.hoster.test.", 300, 3, 1, 1, wrong))
		}, true},
		{"TLSA in an insecure zone", func(f *fixture, wrong *x509.Certificate) {
			f.oneSignedMX()
			f.zone.Add(tlsaMX1 + " 300 IN CNAME _25._tcp.mx1.unsigned.test.")
			f.zone.AddRR(daneTLSA("_25._tcp.mx1.unsigned.test.", 300, 3, 1, 1, wrong))
		}, false},
		{"secure NXDOMAIN for TLSA", func(f *fixture, wrong *x509.Certificate) {
			f.oneSignedMX()
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			wrong := testnet.SelfSigned(t, "wrong.example")
			tt.setup(f, wrong.Leaf)
			cert := f.ca.Issue("mx1.dest.test")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			if got := mx1.Messages(); len(got) != 1 || !got[0].TLS {
				t.Errorf("received %+v, want one message over opportunistic TLS", got)
			}
			if a := rec.Attempts[0]; a.Policy != "opportunistic" {
				t.Errorf("attempt policy %q, want opportunistic", a.Policy)
			}
			n := 0
			for _, q := range f.dns.Queries() {
				if q.Type == dns.TypeTLSA {
					n++
				}
			}
			if tt.noQuery && n != 0 {
				t.Errorf("%d TLSA queries, want none", n)
			}
			if !tt.noQuery && n == 0 {
				t.Errorf("no TLSA query made")
			}
		})
	}
}

// TestDNS02_BogusAddressSkipsHost: a bogus (SERVFAIL) address answer for an
// MX host skips that host; it is never taken as insecure.
func TestDNS02_BogusAddressSkipsHost(t *testing.T) {
	f := newEngineFixture(t)
	f.twoSignedMX()
	cert1 := f.ca.Issue("mx1.dest.test")
	cert2 := f.ca.Issue("mx2.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert1.Leaf))
	f.zone.AddRR(daneTLSA(tlsaMX2, 300, 3, 1, 1, cert2.Leaf))
	f.zone.Fail("mx1.dest.test.", dns.TypeA, dns.RcodeServerFailure)
	f.zone.Fail("mx1.dest.test.", dns.TypeAAAA, dns.RcodeServerFailure)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert1, RcptReply: daneLaterReply})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &cert2, RcptReply: daneLaterReply})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", daneLater)
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
	if mx1.Connections() != 0 {
		t.Errorf("%d connections to the host with bogus addresses", mx1.Connections())
	}
	if len(mx2.Messages()) != 1 {
		t.Errorf("mx2 received %d messages", len(mx2.Messages()))
	}
	if f.dns.QueryCount(tlsaMX1, dns.TypeTLSA) != 0 {
		t.Error("TLSA query for a host without a secure address")
	}
	if a := attemptsAt(rec, "mx2.dest.test"); len(a) == 0 || a[0].Policy != "dane" {
		t.Errorf("mx2 attempts %+v", a)
	}
}

// ---------------------------------------------------------------------------
// DANE10: DANE-TA

func TestDANE10_TrustAnchorDelivery(t *testing.T) {
	tests := []struct {
		name      string
		cert      func(f *fixture) tls.Certificate
		tlsa      func(f *fixture) *dns.TLSA
		delivered bool
		wantErr   string
	}{
		{
			name: "2 0 1 intermediate in the chain",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
			},
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 1, f.ca.Intermediate()) },
			delivered: true,
		},
		{
			name: "2 0 1 intermediate, certificate for the recipient domain",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"dest.test"}, IncludeIntermediate: true})
			},
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 1, f.ca.Intermediate()) },
			delivered: true,
		},
		{
			name: "2 1 1 root in the chain, wildcard certificate",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"*.dest.test"}, IncludeIntermediate: true, IncludeRoot: true})
			},
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 1, 1, f.ca.Certificate()) },
			delivered: true,
		},
		{
			name:      "2 1 0 bare root key not sent, leaf only",
			cert:      func(f *fixture) tls.Certificate { return f.ca.Issue("mx1.dest.test") },
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 1, 0, f.ca.Certificate()) },
			delivered: true,
		},
		{
			// The usual deployment: the server sends leaf and
			// intermediate, the record holds the root's public key.
			name: "2 1 0 bare root key not sent, intermediate sent",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
			},
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 1, 0, f.ca.Certificate()) },
			delivered: true,
		},
		{
			name: "2 0 0 root certificate not sent",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
			},
			tlsa:      func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 0, f.ca.Certificate()) },
			delivered: true,
		},
		{
			name: "wrong name",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"other.test"}, IncludeIntermediate: true})
			},
			tlsa:    func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 1, f.ca.Intermediate()) },
			wantErr: "do not match",
		},
		{
			name: "expired leaf",
			cert: func(f *fixture) tls.Certificate {
				past := time.Now().Add(-72 * time.Hour)
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true, NotBefore: past, NotAfter: past.Add(time.Hour)})
			},
			tlsa:    func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 1, f.ca.Intermediate()) },
			wantErr: "expired",
		},
		{
			name: "2 0 1 of a root the server does not send",
			cert: func(f *fixture) tls.Certificate {
				return f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
			},
			tlsa:    func(f *fixture) *dns.TLSA { return daneTLSA(tlsaMX1, 300, 2, 0, 1, f.ca.Certificate()) },
			wantErr: "TLSA 2 0 1 matched no certificate in the chain",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneSignedMX()
			cert := tt.cert(f)
			f.zone.AddRR(tt.tlsa(f))
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			if !tt.delivered {
				rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
				if n := len(mx1.Messages()); n != 0 {
					t.Fatalf("%d messages delivered", n)
				}
				if mx1.Connections() != 1 {
					t.Errorf("%d connections, want 1", mx1.Connections())
				}
				if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, tt.wantErr) {
					t.Errorf("LastError %q, want it to contain %q", r.LastError, tt.wantErr)
				}
				return
			}
			rec := f.firstRound(m.ID)
			if rec == nil || rcpt(rec, "bob@dest.test").State != queue.StateDelivered {
				var why string
				if rec != nil {
					why = rcpt(rec, "bob@dest.test").LastError
				}
				t.Fatalf("bob not delivered: %s", why)
			}
			rec = f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			if a := rec.Attempts[0]; a.Policy != "dane" || !strings.HasPrefix(a.Verification, "ok: DANE-TA") {
				t.Errorf("attempt policy %q verification %q", a.Policy, a.Verification)
			}
			checkSNI(t, mx1, "mx1.dest.test")
		})
	}
}

// ---------------------------------------------------------------------------
// DANE11: SNI is the TLSA base domain

func TestDANE11_SNIIsTLSABaseDomain(t *testing.T) {
	tests := []struct {
		name  string
		owner string // where the TLSA records are
		sni   string
	}{
		{"records at the CNAME target", "_25._tcp.mail.hoster.test.", "mail.hoster.test"},
		{"records at the original name only", tlsaMX1, "mx1.dest.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.zone.Add(
				"dest.test. 300 IN MX 10 mx1.dest.test.",
				"mx1.dest.test. 300 IN CNAME mail.hoster.test.",
				"mail.hoster.test. 300 IN A 127.0.0.11",
			)
			f.zone.Sign("dest.test.")
			f.zone.Sign("hoster.test.")
			cert := f.ca.IssueWith(testnet.IssueOptions{Names: []string{tt.sni}, IncludeIntermediate: true})
			f.zone.AddRR(daneTLSA(tt.owner, 300, 2, 0, 1, f.ca.Intermediate()))
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			checkSNI(t, mx1, tt.sni)
			if got := mx1.Messages(); len(got) != 1 || got[0].ServerName != tt.sni {
				t.Errorf("received %+v", got)
			}
			if a := rec.Attempts[0]; a.Policy != "dane" || a.Host != "mx1.dest.test" {
				t.Errorf("attempt %+v", a)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// DANE13: one matching record among several

func TestDANE13_OneMatchingRecordAmongMany(t *testing.T) {
	f := newEngineFixture(t)
	f.oneSignedMX()
	cert := f.ca.IssueWith(testnet.IssueOptions{Names: []string{"mx1.dest.test"}, IncludeIntermediate: true})
	other := testnet.SelfSigned(t, "x.example")
	otherCA := testnet.NewCA(t)
	f.zone.AddRR(
		daneTLSA(tlsaMX1, 300, 3, 1, 1, other.Leaf),
		daneTLSA(tlsaMX1, 300, 2, 0, 1, otherCA.Intermediate()),
		daneTLSA(tlsaMX1, 300, 3, 0, 2, other.Leaf),
		daneTLSA(tlsaMX1, 300, 1, 1, 1, cert.Leaf), // unusable
		daneTLSA(tlsaMX1, 300, 3, 1, 2, cert.Leaf), // the one that matches
		daneTLSA(tlsaMX1, 300, 2, 1, 1, otherCA.Certificate()),
	)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m.ID)
}

// ---------------------------------------------------------------------------
// DANE14: TLSA records are not used past their TTL

// TestDANE14_NewRecordsUsedOnRetry: a host that failed DANE is tried again
// with the records published since, once the old ones' TTL ran out.
func TestDANE14_NewRecordsUsedOnRetry(t *testing.T) {
	f := newEngineFixture(t)
	f.oneSignedMX()
	cert := f.ca.Issue("mx1.dest.test")
	other := testnet.SelfSigned(t, "x.example")
	f.zone.AddRR(daneTLSA(tlsaMX1, 1, 3, 1, 1, other.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	// The operator fixes the record; its old version expires after 1s.
	f.zone.Remove(tlsaMX1, dns.TypeTLSA)
	f.zone.AddRR(daneTLSA(tlsaMX1, 1, 3, 1, 1, cert.Leaf))
	want := daneTLSA(tlsaMX1, 1, 3, 1, 1, cert.Leaf).Certificate
	f.waitFor(func() bool {
		a, err := f.opts.Resolver.Lookup(context.Background(), tlsaMX1, dns.TypeTLSA)
		return err == nil && len(a.Records) == 1 && a.Records[0].(*dns.TLSA).Certificate == want
	})
	f.clock.advance(f.opts.FirstRetry * 2)
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m.ID)
}

// TestDANE14_PooledConnectionNotReusedAfterTLSAChange: a connection kept
// open after a DANE-authenticated delivery must not carry mail once the
// TLSA records it was authenticated with have expired and been replaced by
// records the server's certificate does not match.
func TestDANE14_PooledConnectionNotReusedAfterTLSAChange(t *testing.T) {
	f := newEngineFixture(t)
	f.opts.IdleTimeout = time.Minute
	f.oneSignedMX()
	cert := f.ca.Issue("mx1.dest.test")
	other := testnet.SelfSigned(t, "x.example")
	f.zone.AddRR(daneTLSA(tlsaMX1, 1, 3, 1, 1, cert.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
	f.start()
	m1 := f.submit(sender, testBody, "bob@dest.test")
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m1.ID)

	// The records change; wait until the resolver no longer has the old ones.
	f.zone.Remove(tlsaMX1, dns.TypeTLSA)
	f.zone.AddRR(daneTLSA(tlsaMX1, 1, 3, 1, 1, other.Leaf))
	want := daneTLSA(tlsaMX1, 1, 3, 1, 1, other.Leaf).Certificate
	f.waitFor(func() bool {
		a, err := f.opts.Resolver.Lookup(context.Background(), tlsaMX1, dns.TypeTLSA)
		return err == nil && len(a.Records) == 1 && a.Records[0].(*dns.TLSA).Certificate == want
	})

	m2 := f.submit(sender, testBody, "carol@dest.test")
	rec := f.firstRound(m2.ID)
	if n := len(mx1.Messages()); n != 1 {
		t.Fatalf("%d messages delivered; the second went over a connection authenticated with TLSA records that no longer exist (%d connections)", n, mx1.Connections())
	}
	if r := rcpt(rec, "carol@dest.test"); !strings.Contains(r.LastError, "TLSA 3 1 1 matched no certificate in the chain") {
		t.Errorf("LastError %q", r.LastError)
	}
}

// TestDANE10_PooledConnectionNotReusedForAnotherDomain: two domains share an
// MX host with DANE-TA records. The certificate names only the first
// domain, so a DANE-TA check for the second domain fails (none of its
// reference identifiers match). A connection opened and verified for the
// first domain must not carry the second domain's mail.
func TestDANE10_PooledConnectionNotReusedForAnotherDomain(t *testing.T) {
	setup := func(t *testing.T) (*fixture, *testnet.SMTPReceiver) {
		f := newEngineFixture(t)
		f.opts.IdleTimeout = time.Minute
		f.zone.Add(
			"a.test. 300 IN MX 10 mx.hoster.test.",
			"b.test. 300 IN MX 10 mx.hoster.test.",
			"mx.hoster.test. 300 IN A 127.0.0.11",
		)
		for _, apex := range []string{"a.test.", "b.test.", "hoster.test."} {
			f.zone.Sign(apex)
		}
		f.zone.AddRR(daneTLSA("_25._tcp.mx.hoster.test.", 300, 2, 0, 1, f.ca.Intermediate()))
		cert := f.ca.IssueWith(testnet.IssueOptions{Names: []string{"a.test"}, IncludeIntermediate: true})
		mx := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
		f.start()
		return f, mx
	}
	t.Run("second domain alone", func(t *testing.T) {
		f, mx := setup(t)
		m := f.submit(sender, testBody, "bob@b.test")
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@b.test": queue.StateDeferred})
		if len(mx.Messages()) != 0 {
			t.Fatal("delivered for b.test with a certificate that names only a.test")
		}
		if r := rcpt(rec, "bob@b.test"); !strings.Contains(r.LastError, "do not match") {
			t.Errorf("LastError %q", r.LastError)
		}
	})
	t.Run("after a delivery for the first domain", func(t *testing.T) {
		f, mx := setup(t)
		m1 := f.submit(sender, testBody, "bob@a.test")
		mx.WaitMessages(t, 1, 10*time.Second)
		f.waitGone(m1.ID)
		m2 := f.submit(sender, testBody, "bob@b.test")
		f.firstRound(m2.ID)
		if got := mx.Messages(); len(got) != 1 {
			t.Fatalf("%d messages delivered: b.test's mail went over the connection verified for a.test (%d connections)", len(got), mx.Connections())
		}
	})
}

// ---------------------------------------------------------------------------
// DANE01 for an implicit MX and DANE for a route's next hop

func TestDANE01_ImplicitMXWithSecureAddress(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("dest.test. 300 IN A 127.0.0.11")
	f.zone.Sign("dest.test.")
	cert := f.ca.Issue("dest.test")
	f.zone.AddRR(daneTLSA("_25._tcp.dest.test.", 300, 3, 1, 1, cert.Leaf))
	mx := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", daneLater)
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
	if a := rec.Attempts[0]; a.Policy != "dane" || !strings.HasPrefix(a.Verification, "ok: DANE-EE") {
		t.Errorf("attempt %+v", a)
	}
	checkSNI(t, mx, "dest.test")
}

func TestDANE03_NextHopRoute(t *testing.T) {
	tests := []struct {
		name   string
		signed bool
		match  bool
		want   string // attempt policy; "" means not delivered
	}{
		{"signed next hop, matching TLSA", true, true, "dane"},
		{"signed next hop, mismatching TLSA", true, false, ""},
		{"unsigned next hop", false, false, "opportunistic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
			if tt.signed {
				f.zone.Sign("partner.test.")
			}
			cert := f.ca.Issue("gw.partner.test")
			rr := cert.Leaf
			if !tt.match {
				rr = testnet.SelfSigned(t, "x.example").Leaf
			}
			// The next hop has no port of its own: its TLSA records are
			// those of the port the relay connects to.
			f.zone.AddRR(daneTLSA("_"+strconv.Itoa(f.port)+"._tcp.gw.partner.test.", 300, 3, 1, 1, rr))
			later := rcptReplies(map[string]*smtp.SMTPError{"later@partner.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})
			gw := f.receiver("127.0.0.13", testnet.SMTPOptions{TLSCert: &cert, RcptReply: later})
			f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test"}}
			f.start()
			m := f.submit(sender, testBody, "bob@partner.test", "later@partner.test")
			if tt.want == "" {
				rec := f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDeferred})
				if len(gw.Messages()) != 0 {
					t.Fatal("delivered to a next hop failing DANE")
				}
				if r := rcpt(rec, "bob@partner.test"); !strings.Contains(r.LastError, "matched no certificate") {
					t.Errorf("LastError %q", r.LastError)
				}
				return
			}
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDelivered, "later@partner.test": queue.StateDeferred})
			if a := rec.Attempts[0]; a.Policy != tt.want {
				t.Errorf("attempt policy %q, want %q", a.Policy, tt.want)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Route security dane-only

func TestDANE03_DANEOnlyRoute(t *testing.T) {
	t.Run("no DANE: deferred, never delivered", func(t *testing.T) {
		f := newEngineFixture(t)
		f.zone.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
		cert := f.ca.Issue("mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "dane-only"}}
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if mx1.Connections() != 0 || len(mx1.Messages()) != 0 {
			t.Errorf("connections %d messages %d, want none", mx1.Connections(), len(mx1.Messages()))
		}
		if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, "dane-only") {
			t.Errorf("LastError %q", r.LastError)
		}
	})
	t.Run("secure MX without TLSA: deferred", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneSignedMX()
		cert := f.ca.Issue("mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "dane-only"}}
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if len(mx1.Messages()) != 0 {
			t.Error("delivered without DANE")
		}
	})
	t.Run("DANE: delivered", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneSignedMX()
		cert := f.ca.Issue("mx1.dest.test")
		f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert.Leaf))
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "dane-only"}}
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		got := mx1.WaitMessages(t, 1, 10*time.Second)
		if !got[0].TLS {
			t.Error("delivered without TLS")
		}
		f.waitGone(m.ID)
	})
}

// ---------------------------------------------------------------------------
// REQUIRETLS (TLS05) and TLS 1.2 minimum (TLS04) under DANE

func TestTLS05_RequireTLSOverDANE(t *testing.T) {
	f := newEngineFixture(t)
	f.oneSignedMX()
	cert := f.ca.Issue("mx1.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, EnableREQUIRETLS: true})
	f.start()
	m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, testBody)
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if !got[0].TLS || !got[0].MailOpts.RequireTLS {
		t.Errorf("TLS=%v REQUIRETLS=%v, want both", got[0].TLS, got[0].MailOpts.RequireTLS)
	}
	f.waitGone(m.ID)
	if d := f.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs", len(d))
	}
}

// TestTLS05_RequireTLSNotOverDANEUnauth: mandatory but unauthenticated TLS
// (DANE07) does not carry REQUIRETLS mail.
func TestTLS05_RequireTLSNotOverDANEUnauth(t *testing.T) {
	f := newEngineFixture(t)
	f.oneSignedMX()
	cert := f.ca.Issue("mx1.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 1, 1, 1, cert.Leaf))
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, EnableREQUIRETLS: true})
	f.start()
	m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, testBody)
	f.firstRound(m.ID)
	if n := len(mx1.Messages()); n != 0 {
		t.Fatalf("%d REQUIRETLS messages over unauthenticated TLS", n)
	}
}

func TestTLS04_DANERefusesTLS11(t *testing.T) {
	f := newEngineFixture(t)
	f.oneSignedMX()
	cert := f.ca.Issue("mx1.dest.test")
	f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert.Leaf))
	old := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSConfig: old})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	if n := len(mx1.Messages()); n != 0 {
		t.Fatalf("%d messages delivered over TLS 1.1 (or cleartext)", n)
	}
	if mx1.Connections() != 1 {
		t.Errorf("%d connections, want 1 (no cleartext retry)", mx1.Connections())
	}
	if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, "TLS") {
		t.Errorf("LastError %q", r.LastError)
	}
}

package deliver

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/secpolicy"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// ---------------------------------------------------------------------------
// MTA-STS helpers

// stsServer is the HTTPS server of https://mta-sts.<domain>/ serving the
// domain's policy, which the test may change at any time.
type stsServer struct {
	srv *httptest.Server

	mu      sync.Mutex
	status  int
	body    string
	fetches int
	// gate, when not nil, holds every request until it is closed.
	gate chan struct{}
}

func (s *stsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.fetches++
	status, body, gate := s.status, s.body, s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// serve makes the server answer with status and body from now on.
func (s *stsServer) serve(status int, body string) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

// fetchCount is how many requests the server got.
func (s *stsServer) fetchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// stsPolicy is a policy text with the given mode and mx patterns.
func stsPolicy(mode string, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: 86400\r\n")
	return b.String()
}

// webPKIPolicy makes the fixture's policy trust the test CA for Web PKI
// checks (MTA-STS, tls-verify), with DANE enabled and the fixture's clock.
func (f *fixture) webPKIPolicy() {
	f.opts.Policy = secpolicy.NewPolicy(secpolicy.PolicyConfig{
		Resolver: f.opts.Resolver, DANE: true, RootCAs: f.ca.Pool(), Now: f.clock.now,
	})
}

// useMTASTS gives the engine an MTA-STS manager (cache in a temporary
// directory, the fixture's resolver and clock) and publishes an MTA-STS
// policy for domain: the TXT record with id and a policy server, with a
// certificate from the test CA, that answers 200 with policy. It returns
// the server, whose answers the test may change.
func (f *fixture) useMTASTS(domain, id, policy string) *stsServer {
	f.t.Helper()
	return f.useMTASTSWith(domain, id, policy, nil)
}

// useMTASTSWith is useMTASTS with the manager's options changed by tweak.
func (f *fixture) useMTASTSWith(domain, id, policy string, tweak func(*mtasts.ManagerOptions)) *stsServer {
	f.t.Helper()
	s := &stsServer{status: http.StatusOK, body: policy}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{f.ca.Issue("mta-sts." + domain)}}
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	f.t.Cleanup(s.srv.Close)
	addr := s.srv.Listener.Addr().String()
	want := net.JoinHostPort("mta-sts."+domain, "443")
	fetcher := mtasts.NewFetcher(mtasts.FetcherOptions{
		RootCAs: f.ca.Pool(),
		Timeout: 5 * time.Second,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a != want {
				return nil, fmt.Errorf("test dialer: unexpected policy server address %s", a)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	cache, err := mtasts.OpenCache(filepath.Join(f.t.TempDir(), "mta-sts.db"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cache.Close() })
	mo := mtasts.ManagerOptions{
		Resolver: f.opts.Resolver, Fetcher: fetcher, Cache: cache, Now: f.clock.now, Logger: discard(),
	}
	if tweak != nil {
		tweak(&mo)
	}
	mgr, err := mtasts.NewManager(mo)
	if err != nil {
		f.t.Fatal(err)
	}
	f.opts.MTASTS = mgr
	f.webPKIPolicy()
	f.setSTSID(domain, id)
	return s
}

// setSTSID publishes (or replaces) the _mta-sts TXT record of domain with
// id, with a TTL of one second, and waits until the fixture's resolver
// answers with it.
func (f *fixture) setSTSID(domain, id string) {
	f.t.Helper()
	name := "_mta-sts." + domain + "."
	f.zone.Remove(name, dns.TypeTXT)
	f.zone.Add(fmt.Sprintf(`%s 1 IN TXT "v=STSv1; id=%s"`, name, id))
	f.waitFor(func() bool {
		got, found, err := mtasts.LookupID(context.Background(), f.opts.Resolver, domain)
		return err == nil && found && got == id
	})
}

// oneMX publishes dest.test (unsigned) with mx1 (127.0.0.11) as its only MX.
func (f *fixture) oneMX() {
	f.zone.Add(
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
	)
}

// expiredCert is a certificate from the test CA for names that expired
// yesterday.
func (f *fixture) expiredCert(names ...string) tls.Certificate {
	now := time.Now()
	return f.ca.IssueWith(testnet.IssueOptions{Names: names, NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
}

// stsBadHost describes an MX host that MTA-STS enforce must refuse.
type stsBadHost struct {
	name       string
	rcv        func(f *fixture) testnet.SMTPOptions
	resultType string // RFC 8460 result type of the failure
}

// stsBadHosts are listed MX hosts (mx1.dest.test) that fail MTA-STS
// validation (RFC 8461 §4.2).
var stsBadHosts = []stsBadHost{
	{"self-signed certificate", func(f *fixture) testnet.SMTPOptions {
		c := testnet.SelfSigned(f.t, "mx1.dest.test")
		return testnet.SMTPOptions{TLSCert: &c}
	}, "certificate-not-trusted"},
	{"certificate for another name", func(f *fixture) testnet.SMTPOptions {
		c := f.ca.Issue("other.dest.test")
		return testnet.SMTPOptions{TLSCert: &c}
	}, "certificate-host-mismatch"},
	{"expired certificate", func(f *fixture) testnet.SMTPOptions {
		c := f.expiredCert("mx1.dest.test")
		return testnet.SMTPOptions{TLSCert: &c}
	}, "certificate-expired"},
	{"no STARTTLS", func(*fixture) testnet.SMTPOptions {
		return testnet.SMTPOptions{}
	}, "starttls-not-supported"},
}

// withReply returns o with RcptReply set.
func withReply(o testnet.SMTPOptions) testnet.SMTPOptions {
	o.RcptReply = daneLaterReply
	return o
}

// waitRounds waits until bob@dest.test of message id has n attempts and
// the message is not leased, and returns the record.
func (f *fixture) waitRounds(id, addr string, n int) *queue.Message {
	f.t.Helper()
	var rec *queue.Message
	f.waitFor(func() bool {
		var err error
		rec, err = f.q.Get(id)
		if err != nil {
			f.t.Fatalf("message %s left the queue while waiting for attempt %d: %v", id, n, err)
		}
		return rcpt(rec, addr).Attempts >= n && !f.q.Leased(id)
	})
	return rec
}

// ---------------------------------------------------------------------------
// STS12: enforce

func TestSTS12_EnforceDeliversOnlyToListedMXWithValidCert(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx2.dest.test"))
	c1, c2 := f.ca.Issue("mx1.dest.test"), f.ca.Issue("mx2.dest.test")
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c1, RcptReply: daneLaterReply})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &c2, RcptReply: daneLaterReply})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", daneLater)
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
	if n := mx1.Connections(); n != 0 {
		t.Errorf("%d connections to mx1, which the enforce policy does not list", n)
	}
	got := mx2.Messages()
	if len(got) != 1 || !got[0].TLS || got[0].ServerName != "mx2.dest.test" {
		t.Fatalf("mx2 received %+v, want one message over TLS with SNI mx2.dest.test", got)
	}
	if n := sts.fetchCount(); n != 1 {
		t.Errorf("policy fetched %d times, want 1", n)
	}
	a1 := attemptsAt(rec, "mx1.dest.test")
	if len(a1) != 1 || a1[0].Result != "deferred" || a1[0].IP != "" || a1[0].PolicyDomain != "dest.test" ||
		a1[0].ResultType != "validation-failure" || !strings.Contains(a1[0].Error, "MTA-STS") {
		t.Errorf("attempts at mx1 %+v, want one skipped host (no IP) with policy domain dest.test, result type validation-failure and an MTA-STS error", a1)
	}
	a2 := attemptsAt(rec, "mx2.dest.test")
	if len(a2) != 1 {
		t.Fatalf("attempts at mx2 %+v, want 1", a2)
	}
	a := a2[0]
	if a.Policy != "mta-sts" || !strings.HasPrefix(a.Verification, "ok") || a.PolicyDomain != "dest.test" || a.ResultType != "" || a.TLSVersion == "" {
		t.Errorf("attempt at mx2 %+v, want policy mta-sts, verification ok, policy domain dest.test, no result type, TLS", a)
	}
}

func TestSTS12_EnforceInvalidCertDefers(t *testing.T) {
	for _, tt := range stsBadHosts {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneMX()
			f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
			mx1 := f.receiver("127.0.0.11", tt.rcv(f))
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test")
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
			if n := len(mx1.Messages()); n != 0 {
				t.Fatalf("%d messages delivered to an MX host failing the enforce policy", n)
			}
			if n := mx1.Connections(); n != 1 {
				t.Errorf("%d connections, want 1 (no cleartext retry)", n)
			}
			at := attemptsAt(rec, "mx1.dest.test")
			if len(at) != 1 {
				t.Fatalf("attempts %+v, want 1", rec.Attempts)
			}
			a := at[0]
			if a.Policy != "mta-sts" || a.Result != "deferred" || a.PolicyDomain != "dest.test" || a.ResultType != tt.resultType {
				t.Errorf("attempt %+v, want policy mta-sts, deferred, policy domain dest.test, result type %s", a, tt.resultType)
			}
			if tt.resultType != "starttls-not-supported" {
				if !strings.HasPrefix(a.Verification, "failed") {
					t.Errorf("verification %q, want failed", a.Verification)
				}
				checkSNI(t, mx1, "mx1.dest.test")
			}
			if r := rcpt(rec, "bob@dest.test"); r.LastError == "" {
				t.Error("no LastError")
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs for a deferral", len(d))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// STS14: testing

func TestSTS14_TestingDeliversAndRecords(t *testing.T) {
	cases := append([]stsBadHost{}, stsBadHosts...)
	cases = append(cases, stsBadHost{"MX host not listed", func(f *fixture) testnet.SMTPOptions {
		c := f.ca.Issue("mx1.dest.test")
		return testnet.SMTPOptions{TLSCert: &c}
	}, "validation-failure"})
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			listed := "mx1.dest.test"
			if tt.name == "MX host not listed" {
				listed = "mx2.dest.test"
			}
			f.useMTASTS("dest.test", "1", stsPolicy("testing", listed))
			mx1 := f.receiver("127.0.0.11", withReply(tt.rcv(f)))
			mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			got := mx1.Messages()
			if len(got) != 1 {
				t.Fatalf("mx1 received %d messages, want 1 (testing mode delivers)", len(got))
			}
			if len(mx2.Messages()) != 0 {
				t.Error("mx2 received a message")
			}
			wantTLS := tt.resultType != "starttls-not-supported"
			if got[0].TLS != wantTLS {
				t.Errorf("received with TLS=%v, want %v", got[0].TLS, wantTLS)
			}
			at := attemptsAt(rec, "mx1.dest.test")
			if len(at) != 1 {
				t.Fatalf("attempts at mx1 %+v, want 1", at)
			}
			a := at[0]
			if a.Policy != "mta-sts-testing" || a.PolicyDomain != "dest.test" || a.ResultType != tt.resultType ||
				!strings.Contains(a.Verification, "enforce would fail") {
				t.Errorf("attempt %+v, want policy mta-sts-testing, policy domain dest.test, result type %s and a verification saying what enforce would refuse", a, tt.resultType)
			}
		})
	}
	t.Run("valid host", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("testing", "mx1.dest.test"))
		c := f.ca.Issue("mx1.dest.test")
		f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c, RcptReply: daneLaterReply})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test", daneLater)
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
		a := rec.Attempts[0]
		if a.Policy != "mta-sts-testing" || a.ResultType != "" || !strings.HasPrefix(a.Verification, "ok") || a.PolicyDomain != "dest.test" {
			t.Errorf("attempt %+v, want mta-sts-testing, verification ok, no result type", a)
		}
	})
}

// ---------------------------------------------------------------------------
// STS15: none

func TestSTS15_NoneMeansNoRestrictions(t *testing.T) {
	t.Run("none policy", func(t *testing.T) {
		f := newEngineFixture(t)
		f.twoMX()
		f.useMTASTS("dest.test", "1", stsPolicy("none"))
		c := testnet.SelfSigned(t, "x.example")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c, RcptReply: daneLaterReply})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test", daneLater)
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
		if got := mx1.Messages(); len(got) != 1 || !got[0].TLS {
			t.Fatalf("mx1 received %+v, want one message over (opportunistic) TLS", got)
		}
		if a := attemptsAt(rec, "mx1.dest.test"); len(a) != 1 || a[0].Policy != "opportunistic" || a[0].ResultType != "" {
			t.Errorf("attempts at mx1 %+v, want one opportunistic attempt", a)
		}
	})
	t.Run("none replaces a cached enforce policy", func(t *testing.T) {
		f := newEngineFixture(t)
		f.twoMX()
		sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx2.dest.test"))
		c1 := testnet.SelfSigned(t, "x.example")
		c2 := f.ca.Issue("mx2.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c1})
		mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &c2})
		f.start()
		m1 := f.submit(sender, testBody, "bob@dest.test")
		mx2.WaitMessages(t, 1, 10*time.Second)
		f.waitGone(m1.ID)
		if mx1.Connections() != 0 {
			t.Fatal("mx1 used under the enforce policy")
		}
		sts.serve(http.StatusOK, stsPolicy("none"))
		f.setSTSID("dest.test", "2")
		m2 := f.submit(sender, testBody, "carol@dest.test")
		mx1.WaitMessages(t, 1, 10*time.Second)
		f.waitGone(m2.ID)
		if n := len(mx2.Messages()); n != 1 {
			t.Errorf("mx2 received %d messages, want only the first", n)
		}
	})
}

// ---------------------------------------------------------------------------
// STS10: no policy available

func TestSTS10_FetchFailureNoCacheDeliversOpportunistic(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(s *stsServer)
	}{
		{"404", func(s *stsServer) { s.serve(http.StatusNotFound, "not here\n") }},
		{"server down", func(s *stsServer) { s.srv.Close() }},
		{"invalid policy", func(s *stsServer) { s.serve(http.StatusOK, "version: STSv1\r\nmode: bogus\r\n") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneMX()
			sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx9.dest.test"))
			tt.breakIt(sts)
			c := testnet.SelfSigned(t, "x.example")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c, RcptReply: daneLaterReply})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", daneLater)
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			if got := mx1.Messages(); len(got) != 1 || !got[0].TLS {
				t.Fatalf("mx1 received %+v, want one message over opportunistic TLS", got)
			}
			if a := rec.Attempts[0]; a.Policy != "opportunistic" {
				t.Errorf("attempt %+v, want opportunistic", a)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// STS08: a failed refetch keeps the cached policy

func TestSTS08_CachedPolicyStaysWhenRefetchFails(t *testing.T) {
	for _, fail := range []string{"HTTP 500", "server down"} {
		t.Run(fail, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx2.dest.test"))
			c1, c2 := f.ca.Issue("mx1.dest.test"), f.ca.Issue("mx2.dest.test")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c1, RcptReply: daneLaterReply})
			mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &c2, RcptReply: daneLaterReply})
			f.start()
			m1 := f.submit(sender, testBody, "bob@dest.test")
			mx2.WaitMessages(t, 1, 10*time.Second)
			f.waitGone(m1.ID)

			// The domain announces a new policy that cannot be fetched.
			if fail == "server down" {
				sts.srv.Close()
			} else {
				sts.serve(http.StatusInternalServerError, "oops\n")
			}
			f.setSTSID("dest.test", "2")
			m2 := f.submit(sender, testBody, "carol@dest.test", daneLater)
			rec := f.waitSettled(m2.ID, map[string]queue.State{"carol@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			if fail != "server down" && sts.fetchCount() < 2 {
				t.Errorf("%d policy fetches: the changed id did not cause a refetch", sts.fetchCount())
			}
			if n := mx1.Connections(); n != 0 {
				t.Errorf("%d connections to mx1: the cached enforce policy was dropped", n)
			}
			a := attemptsAt(rec, "mx2.dest.test")
			if len(a) != 1 || a[0].Policy != "mta-sts" {
				t.Errorf("attempts at mx2 %+v, want one under mta-sts", a)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// STS16: DANE precedence

func TestSTS16_DANEWinsOverMTASTS(t *testing.T) {
	t.Run("DANE match, certificate not Web-PKI valid: delivered", func(t *testing.T) {
		for _, listed := range []string{"mx1.dest.test", "mx9.dest.test"} {
			t.Run("policy lists "+listed, func(t *testing.T) {
				f := newEngineFixture(t)
				f.oneSignedMX()
				f.useMTASTS("dest.test", "1", stsPolicy("enforce", listed))
				cert := testnet.SelfSigned(t, "mx1.dest.test")
				f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, cert.Leaf))
				mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: daneLaterReply})
				f.start()
				m := f.submit(sender, testBody, "bob@dest.test", daneLater)
				rec := f.firstRound(m.ID)
				if got := mx1.Messages(); len(got) != 1 || !got[0].TLS {
					t.Fatalf("mx1 received %d messages (%s), want 1 over DANE-authenticated TLS", len(got), rcpt(rec, "bob@dest.test").LastError)
				}
				if a := rec.Attempts[0]; a.Policy != "dane" || !strings.HasPrefix(a.Verification, "ok: DANE-EE") {
					t.Errorf("attempt %+v, want dane", a)
				}
			})
		}
	})
	t.Run("DANE mismatch, certificate Web-PKI valid: not delivered", func(t *testing.T) {
		for _, mode := range []string{"enforce", "testing"} {
			t.Run(mode, func(t *testing.T) {
				f := newEngineFixture(t)
				f.oneSignedMX()
				f.useMTASTS("dest.test", "1", stsPolicy(mode, "mx1.dest.test"))
				cert := f.ca.Issue("mx1.dest.test")
				other := testnet.SelfSigned(t, "x.example")
				f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, other.Leaf))
				mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
				f.start()
				m := f.submit(sender, testBody, "bob@dest.test")
				rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
				if n := len(mx1.Messages()); n != 0 {
					t.Fatalf("%d messages delivered: MTA-STS rescued a host failing DANE", n)
				}
				for _, a := range rec.Attempts {
					if a.Policy != "dane" {
						t.Errorf("attempt %+v, want only dane attempts", a)
					}
				}
			})
		}
	})
}

// ---------------------------------------------------------------------------
// STS13: re-check before a bounce

func TestSTS13_RecheckBeforeBounce(t *testing.T) {
	t.Run("new policy mode none", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if len(mx1.Messages()) != 0 {
			t.Fatal("delivered despite the enforce policy")
		}
		sts.serve(http.StatusOK, stsPolicy("none"))
		f.setSTSID("dest.test", "2")
		f.clock.advance(f.opts.QueueLifetime + time.Minute)
		f.waitGone(m.ID)
		if n := len(mx1.Messages()); n != 1 {
			t.Fatalf("mx1 received %d messages, want 1: the last attempt did not use the domain's new policy (DSNs: %d)", n, len(f.dsns()))
		}
		if d := f.dsns(); len(d) != 0 {
			t.Errorf("%d DSNs for a delivered message", len(d))
		}
	})

	// The new policy's first fetch fails, so a plain Get keeps the cached
	// enforce policy for FetchBackoff; only a re-check before the bounce
	// fetches it again.
	t.Run("new policy listing the working host, earlier fetch failed", func(t *testing.T) {
		f := newEngineFixture(t)
		f.twoMX()
		f.opts.QueueLifetime = 3 * time.Minute // shorter than the fetch backoff
		sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		good := f.ca.Issue("mx2.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
		mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &good})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		f.waitRounds(m.ID, "bob@dest.test", 1)

		sts.serve(http.StatusServiceUnavailable, "later\n")
		f.setSTSID("dest.test", "2")
		f.clock.advance(90 * time.Second)
		rec := f.waitRounds(m.ID, "bob@dest.test", 2)
		if r := rcpt(rec, "bob@dest.test"); r.State != queue.StateDeferred {
			t.Fatalf("after round 2: %s (%s)", r.State, r.LastError)
		}
		if n := sts.fetchCount(); n != 2 {
			t.Fatalf("%d policy fetches after round 2, want 2", n)
		}
		if mx2.Connections() != 0 {
			t.Fatal("mx2 used under the old policy")
		}

		sts.serve(http.StatusOK, stsPolicy("enforce", "mx2.dest.test"))
		f.clock.advance(f.opts.QueueLifetime)
		f.waitGone(m.ID)
		if n := len(mx2.Messages()); n != 1 {
			t.Fatalf("mx2 received %d messages, want 1: the message bounced without re-checking the policy (%d fetches, DSNs: %d)", n, sts.fetchCount(), len(f.dsns()))
		}
		if len(mx1.Messages()) != 0 {
			t.Error("mx1 received a message")
		}
		if n := sts.fetchCount(); n != 3 {
			t.Errorf("%d policy fetches, want 3 (the last one by the re-check despite the fetch backoff)", n)
		}
	})

	// A round that starts shortly before the end of the lifetime and ends
	// after it is the message's last one: its failure is turned into a
	// bounce. The policy must have been re-checked in that round as well.
	t.Run("last round starts just before the lifetime ends", func(t *testing.T) {
		f := newEngineFixture(t)
		f.twoMX()
		var slow atomic.Bool
		d := &net.Dialer{Timeout: 2 * time.Second}
		f.opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if slow.Load() {
				f.clock.advance(2 * time.Second) // a slow connect
			}
			return d.DialContext(ctx, network, addr)
		}
		sts := f.useMTASTSWith("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"), func(o *mtasts.ManagerOptions) {
			o.FetchBackoff = 2 * time.Hour
		})
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		good := f.ca.Issue("mx2.dest.test")
		f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
		mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &good})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		expiry := m.ReceivedAt.Add(f.opts.QueueLifetime)
		rec := f.waitRounds(m.ID, "bob@dest.test", 1)

		// The domain moves to a new policy whose first fetch fails.
		sts.serve(http.StatusServiceUnavailable, "later\n")
		f.setSTSID("dest.test", "2")
		f.clock.advance(rcpt(rec, "bob@dest.test").NextAttempt.Sub(f.clock.now()))
		rec = f.waitRounds(m.ID, "bob@dest.test", 2)
		if n := sts.fetchCount(); n != 2 {
			t.Fatalf("%d policy fetches after round 2, want 2", n)
		}
		sts.serve(http.StatusOK, stsPolicy("enforce", "mx2.dest.test"))
		start := expiry.Add(-time.Second)
		if next := rcpt(rec, "bob@dest.test").NextAttempt; next.After(start) {
			t.Fatalf("next attempt %v is not before %v", next, start)
		}
		slow.Store(true)
		f.clock.advance(start.Sub(f.clock.now()))
		f.waitFor(func() bool {
			cur, err := f.q.Get(m.ID)
			return err != nil || (rcpt(cur, "bob@dest.test").Attempts >= 3 && !f.q.Leased(m.ID))
		})
		if _, err := f.q.Get(m.ID); err != nil && len(mx2.Messages()) == 0 {
			var why string
			if d := f.dsns(); len(d) == 1 {
				why = dsnRecipient(t, d[0].rep, "bob@dest.test")["Diagnostic-Code"]
			}
			t.Fatalf("bounced by a round that began at %v, 1s before the end of the lifetime, without re-checking the "+
				"MTA-STS policy (%d fetches; the new policy lists a working host): %s", start, sts.fetchCount(), why)
		}
		if len(mx2.Messages()) == 0 {
			f.clock.advance(f.opts.QueueLifetime)
			f.waitGone(m.ID)
		}
		if n := len(mx2.Messages()); n != 1 {
			t.Errorf("mx2 received %d messages, want 1", n)
		}
	})

	// Converse: the policy has not changed, so the message bounces at the
	// end of its lifetime, with a DSN that names the MTA-STS failure (DSN04).
	for _, tt := range []struct {
		name   string
		listed string
	}{
		{"unchanged, host not listed", "mx9.dest.test"},
		{"unchanged, listed host with untrusted certificate", "mx1.dest.test"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneMX()
			f.useMTASTS("dest.test", "1", stsPolicy("enforce", tt.listed))
			bad := testnet.SelfSigned(t, "mx1.dest.test")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test")
			f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
			f.clock.advance(f.opts.QueueLifetime + time.Minute)
			f.waitGone(m.ID)
			if n := len(mx1.Messages()); n != 0 {
				t.Fatalf("%d messages delivered", n)
			}
			d := f.oneDSN()
			checkDSNEnvelope(t, d, sender)
			r := dsnRecipient(t, d.rep, "bob@dest.test")
			if r["Action"] != "failed" || !strings.HasPrefix(r["Status"], "5.") {
				t.Errorf("DSN recipient %v, want failed 5.x.x", r)
			}
			if !strings.Contains(r["Diagnostic-Code"]+"\n"+d.rep.Human, "MTA-STS") {
				t.Errorf("DSN does not name the MTA-STS policy that caused the failure:\n%v\n%s", r, d.rep.Human)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// TLS05: REQUIRETLS with MTA-STS

func TestTLS05_RequireTLS(t *testing.T) {
	tests := []struct {
		name       string
		mode       string // "" means no MTA-STS policy
		requireTLS bool   // the MX advertises REQUIRETLS
		delivered  bool
	}{
		{"enforce, MX offers REQUIRETLS", "enforce", true, true},
		{"enforce, MX without REQUIRETLS", "enforce", false, false},
		{"testing", "testing", true, false},
		{"no policy", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.oneMX()
			if tt.mode != "" {
				f.useMTASTS("dest.test", "1", stsPolicy(tt.mode, "mx1.dest.test"))
			} else {
				f.webPKIPolicy()
			}
			cert := f.ca.Issue("mx1.dest.test")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, EnableREQUIRETLS: tt.requireTLS})
			f.start()
			m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, testBody)
			if tt.delivered {
				got := mx1.WaitMessages(t, 1, 10*time.Second)
				if !got[0].TLS || !got[0].MailOpts.RequireTLS {
					t.Errorf("TLS=%v REQUIRETLS=%v, want both", got[0].TLS, got[0].MailOpts.RequireTLS)
				}
				f.waitGone(m.ID)
				if d := f.dsns(); len(d) != 0 {
					t.Errorf("%d DSNs for a delivered message", len(d))
				}
				return
			}
			rec := f.firstRound(m.ID)
			if n := len(mx1.Messages()); n != 0 {
				t.Fatalf("%d REQUIRETLS messages delivered", n)
			}
			if rec != nil {
				r := rcpt(rec, "bob@dest.test")
				t.Fatalf("recipient %s (%s), want it failed at once with 5.7.30", r.State, r.LastError)
			}
			d := f.oneDSN()
			checkDSNEnvelope(t, d, sender)
			r := dsnRecipient(t, d.rep, "bob@dest.test")
			if r["Action"] != "failed" || r["Status"] != "5.7.30" {
				t.Errorf("DSN recipient %v, want failed 5.7.30", r)
			}
			if tt.mode != "enforce" && mx1.Connections() != 0 {
				t.Errorf("%d connections for a message no host can take", mx1.Connections())
			}
		})
	}
}

// ---------------------------------------------------------------------------
// TLS06: TLS-Required: No

const tlsOptionalBody = "TLS-Required: No\r\n" + testBody

func TestTLS06_TLSRequiredNoHeader(t *testing.T) {
	t.Run("enforce, invalid certificate", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
		f.start()
		m := f.submit(sender, tlsOptionalBody, "bob@dest.test")
		got := mx1.WaitMessages(t, 1, 10*time.Second)
		if !got[0].TLS {
			t.Error("delivered without STARTTLS: TLS-Required: No does not disable opportunistic TLS")
		}
		f.waitGone(m.ID)
	})
	t.Run("enforce, MX host not listed", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx9.dest.test"))
		c := f.ca.Issue("mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c})
		f.start()
		m := f.submit(sender, tlsOptionalBody, "bob@dest.test")
		got := mx1.WaitMessages(t, 1, 10*time.Second)
		if !got[0].TLS {
			t.Error("delivered without STARTTLS")
		}
		f.waitGone(m.ID)
	})
	t.Run("DANE, mismatching TLSA", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneSignedMX()
		f.webPKIPolicy()
		cert := f.ca.Issue("mx1.dest.test")
		other := testnet.SelfSigned(t, "x.example")
		f.zone.AddRR(daneTLSA(tlsaMX1, 300, 3, 1, 1, other.Leaf))
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
		f.start()
		m := f.submit(sender, tlsOptionalBody, "bob@dest.test")
		got := mx1.WaitMessages(t, 1, 10*time.Second)
		if !got[0].TLS {
			t.Error("delivered without STARTTLS")
		}
		f.waitGone(m.ID)
	})
	t.Run("REQUIRETLS wins over TLS-Required: No", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad, EnableREQUIRETLS: true})
		f.start()
		m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, tlsOptionalBody)
		f.firstRound(m.ID)
		if n := len(mx1.Messages()); n != 0 {
			t.Fatalf("%d REQUIRETLS messages delivered over an unauthenticated path", n)
		}
	})
	t.Run("REQUIRETLS wins over TLS-Required: No, no policy", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.webPKIPolicy()
		c := f.ca.Issue("mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c, EnableREQUIRETLS: true})
		f.start()
		m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, tlsOptionalBody)
		f.waitGone(m.ID)
		if n := len(mx1.Messages()); n != 0 {
			t.Fatalf("%d REQUIRETLS messages delivered over an unauthenticated path", n)
		}
		if r := dsnRecipient(t, f.oneDSN().rep, "bob@dest.test"); r["Status"] != "5.7.30" {
			t.Errorf("DSN recipient %v, want 5.7.30", r)
		}
	})
}

// ---------------------------------------------------------------------------
// Routes

func TestRouteMTASTSOrDANE(t *testing.T) {
	t.Run("testing policy treated as enforce: invalid certificate defers", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("testing", "mx1.dest.test"))
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "mta-sts-or-dane"}}
		bad := testnet.SelfSigned(t, "mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &bad})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if n := len(mx1.Messages()); n != 0 {
			t.Fatalf("%d messages delivered", n)
		}
		if n := mx1.Connections(); n != 1 {
			t.Errorf("%d connections, want 1 (no cleartext retry)", n)
		}
		if a := rec.Attempts[0]; a.Policy != "mta-sts" || a.ResultType != "certificate-not-trusted" {
			t.Errorf("attempt %+v, want mta-sts with certificate-not-trusted", a)
		}
	})
	t.Run("testing policy treated as enforce: unlisted host not used", func(t *testing.T) {
		f := newEngineFixture(t)
		f.twoMX()
		f.useMTASTS("dest.test", "1", stsPolicy("testing", "mx2.dest.test"))
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "mta-sts-or-dane"}}
		c1, c2 := f.ca.Issue("mx1.dest.test"), f.ca.Issue("mx2.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c1})
		mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &c2, RcptReply: daneLaterReply})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test", daneLater)
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
		if mx1.Connections() != 0 {
			t.Error("mx1 used although the policy does not list it")
		}
		if len(mx2.Messages()) != 1 {
			t.Error("mx2 did not receive the message")
		}
		if a := attemptsAt(rec, "mx2.dest.test"); len(a) != 1 || a[0].Policy != "mta-sts" {
			t.Errorf("attempts at mx2 %+v, want mta-sts", a)
		}
	})
	t.Run("no policy: deferred, cannot be met", func(t *testing.T) {
		f := newEngineFixture(t)
		f.oneMX()
		f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
		f.zone.Remove("_mta-sts.dest.test.", dns.TypeTXT)
		f.waitFor(func() bool {
			_, found, err := mtasts.LookupID(context.Background(), f.opts.Resolver, "dest.test")
			return err == nil && !found
		})
		f.opts.Routes = []Route{{Domain: "dest.test", Security: "mta-sts-or-dane"}}
		c := f.ca.Issue("mx1.dest.test")
		mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c})
		f.start()
		m := f.submit(sender, testBody, "bob@dest.test")
		rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
		if mx1.Connections() != 0 || len(mx1.Messages()) != 0 {
			t.Errorf("%d connections, %d messages, want none", mx1.Connections(), len(mx1.Messages()))
		}
		if r := rcpt(rec, "bob@dest.test"); !strings.Contains(r.LastError, "cannot be met") {
			t.Errorf("LastError %q, want it to say the route's security cannot be met", r.LastError)
		}
	})
}

func TestRouteTLSVerify(t *testing.T) {
	tests := []struct {
		name   string
		names  []string
		expire bool
		ok     bool
		rt     string
	}{
		{"valid certificate for the next hop", []string{"gw.partner.test"}, false, true, ""},
		{"certificate for another name", []string{"other.partner.test"}, false, false, "certificate-host-mismatch"},
		{"expired certificate", []string{"gw.partner.test"}, true, false, "certificate-expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.webPKIPolicy()
			f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
			cert := f.ca.Issue(tt.names...)
			if tt.expire {
				cert = f.expiredCert(tt.names...)
			}
			later := rcptReplies(map[string]*smtp.SMTPError{"later@partner.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})
			gw := f.receiver("127.0.0.13", testnet.SMTPOptions{TLSCert: &cert, RcptReply: later})
			f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test", Security: "tls-verify"}}
			f.start()
			m := f.submit(sender, testBody, "bob@partner.test", "later@partner.test")
			if tt.ok {
				rec := f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDelivered, "later@partner.test": queue.StateDeferred})
				if got := gw.Messages(); len(got) != 1 || !got[0].TLS {
					t.Fatalf("received %+v", got)
				}
				checkSNI(t, gw, "gw.partner.test")
				if a := rec.Attempts[0]; a.Policy != "tls-verify" || !strings.HasPrefix(a.Verification, "ok") {
					t.Errorf("attempt %+v, want tls-verify, verification ok", a)
				}
				return
			}
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDeferred})
			if n := len(gw.Messages()); n != 0 {
				t.Fatalf("%d messages delivered", n)
			}
			if n := gw.Connections(); n != 1 {
				t.Errorf("%d connections, want 1 (no cleartext retry)", n)
			}
			if a := rec.Attempts[0]; a.Policy != "tls-verify" || a.ResultType != tt.rt {
				t.Errorf("attempt %+v, want tls-verify with result type %s", a, tt.rt)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// STS09: a missing or failing TXT record keeps the cached policy

func TestSTS09_TXTGoneOrFailingKeepsCachedPolicy(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fixture)
	}{
		{"TXT record removed", func(f *fixture) {
			f.zone.Remove("_mta-sts.dest.test.", dns.TypeTXT)
			f.waitFor(func() bool {
				_, found, err := mtasts.LookupID(context.Background(), f.opts.Resolver, "dest.test")
				return err == nil && !found
			})
		}},
		{"TXT lookup fails", func(f *fixture) {
			f.zone.Fail("_mta-sts.dest.test.", dns.TypeTXT, dns.RcodeServerFailure)
			f.waitFor(func() bool {
				_, _, err := mtasts.LookupID(context.Background(), f.opts.Resolver, "dest.test")
				return err != nil
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx2.dest.test"))
			c1, c2 := f.ca.Issue("mx1.dest.test"), f.ca.Issue("mx2.dest.test")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c1, RcptReply: daneLaterReply})
			mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{TLSCert: &c2, RcptReply: daneLaterReply})
			f.start()
			m1 := f.submit(sender, testBody, "bob@dest.test")
			mx2.WaitMessages(t, 1, 10*time.Second)
			f.waitGone(m1.ID)
			tt.change(f)
			m2 := f.submit(sender, testBody, "carol@dest.test", daneLater)
			rec := f.waitSettled(m2.ID, map[string]queue.State{"carol@dest.test": queue.StateDelivered, daneLater: queue.StateDeferred})
			if n := mx1.Connections(); n != 0 {
				t.Errorf("%d connections to mx1: the cached enforce policy was dropped", n)
			}
			if a := attemptsAt(rec, "mx2.dest.test"); len(a) != 1 || a[0].Policy != "mta-sts" {
				t.Errorf("attempts at mx2 %+v, want one under mta-sts", a)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// STS17: concurrent deliveries to one domain share one fetch

func TestSTS17_ConcurrentDeliveriesShareOneFetch(t *testing.T) {
	f := newEngineFixture(t)
	f.oneMX()
	sts := f.useMTASTS("dest.test", "1", stsPolicy("enforce", "mx1.dest.test"))
	gate := make(chan struct{})
	sts.mu.Lock()
	sts.gate = gate
	sts.mu.Unlock()
	opened := false
	defer func() {
		if !opened {
			close(gate)
		}
	}()
	c := f.ca.Issue("mx1.dest.test")
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &c})
	const n = 10
	var ids []string
	for i := range n {
		m := f.submit(sender, fmt.Sprintf("Message-ID: <%d@src.test>\r\n\r\nbody %d\r\n", i, i), fmt.Sprintf("r%d@dest.test", i))
		ids = append(ids, m.ID)
	}
	f.start()
	// Every message is being delivered while the one fetch is held.
	f.waitFor(func() bool {
		if sts.fetchCount() == 0 {
			return false
		}
		for _, id := range ids {
			if !f.q.Leased(id) {
				return false
			}
		}
		return true
	})
	close(gate)
	opened = true
	mx1.WaitMessages(t, n, 10*time.Second)
	for _, id := range ids {
		f.waitGone(id)
	}
	if got := sts.fetchCount(); got != 1 {
		t.Errorf("%d policy fetches for %d concurrent deliveries, want 1", got, n)
	}
}

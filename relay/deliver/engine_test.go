package deliver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/dsn"
	"github.com/relaysec/relay/relay/tlsstats"
	"github.com/relaysec/relay/secpolicy"
)

// The envelope sender of the test messages. DSNs go to it; newEngineFixture
// makes the MX lookup of its domain fail, so that every DSN the engine
// queues stays deferred in the queue where the tests can read it (an
// NXDOMAIN would make the engine drop it at once).
const (
	senderDomain = "src.test"
	sender       = "alice@" + senderDomain
)

const testBody = "From: alice@src.test\r\nTo: bob@dest.test\r\nSubject: test\r\nMessage-ID: <m1@src.test>\r\n\r\nhello\r\n"

// newEngineFixture is newFixture with DSNs held in the queue.
func newEngineFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	f.holdBounces()
	return f
}

// holdBounces makes the MX lookup of the sender's domain SERVFAIL, so DSNs
// to the sender are deferred and stay queued (MX04).
func (f *fixture) holdBounces() {
	f.zone.Fail(senderDomain, dns.TypeMX, dns.RcodeServerFailure)
}

// twoMX publishes dest.test with mx1 (127.0.0.11, preference 10) and mx2
// (127.0.0.12, preference 20).
func (f *fixture) twoMX() {
	f.zone.Add(
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"dest.test. 300 IN MX 20 mx2.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
		"mx2.dest.test. 300 IN A 127.0.0.12",
	)
}

// enqueue queues a message built by the test (DSN parameters, REQUIRETLS).
func (f *fixture) enqueue(m *queue.Message, body string) *queue.Message {
	f.t.Helper()
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = f.clock.now()
	}
	if err := f.q.Enqueue(context.Background(), m, strings.NewReader(body)); err != nil {
		f.t.Fatal(err)
	}
	return m
}

// waitGone waits until message id has left the queue (every recipient
// delivered or failed).
func (f *fixture) waitGone(id string) {
	f.t.Helper()
	f.waitFor(func() bool {
		_, err := f.q.Get(id)
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			f.t.Fatalf("get %s: %v", id, err)
		}
		return err != nil
	})
}

// waitSettled waits until every recipient of message id listed in want is
// in the wanted state after at least one attempt, with the message not
// leased, and returns the record. The message must stay queued.
func (f *fixture) waitSettled(id string, want map[string]queue.State) *queue.Message {
	f.t.Helper()
	var m *queue.Message
	f.waitFor(func() bool {
		var err error
		m, err = f.q.Get(id)
		if err != nil {
			f.t.Fatalf("message %s left the queue; want recipients %v", id, want)
		}
		if f.q.Leased(id) {
			return false
		}
		for addr, st := range want {
			r := rcpt(m, addr)
			if r == nil {
				f.t.Fatalf("message %s has no recipient %s", id, addr)
			}
			if r.State != st || r.Attempts == 0 {
				return false
			}
		}
		return true
	})
	return m
}

func rcpt(m *queue.Message, addr string) *queue.Recipient {
	for i := range m.Recipients {
		if m.Recipients[i].Addr == addr {
			return &m.Recipients[i]
		}
	}
	return nil
}

// queuedDSN is a DSN in the queue, parsed.
type queuedDSN struct {
	msg *queue.Message
	rep *dsn.Report
	raw []byte
}

// dsns returns the DSNs the engine queued, parsed.
func (f *fixture) dsns() []queuedDSN {
	f.t.Helper()
	var out []queuedDSN
	for _, m := range f.bounces() {
		raw := f.body(m.ID)
		rep, err := dsn.Parse(raw)
		if err != nil {
			f.t.Fatalf("DSN %s does not parse: %v\n%s", m.ID, err, raw)
		}
		out = append(out, queuedDSN{msg: m, rep: rep, raw: raw})
	}
	return out
}

// oneDSN returns the only DSN queued, failing the test otherwise.
func (f *fixture) oneDSN() queuedDSN {
	f.t.Helper()
	d := f.dsns()
	if len(d) != 1 {
		f.t.Fatalf("%d DSNs queued, want 1", len(d))
	}
	return d[0]
}

// checkDSNEnvelope checks that a DSN is queued like RFC 3461 §6.2 wants:
// null reverse path, to the original envelope sender, marked as a bounce.
func checkDSNEnvelope(t *testing.T, d queuedDSN, to string) {
	t.Helper()
	if d.msg.From != "" || !d.msg.Bounce {
		t.Errorf("DSN envelope From=%q Bounce=%v, want null sender and Bounce", d.msg.From, d.msg.Bounce)
	}
	if len(d.msg.Recipients) != 1 || d.msg.Recipients[0].Addr != to {
		t.Errorf("DSN recipients %+v, want only %s", d.msg.Recipients, to)
	}
	mt, params, err := mime.ParseMediaType(d.rep.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Errorf("DSN Content-Type %q, want multipart/report; report-type=delivery-status", d.rep.Header.Get("Content-Type"))
	}
}

// dsnRecipient returns the per-recipient fields of the block for addr,
// keyed by canonical MIME header key ("Remote-Mta").
func dsnRecipient(t *testing.T, rep *dsn.Report, addr string) map[string]string {
	t.Helper()
	for _, h := range rep.PerRecipient {
		if strings.EqualFold(h.Get("Final-Recipient"), "rfc822;"+addr) {
			out := map[string]string{}
			for k := range h {
				out[k] = h.Get(k)
			}
			return out
		}
	}
	t.Fatalf("DSN has no block for %s: %+v", addr, rep.PerRecipient)
	return nil
}

func reject(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

// rcptReplies answers RCPT for the listed addresses with the given error.
func rcptReplies(m map[string]*smtp.SMTPError) func(string) *smtp.SMTPError {
	return func(to string) *smtp.SMTPError { return m[to] }
}

func checkNextAttempt(t *testing.T, r *queue.Recipient, now time.Time, d time.Duration) {
	t.Helper()
	lo, hi := now.Add(d-d/5), now.Add(d+d/5)
	if r.NextAttempt.Before(lo) || r.NextAttempt.After(hi) {
		t.Errorf("%s: NextAttempt %v, want within [%v, %v] (now %v + %v ±20%%)", r.Addr, r.NextAttempt, lo, hi, now, d)
	}
}

func hostName(a queue.Attempt) string { return strings.TrimSuffix(a.Host, ".") }

// ---------------------------------------------------------------------------
// MX resolution

func TestMX01_FallbackWhenBestMXRefusesConnections(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	// Nothing listens on mx1 (127.0.0.11): connections are refused.
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{
		// later@ is deferred so that the record, with its attempts, stays.
		RcptReply: rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")}),
	})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test")
	got := mx2.WaitMessages(t, 1, 10*time.Second)
	if !slices.Equal(got[0].To, []string{"bob@dest.test"}) {
		t.Fatalf("mx2 got %v", got[0].To)
	}
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, "later@dest.test": queue.StateDeferred})
	if len(rec.Attempts) != 2 {
		t.Fatalf("attempts %+v, want one at mx1 then one at mx2", rec.Attempts)
	}
	a1, a2 := rec.Attempts[0], rec.Attempts[1]
	if hostName(a1) != "mx1.dest.test" || a1.IP != "127.0.0.11" || a1.Result != "deferred" || a1.Error == "" {
		t.Errorf("first attempt %+v, want a deferred attempt at mx1 127.0.0.11 with an error", a1)
	}
	if hostName(a2) != "mx2.dest.test" || a2.IP != "127.0.0.12" {
		t.Errorf("second attempt %+v, want mx2 127.0.0.12", a2)
	}
}

func TestMX01_FallbackOn4xx(t *testing.T) {
	tests := []struct {
		name string
		opts testnet.SMTPOptions
	}{
		{"421 to MAIL", testnet.SMTPOptions{MailReply: func(string, smtp.MailOptions) *smtp.SMTPError {
			return reject(421, smtp.EnhancedCode{4, 3, 2}, "closing")
		}}},
		{"451 to MAIL", testnet.SMTPOptions{MailReply: func(string, smtp.MailOptions) *smtp.SMTPError {
			return reject(451, smtp.EnhancedCode{4, 3, 0}, "local problem")
		}}},
		{"451 to RCPT", testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
			return reject(451, smtp.EnhancedCode{4, 2, 0}, "greylisted")
		}}},
		{"451 after DATA", testnet.SMTPOptions{DataReply: func(testnet.Received) *smtp.SMTPError {
			return reject(451, smtp.EnhancedCode{4, 3, 0}, "try later")
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			mx1 := f.receiver("127.0.0.11", tt.opts)
			mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test")
			got := mx2.WaitMessages(t, 1, 10*time.Second)
			if !bytes.Equal(got[0].Data, []byte(testBody)) {
				t.Errorf("mx2 got %q", got[0].Data)
			}
			f.waitGone(m.ID)
			if n := len(mx1.Messages()); n != 0 {
				t.Errorf("mx1 accepted %d messages", n)
			}
			if mx1.Connections() == 0 {
				t.Error("mx1 was never tried")
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs queued for a delivered message", len(d))
			}
		})
	}
}

func TestMX02_NXDomainBounces(t *testing.T) {
	f := newEngineFixture(t)
	f.start()
	m := f.submit(sender, testBody, "bob@nowhere.test")
	f.waitGone(m.ID)
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	r := dsnRecipient(t, d.rep, "bob@nowhere.test")
	if r["Action"] != "failed" || r["Status"] != "5.1.2" {
		t.Errorf("DSN recipient %v, want failed 5.1.2", r)
	}
}

func TestMX02_ImplicitMX(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("implicit.test. 300 IN A 127.0.0.14")
	rcv := f.receiver("127.0.0.14", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@implicit.test")
	got := rcv.WaitMessages(t, 1, 10*time.Second)
	if !slices.Equal(got[0].To, []string{"bob@implicit.test"}) {
		t.Errorf("received %v", got[0].To)
	}
	f.waitGone(m.ID)
	if f.dns.QueryCount("implicit.test", dns.TypeMX) == 0 {
		t.Error("no MX query for implicit.test")
	}
	if d := f.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs queued", len(d))
	}
}

func TestMX03_NullMXBouncesAtOnce(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add(
		"dest.test. 300 IN MX 0 .",
		"dest.test. 300 IN A 127.0.0.11", // must not be used
	)
	rcv := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	f.waitGone(m.ID)
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	r := dsnRecipient(t, d.rep, "bob@dest.test")
	if r["Action"] != "failed" || r["Status"] != "5.1.10" {
		t.Errorf("DSN recipient %v, want failed 5.1.10", r)
	}
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if n := f.dns.QueryCount("dest.test", qt); n != 0 {
			t.Errorf("%d %s queries for dest.test after a null MX", n, dns.TypeToString[qt])
		}
	}
	if n := f.dns.QueryCount(".", dns.TypeANY); n != 0 {
		t.Errorf("%d queries for the root name", n)
	}
	if rcv.Connections() != 0 {
		t.Error("the relay connected to the domain's address")
	}
}

func TestMX04_ServfailDefersNeverTouchesA(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add(
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"dest.test. 300 IN A 127.0.0.12",
		"mx1.dest.test. 300 IN A 127.0.0.11",
	)
	f.zone.Fail("dest.test", dns.TypeMX, dns.RcodeServerFailure)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	direct := f.receiver("127.0.0.12", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	r := rcpt(rec, "bob@dest.test")
	if !strings.Contains(r.LastError, "MX") {
		t.Errorf("LastError %q does not name the MX lookup", r.LastError)
	}
	checkNextAttempt(t, r, f.clock.now(), f.opts.FirstRetry)
	for _, name := range []string{"dest.test", "mx1.dest.test"} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if n := f.dns.QueryCount(name, qt); n != 0 {
				t.Errorf("%d %s queries for %s after MX SERVFAIL", n, dns.TypeToString[qt], name)
			}
		}
	}
	if mx1.Connections()+direct.Connections() != 0 {
		t.Error("the relay connected somewhere after MX SERVFAIL")
	}
	if d := f.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs queued for a deferred recipient", len(d))
	}
}

func TestMX05_HostWithoutAddressSkipped(t *testing.T) {
	later := map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")}
	tests := []struct {
		name   string
		zone   []string
		broken func(z *testnet.Zone) // makes the first host's address lookup fail
		// wantDelivered: bob reaches mx2; otherwise every host lacks an
		// address and the attempt is a temporary failure.
		wantDelivered bool
	}{
		{
			name: "no address records",
			zone: []string{
				"dest.test. 300 IN MX 10 noaddr.dest.test.",
				"dest.test. 300 IN MX 20 mx2.dest.test.",
				"mx2.dest.test. 300 IN A 127.0.0.12",
			},
			wantDelivered: true,
		},
		{
			name: "address lookups fail",
			zone: []string{
				"dest.test. 300 IN MX 10 noaddr.dest.test.",
				"dest.test. 300 IN MX 20 mx2.dest.test.",
				"noaddr.dest.test. 300 IN A 127.0.0.11",
				"mx2.dest.test. 300 IN A 127.0.0.12",
			},
			broken: func(z *testnet.Zone) {
				z.Fail("noaddr.dest.test", dns.TypeANY, dns.RcodeServerFailure)
			},
			wantDelivered: true,
		},
		{
			name: "every host without address",
			zone: []string{"dest.test. 300 IN MX 10 noaddr.dest.test."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.zone.Add(tt.zone...)
			if tt.broken != nil {
				tt.broken(f.zone)
			}
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
			mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: rcptReplies(later)})
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test")
			want := map[string]queue.State{"bob@dest.test": queue.StateDeferred, "later@dest.test": queue.StateDeferred}
			if tt.wantDelivered {
				want["bob@dest.test"] = queue.StateDelivered
			}
			rec := f.waitSettled(m.ID, want)
			if mx1.Connections() != 0 {
				t.Error("connected to the host whose address lookup failed")
			}
			first := rec.Attempts[0]
			if hostName(first) != "noaddr.dest.test" || first.Result != "deferred" || first.IP != "" || first.Error == "" {
				t.Errorf("first attempt %+v, want a deferred attempt for noaddr.dest.test without IP", first)
			}
			if tt.wantDelivered {
				if got := mx2.Messages(); len(got) != 1 || !slices.Equal(got[0].To, []string{"bob@dest.test"}) {
					t.Fatalf("mx2 got %+v", got)
				}
				return
			}
			if mx2.Connections() != 0 {
				t.Error("mx2 is not an MX here but got a connection")
			}
			r := rcpt(rec, "bob@dest.test")
			if !strings.Contains(r.LastError, "noaddr.dest.test") {
				t.Errorf("LastError %q does not name the host", r.LastError)
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs for a temporary failure", len(d))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Delivery and TLS

func TestTLS01_STARTTLSUsedWhenOffered(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	cert := f.ca.Issue("mx1.dest.test")
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if !got[0].TLS || got[0].TLSVersion < tls.VersionTLS12 {
		t.Errorf("message received with TLS=%v version %x, want TLS", got[0].TLS, got[0].TLSVersion)
	}
	if got[0].ServerName != "mx1.dest.test" {
		t.Errorf("SNI %q, want mx1.dest.test", got[0].ServerName)
	}
	f.waitGone(m.ID)
	if mx1.Connections() != 1 {
		t.Errorf("%d connections, want 1 (no cleartext retry)", mx1.Connections())
	}
}

// TestTLS01_AttemptRecordsOpportunisticPolicy keeps a deferred recipient so
// that the record, and its attempts, stay in the queue.
func TestTLS01_AttemptRecordsOpportunisticPolicy(t *testing.T) {
	tests := []struct {
		name        string
		tls         bool
		wantVersion bool
	}{
		{"STARTTLS offered", true, true},
		{"STARTTLS not offered", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			opts := testnet.SMTPOptions{RcptReply: rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})}
			if tt.tls {
				cert := f.ca.Issue("mx1.dest.test")
				opts.TLSCert = &cert
			}
			f.receiver("127.0.0.11", opts)
			f.receiver("127.0.0.12", opts)
			f.start()
			m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test")
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, "later@dest.test": queue.StateDeferred})
			a := rec.Attempts[0]
			if a.Policy != "opportunistic" {
				t.Errorf("policy %q, want opportunistic", a.Policy)
			}
			if (a.TLSVersion != "") != tt.wantVersion || (a.TLSCipher != "") != tt.wantVersion {
				t.Errorf("TLSVersion %q TLSCipher %q, want set=%v", a.TLSVersion, a.TLSCipher, tt.wantVersion)
			}
			if tt.tls && !strings.HasPrefix(a.TLSVersion, "TLS 1.") {
				t.Errorf("TLSVersion %q", a.TLSVersion)
			}
			if !tt.tls && a.Verification != "no TLS" {
				t.Errorf("Verification %q, want no TLS", a.Verification)
			}
		})
	}
}

func TestTLS01_CleartextWhenNotOffered(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if got[0].TLS {
		t.Error("TLS without STARTTLS being offered")
	}
	if !bytes.Equal(got[0].Data, []byte(testBody)) {
		t.Errorf("body changed: %q", got[0].Data)
	}
	f.waitGone(m.ID)
	// TLS03: a STARTTLS command would have drawn "502 TLS not supported"
	// and no ClientHello can have reached the server.
	if n := len(mx1.ServerNames()); n != 0 {
		t.Errorf("%d TLS handshakes with a server that does not offer STARTTLS", n)
	}
}

func TestTLS01_CleartextRetryAfterHandshakeFailure(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	// STARTTLS is advertised, but the server has no certificate: every
	// handshake ends with an alert.
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{
		TLSConfig: &tls.Config{},
		RcptReply: rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")}),
	})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if got[0].TLS || !slices.Equal(got[0].To, []string{"bob@dest.test"}) {
		t.Errorf("mx1 got %+v, want bob in cleartext", got[0])
	}
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, "later@dest.test": queue.StateDeferred})
	if len(mx1.ServerNames()) == 0 {
		t.Error("no TLS handshake was tried")
	}
	if len(mx2.Messages()) != 0 {
		t.Error("mx2 got mail although mx1 took it in cleartext")
	}
	var at1 []queue.Attempt
	for _, a := range rec.Attempts {
		if hostName(a) == "mx1.dest.test" {
			at1 = append(at1, a)
		}
	}
	if len(at1) != 2 {
		t.Fatalf("attempts at mx1: %+v, want 2 (TLS, then cleartext)", at1)
	}
	if at1[0].Policy != "opportunistic" || at1[0].Result != "deferred" || !strings.HasPrefix(at1[0].Verification, "failed") {
		t.Errorf("first attempt %+v, want a failed opportunistic handshake", at1[0])
	}
	if at1[1].Policy != "plain" || at1[1].TLSVersion != "" {
		t.Errorf("second attempt %+v, want plain", at1[1])
	}
}

func TestSMTP02_5xxFailsOnlyThatRecipient(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{
		RcptReply: rcptReplies(map[string]*smtp.SMTPError{"bad@dest.test": reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user")}),
	})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "bad@dest.test", "carol@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if !slices.Equal(got[0].To, []string{"bob@dest.test", "carol@dest.test"}) {
		t.Errorf("mx1 got %v", got[0].To)
	}
	f.waitGone(m.ID)
	if len(mx2.Messages()) != 0 {
		t.Error("a 5xx recipient was tried at the next MX")
	}
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	if len(d.rep.PerRecipient) != 1 {
		t.Errorf("DSN reports %d recipients, want 1", len(d.rep.PerRecipient))
	}
	r := dsnRecipient(t, d.rep, "bad@dest.test")
	if r["Action"] != "failed" || r["Status"] != "5.1.1" || r["Remote-Mta"] != "dns;mx1.dest.test" {
		t.Errorf("DSN recipient %v", r)
	}
	if !strings.Contains(r["Diagnostic-Code"], "550 5.1.1 no such user") || !strings.HasPrefix(strings.ToLower(r["Diagnostic-Code"]), "smtp;") {
		t.Errorf("Diagnostic-Code %q, want smtp; 550 5.1.1 no such user", r["Diagnostic-Code"])
	}
}

func TestSMTP02_4xxDefersOnlyThatRecipient(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	later := rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "mailbox busy")})
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{RcptReply: later})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: later})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test", "carol@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{
		"bob@dest.test": queue.StateDelivered, "carol@dest.test": queue.StateDelivered, "later@dest.test": queue.StateDeferred,
	})
	if got := mx1.Messages(); len(got) != 1 || !slices.Equal(got[0].To, []string{"bob@dest.test", "carol@dest.test"}) {
		t.Errorf("mx1 got %+v", got)
	}
	if len(mx2.Messages()) != 0 {
		t.Error("mx2 accepted a message")
	}
	if mx2.Connections() == 0 {
		t.Error("the 4xx recipient was not tried at the next MX")
	}
	r := rcpt(rec, "later@dest.test")
	checkNextAttempt(t, r, f.clock.now(), f.opts.FirstRetry)
	if !strings.Contains(r.LastError, "451 4.2.0 mailbox busy") {
		t.Errorf("LastError %q, want the 451 reply", r.LastError)
	}
	if d := f.dsns(); len(d) != 0 {
		t.Errorf("%d DSNs queued for a deferred recipient", len(d))
	}
}

func TestSMTP03_BodyAndHeadersUnchanged(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	f.start()
	body := "DKIM-Signature: v=1; a=rsa-sha256; d=src.test; s=s;\r\n\th=from:subject; bh=abc=; b=def=\r\n" +
		"From: alice@src.test\r\nSubject:   spaced   \r\nX-Odd:no-space\r\n\r\n" +
		".leading dot\r\n..two dots\r\n.\r\ntrailing space \r\n\ttab line\r\n" + strings.Repeat("x", 900) + "\r\n"
	m := f.submit(sender, body, "bob@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	data := got[0].Data
	if bytes.HasPrefix(data, []byte("Received:")) {
		// One prepended Received: header is allowed (SMTP03).
		i := regexp.MustCompile(`\r\n[^ \t]`).FindIndex(data)
		if i == nil {
			t.Fatalf("unterminated Received header: %q", data)
		}
		data = data[i[0]+2:]
	}
	if !bytes.Equal(data, []byte(body)) {
		t.Errorf("body changed:\n got %q\nwant %q", data, body)
	}
	f.waitGone(m.ID)
}

func TestSMTP04_ConnectionReuse(t *testing.T) {
	tests := []struct {
		limit     int
		messages  int
		wantConns int // at most; exactly for a limit of 1
	}{
		{limit: 1, messages: 5, wantConns: 1},
		{limit: 2, messages: 10, wantConns: 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit %d", tt.limit), func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			f.opts.PerHostConnections = tt.limit
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
			var ids []string
			for i := range tt.messages {
				m := f.submit(sender, fmt.Sprintf("Message-ID: <%d@src.test>\r\n\r\nbody %d\r\n", i, i), fmt.Sprintf("r%d@dest.test", i))
				ids = append(ids, m.ID)
			}
			f.start()
			got := mx1.WaitMessages(t, tt.messages, 10*time.Second)
			for _, id := range ids {
				f.waitGone(id)
			}
			n := mx1.Connections()
			if n > tt.wantConns || (tt.limit == 1 && n != 1) {
				t.Errorf("%d connections for %d messages with a limit of %d per host", n, tt.messages, tt.limit)
			}
			if tt.limit == 1 {
				for _, r := range got {
					if r.ConnID != got[0].ConnID {
						t.Errorf("messages arrived on connections %d and %d", got[0].ConnID, r.ConnID)
					}
				}
			}
			if len(got) != tt.messages {
				t.Errorf("%d messages received, want %d", len(got), tt.messages)
			}
		})
	}
}

// droppableConn is a client connection whose peer can be made to vanish
// the way an idle SMTP connection does when the server (or a NAT box)
// times it out: writes still succeed, reads see EOF.
type droppableConn struct {
	net.Conn
	dropped atomic.Bool
}

func (c *droppableConn) Read(p []byte) (int, error) {
	if c.dropped.Load() {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *droppableConn) Write(p []byte) (int, error) {
	if c.dropped.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestSMTP04_StaleReusedConnectionDoesNotDefer: a pooled connection that
// died while idle is no reason to defer the next message; the relay must
// open a fresh connection to the same host ("not the host's fault", as
// domain.go says).
func TestSMTP04_StaleReusedConnectionDoesNotDefer(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	var (
		mu    sync.Mutex
		conns []*droppableConn
	)
	d := &net.Dialer{Timeout: 2 * time.Second}
	f.opts.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dc := &droppableConn{Conn: c}
		mu.Lock()
		conns = append(conns, dc)
		mu.Unlock()
		return dc, nil
	}
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	f.start()
	m1 := f.submit(sender, testBody, "bob@dest.test")
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m1.ID)
	mu.Lock()
	for _, c := range conns {
		c.dropped.Store(true)
	}
	mu.Unlock()

	m2 := f.submit(sender, testBody, "carol@dest.test")
	f.waitFor(func() bool {
		rec, err := f.q.Get(m2.ID)
		return err != nil || (len(rec.Attempts) > 0 && !f.q.Leased(m2.ID))
	})
	if rec, err := f.q.Get(m2.ID); err == nil {
		r := rcpt(rec, "carol@dest.test")
		t.Fatalf("recipient %s after the pooled connection went stale (%s); want it delivered on a new connection", r.State, r.LastError)
	}
	if got := mx1.Messages(); len(got) != 2 {
		t.Errorf("mx1 got %d messages, want 2", len(got))
	}
}

func TestSMTP01_QueueLifetimeExpiryProducesDSN(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	always := testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(451, smtp.EnhancedCode{4, 2, 0}, "still busy")
	}}
	f.receiver("127.0.0.11", always)
	f.receiver("127.0.0.12", always)
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	checkNextAttempt(t, rcpt(rec, "bob@dest.test"), f.clock.now(), f.opts.FirstRetry)
	if d := f.dsns(); len(d) != 0 {
		t.Fatalf("%d DSNs before the queue lifetime ended", len(d))
	}

	// Past the lifetime and the next attempt: the next round is the last.
	f.clock.advance(f.opts.QueueLifetime + time.Minute)
	f.waitGone(m.ID)
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	r := dsnRecipient(t, d.rep, "bob@dest.test")
	if r["Action"] != "failed" || r["Status"] != "5.4.7" {
		t.Errorf("DSN recipient %v, want failed 5.4.7", r)
	}
	if !strings.Contains(r["Diagnostic-Code"], "451 4.2.0 still busy") {
		t.Errorf("Diagnostic-Code %q does not carry the last error", r["Diagnostic-Code"])
	}
	if !strings.Contains(d.rep.Human, "still busy") {
		t.Errorf("human-readable part does not carry the last error:\n%s", d.rep.Human)
	}
}

func TestSMTP01_BackoffGrowsAndIsCapped(t *testing.T) {
	e := New(Options{FirstRetry: time.Minute, MaxRetryInterval: 16 * time.Minute})
	bases := []time.Duration{1, 2, 4, 8, 16, 16, 16}
	for i, b := range bases {
		n := i + 1
		base := b * time.Minute
		lo, hi := base-base/5, base+base/5
		minSeen, maxSeen := time.Duration(1<<62), time.Duration(0)
		for range 500 {
			d := e.backoff(n)
			if d < lo || d > hi {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, lo, hi)
			}
			minSeen, maxSeen = min(minSeen, d), max(maxSeen, d)
		}
		if minSeen == maxSeen {
			t.Errorf("backoff(%d) is always %v: no jitter", n, minSeen)
		}
	}
	// Very many attempts neither overflow nor exceed the cap.
	for _, n := range []int{50, 100, 1000, 1 << 20} {
		if d := e.backoff(n); d < 16*time.Minute*4/5 || d > 16*time.Minute*6/5 {
			t.Errorf("backoff(%d) = %v", n, d)
		}
	}

	// Defaults: first retry minutes after the failure, lifetime 5 days.
	def := New(Options{})
	if def.opts.FirstRetry != 5*time.Minute || def.opts.QueueLifetime != 120*time.Hour || def.opts.MaxRetryInterval != 4*time.Hour {
		t.Errorf("defaults: first retry %v, max interval %v, lifetime %v", def.opts.FirstRetry, def.opts.MaxRetryInterval, def.opts.QueueLifetime)
	}
}

// ---------------------------------------------------------------------------
// Bounces

func TestDSN01_OneReportGroupsFailedRecipients(t *testing.T) {
	f := newFixture(t) // DSNs are delivered here, to see them on the wire
	f.twoMX()
	f.zone.Add(
		senderDomain+". 300 IN MX 10 mx.src.test.",
		"mx.src.test. 300 IN A 127.0.0.30",
	)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{RcptReply: func(to string) *smtp.SMTPError {
		if strings.HasPrefix(to, "bad") {
			return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user "+to)
		}
		return nil
	}})
	src := f.receiver("127.0.0.30", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bad1@dest.test", "bob@dest.test", "bad2@dest.test", "x@nowhere.test")
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m.ID)
	src.WaitMessages(t, 1, 10*time.Second)
	// Let a wrong second DSN arrive, if there is one.
	f.waitFor(func() bool { return len(f.bounces()) == 0 })
	got := src.Messages()
	if len(got) != 1 {
		t.Fatalf("%d DSNs delivered, want 1 grouping every failed recipient", len(got))
	}
	if got[0].From != "" || !slices.Equal(got[0].To, []string{sender}) {
		t.Errorf("DSN sent with MAIL FROM:<%s> to %v, want MAIL FROM:<> to %s", got[0].From, got[0].To, sender)
	}
	rep, err := dsn.Parse(got[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.PerRecipient) != 3 {
		t.Fatalf("DSN reports %d recipients, want 3: %+v", len(rep.PerRecipient), rep.PerRecipient)
	}
	for addr, status := range map[string]string{"bad1@dest.test": "5.1.1", "bad2@dest.test": "5.1.1", "x@nowhere.test": "5.1.2"} {
		r := dsnRecipient(t, rep, addr)
		if r["Action"] != "failed" || r["Status"] != status {
			t.Errorf("%s: %v, want failed %s", addr, r, status)
		}
	}
	if rm := rep.PerMessage.Get("Reporting-MTA"); rm != "dns;relay.test" {
		t.Errorf("Reporting-MTA %q", rm)
	}
	if rep.OriginalType != "message/rfc822" || !bytes.Equal(rep.Original, []byte(testBody)) {
		t.Errorf("original returned as %s: %q", rep.OriginalType, rep.Original)
	}
}

func TestDSN02_NoBounceForNullSender(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	f.receiver("127.0.0.11", testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	}})
	f.start()
	m := f.submit("", testBody, "bob@dest.test")
	f.waitGone(m.ID)
	if d := f.bounces(); len(d) != 0 {
		t.Errorf("%d DSNs for a message with a null sender", len(d))
	}
}

func TestDSN03_NotifyNeverSuppressesBounce(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	f.receiver("127.0.0.11", testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
	}})
	f.start()
	m := f.enqueue(&queue.Message{From: sender, Recipients: []queue.Recipient{
		{Addr: "never@dest.test", Notify: []string{"NEVER"}},
		{Addr: "success@dest.test", Notify: []string{"SUCCESS"}},
	}}, testBody)
	f.waitGone(m.ID)
	if d := f.bounces(); len(d) != 0 {
		t.Errorf("%d DSNs although no recipient asked for failure notices", len(d))
	}
}

func TestDSN03_ParametersPassedOn(t *testing.T) {
	tests := []struct {
		name      string
		enableDSN bool
	}{
		{"next hop supports DSN", true},
		{"next hop without DSN", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{EnableDSN: tt.enableDSN})
			f.start()
			m := f.enqueue(&queue.Message{
				From: sender, DSNRet: "HDRS", DSNEnvID: "id+1",
				Recipients: []queue.Recipient{{Addr: "bob@dest.test", Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;orig@dest.test"}},
			}, testBody)
			got := mx1.WaitMessages(t, 1, 10*time.Second)
			f.waitGone(m.ID)
			mo, ro := got[0].MailOpts, got[0].RcptOpts["bob@dest.test"]
			if !tt.enableDSN {
				if mo.Return != "" || mo.EnvelopeID != "" || len(ro.Notify) != 0 || ro.OriginalRecipient != "" {
					t.Errorf("DSN parameters sent to a server without DSN: %+v %+v", mo, ro)
				}
				d := f.oneDSN()
				checkDSNEnvelope(t, d, sender)
				r := dsnRecipient(t, d.rep, "bob@dest.test")
				if r["Action"] != "relayed" || !strings.HasPrefix(r["Status"], "2.") {
					t.Errorf("DSN recipient %v, want relayed 2.x.x", r)
				}
				if r["Original-Recipient"] != "rfc822;orig@dest.test" {
					t.Errorf("Original-Recipient %q", r["Original-Recipient"])
				}
				if env := d.rep.PerMessage.Get("Original-Envelope-Id"); env != "id+1" {
					t.Errorf("Original-Envelope-Id %q, want id+1", env)
				}
				if d.rep.OriginalType != "text/rfc822-headers" {
					t.Errorf("a success report returns %q, want the headers only", d.rep.OriginalType)
				}
				return
			}
			if mo.Return != smtp.DSNReturnHeaders || mo.EnvelopeID != "id+1" {
				t.Errorf("MAIL parameters RET=%q ENVID=%q, want HDRS and id+1", mo.Return, mo.EnvelopeID)
			}
			if !slices.Equal(ro.Notify, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}) {
				t.Errorf("NOTIFY %v", ro.Notify)
			}
			if ro.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || ro.OriginalRecipient != "orig@dest.test" {
				t.Errorf("ORCPT %s;%s", ro.OriginalRecipientType, ro.OriginalRecipient)
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs queued although the next hop takes over DSN duty", len(d))
			}
		})
	}
}

func TestDSN05_DelayWarningOnce(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	f.opts.DelayWarning = time.Minute
	busy := testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(451, smtp.EnhancedCode{4, 2, 0}, "busy")
	}}
	f.receiver("127.0.0.11", busy)
	f.receiver("127.0.0.12", busy)
	m := f.submit(sender, testBody, "bob@dest.test")
	f.clock.advance(2 * time.Minute) // received two minutes ago
	f.start()
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	if !rec.DelayWarned {
		t.Error("record not marked DelayWarned")
	}
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	r := dsnRecipient(t, d.rep, "bob@dest.test")
	if r["Action"] != "delayed" || !strings.HasPrefix(r["Status"], "4.") || r["Will-Retry-Until"] == "" {
		t.Errorf("DSN recipient %v, want delayed 4.x.x with Will-Retry-Until", r)
	}

	// Further deferrals send no other warning.
	for i := range 3 {
		attempts := rcpt(rec, "bob@dest.test").Attempts
		f.clock.advance(10 * time.Minute)
		f.waitFor(func() bool {
			cur, err := f.q.Get(m.ID)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if f.q.Leased(m.ID) || rcpt(cur, "bob@dest.test").Attempts <= attempts {
				return false
			}
			rec = cur
			return true
		})
	}
	if d := f.dsns(); len(d) != 1 {
		t.Errorf("%d DSNs after several deferrals, want the one delay warning", len(d))
	}
}

func TestTLS07_AttemptRecordsFields(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	cert := f.ca.Issue("mx1.dest.test")
	later := rcptReplies(map[string]*smtp.SMTPError{"later@dest.test": reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")})
	f.receiver("127.0.0.11", testnet.SMTPOptions{TLSCert: &cert, RcptReply: later})
	f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: later})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "later@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDelivered, "later@dest.test": queue.StateDeferred})
	if len(rec.Attempts) != 2 {
		t.Fatalf("attempts %+v, want mx1 then mx2", rec.Attempts)
	}
	a := rec.Attempts[0]
	if a.Host != "mx1.dest.test" || a.IP != "127.0.0.11" || a.Policy != "opportunistic" {
		t.Errorf("host %q ip %q policy %q", a.Host, a.IP, a.Policy)
	}
	if a.TLSVersion == "" || a.TLSCipher == "" || a.Verification == "" {
		t.Errorf("TLS version %q cipher %q verification %q", a.TLSVersion, a.TLSCipher, a.Verification)
	}
	if !strings.HasPrefix(a.Reply, "250") {
		t.Errorf("reply %q, want the server's 250 reply to the message", a.Reply)
	}
	if !slices.Equal(a.Recipients, []string{"bob@dest.test", "later@dest.test"}) || a.Time.IsZero() {
		t.Errorf("recipients %v time %v", a.Recipients, a.Time)
	}
	// bob was delivered and later deferred in this one attempt: the result
	// must not say the attempt merely deferred, and the deferring reply
	// must be on record.
	if a.Result != "partial" {
		t.Errorf("result %q for an attempt that delivered one recipient and deferred another, want partial", a.Result)
	}
	if !strings.Contains(a.Reply+" "+a.Error, "451") {
		t.Errorf("reply %q error %q: the 451 to RCPT is not recorded", a.Reply, a.Error)
	}
	b := rec.Attempts[1]
	if b.Host != "mx2.dest.test" || b.Policy != "opportunistic" || b.TLSVersion != "" || b.Verification != "no TLS" || b.Result != "deferred" {
		t.Errorf("second attempt %+v", b)
	}
	if !strings.Contains(b.Reply+" "+b.Error, "451") {
		t.Errorf("second attempt reply %q error %q: the 451 is not recorded", b.Reply, b.Error)
	}
}

func TestRestartMidDeliveryDeliversAtLeastOnce(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	slow := testnet.SMTPOptions{DataReply: func(testnet.Received) *smtp.SMTPError {
		time.Sleep(50 * time.Millisecond)
		return nil
	}}
	mx1 := f.receiver("127.0.0.11", slow)
	const n = 20
	for i := range n {
		f.submit(sender, fmt.Sprintf("Message-ID: <%d@src.test>\r\n\r\nbody %d\r\n", i, i), fmt.Sprintf("r%d@dest.test", i))
	}
	f.start()
	mx1.WaitMessages(t, 3, 10*time.Second)
	f.stop()
	before := len(mx1.Messages())
	if before >= n {
		t.Logf("all %d messages were delivered before the stop", n)
	}
	f.start()
	f.waitFor(func() bool {
		msgs, err := f.q.List(queue.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs) == 0
	})
	re := regexp.MustCompile(`Message-ID: <(\d+)@src.test>`)
	seen := map[string]int{}
	for _, r := range mx1.Messages() {
		m := re.FindSubmatch(r.Data)
		if m == nil {
			t.Fatalf("received message without a test Message-ID: %q", r.Data)
		}
		seen[string(m[1])]++
	}
	for i := range n {
		c := seen[fmt.Sprint(i)]
		if c < 1 || c > 2 {
			t.Errorf("message %d received %d times, want 1 or 2", i, c)
		}
	}
	t.Logf("%d received before the stop, %d in all", before, len(mx1.Messages()))
}

// ---------------------------------------------------------------------------
// Routes

func TestRouteNextHop(t *testing.T) {
	tests := []struct {
		name    string
		nextHop func(port int) string
		zone    []string
	}{
		{"address and port", func(port int) string { return fmt.Sprintf("127.0.0.13:%d", port) }, nil},
		{"host name and port", func(port int) string { return fmt.Sprintf("gw.transport.test:%d", port) }, []string{"gw.transport.test. 300 IN A 127.0.0.13"}},
		{"bracketed address, default port", func(int) string { return "[127.0.0.13]" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.zone.Add(tt.zone...)
			// DNS would send partner.test elsewhere.
			f.zone.Add("partner.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
			mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
			gw := f.receiver("127.0.0.13", testnet.SMTPOptions{})
			f.opts.Routes = []Route{{Domain: "Partner.Test.", NextHop: tt.nextHop(f.port)}}
			f.start()
			m := f.submit(sender, testBody, "bob@partner.test")
			got := gw.WaitMessages(t, 1, 10*time.Second)
			if !slices.Equal(got[0].To, []string{"bob@partner.test"}) {
				t.Errorf("next hop got %v", got[0].To)
			}
			f.waitGone(m.ID)
			if n := f.dns.QueryCount("partner.test", dns.TypeANY); n != 0 {
				t.Errorf("%d DNS queries for partner.test despite the route", n)
			}
			if mx1.Connections() != 0 {
				t.Error("the MX was used despite the route")
			}
		})
	}
}

func TestRouteSecurityTLSRequiredNeverCleartext(t *testing.T) {
	tests := []struct {
		name     string
		security string
		rcv      func(f *fixture) testnet.SMTPOptions
		// wantErr is in the recipient's LastError.
		wantErr string
		// wantConns: whether the relay connects at all.
		wantConns bool
	}{
		{
			name: "tls, STARTTLS not offered", security: "tls",
			rcv:     func(*fixture) testnet.SMTPOptions { return testnet.SMTPOptions{} },
			wantErr: "STARTTLS", wantConns: true,
		},
		{
			name: "tls, handshake fails", security: "tls",
			rcv:     func(*fixture) testnet.SMTPOptions { return testnet.SMTPOptions{TLSConfig: &tls.Config{}} },
			wantErr: "TLS", wantConns: true,
		},
		{
			name: "tls, only TLS 1.1 offered", security: "tls",
			rcv: func(f *fixture) testnet.SMTPOptions {
				cert := f.ca.Issue("gw.partner.test")
				return testnet.SMTPOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS11}}
			},
			wantErr: "TLS", wantConns: true,
		},
		{
			name: "dane-only", security: "dane-only",
			rcv: func(f *fixture) testnet.SMTPOptions {
				cert := f.ca.Issue("gw.partner.test")
				return testnet.SMTPOptions{TLSCert: &cert}
			},
			wantErr: "cannot be met",
		},
		{
			name: "mta-sts-or-dane", security: "mta-sts-or-dane",
			rcv:     func(*fixture) testnet.SMTPOptions { return testnet.SMTPOptions{} },
			wantErr: "cannot be met",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
			gw := f.receiver("127.0.0.13", tt.rcv(f))
			f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test", Security: tt.security}}
			f.start()
			m := f.submit(sender, testBody, "bob@partner.test")
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDeferred})
			if n := len(gw.Messages()); n != 0 {
				t.Fatalf("%d messages delivered in spite of route security %s", n, tt.security)
			}
			if got := gw.Connections() > 0; got != tt.wantConns {
				t.Errorf("connections %d, want some=%v", gw.Connections(), tt.wantConns)
			}
			if tt.wantConns && gw.Connections() != 1 {
				t.Errorf("%d connections: no second (cleartext) attempt is allowed", gw.Connections())
			}
			r := rcpt(rec, "bob@partner.test")
			if !strings.Contains(r.LastError, tt.wantErr) {
				t.Errorf("LastError %q, want it to mention %q", r.LastError, tt.wantErr)
			}
			for _, a := range rec.Attempts {
				if a.Result != "deferred" || a.Policy == "plain" || a.Policy == "opportunistic" {
					t.Errorf("attempt %+v", a)
				}
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs for a deferral", len(d))
			}
		})
	}
}

func TestRouteSecurityTLSDelivers(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
	cert := testnet.SelfSigned(t, "other.name")
	gw := f.receiver("127.0.0.13", testnet.SMTPOptions{TLSCert: &cert})
	f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test", Security: "tls"}}
	f.start()
	m := f.submit(sender, testBody, "bob@partner.test")
	got := gw.WaitMessages(t, 1, 10*time.Second)
	if !got[0].TLS || got[0].TLSVersion < tls.VersionTLS12 {
		t.Errorf("TLS=%v version %x, want TLS 1.2 or later", got[0].TLS, got[0].TLSVersion)
	}
	f.waitGone(m.ID)
}

// ---------------------------------------------------------------------------
// REQUIRETLS

func TestTLS05_RequireTLSOverOpportunisticBounces(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	cert := f.ca.Issue("mx1.dest.test")
	opts := testnet.SMTPOptions{TLSCert: &cert, EnableREQUIRETLS: true}
	mx1 := f.receiver("127.0.0.11", opts)
	mx2 := f.receiver("127.0.0.12", opts)
	f.start()
	m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@dest.test"}}}, testBody)
	f.waitGone(m.ID)
	if n := len(mx1.Messages()) + len(mx2.Messages()); n != 0 {
		t.Fatalf("%d REQUIRETLS messages delivered over unauthenticated TLS", n)
	}
	if n := mx1.Connections() + mx2.Connections(); n != 0 {
		t.Errorf("%d connections made for a message that can go nowhere", n)
	}
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	r := dsnRecipient(t, d.rep, "bob@dest.test")
	if r["Action"] != "failed" || r["Status"] != "5.7.30" {
		t.Errorf("DSN recipient %v, want failed 5.7.30", r)
	}
	// DSN04: the DSN says which security requirement failed.
	if !strings.Contains(r["Diagnostic-Code"]+d.rep.Human, "REQUIRETLS") {
		t.Errorf("DSN does not name REQUIRETLS:\n%s\n%v", d.rep.Human, r)
	}
}

// TestTLS07_HostNamesRecordedConsistently: every attempt names its host the
// same way (without the trailing dot of the DNS name), whether the host was
// connected to or skipped for want of an address or a policy.
func TestTLS07_HostNamesRecordedConsistently(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add(
		"dest.test. 300 IN MX 10 noaddr.dest.test.",
		"dest.test. 300 IN MX 20 mx2.dest.test.",
		"mx2.dest.test. 300 IN A 127.0.0.12",
	)
	f.receiver("127.0.0.12", testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(451, smtp.EnhancedCode{4, 2, 0}, "try later")
	}})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
	var hosts []string
	for _, a := range rec.Attempts {
		hosts = append(hosts, a.Host)
	}
	if !slices.Equal(hosts, []string{"noaddr.dest.test", "mx2.dest.test"}) {
		t.Errorf("attempt hosts %q, want [noaddr.dest.test mx2.dest.test]", hosts)
	}
}

// TestTLS05_RequireTLSNeedsAuthenticatedREQUIRETLSServer sends REQUIRETLS
// mail over a route whose policy authenticates the server (tls-verify with
// the test CA): it goes only to a server that advertises REQUIRETLS, with
// the parameter passed on, and otherwise bounces with 5.7.30.
func TestTLS05_RequireTLSNeedsAuthenticatedREQUIRETLSServer(t *testing.T) {
	tests := []struct {
		name       string
		requireTLS bool // the server advertises REQUIRETLS
	}{
		{"server offers REQUIRETLS", true},
		{"server without REQUIRETLS", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.opts.Policy = secpolicy.NewPolicy(secpolicy.PolicyConfig{Resolver: f.opts.Resolver, RootCAs: f.ca.Pool()})
			f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
			cert := f.ca.Issue("gw.partner.test")
			gw := f.receiver("127.0.0.13", testnet.SMTPOptions{TLSCert: &cert, EnableREQUIRETLS: tt.requireTLS})
			f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test", Security: "tls-verify"}}
			f.start()
			m := f.enqueue(&queue.Message{From: sender, RequireTLS: true, Recipients: []queue.Recipient{{Addr: "bob@partner.test"}}}, testBody)
			if tt.requireTLS {
				got := gw.WaitMessages(t, 1, 10*time.Second)
				if !got[0].TLS || !got[0].MailOpts.RequireTLS {
					t.Errorf("TLS=%v REQUIRETLS=%v, want both", got[0].TLS, got[0].MailOpts.RequireTLS)
				}
				f.waitGone(m.ID)
				if d := f.dsns(); len(d) != 0 {
					t.Errorf("%d DSNs for a delivered message", len(d))
				}
				return
			}
			// Wait for the first round to be recorded, whatever it decided.
			f.waitFor(func() bool {
				rec, err := f.q.Get(m.ID)
				return err != nil || (len(rec.Attempts) > 0 && !f.q.Leased(m.ID))
			})
			if n := len(gw.Messages()); n != 0 {
				t.Fatalf("%d REQUIRETLS messages delivered to a server without REQUIRETLS", n)
			}
			if rec, err := f.q.Get(m.ID); err == nil {
				r := rcpt(rec, "bob@partner.test")
				t.Fatalf("recipient %s (%s), want it failed at once with 5.7.30 (RFC 8689 §5, checklist TLS05)", r.State, r.LastError)
			}
			d := f.oneDSN()
			r := dsnRecipient(t, d.rep, "bob@partner.test")
			if r["Action"] != "failed" || r["Status"] != "5.7.30" {
				t.Errorf("DSN recipient %v, want failed 5.7.30", r)
			}
		})
	}
}

// TestDSN04_DSNNamesSecurityPolicyFailure: a recipient that could never be
// delivered because of the route's TLS requirement bounces at the end of
// its queue lifetime with a DSN that names the failed requirement.
func TestDSN04_DSNNamesSecurityPolicyFailure(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("gw.partner.test. 300 IN A 127.0.0.13")
	f.receiver("127.0.0.13", testnet.SMTPOptions{})
	f.opts.Routes = []Route{{Domain: "partner.test", NextHop: "gw.partner.test", Security: "tls"}}
	f.start()
	m := f.submit(sender, testBody, "bob@partner.test")
	f.waitSettled(m.ID, map[string]queue.State{"bob@partner.test": queue.StateDeferred})
	f.clock.advance(f.opts.QueueLifetime + time.Minute)
	f.waitGone(m.ID)
	d := f.oneDSN()
	r := dsnRecipient(t, d.rep, "bob@partner.test")
	if r["Action"] != "failed" || r["Status"] != "5.4.7" {
		t.Errorf("DSN recipient %v, want failed 5.4.7", r)
	}
	if !strings.Contains(r["Diagnostic-Code"], "STARTTLS") || !strings.Contains(d.rep.Human, "STARTTLS") {
		t.Errorf("DSN does not say STARTTLS was required and missing:\n%v\n%s", r, d.rep.Human)
	}
}

func TestMX01_EqualPreferencesShareLoad(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add(
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"dest.test. 300 IN MX 10 mx2.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
		"mx2.dest.test. 300 IN A 127.0.0.12",
	)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{})
	f.start()
	const n = 30
	for i := range n {
		// One at a time, so that a pooled connection does not decide.
		m := f.submit(sender, testBody, fmt.Sprintf("r%d@dest.test", i))
		f.waitGone(m.ID)
	}
	a, b := len(mx1.Messages()), len(mx2.Messages())
	if a+b != n || a == 0 || b == 0 {
		t.Errorf("mx1 got %d, mx2 got %d of %d messages: equal preferences are not shuffled", a, b, n)
	}
}

func TestSMTP02_5xxAfterDataFailsEveryRecipient(t *testing.T) {
	f := newEngineFixture(t)
	f.twoMX()
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{DataReply: func(testnet.Received) *smtp.SMTPError {
		return reject(554, smtp.EnhancedCode{5, 6, 0}, "content rejected")
	}})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test", "carol@dest.test")
	f.waitGone(m.ID)
	if len(mx1.Messages())+len(mx2.Messages()) != 0 || mx2.Connections() != 0 {
		t.Error("a message refused with 5xx after DATA went elsewhere")
	}
	d := f.oneDSN()
	if len(d.rep.PerRecipient) != 2 {
		t.Fatalf("DSN reports %d recipients, want 2", len(d.rep.PerRecipient))
	}
	for _, addr := range []string{"bob@dest.test", "carol@dest.test"} {
		r := dsnRecipient(t, d.rep, addr)
		if r["Action"] != "failed" || r["Status"] != "5.6.0" || !strings.Contains(r["Diagnostic-Code"], "554 5.6.0 content rejected") {
			t.Errorf("%s: %v", addr, r)
		}
	}
}

// TestSMTP01_RetryScheduleDoublesUntilLifetime follows one always-deferred
// recipient: first retry after first_retry, doubling, the last attempt at
// the end of the queue lifetime, then a 5.4.7 failure.
func TestSMTP01_RetryScheduleDoublesUntilLifetime(t *testing.T) {
	f := newEngineFixture(t)
	f.zone.Add("dest.test. 300 IN MX 10 mx1.dest.test.", "mx1.dest.test. 300 IN A 127.0.0.11")
	f.receiver("127.0.0.11", testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
		return reject(451, smtp.EnhancedCode{4, 2, 0}, "busy")
	}})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	expiry := m.ReceivedAt.Add(f.opts.QueueLifetime)
	wait := f.opts.FirstRetry
	for k := 1; ; k++ {
		var r *queue.Recipient
		f.waitFor(func() bool {
			rec, err := f.q.Get(m.ID)
			if err != nil {
				t.Fatalf("attempt %d: %v", k, err)
			}
			r = rcpt(rec, "bob@dest.test")
			return r.Attempts == k && !f.q.Leased(m.ID)
		})
		if r.State != queue.StateDeferred {
			t.Fatalf("attempt %d: state %s", k, r.State)
		}
		now := f.clock.now()
		if r.NextAttempt.Equal(expiry) {
			// Clamped: the backoff would have reached past the lifetime.
			if now.Add(wait + wait/5).Before(expiry) {
				t.Fatalf("attempt %d at %v: next attempt clamped to the lifetime end %v although %v (±20%%) fits", k, now, expiry, wait)
			}
			break
		}
		if r.NextAttempt.After(expiry) {
			t.Fatalf("attempt %d: NextAttempt %v after the end of the lifetime %v", k, r.NextAttempt, expiry)
		}
		checkNextAttempt(t, r, now, wait)
		t.Logf("attempt %d at +%v: next in %v", k, now.Sub(m.ReceivedAt), r.NextAttempt.Sub(now))
		f.clock.advance(r.NextAttempt.Sub(now))
		wait = min(2*wait, f.engineMaxRetry())
	}
	f.clock.advance(expiry.Sub(f.clock.now()))
	f.waitGone(m.ID)
	r := dsnRecipient(t, f.oneDSN().rep, "bob@dest.test")
	if r["Action"] != "failed" || r["Status"] != "5.4.7" {
		t.Errorf("DSN recipient %v, want failed 5.4.7", r)
	}
}

// engineMaxRetry is the retry interval cap the engine will use.
func (f *fixture) engineMaxRetry() time.Duration { return New(f.opts).opts.MaxRetryInterval }

func TestDSN05_NoDelayWarning(t *testing.T) {
	tests := []struct {
		name   string
		notify []string
		age    time.Duration // of the message at the first attempt
	}{
		{"not yet due", nil, 0},
		{"NOTIFY without DELAY", []string{"FAILURE"}, 2 * time.Minute},
		{"NOTIFY=NEVER", []string{"NEVER"}, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newEngineFixture(t)
			f.twoMX()
			f.opts.DelayWarning = time.Minute
			busy := testnet.SMTPOptions{RcptReply: func(string) *smtp.SMTPError {
				return reject(451, smtp.EnhancedCode{4, 2, 0}, "busy")
			}}
			f.receiver("127.0.0.11", busy)
			f.receiver("127.0.0.12", busy)
			m := f.enqueue(&queue.Message{From: sender, Recipients: []queue.Recipient{{Addr: "bob@dest.test", Notify: tt.notify}}}, testBody)
			f.clock.advance(tt.age)
			f.start()
			rec := f.waitSettled(m.ID, map[string]queue.State{"bob@dest.test": queue.StateDeferred})
			if rec.DelayWarned {
				t.Error("record marked DelayWarned")
			}
			if d := f.dsns(); len(d) != 0 {
				t.Errorf("%d DSNs queued", len(d))
			}
		})
	}
}

// An administrator's bounce fails every recipient still waiting (held
// ones too), tells the sender in one DSN, and removes the message; a
// message a worker holds is refused, not bounced under its feet.
func TestAdminBounceFailsWaitingRecipientsWithDSN(t *testing.T) {
	f := newEngineFixture(t) // not started: nothing is delivered
	e := New(f.opts)
	m := &queue.Message{From: sender, ReceivedAt: f.clock.now(), Recipients: []queue.Recipient{
		{Addr: "a@dest.test"}, {Addr: "b@dest.test", State: queue.StateHeld},
	}}
	if err := f.q.Enqueue(context.Background(), m, bytes.NewBufferString(testBody)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.q.LeaseMessage(m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Bounce(m.ID); !errors.Is(err, queue.ErrLeased) {
		t.Fatalf("bounce of a leased message: %v, want ErrLeased", err)
	}
	f.q.Unlease(m.ID)
	n, err := e.Bounce(m.ID)
	if err != nil || n != 2 {
		t.Fatalf("bounce = %d, %v; want 2 recipients", n, err)
	}
	if _, err := f.q.Get(m.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("bounced message still queued: %v", err)
	}
	d := f.oneDSN()
	checkDSNEnvelope(t, d, sender)
	for _, addr := range []string{"a@dest.test", "b@dest.test"} {
		r := dsnRecipient(t, d.rep, addr)
		if r["Action"] != "failed" || r["Status"] != "5.0.0" {
			t.Errorf("%s: %v, want failed 5.0.0", addr, r)
		}
	}
	if _, err := e.Bounce(m.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("second bounce: %v, want ErrNotFound", err)
	}
}

// Under delivery.hold the DSNs the relay makes are held too, so that a
// trial run mails nobody, not even a bounce.
func TestDSNsHeldUnderDeliveryHold(t *testing.T) {
	f := newEngineFixture(t)
	opts := f.opts
	opts.HoldDSNs = true
	e := New(opts)
	m := f.submit(sender, testBody, "a@dest.test")
	if _, err := e.Bounce(m.ID); err != nil {
		t.Fatal(err)
	}
	d := f.oneDSN()
	if st := d.msg.Recipients[0].State; st != queue.StateHeld {
		t.Errorf("DSN recipient %s, want held", st)
	}
	e.SetHoldDSNs(false)
	m2 := f.submit(sender, testBody, "b@dest.test")
	if _, err := e.Bounce(m2.ID); err != nil {
		t.Fatal(err)
	}
	for _, d := range f.dsns() {
		if d.msg.Recipients[0].State == queue.StateQueued {
			return
		}
	}
	t.Error("after SetHoldDSNs(false) the DSN is not queued")
}

// A cleartext session to a domain without a policy counts for TLS
// reporting as a failure of type starttls-not-supported under
// no-policy-found (RFC 8460 §4.3.2.1); a TLS session counts as a success.
func TestTLS01_CleartextSessionCountedForTLSReporting(t *testing.T) {
	rec, err := tlsstats.Open(filepath.Join(t.TempDir(), "tls-stats.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	f := newEngineFixture(t)
	f.opts.TLSStats = rec
	f.twoMX()
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	f.start()
	m := f.submit(sender, testBody, "bob@dest.test")
	mx1.WaitMessages(t, 1, 10*time.Second)
	f.waitGone(m.ID)
	counts, err := rec.Query("", "", "dest.test")
	if err != nil || len(counts) != 1 {
		t.Fatalf("counts %+v, %v", counts, err)
	}
	c := counts[0]
	if c.PolicyType != tlsstats.PolicyNoPolicy || c.Success != 0 || c.Failure != 1 ||
		len(c.Failures) != 1 || c.Failures[0].ResultType != "starttls-not-supported" {
		t.Errorf("counts %+v, want one starttls-not-supported failure under no-policy-found", c)
	}
}

package intake

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
)

type testRelay struct {
	q    *queue.Queue
	addr string
}

// startIntake runs an intake listener on 127.0.0.1 with a fresh queue.
// Unless changed by mod, 127.0.0.2 is trusted and 127.0.0.1 is not.
func startIntake(t *testing.T, mod func(*Options)) *testRelay {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users, err := NewUsers(map[string]string{"mailraven": string(hash)})
	if err != nil {
		t.Fatal(err)
	}
	return serveIntake(t, q, func(o *Options) {
		o.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testnet.SelfSigned(t, "relay.test")}}
		o.Users = users
		o.MaxMessageBytes = 10000
		o.AuthFailureDelay = time.Millisecond
		if mod != nil {
			mod(o)
		}
	})
}

// dial connects from the given local address ("" = default 127.0.0.1) in
// one of the modes "plain", "starttls" or "implicit".
func (r *testRelay) dial(t *testing.T, from, mode string) *smtp.Client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := &tls.Config{InsecureSkipVerify: true}
	var c *smtp.Client
	switch mode {
	case "implicit":
		c = smtp.NewClient(tls.Client(conn, tlsConf))
	case "starttls":
		c, err = smtp.NewClientStartTLS(conn, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpCode(err error) int {
	var e *smtp.SMTPError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

func onlyMessage(t *testing.T, q *queue.Queue) (*queue.Message, string) {
	t.Helper()
	msgs, err := q.List(queue.Filter{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("queue has %d messages (%v), want 1", len(msgs), err)
	}
	f, err := q.Body(msgs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return msgs[0], string(b)
}

func TestSUB01_TrustedNetworkAcceptedBodyKeptByteForByte(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.2", "plain")
	body := "From: a@example.org\r\nSubject: test\r\nDKIM-Signature: v=1; b=abc\r\n\r\n.leading dot\r\nline\twith tab  \r\n\r\n"
	if err := send(c, "a@example.org", []string{"b@example.com"}, body); err != nil {
		t.Fatal(err)
	}
	m, stored := onlyMessage(t, r.q)
	if m.From != "a@example.org" || m.Recipients[0].Addr != "b@example.com" || m.ClientHelo != "client.test" {
		t.Fatalf("envelope = %+v", m)
	}
	// SMTP03: exactly one Received header is prepended; the rest is unchanged.
	if !strings.HasPrefix(stored, "Received: from client.test ([127.0.0.2])\r\n\tby relay.test with ESMTP id "+m.ID) {
		t.Fatalf("stored message starts %q", stored[:min(len(stored), 120)])
	}
	idx := strings.Index(stored, "\r\nFrom: ")
	if idx < 0 || stored[idx+2:] != body {
		t.Fatalf("body changed:\n%q", stored)
	}
	if strings.Count(stored, "Received:") != 1 {
		t.Fatal("more than one Received header")
	}
}

func TestSUB01_UntrustedUnauthenticatedRefusedForEveryRecipient(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.1", "plain")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"b@example.com", "postmaster@relay.test", "x@127.0.0.1", "user@[127.0.0.1]"} {
		err := c.Rcpt(rcpt, nil)
		if code := smtpCode(err); code != 554 && code != 530 {
			t.Errorf("RCPT %s from untrusted client: %v, want 554/530", rcpt, err)
		}
	}
	if st, _ := r.q.Stats(); st.Messages != 0 {
		t.Fatal("something was queued")
	}
}

func TestSUB02_AuthRefusedBeforeTLS(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.TLS, o.Auth = TLSStartTLS, AuthOptional })
	c := r.dial(t, "127.0.0.1", "plain")
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised before STARTTLS")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not advertised")
	}
	err := c.Auth(sasl.NewPlainClient("", "mailraven", "s3cret"))
	if code := smtpCode(err); code/100 != 5 {
		t.Fatalf("AUTH before TLS: %v", err)
	}
	// And an untrusted client without AUTH is told to use TLS and authenticate.
	c.Mail("a@example.org", nil)
	if err := c.Rcpt("b@example.com", nil); smtpCode(err) != 530 {
		t.Fatalf("RCPT: %v, want 530", err)
	}
}

func TestSUB02_AuthAfterSTARTTLS(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.TLS, o.Auth = TLSStartTLS, AuthRequired })
	tests := []struct {
		name string
		mech func() sasl.Client
		ok   bool
	}{
		{"plain", func() sasl.Client { return sasl.NewPlainClient("", "mailraven", "s3cret") }, true},
		{"login", func() sasl.Client { return sasl.NewLoginClient("mailraven", "s3cret") }, true},
		{"wrong password", func() sasl.Client { return sasl.NewPlainClient("", "mailraven", "nope") }, false},
		{"unknown user", func() sasl.Client { return sasl.NewPlainClient("", "nobody", "s3cret") }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := r.dial(t, "127.0.0.2", "starttls") // trusted address, but auth = required
			if ok, params := c.Extension("AUTH"); !ok || !strings.Contains(params, "PLAIN") || !strings.Contains(params, "LOGIN") {
				t.Fatalf("AUTH after STARTTLS: %v %q", ok, params)
			}
			err := c.Auth(tc.mech())
			if tc.ok != (err == nil) {
				t.Fatalf("auth: %v", err)
			}
			err = send(c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\nx\r\n")
			if tc.ok && err != nil {
				t.Fatalf("send after auth: %v", err)
			}
			if !tc.ok && smtpCode(err) != 530 {
				t.Fatalf("send without auth: %v, want 530", err)
			}
		})
	}
	msgs, _ := r.q.List(queue.Filter{})
	if len(msgs) != 2 || msgs[0].AuthUser != "mailraven" {
		t.Fatalf("queued %d messages, want 2 with auth user", len(msgs))
	}
	_, stored := onlyFirst(t, r.q)
	if !strings.Contains(stored, "with ESMTPSA id") || !strings.Contains(stored, "(using TLS") {
		t.Fatalf("Received header does not show TLS and AUTH: %q", stored[:200])
	}
}

func onlyFirst(t *testing.T, q *queue.Queue) (*queue.Message, string) {
	msgs, _ := q.List(queue.Filter{Limit: 1})
	f, err := q.Body(msgs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return msgs[0], string(b)
}

func TestSUB03_ImplicitTLSListenerWithAuth(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.TLS, o.Auth = TLSImplicit, AuthRequired })
	c := r.dial(t, "127.0.0.1", "implicit")
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered inside implicit TLS")
	}
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Fatal("REQUIRETLS not offered over TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "mailraven", "s3cret")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	onlyMessage(t, r.q)
}

func TestSUB04_OversizeRefusedNothingStored(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.2", "plain")
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 200) // 20 kB > 10000
	err := send(c, "a@example.org", []string{"b@example.com"}, big)
	if smtpCode(err) != 552 {
		t.Fatalf("oversize DATA: %v, want 552", err)
	}
	// SIZE= above the limit is refused at MAIL already.
	if err := c.Mail("a@example.org", &smtp.MailOptions{Size: 20000}); smtpCode(err) != 552 {
		t.Fatalf("MAIL SIZE=20000: %v, want 552", err)
	}
	if st, _ := r.q.Stats(); st.Messages != 0 {
		t.Fatal("oversize message was queued")
	}
	entries, _ := spoolFiles(t, r.q)
	if entries != 0 {
		t.Fatalf("%d files left in spool", entries)
	}
	// The session is still usable for a message within the limit.
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: small\r\n\r\nok\r\n"); err != nil {
		t.Fatal(err)
	}
}

func spoolFiles(t *testing.T, q *queue.Queue) (int, error) {
	t.Helper()
	n := 0
	msgs, _ := q.List(queue.Filter{})
	for _, m := range msgs {
		if f, err := q.Body(m.ID); err == nil {
			f.Close()
			n++
		}
	}
	return n, nil
}

func TestSUB04_Limits(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.MaxConnectionsPerIP = 2 })
	c := r.dial(t, "127.0.0.2", "plain")
	c.Mail("a@example.org", nil)
	for i := range 5 {
		if err := c.Rcpt("r"+string(rune('a'+i))+"@example.com", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Rcpt("six@example.com", nil); smtpCode(err) != 452 {
		t.Fatalf("6th RCPT with max 5: %v, want 452", err)
	}
	// Third connection from the same IP: 421.
	r.dial(t, "127.0.0.2", "plain")
	conn, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(r.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	greeting, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(greeting, []byte("421 4.7.0")) || !bytes.Contains(greeting, []byte("too many connections from your address")) {
		t.Fatalf("greeting over the per-IP limit: %q", greeting)
	}
	// Another address is not affected.
	r.dial(t, "127.0.0.3", "plain")
}

func TestSUB04_LongLineRefused(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.MaxLineLength = 100; o.MaxMessageBytes = 100000 })
	c := r.dial(t, "127.0.0.2", "plain")
	err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\n"+strings.Repeat("y", 500)+"\r\n")
	if code := smtpCode(err); code/100 != 5 && err == nil {
		t.Fatalf("long line: %v", err)
	}
	if st, _ := r.q.Stats(); st.Messages != 0 {
		t.Fatal("message with an over-long line was queued")
	}
}

func TestSUB06_ExtensionsAdvertisedAndParametersStored(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.TLS = TLSStartTLS })
	c := r.dial(t, "127.0.0.2", "plain")
	for _, ext := range []string{"8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "DSN", "SIZE", "STARTTLS"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if ok, params := c.Extension("SIZE"); !ok || params != "10000" {
		t.Errorf("SIZE %q, want 10000", params)
	}
	c = r.dial(t, "127.0.0.2", "starttls")
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Fatal("REQUIRETLS not advertised after STARTTLS")
	}
	err := c.Mail("a@example.org", &smtp.MailOptions{Body: smtp.Body8BitMIME, UTF8: true, RequireTLS: true,
		Return: smtp.DSNReturnHeaders, EnvelopeID: "QQ314159"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("b@example.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "b@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	io.WriteString(w, "Subject: ünïcode\r\n\r\nbody\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m, _ := onlyMessage(t, r.q)
	if m.Body != "8BITMIME" || !m.SMTPUTF8 || !m.RequireTLS || m.DSNRet != "HDRS" || m.DSNEnvID != "QQ314159" {
		t.Fatalf("MAIL parameters not stored: %+v", m)
	}
	rc := m.Recipients[0]
	if strings.Join(rc.Notify, ",") != "FAILURE,DELAY" || rc.ORcpt != "RFC822;b@example.com" {
		t.Fatalf("RCPT parameters not stored: %+v", rc)
	}
}

func TestRequireTLSRefusedWithoutTLS(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.2", "plain")
	if err := c.Mail("a@example.org", &smtp.MailOptions{RequireTLS: true}); err == nil {
		t.Fatal("REQUIRETLS accepted over cleartext")
	}
}

func TestNullSenderAndBadAddresses(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.2", "plain")
	if err := send(c, "", []string{"b@example.com"}, "Subject: bounce\r\n\r\nx\r\n"); err != nil {
		t.Fatalf("null sender: %v", err)
	}
	c.Mail("a@example.org", nil)
	if err := c.Rcpt("nodomain", nil); smtpCode(err) != 501 {
		t.Fatalf("RCPT without domain: %v", err)
	}
	if err := c.Rcpt("x@", nil); smtpCode(err) != 501 {
		t.Fatalf("RCPT with empty domain: %v", err)
	}
}

func TestNewRefusesAuthWithoutTLS(t *testing.T) {
	_, err := New(nil, Options{TLS: TLSNone, Auth: AuthOptional})
	if err == nil {
		t.Fatal("auth without TLS accepted")
	}
}

func TestShutdownClosesIdleSessionsAndFinishesTransactions(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	srv, err := New(q, Options{Hostname: "relay.test", TLS: TLSNone, Auth: AuthNone,
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		CommandTimeout:  time.Minute, DataTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	r := &testRelay{q: q, addr: ln.Addr().String()}
	idle := r.dial(t, "", "plain")
	busy := r.dial(t, "", "plain")
	busy.Mail("a@example.org", nil)
	busy.Rcpt("b@example.com", nil)
	w, err := busy.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: in flight\r\n\r\n")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	// The idle session is told to go away without waiting for its
	// command timeout (a minute here).
	deadline := time.Now().Add(5 * time.Second)
	for idle.Noop() == nil {
		if time.Now().After(deadline) {
			t.Fatal("idle session still served after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The transaction in progress completes and is acknowledged.
	time.Sleep(100 * time.Millisecond)
	io.WriteString(w, "body\r\n")
	if err := w.Close(); err != nil {
		t.Fatalf("in-flight message not acknowledged: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if st, _ := q.Stats(); st.Messages != 1 {
		t.Fatalf("queued %d, want 1", st.Messages)
	}
	if _, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

func TestSUB04_OverlongAddressesAndParametersRefused(t *testing.T) {
	r := startIntake(t, nil)
	c := r.dial(t, "127.0.0.2", "plain")
	long := strings.Repeat("a", 250) + "@example.com"
	if err := c.Mail(long, nil); smtpCode(err) != 501 {
		t.Fatalf("MAIL with a %d-octet address: %v, want 501", len(long), err)
	}
	if err := c.Mail("a@example.org", &smtp.MailOptions{EnvelopeID: strings.Repeat("e", 101)}); smtpCode(err) != 501 {
		t.Fatalf("ENVID of 101 characters: %v, want 501", err)
	}
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(long, nil); smtpCode(err) != 501 {
		t.Fatalf("RCPT with a %d-octet address: %v, want 501", len(long), err)
	}
}

func TestHoldQueuesAcceptedMailOnHold(t *testing.T) {
	r := startIntake(t, func(o *Options) { o.Hold = true })
	c := r.dial(t, "127.0.0.2", "plain")
	if err := send(c, "a@example.org", []string{"b@example.com", "c@example.net"}, "Subject: held\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	m, _ := onlyMessage(t, r.q)
	for _, rc := range m.Recipients {
		if rc.State != queue.StateHeld {
			t.Fatalf("recipient %s is %s, want held", rc.Addr, rc.State)
		}
	}
	if l, _ := r.q.Lease(10); len(l) != 0 {
		t.Fatal("held message handed to delivery")
	}
}

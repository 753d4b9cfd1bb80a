package smtpclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestEHLOLocalNameAndExtensions(t *testing.T) {
	srv := startGoSMTP(t, func(s *smtp.Server, _ *backend) {
		s.MaxMessageBytes = 10000
		s.EnableDSN = true
		s.EnableSMTPUTF8 = true
	})
	c := dial(t, srv.addr, Timeouts{})

	if g := c.Greeting(); g == nil || g.Code != 220 {
		t.Fatalf("Greeting() = %v, want 220", g)
	}
	for _, tc := range []struct {
		name, param string
		ok          bool
	}{
		{"PIPELINING", "", true},
		{"pipelining", "", true},
		{"8BITMIME", "", true},
		{"EnhancedStatusCodes", "", true},
		{"DSN", "", true},
		{"SMTPUTF8", "", true},
		{"SIZE", "10000", true},
		{"STARTTLS", "", false}, // no TLSConfig
		{"REQUIRETLS", "", false},
	} {
		param, ok := c.Extension(tc.name)
		if ok != tc.ok || param != tc.param {
			t.Errorf("Extension(%q) = %q, %v; want %q, %v", tc.name, param, ok, tc.param, tc.ok)
		}
	}
	if got := c.MaxSize(); got != 10000 {
		t.Errorf("MaxSize() = %d, want 10000", got)
	}
	if _, ok := c.TLSState(); ok {
		t.Error("TLSState() reports TLS on a cleartext connection")
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	if !strings.Contains(srv.log.String(), "EHLO "+localName+"\r\n") {
		t.Errorf("server did not see EHLO %s; traffic:\n%s", localName, srv.log)
	}
	if !strings.Contains(srv.log.String(), "QUIT\r\n") {
		t.Error("Quit did not send QUIT")
	}
	sessions, _ := srv.be.snapshot()
	if len(sessions) != 1 || sessions[0].helo != localName {
		t.Errorf("sessions = %+v, want one with HELO name %q", sessions, localName)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestHELOFallback(t *testing.T) {
	f := startFake(t, script(nil, func(fc *fakeConn, cmd string) bool {
		switch {
		case strings.HasPrefix(cmd, "EHLO "):
			fc.send("502 5.5.1 EHLO not implemented")
		case strings.HasPrefix(cmd, "HELO "):
			fc.send("250 fake.test")
		default:
			return false
		}
		return true
	}))
	c := dial(t, f.addr(), fast())
	if _, ok := c.Extension("PIPELINING"); ok {
		t.Error("extensions reported after HELO")
	}
	res, err := send(c, "a@example.org", MailParams{Size: 5, Body: "8BITMIME", Ret: "FULL", EnvID: "x"},
		[]Rcpt{{Addr: "b@example.net", Notify: []string{"FAILURE"}, ORcpt: "rfc822;b@example.net"}}, "hi\r\n")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if res.Data == nil || res.Data.Code != 250 {
		t.Errorf("Data reply = %v", res.Data)
	}
	c.Quit()
	f.stop()
	want := []string{"EHLO " + localName, "HELO " + localName, "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA", "QUIT"}
	if got := f.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands = %q, want %q", got, want)
	}
}

func TestTLS02_EHLOAgainAfterSTARTTLS(t *testing.T) {
	cert, pool := testCert(t)
	srv := startGoSMTP(t, func(s *smtp.Server, b *backend) {
		withTLS(cert)(s, b)
		s.EnableREQUIRETLS = true
		s.MaxMessageBytes = 1 << 20
	})
	c := dial(t, srv.addr, Timeouts{})

	if _, ok := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not advertised before TLS")
	}
	if _, ok := c.Extension("REQUIRETLS"); ok {
		t.Fatal("REQUIRETLS advertised before TLS")
	}
	cfg := &tls.Config{ServerName: "mx.test", RootCAs: pool, MinVersion: tls.VersionTLS12}
	if err := c.StartTLS(context.Background(), cfg); err != nil {
		t.Fatalf("StartTLS: %v", err)
	}
	if _, ok := c.Extension("REQUIRETLS"); !ok {
		t.Error("REQUIRETLS not in the extension set after TLS: EHLO state not refreshed")
	}
	if _, ok := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS still in the extension set after TLS: pre-TLS EHLO state kept")
	}
	st, ok := c.TLSState()
	if !ok || !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
		t.Errorf("TLSState() = version %x complete %v, %v", st.Version, st.HandshakeComplete, ok)
	}
	if err := c.StartTLS(context.Background(), cfg); err == nil {
		t.Error("second StartTLS succeeded")
	}

	res, err := send(c, "a@example.org", MailParams{RequireTLS: true, Size: 4}, rcpts("b@example.net"), "hi\r\n")
	if err != nil {
		t.Fatalf("Send over TLS: %v (result %+v)", err, res)
	}
	c.Quit()

	sessions, msgs := srv.be.snapshot()
	if len(sessions) != 2 {
		t.Fatalf("server saw %d EHLOs (sessions), want 2: %+v", len(sessions), sessions)
	}
	if sessions[0].tls || !sessions[1].tls {
		t.Errorf("sessions = %+v, want cleartext then TLS", sessions)
	}
	for i, s := range sessions {
		if s.helo != localName || s.remote != sessions[0].remote {
			t.Errorf("session %d = %+v, want HELO %q on one connection", i, s, localName)
		}
	}
	if n := strings.Count(srv.log.String(), "EHLO "+localName+"\r\n"); n != 2 {
		t.Errorf("EHLO sent %d times, want 2", n)
	}
	if len(msgs) != 1 || !msgs[0].mailOpts.RequireTLS {
		t.Errorf("messages = %+v, want one with REQUIRETLS", msgs)
	}
}

func TestTLS03_NoSTARTTLSWhenNotOffered(t *testing.T) {
	f := startFake(t, script([]string{"PIPELINING", "8BITMIME"}, nil))
	c := dial(t, f.addr(), fast())
	_, pool := testCert(t)
	err := c.StartTLS(context.Background(), &tls.Config{ServerName: "mx.test", RootCAs: pool})
	if !errors.Is(err, ErrNoSTARTTLS) {
		t.Fatalf("StartTLS = %v, want ErrNoSTARTTLS", err)
	}
	// The connection stays usable in cleartext.
	if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n"); err != nil {
		t.Fatalf("Send after ErrNoSTARTTLS: %v", err)
	}
	c.Quit()
	f.stop()
	if cmds := f.commands(); hasCommand(cmds, "STARTTLS") {
		t.Errorf("STARTTLS sent to a server that did not offer it: %q", cmds)
	}
}

func TestSTARTTLSHandshakeFailure(t *testing.T) {
	cert, _ := testCert(t)
	srv := startGoSMTP(t, withTLS(cert))
	c := dial(t, srv.addr, Timeouts{})
	err := c.StartTLS(context.Background(), &tls.Config{ServerName: "mx.test", RootCAs: x509.NewCertPool()})
	var te *TLSError
	if !errors.As(err, &te) {
		t.Fatalf("StartTLS = %v (%T), want *TLSError", err, err)
	}
	var unknown x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if !errors.As(err, &unknown) && !errors.As(err, &cv) {
		t.Errorf("TLSError does not wrap the verification error: %v", err)
	}
	if _, ok := c.TLSState(); ok {
		t.Error("TLSState() reports TLS after a failed handshake")
	}
	if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after failed handshake = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestSTARTTLSRefused(t *testing.T) {
	f := startFake(t, script([]string{"STARTTLS"}, func(fc *fakeConn, cmd string) bool {
		if cmd != "STARTTLS" {
			return false
		}
		fc.send("454 4.7.0 TLS not available due to temporary reason")
		return true
	}))
	c := dial(t, f.addr(), fast())
	err := c.StartTLS(context.Background(), &tls.Config{ServerName: "mx.test"})
	if r := asReply(t, err); r.Code != 454 || r.Enhanced != "4.7.0" || !r.Temporary() {
		t.Errorf("StartTLS reply = %+v, want 454 4.7.0", r)
	}
	if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n"); err != nil {
		t.Errorf("cleartext Send after refused STARTTLS: %v", err)
	}
}

func TestSTARTTLSCleartextInjection(t *testing.T) {
	f := startFake(t, script([]string{"STARTTLS"}, func(fc *fakeConn, cmd string) bool {
		if cmd != "STARTTLS" {
			return false
		}
		// A man in the middle appends a reply after the 220; it must not
		// be read as if it had come over TLS.
		fc.send("220 2.0.0 go ahead", "250 injected")
		return true
	}))
	c := dial(t, f.addr(), fast())
	err := c.StartTLS(context.Background(), &tls.Config{ServerName: "mx.test"})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("StartTLS = %v, want ErrProtocol", err)
	}
}

func TestSMTP02_PerRecipientReplies(t *testing.T) {
	reject := func(to string) error {
		switch {
		case strings.HasPrefix(to, "unknown"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(to, "full"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "try later"}
		}
		return nil
	}
	tests := []struct {
		name      string
		rcpts     []string
		wantCodes []int
		wantEnh   []string
		delivered []string // recipients of the delivered message; nil: none
	}{
		{
			name:      "mixed",
			rcpts:     []string{"unknown@example.net", "full@example.net", "ok@example.net"},
			wantCodes: []int{550, 451, 250},
			wantEnh:   []string{"5.1.1", "4.2.0", "2.0.0"},
			delivered: []string{"ok@example.net"},
		},
		{
			name:      "all rejected",
			rcpts:     []string{"unknown@example.net", "full@example.net"},
			wantCodes: []int{550, 451},
			wantEnh:   []string{"5.1.1", "4.2.0"},
		},
		{
			name:      "all accepted",
			rcpts:     []string{"ok1@example.net", "ok2@example.net"},
			wantCodes: []int{250, 250},
			wantEnh:   []string{"2.0.0", "2.0.0"},
			delivered: []string{"ok1@example.net", "ok2@example.net"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startGoSMTP(t, func(_ *smtp.Server, b *backend) { b.rcptReply = reject })
			c := dial(t, srv.addr, Timeouts{})
			res, err := send(c, "sender@example.org", MailParams{}, rcpts(tc.rcpts...), "Subject: t\r\n\r\nbody\r\n")
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if res.Mail == nil || res.Mail.Code != 250 {
				t.Errorf("Mail reply = %v", res.Mail)
			}
			if len(res.Rcpts) != len(tc.rcpts) {
				t.Fatalf("got %d recipient replies, want %d", len(res.Rcpts), len(tc.rcpts))
			}
			for i, r := range res.Rcpts {
				if r.Code != tc.wantCodes[i] || r.Enhanced != tc.wantEnh[i] {
					t.Errorf("rcpt %s: reply %v, want %d %s", tc.rcpts[i], r, tc.wantCodes[i], tc.wantEnh[i])
				}
			}
			if res.Rcpts[0].Code == 550 && (!res.Rcpts[0].Permanent() || res.Rcpts[0].Error() != "550 5.1.1 no such user") {
				t.Errorf("550 reply = %q, Permanent %v", res.Rcpts[0].Error(), res.Rcpts[0].Permanent())
			}
			c.Quit()
			_, msgs := srv.be.snapshot()
			traffic := srv.log.String()
			if tc.delivered == nil {
				if len(msgs) != 0 || res.Data != nil {
					t.Errorf("message delivered although every recipient was rejected: %+v", msgs)
				}
				if strings.Contains(traffic, "DATA\r\n") {
					t.Error("DATA sent with no accepted recipient")
				}
				if !strings.Contains(traffic, "RSET\r\n") {
					t.Error("RSET not sent after every recipient was rejected")
				}
				return
			}
			if len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != strings.Join(tc.delivered, ",") {
				t.Errorf("delivered %+v, want one message to %v", msgs, tc.delivered)
			}
			if res.Data == nil || res.Data.Code != 250 {
				t.Errorf("Data reply = %v", res.Data)
			}
		})
	}
}

func TestPipeliningWhenAdvertised(t *testing.T) {
	const n = 3
	f := startFake(t, script([]string{"PIPELINING"}, func(fc *fakeConn, cmd string) bool {
		if !strings.HasPrefix(cmd, "MAIL FROM:") {
			return false
		}
		// Answer nothing until every RCPT has arrived: a client that waits
		// for the MAIL reply before sending RCPT times out here.
		for i := 0; i < n; i++ {
			l, err := fc.read(2 * time.Second)
			if err != nil || !strings.HasPrefix(l, "RCPT TO:") {
				fc.f.t.Errorf("RCPT %d not pipelined with MAIL: %q, %v", i, l, err)
				return true
			}
		}
		fc.send("250 2.1.0 sender ok", "250 2.1.5 ok", "550 5.1.1 unknown", "250 2.1.5 ok")
		return true
	}))
	c := dial(t, f.addr(), Timeouts{Command: 5 * time.Second})
	res, err := send(c, "a@example.org", MailParams{}, rcpts("1@example.net", "2@example.net", "3@example.net"), "x\r\n")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	var codes []int
	for _, r := range res.Rcpts {
		codes = append(codes, r.Code)
	}
	if len(codes) != 3 || codes[0] != 250 || codes[1] != 550 || codes[2] != 250 {
		t.Errorf("rcpt codes = %v, want [250 550 250]", codes)
	}
	if res.Data == nil || res.Data.Code != 250 {
		t.Errorf("Data reply = %v", res.Data)
	}
}

func TestSequentialWithoutPipelining(t *testing.T) {
	lockstep := func(fc *fakeConn, cmd string) bool {
		if !strings.HasPrefix(cmd, "MAIL FROM:") && !strings.HasPrefix(cmd, "RCPT TO:") {
			return false
		}
		// Nothing else may arrive before this command is answered.
		if l, err := fc.read(150 * time.Millisecond); err == nil {
			fc.f.t.Errorf("client pipelined %q after %q without PIPELINING", l, cmd)
		}
		if strings.Contains(cmd, "bad@") {
			fc.send("550 5.1.1 unknown")
		} else {
			fc.send("250 2.0.0 ok")
		}
		return true
	}
	f := startFake(t, script([]string{"8BITMIME"}, lockstep))
	c := dial(t, f.addr(), Timeouts{Command: 5 * time.Second})
	res, err := send(c, "a@example.org", MailParams{Size: 3, Body: "8BITMIME"}, rcpts("b@example.net", "bad@example.net"), "x\r\n")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(res.Rcpts) != 2 || res.Rcpts[0].Code != 250 || res.Rcpts[1].Code != 550 {
		t.Errorf("rcpt replies = %v", res.Rcpts)
	}
	c.Quit()
	f.stop()
	want := []string{"EHLO " + localName, "MAIL FROM:<a@example.org> BODY=8BITMIME", "RCPT TO:<b@example.net>", "RCPT TO:<bad@example.net>", "DATA", "QUIT"}
	if got := f.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands = %q,\nwant %q", got, want)
	}
}

func TestRcpt421EndsSession(t *testing.T) {
	for _, ext := range [][]string{{"PIPELINING"}, nil} {
		name := "pipelined"
		if ext == nil {
			name = "sequential"
		}
		t.Run(name, func(t *testing.T) {
			f := startFake(t, script(ext, func(fc *fakeConn, cmd string) bool {
				if strings.HasPrefix(cmd, "RCPT TO:<2@") {
					fc.send("421 4.7.0 too many errors, closing")
					fc.c.Close()
					return true
				}
				return false
			}))
			c := dial(t, f.addr(), fast())
			res, err := send(c, "a@example.org", MailParams{}, rcpts("1@example.net", "2@example.net", "3@example.net"), "x\r\n")
			if r := asReply(t, err); r.Code != 421 {
				t.Errorf("Send error reply = %v, want 421", r)
			}
			if res == nil || res.Data != nil {
				t.Errorf("result = %+v, want no DATA", res)
			}
			if _, err := send(c, "a@example.org", MailParams{}, rcpts("1@example.net"), "x\r\n"); !errors.Is(err, ErrClosed) {
				t.Errorf("Send after 421 = %v, want ErrClosed", err)
			}
		})
	}
}

func TestMailRejected(t *testing.T) {
	srv := startGoSMTP(t, func(_ *smtp.Server, b *backend) {
		b.mailReply = func(string) error {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
		}
	})
	c := dial(t, srv.addr, Timeouts{})
	res, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n")
	if r := asReply(t, err); r.Code != 553 || r.Enhanced != "5.7.1" {
		t.Errorf("error reply = %v", r)
	}
	if !strings.Contains(err.Error(), "MAIL FROM:<a@example.org>") {
		t.Errorf("error %q does not name the command", err)
	}
	if res.Mail == nil || res.Mail.Code != 553 || res.Rcpts != nil || res.Data != nil {
		t.Errorf("result = %+v", res)
	}
	if strings.Contains(srv.log.String(), "DATA\r\n") {
		t.Error("DATA sent after MAIL was rejected")
	}
	// The connection is still usable.
	if err := c.Reset(context.Background()); err != nil {
		t.Errorf("Reset: %v", err)
	}
}

func TestDataRejected(t *testing.T) {
	t.Run("final reply", func(t *testing.T) {
		srv := startGoSMTP(t, func(_ *smtp.Server, b *backend) {
			b.dataReply = func([]byte) error {
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
			}
		})
		c := dial(t, srv.addr, Timeouts{})
		res, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n")
		if r := asReply(t, err); r.Code != 554 {
			t.Errorf("error reply = %v", r)
		}
		if res.Data == nil || res.Data.Code != 554 || res.Data.Enhanced != "5.7.1" {
			t.Errorf("Data = %v", res.Data)
		}
	})
	t.Run("354 stage", func(t *testing.T) {
		f := startFake(t, script([]string{"PIPELINING"}, func(fc *fakeConn, cmd string) bool {
			if cmd != "DATA" {
				return false
			}
			fc.send("451 4.3.0 no DATA today")
			return true
		}))
		c := dial(t, f.addr(), fast())
		res, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n")
		if r := asReply(t, err); r.Code != 451 || !r.Temporary() {
			t.Errorf("error reply = %v", r)
		}
		if res.Data == nil || res.Data.Code != 451 {
			t.Errorf("Data = %v", res.Data)
		}
	})
}

func TestBodyReadErrorAbortsMessage(t *testing.T) {
	terminated := make(chan bool, 1)
	f := startFake(t, script([]string{"PIPELINING"}, func(fc *fakeConn, cmd string) bool {
		if cmd != "DATA" {
			return false
		}
		fc.send("354 go ahead")
		terminated <- fc.readData()
		return true
	}))
	c := dial(t, f.addr(), fast())
	body := &failingReader{data: "Subject: partial\r\n\r\nfirst line\r\n"}
	_, err := c.Send(context.Background(), "a@example.org", MailParams{}, rcpts("b@example.net"), body)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Send = %v, want the body's read error", err)
	}
	select {
	case ok := <-terminated:
		if ok {
			t.Error("a partial message was terminated with \".\" and could be delivered")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not dropped after body read error")
	}
}

// failingReader returns data, then an error.
type failingReader struct{ data string }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestSMTP03_BodyByteForByte(t *testing.T) {
	big := strings.Repeat(".dot line\r\n..two dots\r\nplain \xe9\xff line\r\n", 20000) // ~800 KB
	tests := []struct {
		name, body, want string
	}{
		{"headers and dots", "Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\n...\r\nend\r\n", ""},
		{"dot line only", ".\r\n", ""},
		{"dot at end without CRLF", "a\r\n.", "a\r\n.\r\n"},
		{"8-bit", "Subject: caf\xc3\xa9\r\n\r\n\x80\x81\xfe\xff\r\n", ""},
		{"no trailing CRLF", "Subject: x\r\n\r\nlast line", "Subject: x\r\n\r\nlast line\r\n"},
		{"empty", "", ""},
		{"empty lines", "\r\n\r\n\r\n", ""},
		{"998-octet line", strings.Repeat("x", 998) + "\r\n", ""},
		{"large", big, ""},
		// Bare line endings are sent as CRLF (RFC 5321 §2.3.8) so that
		// no end-of-data sequence can be smuggled through.
		{"bare LF", "a\nb\r\n", "a\r\nb\r\n"},
		{"smuggling LF", "a\r\n.\nMAIL FROM:<x@evil>\r\n", "a\r\n.\r\nMAIL FROM:<x@evil>\r\n"},
		{"smuggling CR", "a\r.\rb\r\n", "a\r\n.\r\nb\r\n"},
	}
	srv := startGoSMTP(t, nil)
	c := dial(t, srv.addr, Timeouts{})
	i := 0
	for _, tc := range tests {
		want := tc.want
		if want == "" {
			want = tc.body
			if want != "" && !strings.HasSuffix(want, "\r\n") {
				want += "\r\n"
			}
		}
		for _, mode := range []string{"whole", "one byte"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				var body = strings.NewReader(tc.body)
				ctx := context.Background()
				var err error
				if mode == "whole" {
					_, err = c.Send(ctx, "a@example.org", MailParams{}, rcpts("b@example.net"), body)
				} else {
					_, err = c.Send(ctx, "a@example.org", MailParams{}, rcpts("b@example.net"), oneByte{body})
				}
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				_, msgs := srv.be.snapshot()
				if len(msgs) != i+1 {
					t.Fatalf("server has %d messages, want %d", len(msgs), i+1)
				}
				if got := string(msgs[i].data); got != want {
					t.Errorf("server received %d octets %q...,\nwant %d octets %q...", len(got), clip(got), len(want), clip(want))
				}
			})
			i++
		}
	}
}

// oneByte reads one byte at a time, to exercise state kept across writes.
type oneByte struct{ r *strings.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestDSNParameters(t *testing.T) {
	params := MailParams{Ret: "hdrs", EnvID: "env+id=1 x", Size: 6, Body: "8BITMIME"}
	rc := []Rcpt{
		{Addr: "b@example.net", Notify: []string{"success", "FAILURE"}, ORcpt: "rfc822;orig+tag=1@example.net"},
		{Addr: "c@example.net", Notify: []string{"NEVER"}},
		{Addr: "d@example.net"},
	}
	t.Run("server with DSN", func(t *testing.T) {
		srv := startGoSMTP(t, func(s *smtp.Server, _ *backend) {
			s.EnableDSN = true
			s.MaxMessageBytes = 1000
		})
		c := dial(t, srv.addr, Timeouts{})
		if _, err := send(c, "a@example.org", params, rc, "hello\r\n"); err != nil {
			t.Fatalf("Send: %v", err)
		}
		_, msgs := srv.be.snapshot()
		if len(msgs) != 1 {
			t.Fatalf("got %d messages", len(msgs))
		}
		m := msgs[0]
		if m.mailOpts.Return != smtp.DSNReturnHeaders || m.mailOpts.EnvelopeID != "env+id=1 x" {
			t.Errorf("RET/ENVID = %q/%q", m.mailOpts.Return, m.mailOpts.EnvelopeID)
		}
		if m.mailOpts.Size != 6 || m.mailOpts.Body != smtp.Body8BitMIME {
			t.Errorf("SIZE/BODY = %d/%q", m.mailOpts.Size, m.mailOpts.Body)
		}
		o := m.rcptOpts[0]
		if len(o.Notify) != 2 || o.Notify[0] != smtp.DSNNotifySuccess || o.Notify[1] != smtp.DSNNotifyFailure {
			t.Errorf("NOTIFY = %v", o.Notify)
		}
		if o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || o.OriginalRecipient != "orig+tag=1@example.net" {
			t.Errorf("ORCPT = %q;%q", o.OriginalRecipientType, o.OriginalRecipient)
		}
		if n := m.rcptOpts[1].Notify; len(n) != 1 || n[0] != smtp.DSNNotifyNever {
			t.Errorf("NOTIFY for c = %v", n)
		}
		if o := m.rcptOpts[2]; o.Notify != nil || o.OriginalRecipient != "" {
			t.Errorf("DSN parameters invented for d: %+v", o)
		}
		for _, s := range []string{" RET=HDRS", " ENVID=env+2Bid+3D1+20x", " ORCPT=rfc822;orig+2Btag+3D1@example.net", " NOTIFY=SUCCESS,FAILURE"} {
			if !strings.Contains(srv.log.String(), s) {
				t.Errorf("wire traffic lacks %q", s)
			}
		}
	})
	t.Run("server without DSN", func(t *testing.T) {
		srv := startGoSMTP(t, nil)
		c := dial(t, srv.addr, Timeouts{})
		if _, err := send(c, "a@example.org", params, rc, "hello\r\n"); err != nil {
			t.Fatalf("Send: %v", err) // go-smtp answers 504 to DSN parameters it does not offer
		}
		for _, s := range []string{"RET=", "ENVID=", "NOTIFY=", "ORCPT="} {
			if strings.Contains(srv.log.String(), s) {
				t.Errorf("%s sent to a server without DSN", s)
			}
		}
	})
}

func TestPreconditions(t *testing.T) {
	cert, pool := testCert(t)
	long := strings.Repeat("x", 520) + "@example.net"
	tests := []struct {
		name     string
		server   func(*smtp.Server, *backend)
		startTLS bool
		from     string
		p        MailParams
		rcpts    []Rcpt
		wantErr  error // nil: Send must succeed
		check    func(t *testing.T, m message)
	}{
		{name: "SMTPUTF8 not offered", p: MailParams{SMTPUTF8: true}, wantErr: ErrNeedsSMTPUTF8},
		{name: "non-ASCII recipient, SMTPUTF8 not offered", rcpts: rcpts("us\u00e9r@example.net"), wantErr: ErrNeedsSMTPUTF8},
		{name: "non-ASCII sender, SMTPUTF8 not offered", from: "j\u00f6rg@example.org", wantErr: ErrNeedsSMTPUTF8},
		{
			name:   "SMTPUTF8 offered",
			server: func(s *smtp.Server, _ *backend) { s.EnableSMTPUTF8 = true },
			p:      MailParams{SMTPUTF8: true},
			check: func(t *testing.T, m message) {
				if !m.mailOpts.UTF8 {
					t.Error("SMTPUTF8 not sent")
				}
			},
		},
		{
			name:   "non-ASCII recipient adds SMTPUTF8",
			server: func(s *smtp.Server, _ *backend) { s.EnableSMTPUTF8 = true },
			rcpts:  rcpts("\u7528\u6237@example.net"),
			check: func(t *testing.T, m message) {
				if !m.mailOpts.UTF8 || len(m.rcpts) != 1 || m.rcpts[0] != "\u7528\u6237@example.net" {
					t.Errorf("UTF8 %v, rcpts %q", m.mailOpts.UTF8, m.rcpts)
				}
			},
		},
		{
			name:    "REQUIRETLS without TLS",
			server:  func(s *smtp.Server, b *backend) { withTLS(cert)(s, b); s.EnableREQUIRETLS = true },
			p:       MailParams{RequireTLS: true},
			wantErr: ErrNeedsREQUIRETLS,
		},
		{
			name:     "REQUIRETLS not offered over TLS",
			server:   withTLS(cert),
			startTLS: true,
			p:        MailParams{RequireTLS: true},
			wantErr:  ErrNeedsREQUIRETLS,
		},
		{
			name:    "too big",
			server:  func(s *smtp.Server, _ *backend) { s.MaxMessageBytes = 100 },
			p:       MailParams{Size: 101},
			wantErr: ErrTooBig,
		},
		{
			name:   "at the size limit",
			server: func(s *smtp.Server, _ *backend) { s.MaxMessageBytes = 100 },
			p:      MailParams{Size: 100},
		},
		{name: "CRLF in recipient", rcpts: rcpts("b@example.net>\r\nRCPT TO:<evil@example.net"), wantErr: ErrInvalidArgument},
		{name: "CRLF in sender", from: "a@example.org>\r\nDATA", wantErr: ErrInvalidArgument},
		{name: "no recipients", rcpts: []Rcpt{}, wantErr: ErrInvalidArgument},
		{name: "bad BODY", p: MailParams{Body: "BINARYMIME"}, wantErr: ErrInvalidArgument},
		{name: "bad RET", server: func(s *smtp.Server, _ *backend) { s.EnableDSN = true }, p: MailParams{Ret: "ALL"}, wantErr: ErrInvalidArgument},
		{
			name:    "bad NOTIFY",
			server:  func(s *smtp.Server, _ *backend) { s.EnableDSN = true },
			rcpts:   []Rcpt{{Addr: "b@example.net", Notify: []string{"SUCCESS FAILURE"}}},
			wantErr: ErrInvalidArgument,
		},
		{
			name:    "bad ORCPT",
			server:  func(s *smtp.Server, _ *backend) { s.EnableDSN = true },
			rcpts:   []Rcpt{{Addr: "b@example.net", ORcpt: "b@example.net"}},
			wantErr: ErrInvalidArgument,
		},
		{name: "over-long recipient", rcpts: rcpts(long), wantErr: ErrLineTooLong},
		{
			name:    "over-long ENVID",
			server:  func(s *smtp.Server, _ *backend) { s.EnableDSN = true },
			p:       MailParams{EnvID: strings.Repeat("=", 40)},
			wantErr: ErrLineTooLong,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startGoSMTP(t, tc.server)
			c := dial(t, srv.addr, Timeouts{})
			if tc.startTLS {
				if err := c.StartTLS(context.Background(), &tls.Config{ServerName: "mx.test", RootCAs: pool}); err != nil {
					t.Fatal(err)
				}
			}
			from := tc.from
			if from == "" {
				from = "a@example.org"
			}
			rc := tc.rcpts
			if rc == nil {
				rc = rcpts("b@example.net")
			}
			res, err := send(c, from, tc.p, rc, "body\r\n")
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				_, msgs := srv.be.snapshot()
				if len(msgs) != 1 {
					t.Fatalf("got %d messages", len(msgs))
				}
				if tc.check != nil {
					tc.check(t, msgs[0])
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || res != nil {
				t.Fatalf("Send = %v, %v; want %v", res, err, tc.wantErr)
			}
			if strings.Contains(srv.log.String(), "MAIL FROM") {
				t.Error("MAIL sent although a precondition failed")
			}
			// Nothing was sent, so the connection is still usable.
			if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n"); err != nil {
				t.Errorf("Send after precondition error: %v", err)
			}
		})
	}
}

func TestSMTP04_ConnectionReuse(t *testing.T) {
	srv := startGoSMTP(t, nil)
	c := dial(t, srv.addr, Timeouts{})
	ctx := context.Background()
	if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "first\r\n"); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if _, err := send(c, "c@example.org", MailParams{}, rcpts("d@example.net", "e@example.net"), "second\r\n"); err != nil {
		t.Fatalf("second Send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	sessions, msgs := srv.be.snapshot()
	if len(sessions) != 1 {
		t.Errorf("server saw %d sessions, want 1", len(sessions))
	}
	if len(msgs) != 2 {
		t.Fatalf("server got %d messages, want 2", len(msgs))
	}
	if msgs[0].remote != msgs[1].remote {
		t.Errorf("messages came on different connections: %s, %s", msgs[0].remote, msgs[1].remote)
	}
	if string(msgs[0].data) != "first\r\n" || string(msgs[1].data) != "second\r\n" || msgs[1].from != "c@example.org" || len(msgs[1].rcpts) != 2 {
		t.Errorf("messages = %+v", msgs)
	}
	if !strings.Contains(srv.log.String(), "RSET\r\n") {
		t.Error("RSET not sent")
	}
	if _, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Quit = %v, want ErrClosed", err)
	}
}

func TestMultilineReplies(t *testing.T) {
	greeting := []string{"220-fake.test ESMTP", "220-no UCE", "220 2.0.0 ready"}
	f := startFake(t, scriptGreeting(greeting, nil, func(fc *fakeConn, cmd string) bool {
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			fc.send("250-fake.test greets you", "250-pipelining", "250-SIZE 2048", "250-ENHANCEDSTATUSCODES", "250 DSN")
		case strings.HasPrefix(cmd, "RCPT"):
			fc.send("550-5.1.1 The email account that you tried to reach does not exist.",
				"550-5.1.1 Please try double-checking the recipient's email",
				"550 5.1.1 address for typos.")
		default:
			return false
		}
		return true
	}))
	c := dial(t, f.addr(), fast())
	if g := c.Greeting(); g.Code != 220 || g.Enhanced != "2.0.0" || strings.Join(g.Lines, "|") != "fake.test ESMTP|no UCE|ready" {
		t.Errorf("Greeting() = %+v", g)
	}
	if p, ok := c.Extension("size"); !ok || p != "2048" || c.MaxSize() != 2048 {
		t.Errorf("SIZE = %q, %v; MaxSize %d", p, ok, c.MaxSize())
	}
	if _, ok := c.Extension("PIPELINING"); !ok {
		t.Error("lower-case pipelining keyword not recognised")
	}
	res, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n")
	if err != nil {
		t.Fatal(err)
	}
	r := res.Rcpts[0]
	want := "550 5.1.1 The email account that you tried to reach does not exist.; Please try double-checking the recipient's email; address for typos."
	if r.Code != 550 || r.Enhanced != "5.1.1" || len(r.Lines) != 3 || r.Error() != want {
		t.Errorf("reply = %+v\nError() = %q\nwant      %q", r, r.Error(), want)
	}
}

func TestHostileServers(t *testing.T) {
	endless := func(line string) func(fc *fakeConn) {
		return func(fc *fakeConn) {
			fc.send("220 fake.test")
			if _, err := fc.read(5 * time.Second); err != nil {
				return
			}
			fc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			chunk := []byte(strings.Repeat(line, 256))
			for {
				if _, err := fc.c.Write(chunk); err != nil {
					return
				}
			}
		}
	}
	tests := []struct {
		name    string
		handle  func(fc *fakeConn)
		wantErr error
		wantMsg string
	}{
		{"endless continuation", endless("250-more\r\n"), ErrProtocol, "lines"},
		{"endless line", endless("xxxxxxxxxxxxxxx"), ErrProtocol, "octets"},
		{"garbage reply", func(fc *fakeConn) { fc.send("hello there") }, ErrProtocol, "malformed"},
		{"code changes mid-reply", func(fc *fakeConn) { fc.send("220-fake.test", "250 ok") }, ErrProtocol, "changed"},
		{"silent greeting", func(fc *fakeConn) { fc.read(5 * time.Second) }, os.ErrDeadlineExceeded, "timeout"},
		{"silent EHLO", func(fc *fakeConn) { fc.send("220 fake.test"); fc.read(5 * time.Second); fc.read(5 * time.Second) }, os.ErrDeadlineExceeded, "EHLO: timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.handle)
			start := time.Now()
			c, err := dialErr(t, f.addr(), fast())
			if c != nil || !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("New = %v, %v; want %v mentioning %q", c, err, tc.wantErr, tc.wantMsg)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("New took %v", d)
			}
		})
	}
}

func TestGreetingRejected(t *testing.T) {
	g := startFake(t, func(fc *fakeConn) {
		fc.send("554-5.7.1 mx.test does not want your mail", "554 5.7.1 go away")
		for {
			cmd, err := fc.read(5 * time.Second)
			if err != nil {
				return
			}
			if cmd == "QUIT" {
				fc.send("221 bye")
				return
			}
			fc.send("503 5.5.1 bad sequence")
		}
	})
	c, err := dialErr(t, g.addr(), fast())
	if c != nil {
		t.Fatal("New succeeded after a 554 greeting")
	}
	r := asReply(t, err)
	if r.Code != 554 || r.Enhanced != "5.7.1" || !r.Permanent() {
		t.Errorf("greeting reply = %+v", r)
	}
	g.stop()
	if cmds := g.commands(); len(cmds) != 1 || cmds[0] != "QUIT" {
		t.Errorf("commands after 554 greeting = %q, want just QUIT", cmds)
	}
}

func TestCommandTimeouts(t *testing.T) {
	// silentAfter answers nothing from the command starting with prefix
	// on; "." means after the message data.
	silentAfter := func(prefix string) func(fc *fakeConn, cmd string) bool {
		return func(fc *fakeConn, cmd string) bool {
			switch {
			case prefix == "." && cmd == "DATA":
				fc.send("354 go ahead")
				fc.readData()
			case !strings.HasPrefix(cmd, prefix):
				return false
			}
			fc.read(5 * time.Second) // never answer
			return true
		}
	}
	tests := []struct {
		name, silentOn, wantMsg string
	}{
		{"MAIL", "MAIL", "MAIL FROM:<a@example.org>: timeout"},
		{"RCPT", "RCPT", "RCPT TO:<b@example.net>: timeout"},
		{"DATA init", "DATA", "DATA: timeout"},
		{"DATA term", ".", "end of DATA: timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, script(nil, silentAfter(tc.silentOn)))
			c := dial(t, f.addr(), fast())
			start := time.Now()
			_, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net"), "x\r\n")
			if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "timeout") || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Send = %v, want a timeout mentioning %q", err, tc.wantMsg)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Send took %v", d)
			}
			if err := c.Reset(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("Reset after timeout = %v, want ErrClosed", err)
			}
		})
	}
}

func TestContextCancellation(t *testing.T) {
	f := startFake(t, func(fc *fakeConn) { fc.read(5 * time.Second) })
	conn, err := netDial(f.addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = New(ctx, conn, localName, Timeouts{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("New = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("New took %v after cancellation", d)
	}

	// A context deadline shorter than the step timeout applies.
	srv := startGoSMTP(t, nil)
	c := dial(t, srv.addr, Timeouts{})
	dctx, dcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer dcancel()
	_, err = c.Send(dctx, "a@example.org", MailParams{}, rcpts("b@example.net"), blockingReader{dctx})
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
		t.Errorf("Send with expiring context = %v", err)
	}
}

// blockingReader blocks until ctx ends, like a stalled body source.
type blockingReader struct{ ctx context.Context }

func (b blockingReader) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func TestPipeliningManyRecipients(t *testing.T) {
	srv := startGoSMTP(t, func(_ *smtp.Server, b *backend) {
		b.rcptReply = func(to string) error {
			if strings.HasPrefix(to, "odd") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
			}
			return nil
		}
	})
	c := dial(t, srv.addr, Timeouts{})
	var rc []Rcpt
	for i := 0; i < 3000; i++ {
		prefix := "even"
		if i%2 == 1 {
			prefix = "odd"
		}
		rc = append(rc, Rcpt{Addr: prefix + strings.Repeat("x", 40) + "-" + strconv.Itoa(i) + "@example.net"})
	}
	res, err := send(c, "a@example.org", MailParams{}, rc, "x\r\n")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(res.Rcpts) != len(rc) {
		t.Fatalf("%d replies for %d recipients", len(res.Rcpts), len(rc))
	}
	for i, r := range res.Rcpts {
		if want := 250 + 300*(i%2); r.Code != want {
			t.Fatalf("rcpt %d: %v, want %d", i, r, want)
		}
	}
	_, msgs := srv.be.snapshot()
	if len(msgs) != 1 || len(msgs[0].rcpts) != 1500 {
		t.Errorf("delivered to %d recipients, want 1500", len(msgs[0].rcpts))
	}
}

func TestMailRejectedThenHangup(t *testing.T) {
	f := startFake(t, script([]string{"PIPELINING"}, func(fc *fakeConn, cmd string) bool {
		if !strings.HasPrefix(cmd, "MAIL") {
			return false
		}
		fc.send("554 5.7.1 sender blocked")
		fc.c.Close()
		return true
	}))
	c := dial(t, f.addr(), fast())
	res, err := send(c, "a@example.org", MailParams{}, rcpts("b@example.net", "c@example.net"), "x\r\n")
	if r := asReply(t, err); r.Code != 554 || r.Enhanced != "5.7.1" {
		t.Errorf("error reply = %v, want the MAIL reply", r)
	}
	if res == nil || res.Mail == nil || res.Mail.Code != 554 || res.Rcpts != nil {
		t.Errorf("result = %+v", res)
	}
}

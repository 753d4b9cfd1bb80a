package reportmail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/internal/testnet"
)

// TestRPT08_ReportMailStored: report emails as providers send them are
// accepted with 250 and stored with source email, the sender and the
// DKIM result, exactly as the HTTPS path stores the same report.
func TestRPT08_ReportMailStored(t *testing.T) {
	tests := []struct {
		file, from, rcpt string
		wantReply        string
		wantOrg          string
		wantSender       string
	}{
		{"google-gzip-base64.eml", "noreply-smtp-tls-reporting@google.com", reportAddr, "1 TLS report(s) stored", "Google Inc.", "noreply-smtp-tls-reporting@google.com"},
		{"microsoft-gzip-base64.eml", "bounces+tlsrpt@microsoft.com", reportAddr, "1 TLS report(s) stored", "Microsoft Corporation", "bounces+tlsrpt@microsoft.com (From: tlsrpt-noreply@microsoft.com)"},
		{"plain-json-part.eml", "tlsrpt@mailhost.example.net", reportAddr, "1 TLS report(s) stored", "Example Mail Hosting e.K.", "tlsrpt@mailhost.example.net"},
		{"zip-attachment.eml", "", "TLSRPT@Reports.Example.ORG", "1 TLS report(s) stored", "Company-X", "<> (From: tls-reports@company-x.example)"},
		{"quoted-printable-json.eml", "reports@hostile.example", reportAddr, "1 TLS report(s) stored", "Future Sender", "reports@hostile.example"},
		{"nested-alternative-mixed.eml", "noreply@nested.example", reportAddr, "1 TLS report(s) stored", "Nested Mail GmbH", "noreply@nested.example"},
	}
	srv := startServer(t, Options{Served: func(d string) bool { return d == "example.org" }})
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			reply, err := send(t, srv.addr, tt.from, []string{tt.rcpt}, sample(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(reply, tt.wantReply) {
				t.Errorf("reply %q, want %q", reply, tt.wantReply)
			}
			list, err := srv.store.List(tlsrpt.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			var got *tlsrpt.Summary
			for i := range list {
				if list[i].Organization == tt.wantOrg {
					got = &list[i]
				}
			}
			if got == nil {
				t.Fatalf("no report of %s stored: %+v", tt.wantOrg, list)
			}
			if got.Source != tlsrpt.SourceEmail || got.Sender != tt.wantSender || got.DKIM != DKIMNone {
				t.Errorf("source %q, sender %q, dkim %q", got.Source, got.Sender, got.DKIM)
			}
			// Sending it again stores nothing more.
			reply, err = send(t, srv.addr, tt.from, []string{tt.rcpt}, sample(t, tt.file))
			if err != nil || !strings.Contains(reply, "already stored") {
				t.Errorf("again: %q, %v", reply, err)
			}
		})
	}
	list, _ := srv.store.List(tlsrpt.Filter{})
	if len(list) != len(tests) {
		t.Errorf("%d reports stored, want %d", len(list), len(tests))
	}
	for _, s := range list {
		if s.Organization == "Company-X" != s.Foreign {
			t.Errorf("%s: foreign = %v", s.Organization, s.Foreign)
		}
	}
	if st := srv.Stats(); st.Messages != 12 || st.Stored != 6 || st.Duplicates != 6 || st.Invalid != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPT08_NonReportRecipientRefused: the mailbox is never a relay: every
// recipient other than a report address gets 550 5.1.1, and a message
// with no accepted recipient is not taken.
func TestRPT08_NonReportRecipientRefused(t *testing.T) {
	srv := startServer(t, Options{Addresses: []string{"tlsrpt@reports.example.org", "TLS-Reports@example.net"}})
	tests := []struct {
		rcpt string
		code int
	}{
		{"postmaster@reports.example.org", 550},
		{"bob@gmail.example", 550},
		{"tlsrpt@other.example", 550},
		{"tlsrpt+tag@reports.example.org", 550},
		{"tlsrpt@reports.example.org.evil.example", 550},
		{"\"tlsrpt@reports.example.org\"@evil.example", 550},
		{"tls-reports@EXAMPLE.NET", 0},
		{"TlsRpt@Reports.Example.Org", 0},
	}
	for _, tt := range tests {
		t.Run(tt.rcpt, func(t *testing.T) {
			c, err := smtp.Dial(srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail("a@sender.example", nil); err != nil {
				t.Fatal(err)
			}
			err = c.Rcpt(tt.rcpt, nil)
			if got := smtpCode(err); got != tt.code {
				t.Fatalf("RCPT %s: %v, want code %d", tt.rcpt, err, tt.code)
			}
			if tt.code == 550 {
				var se *smtp.SMTPError
				if !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
					t.Errorf("enhanced code of %v", err)
				}
				if _, err := c.Data(); err == nil {
					t.Error("DATA accepted without recipients")
				}
			}
		})
	}
	if st := srv.Stats(); st.RefusedRecipients != 6 || st.Messages != 0 {
		t.Errorf("stats %+v", st)
	}
	// A report address next to a refused one: only it gets the report.
	reply, err := sendMixed(t, srv.addr, []string{"victim@elsewhere.example", reportAddr}, sample(t, "google-gzip-base64.eml"))
	if err != nil || !strings.Contains(reply, "stored") {
		t.Fatalf("mixed recipients: %q, %v", reply, err)
	}
	// No AUTH and no relaying: AUTH is not offered.
	c, err := smtp.Dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("sender.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered")
	}
}

// sendMixed sends with every recipient tried, refused ones skipped.
func sendMixed(t *testing.T, addr string, rcpts []string, msg []byte) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@sender.example", nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		c.Rcpt(r, nil)
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	w.Write(msg)
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// TestRPT08_OversizeRefused: a message over the size limit gets 552,
// whether it declares its size or not, and nothing is stored.
func TestRPT08_OversizeRefused(t *testing.T) {
	srv := startServer(t, Options{MaxMessageBytes: 4096})
	big := append(sample(t, "google-gzip-base64.eml"), []byte(strings.Repeat("padding line\r\n", 400))...)

	// Declared with SIZE: refused at MAIL.
	c, err := smtp.Dial(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, v := c.Extension("SIZE"); !ok || v != "4096" {
		t.Errorf("SIZE %v %q", ok, v)
	}
	if err := c.Mail("a@sender.example", &smtp.MailOptions{Size: int64(len(big))}); smtpCode(err) != 552 {
		t.Errorf("MAIL SIZE=%d: %v, want 552", len(big), err)
	}

	// Not declared: refused after DATA.
	_, err = send(t, srv.addr, "a@sender.example", []string{reportAddr}, big)
	if smtpCode(err) != 552 {
		t.Fatalf("DATA: %v, want 552", err)
	}
	if list, _ := srv.store.List(tlsrpt.Filter{}); len(list) != 0 {
		t.Errorf("stored %+v", list)
	}
	// The connection is usable after the refusal, and a message within the
	// limit goes through.
	if reply, err := send(t, srv.addr, "a@sender.example", []string{reportAddr}, sample(t, "google-gzip-base64.eml")); err != nil {
		t.Errorf("small message: %q, %v", reply, err)
	}
}

// TestRPT08_EmailAndHTTPSStoredOnce: the same report by email and by
// HTTPS (in either order) is stored once, with the source of its first
// arrival.
func TestRPT08_EmailAndHTTPSStoredOnce(t *testing.T) {
	tests := []struct {
		name       string
		httpsFirst bool
		wantSource string
	}{
		{"HTTPS then email", true, tlsrpt.SourceHTTPS},
		{"email then HTTPS", false, tlsrpt.SourceEmail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, Options{})
			hs := httptest.NewServer(tlsrpt.Handler(srv.store, tlsrpt.HandlerOptions{}))
			defer hs.Close()
			post := func() int {
				resp, err := http.Post(hs.URL+"/report/tlsrpt", tlsrpt.MediaTypeGzip, bytes.NewReader(gz(t, reportSample(t, "google.json"))))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			mail := func() string {
				reply, err := send(t, srv.addr, "noreply-smtp-tls-reporting@google.com", []string{reportAddr}, sample(t, "google-gzip-base64.eml"))
				if err != nil {
					t.Fatal(err)
				}
				return reply
			}
			if tt.httpsFirst {
				if code := post(); code != http.StatusCreated {
					t.Fatalf("POST: %d", code)
				}
				if reply := mail(); !strings.Contains(reply, "already stored") {
					t.Errorf("email reply %q", reply)
				}
			} else {
				if reply := mail(); !strings.Contains(reply, "1 TLS report(s) stored") {
					t.Errorf("email reply %q", reply)
				}
				if code := post(); code != http.StatusOK {
					t.Errorf("POST: %d, want 200 (duplicate)", code)
				}
			}
			list, err := srv.store.List(tlsrpt.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Source != tt.wantSource {
				t.Fatalf("stored %+v", list)
			}
			st, err := srv.store.Get(list[0].ID)
			if err != nil || !bytes.Equal(st.Raw, reportSample(t, "google.json")) {
				t.Errorf("raw %s, %v", st.Raw, err)
			}
		})
	}
}

// TestRPT08_DKIMResultRecorded: the DKIM result of the report message is
// stored with the report: a valid signature passes, a tampered body
// fails, a missing key fails, a failing key lookup is a temperror, and an
// unsigned message has none. Keys come from the injected lookup.
func TestRPT08_DKIMResultRecorded(t *testing.T) {
	key := newDKIMKey(t, "google.com", "20230601")
	other := newDKIMKey(t, "mailhost.example.net", "s1")
	records := map[string][]string{key.name(): {key.txt(t)}}
	msg := sample(t, "google-gzip-base64.eml")
	signed := key.sign(t, msg)
	tampered := bytes.Replace(signed, []byte("aggregate TLS report from google.com"), []byte("aggregate TLS report from g00gle.com"), 1)
	if bytes.Equal(signed, tampered) {
		t.Fatal("tampering changed nothing")
	}
	tests := []struct {
		name   string
		msg    []byte
		lookup LookupTXTFunc
		want   string
	}{
		{"pass", signed, mapLookup(records), "pass (d=google.com)"},
		{"two signatures, one passes", other.sign(t, signed), mapLookup(records), "pass (d=google.com)"},
		{"tampered body", tampered, mapLookup(records), "fail: body hash did not verify (d=google.com)"},
		{"key not published", signed, mapLookup(nil), "fail: no valid key found (d=google.com)"},
		{"key lookup fails", signed, mapLookup(records, key.name()), "temperror: key unavailable: SERVFAIL from the test resolver (d=google.com)"},
		{"unsigned", msg, mapLookup(records), "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := VerifyDKIM(context.Background(), tt.msg, tt.lookup); got != tt.want {
				t.Errorf("VerifyDKIM = %q, want %q", got, tt.want)
			}
			srv := startServer(t, Options{LookupTXT: tt.lookup})
			if _, err := send(t, srv.addr, "noreply-smtp-tls-reporting@google.com", []string{reportAddr}, tt.msg); err != nil {
				t.Fatal(err)
			}
			list, err := srv.store.List(tlsrpt.Filter{})
			if err != nil || len(list) != 1 {
				t.Fatalf("list %+v, %v", list, err)
			}
			if list[0].DKIM != tt.want {
				t.Errorf("stored DKIM %q, want %q", list[0].DKIM, tt.want)
			}
		})
	}
}

// TestRPT08_InvalidMessagesAcceptedAndCounted: mail without a valid report
// gets 250 (so that senders do not retry forever), is counted and not
// stored.
func TestRPT08_InvalidMessagesAcceptedAndCounted(t *testing.T) {
	srv := startServer(t, Options{})
	for _, f := range []string{"dmarc-aggregate.eml", "invalid-report.eml"} {
		reply, err := send(t, srv.addr, "a@sender.example", []string{reportAddr}, sample(t, f))
		if err != nil || !strings.Contains(reply, "accepted, but") {
			t.Errorf("%s: %q, %v", f, reply, err)
		}
	}
	if reply, err := send(t, srv.addr, "a@sender.example", []string{reportAddr}, crlf("Subject: hello\n\nJust text.\n")); err != nil {
		t.Errorf("plain text: %q, %v", reply, err)
	}
	if list, _ := srv.store.List(tlsrpt.Filter{}); len(list) != 0 {
		t.Errorf("stored %+v", list)
	}
	if st := srv.Stats(); st.Messages != 3 || st.Invalid != 3 || st.Stored != 0 {
		t.Errorf("stats %+v", st)
	}
}

// failingStore fails every Add.
type failingStore struct{}

func (failingStore) Add(context.Context, *tlsrpt.Report, []byte, tlsrpt.Meta) (string, bool, error) {
	return "", false, context.DeadlineExceeded
}

// TestRPT08_StoreFailureDefers: when the store fails the sender is told
// to try again (451), so no report is lost.
func TestRPT08_StoreFailureDefers(t *testing.T) {
	srv := startServer(t, Options{Store: failingStore{}})
	_, err := send(t, srv.addr, "a@sender.example", []string{reportAddr}, sample(t, "google-gzip-base64.eml"))
	if smtpCode(err) != 451 {
		t.Fatalf("%v, want 451", err)
	}
	if st := srv.Stats(); st.StoreErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestRPT08_STARTTLS: STARTTLS is offered with a certificate and used by
// senders; without one it is not offered.
func TestRPT08_STARTTLS(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.Issue("reports.example.org")
	srv := startServer(t, Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	c, err := smtp.DialStartTLS(srv.addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "reports.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("not TLS")
	}
	if err := c.Mail("noreply-smtp-tls-reporting@google.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(reportAddr, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(sample(t, "google-gzip-base64.eml"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if list, _ := srv.store.List(tlsrpt.Filter{}); len(list) != 1 {
		t.Errorf("stored %+v", list)
	}

	plain := startServer(t, Options{})
	c2, err := smtp.Dial(plain.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Hello("sender.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c2.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered without a certificate")
	}
}

// TestRPT08_ConnectionLimitsAndShutdown: connections over the per-IP limit
// get 421; Shutdown closes idle sessions.
func TestRPT08_ConnectionLimitsAndShutdown(t *testing.T) {
	srv := startServer(t, Options{MaxConnectionsPerIP: 1, CommandTimeout: 5 * time.Second})
	first, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	buf := make([]byte, 512)
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := first.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "220 ") {
		t.Fatalf("greeting %q, %v", buf[:n], err)
	}
	second, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "421 4.7.0 ") {
		t.Fatalf("second connection: %q, %v", buf[:n], err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := first.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "421") {
		t.Errorf("idle session at shutdown got %q, want 421", buf[:n])
	}
}

func TestNewValidates(t *testing.T) {
	st := openStore(t)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no store", Options{Hostname: "h", Addresses: []string{reportAddr}}, "no report store"},
		{"no hostname", Options{Store: st, Addresses: []string{reportAddr}}, "no host name"},
		{"no addresses", Options{Store: st, Hostname: "h"}, "no report addresses"},
		{"bad address", Options{Store: st, Hostname: "h", Addresses: []string{"tlsrpt"}}, "not an email address"},
	}
	for _, tt := range tests {
		if _, err := New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	srv, err := New(Options{Hostname: "reports.example.org", Addresses: []string{reportAddr}, Store: openStore(t), LookupTXT: mapLookup(nil)})
	if err != nil {
		t.Fatal(err)
	}
	testnet.ShutdownBeforeServe(t, srv.Shutdown, srv.Serve)
}

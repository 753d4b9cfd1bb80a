package reportmail

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

// The report emails in testdata/reportmail are written after the formats
// the providers document and send: Google's and Microsoft's
// multipart/report with an application/tlsrpt+gzip attachment in base64,
// a plain application/tlsrpt+json part, a zip attachment, a single-part
// quoted-printable report, a multipart/mixed nested in a
// multipart/alternative with an application/octet-stream *.json.gz, a DMARC
// aggregate report (no TLS report) and a report without policies. The
// reports in them are those of testdata/tlsrpt. mailbox.mbox holds four of
// them as an mbox export.
const (
	mailDir   = "../../testdata/reportmail"
	reportDir = "../../testdata/tlsrpt"
)

const reportAddr = "tlsrpt@reports.example.org"

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mailDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reportSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(reportDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// wrap64 is base64 in lines of width characters, CRLF-terminated.
func wrap64(data []byte, width int) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + "\r\n")
		s = s[width:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}

// crlf makes a message literal's line endings CRLF.
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n"))
}

func openStore(t testing.TB) *tlsrpt.Store {
	t.Helper()
	st, err := tlsrpt.OpenStore(filepath.Join(t.TempDir(), "reports.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testServer is a Server listening on a loopback port.
type testServer struct {
	*Server
	addr  string
	store *tlsrpt.Store
}

// startServer starts a report mailbox for reportAddr on 127.0.0.1; opts
// may leave Hostname, Addresses and Store empty.
func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	st, _ := opts.Store.(*tlsrpt.Store)
	if opts.Store == nil {
		st = openStore(t)
		opts.Store = st
	}
	if opts.Hostname == "" {
		opts.Hostname = "reports.example.org"
	}
	if opts.Addresses == nil {
		opts.Addresses = []string{reportAddr}
	}
	if opts.LookupTXT == nil {
		opts.LookupTXT = mapLookup(nil)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: srv, addr: ln.Addr().String(), store: st}
}

// send delivers msg over SMTP and returns the reply text to DATA, or the
// first error with the stage that failed.
func send(t testing.TB, addr, from string, rcpts []string, msg []byte) (string, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("sender.example"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	return resp.StatusText, nil
}

// smtpCode returns the reply code of an SMTP error, 0 for other errors.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// mapLookup serves TXT records from a map; names not in it have none.
// An entry "name" -> nil with key in fail makes the lookup fail.
func mapLookup(records map[string][]string, fail ...string) LookupTXTFunc {
	return func(_ context.Context, name string) ([]string, error) {
		for _, f := range fail {
			if strings.EqualFold(f, name) {
				return nil, errors.New("SERVFAIL from the test resolver")
			}
		}
		return records[strings.ToLower(name)], nil
	}
}

// dkimKey is a DKIM signing key and the TXT record that publishes it.
type dkimKey struct {
	domain, selector string
	signer           crypto.Signer
}

func newDKIMKey(t testing.TB, domain, selector string) dkimKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return dkimKey{domain: domain, selector: selector, signer: k}
}

// name is where the key is published.
func (k dkimKey) name() string { return k.selector + "._domainkey." + k.domain }

// txt is the DKIM key record (RFC 6376 §3.6.1).
func (k dkimKey) txt(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// sign returns msg with a DKIM-Signature by k, relaxed/relaxed as large
// providers sign.
func (k dkimKey) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain: k.domain, Selector: k.selector, Signer: k.signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/internal/testnet"
)

// TestRPT08_DaemonReportMailbox runs the daemon with [inbound.report_smtp]
// and sends a report as Google does: by mail over STARTTLS (the [tls]
// certificate), DKIM-signed with a key the in-process DNS server
// publishes. The report is stored with source email and DKIM pass; the
// same report POSTed over HTTPS is a duplicate; mail for any other address
// is refused; an import through the admin API lands in the same store.
func TestRPT08_DaemonReportMailbox(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	stsCert, stsKey := filepath.Join(dir, "mta-sts.pem"), filepath.Join(dir, "mta-sts.key")
	writeCertPair(t, stsCert, stsKey, ca.Issue("mta-sts.example.org"))
	smtpCert, smtpKey := filepath.Join(dir, "relay.pem"), filepath.Join(dir, "relay.key")
	writeCertPair(t, smtpCert, smtpKey, ca.Issue("relay.test"))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	txt := &dns.TXT{Hdr: dns.RR_Header{Name: "20230601._domainkey.google.com.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}}
	for len(record) > 255 { // one TXT record of several strings
		txt.Txt, record = append(txt.Txt, record[:255]), record[255:]
	}
	txt.Txt = append(txt.Txt, record)
	zone := testnet.NewZone()
	zone.AddRR(txt)
	dnsSrv := testnet.StartDNS(t, zone)

	httpsAddr, mailAddr := freeAddr(t), freeAddr(t)
	d := runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = %q
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[tls]
cert_file = %q
key_file = %q
[inbound]
address = %q
cert_file = %q
key_file = %q
[[inbound.mta_sts]]
domain = "example.org"
mode = "enforce"
mx = ["mail.example.org"]
[inbound.report_smtp]
address = %q
addresses = ["tlsrpt@reports.example.org"]
`, dnsSrv.Addr(), freeAddr(t), smtpCert, smtpKey, httpsAddr, stsCert, stsKey, mailAddr), Options{})

	msg, err := os.ReadFile("../testdata/reportmail/google-gzip-base64.eml")
	if err != nil {
		t.Fatal(err)
	}
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, bytes.NewReader(msg), &dkim.SignOptions{
		Domain: "google.com", Selector: "20230601", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	}); err != nil {
		t.Fatal(err)
	}

	c, err := smtp.DialStartTLS(mailAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "relay.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("noreply-smtp-tls-reporting@google.com", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("someone@example.org", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("RCPT to another address: %v, want 550", err)
	}
	if err := c.Rcpt("TLSRPT@reports.example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(signed.Bytes())
	if resp, err := w.CloseWithResponse(); err != nil || !strings.Contains(resp.StatusText, "1 TLS report(s) stored") {
		t.Fatalf("DATA: %+v, %v", resp, err)
	}
	c.Quit()

	// The same report over HTTPS is a duplicate.
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		},
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
	}
	defer tr.CloseIdleConnections()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	raw, err := os.ReadFile("../testdata/tlsrpt/google.json")
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	zw.Close()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post("https://mta-sts.example.org/report/tlsrpt", tlsrpt.MediaTypeGzip, &gz)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HTTPS POST of the same report: %s, want 200 (duplicate)", resp.Status)
	}

	ac := d.admin
	// An import goes to the same store.
	nested, err := os.ReadFile("../testdata/reportmail/nested-alternative-mixed.eml")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := ac.ImportReports(context.Background(), "nested.eml", bytes.NewReader(nested)); err != nil || len(res.Reports) != 1 || res.Reports[0].Duplicate {
		t.Fatalf("import: %+v, %v", res, err)
	}
	list, err := ac.Reports(context.Background(), tlsrpt.Filter{})
	if err != nil || len(list) != 2 {
		t.Fatalf("reports %+v, %v; want the mailed and the imported one", list, err)
	}
	byOrg := map[string]tlsrpt.Summary{}
	for _, s := range list {
		byOrg[s.Organization] = s
	}
	g := byOrg["Google Inc."]
	if g.Source != tlsrpt.SourceEmail || g.DKIM != "pass (d=google.com)" || g.Sender != "noreply-smtp-tls-reporting@google.com" || g.Foreign {
		t.Errorf("mailed report %+v", g)
	}
	if n := byOrg["Nested Mail GmbH"]; n.Source != tlsrpt.SourceImport || n.Sender != "nested.eml" {
		t.Errorf("imported report %+v", n)
	}
}

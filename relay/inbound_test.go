package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/relay/config"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeCertPair(t *testing.T, certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSRV01_DaemonServesPolicy runs the daemon with [inbound] and fetches
// the policy as a sender does; SIGHUP reloads the certificate files.
func TestSRV01_DaemonServesPolicy(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "mta-sts.pem"), filepath.Join(dir, "mta-sts.key")
	first := ca.Issue("mta-sts.example.org")
	writeCertPair(t, certFile, keyFile, first)
	httpsAddr := freeAddr(t)
	d := runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[inbound]
address = %q
cert_file = %q
key_file = %q
[[inbound.mta_sts]]
domain = "example.org"
mode = "enforce"
max_age = 604800
mx = ["mail.example.org", "*.mx.example.org"]
`, freeAddr(t), httpsAddr, certFile, keyFile), Options{})

	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() (*http.Response, string) {
		resp, err := client.Get("https://mta-sts.example.org/.well-known/mta-sts.txt")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, body := get()
	want := "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.mx.example.org\r\nmax_age: 604800\r\n"
	if resp.StatusCode != 200 || body != want || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %s %q %q", resp.Status, resp.Header.Get("Content-Type"), body)
	}

	second := ca.Issue("mta-sts.example.org")
	writeCertPair(t, certFile, keyFile, second)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ := get()
		if resp.TLS.PeerCertificates[0].SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload the certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A TLS report POSTed to the report path is stored and listed through
	// the admin API (RPT01, RPT05), twice POSTed and stored once.
	report, err := os.ReadFile("../testdata/tlsrpt/rfc8460-example.json")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{http.StatusCreated, http.StatusOK} {
		resp, err := client.Post("https://mta-sts.example.org/report/tlsrpt", "application/tlsrpt+json", bytes.NewReader(report))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %d: %s, want %d", i, resp.Status, want)
		}
	}
	ac := d.admin
	list, err := ac.Reports(context.Background(), tlsrpt.Filter{})
	if err != nil || len(list) != 1 {
		t.Fatalf("reports list = %+v, %v; want the one report", list, err)
	}
}

func TestInboundOptionsFromConfig(t *testing.T) {
	cfg, err := config.Parse([]byte(`
data_dir = "/var/lib/relay"
[[listener]]
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.0/8"]
[inbound]
address = ":443"
cert_file = "/etc/a.pem"
key_file = "/etc/a.key"
acme = true
acme_email = "postmaster@example.org"
acme_directory = "https://acme.test/dir"
[[inbound.cert]]
cert_file = "/etc/b.pem"
key_file = "/etc/b.key"
[[inbound.mta_sts]]
domain = "example.org"
mode = "testing"
mx = ["mail.example.org"]
[inbound.tls_rpt]
path = "/tlsrpt"
`), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	opts := inboundOptions(cfg, nil, nil)
	if opts.Address != ":443" || opts.ReportPath != "/tlsrpt" {
		t.Errorf("address %q, report path %q", opts.Address, opts.ReportPath)
	}
	if len(opts.Certs) != 2 || opts.Certs[0].CertFile != "/etc/a.pem" || opts.Certs[1].KeyFile != "/etc/b.key" {
		t.Errorf("certs %+v", opts.Certs)
	}
	if a := opts.ACME; a == nil || a.CacheDir != "/var/lib/relay/acme" || a.Email != "postmaster@example.org" || a.Directory != "https://acme.test/dir" {
		t.Errorf("ACME %+v", opts.ACME)
	}
	if len(opts.Policies) != 1 || opts.Policies[0].Domain != "example.org" || opts.Policies[0].Mode != "testing" || opts.Policies[0].MaxAge != 604800 {
		t.Errorf("policies %+v", opts.Policies)
	}
}

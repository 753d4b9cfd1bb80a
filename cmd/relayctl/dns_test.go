package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/inbound"
	"github.com/relaysec/relay/internal/testnet"
)

// writePEM writes cert's chain and key as PEM files into dir.
func writePEM(t *testing.T, dir, base string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// dnsConfig writes a relay.toml with an [inbound] policy for example.org
// and returns its path.
func dnsConfig(t *testing.T, resolver, tlsCert, tlsKey string) string {
	t.Helper()
	dir := t.TempDir()
	tlsTable := ""
	if tlsCert != "" {
		tlsTable = fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", tlsCert, tlsKey)
	}
	path := filepath.Join(dir, "relay.toml")
	data := fmt.Sprintf(`hostname = "relay.example.com"
data_dir = %q
[dns]
resolver = %q
[[listener]]
address = "127.0.0.1:2525"
trusted_networks = ["127.0.0.0/8"]
%s
[inbound]
address = "127.0.0.1:8443"
cert_file = "/nonexistent/mta-sts.pem"
key_file = "/nonexistent/mta-sts.key"
[[inbound.mta_sts]]
domain = "example.org"
mode = "enforce"
max_age = 604800
mx = ["mail.example.org", "*.mx.example.org"]
[inbound.tls_rpt]
path = "/report/tlsrpt"
`, filepath.Join(dir, "data"), resolver, tlsTable)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var relayPolicy = inbound.PolicyConfig{
	Domain: "example.org", Mode: "enforce", MaxAge: 604800,
	MX: []string{"mail.example.org", "*.mx.example.org"},
}

func relayPolicyID(t *testing.T) string {
	t.Helper()
	body, err := inbound.RenderPolicy(relayPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return inbound.PolicyID(body)
}

func TestSRV04_DNSRecordsCommand(t *testing.T) {
	ca := testnet.NewCA(t)
	intake := ca.Issue("mail.example.org")
	certFile, keyFile := writePEM(t, t.TempDir(), "intake", intake)
	cfgPath := dnsConfig(t, "127.0.0.1:9", certFile, keyFile)
	id := relayPolicyID(t)
	spki := sha256.Sum256(intake.Leaf.RawSubjectPublicKeyInfo)

	stdout, stderr, code := runCmd(t, "", "--config", cfgPath, "dns", "records", "Example.ORG")
	mustSucceed(t, stdout, stderr, code)
	for _, want := range []string{
		"Policy id:  " + id,
		"Report URL: https://mta-sts.example.org/report/tlsrpt",
		"version: STSv1",
		"mx: *.mx.example.org",
		`_mta-sts.example.org.    3600  TXT    "v=STSv1; id=` + id + `"`,
		`mta-sts.example.org.     3600  CNAME  relay.example.com.`,
		`_smtp._tls.example.org.  3600  TXT    "v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`,
		"_25._tcp.mail.example.org.  3600  TLSA   3 1 1 " + hex.EncodeToString(spki[:]),
		"relayctl dns check example.org",
	} {
		if !strings.Contains(stdout, want) && !strings.Contains(squash(stdout), squash(want)) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}

	t.Run("json", func(t *testing.T) {
		stdout, stderr, code := runCmd(t, "", "--config", cfgPath, "--json", "dns", "records", "example.org")
		mustSucceed(t, stdout, stderr, code)
		var out dnsRecordsOutput
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatal(err)
		}
		if out.PolicyID != id || len(out.Records) != 4 || out.Records[0].Name != "_mta-sts.example.org." {
			t.Errorf("JSON %+v", out)
		}
	})
	t.Run("unknown domain", func(t *testing.T) {
		_, stderr, code := runCmd(t, "", "--config", cfgPath, "dns", "records", "example.net")
		if code != 1 || !strings.Contains(stderr, "example.net has no [[inbound.mta_sts]] policy") {
			t.Errorf("code %d, stderr %q", code, stderr)
		}
	})
	t.Run("no [tls] certificate", func(t *testing.T) {
		stdout, stderr, code := runCmd(t, "", "--config", dnsConfig(t, "127.0.0.1:9", "", ""), "dns", "records", "example.org")
		mustSucceed(t, stdout, stderr, code)
		if strings.Contains(stdout, "TLSA") {
			t.Errorf("TLSA without a [tls] certificate:\n%s", stdout)
		}
	})
}

// TestSRV04_DNSCheckCommand runs `relayctl dns check` against the in-process
// DNS server and an inbound server on 127.0.0.2 serving the policy with a
// test CA certificate.
func TestSRV04_DNSCheckCommand(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := writePEM(t, dir, "mta-sts", ca.Issue("mta-sts.example.org"))
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := inbound.New(inbound.Options{
		Certs:    []inbound.CertPair{{CertFile: certFile, KeyFile: keyFile}},
		Policies: []inbound.PolicyConfig{relayPolicy},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	host, port, _ := net.SplitHostPort(ln.Addr().String())

	zone := testnet.NewZone(
		`_mta-sts.example.org. TXT "v=STSv1; id=`+relayPolicyID(t)+`"`,
		"mta-sts.example.org. A "+host,
		"example.org. MX 10 mail.example.org.",
		"example.org. MX 20 a.mx.example.org.",
		`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`,
	)
	dnsSrv := testnet.StartDNS(t, zone)
	cfgPath := dnsConfig(t, dnsSrv.Addr(), "", "")
	args := []string{"--config", cfgPath, "dns", "check", "example.org", "--ca-file", caFile, "--port", port}

	stdout, stderr, code := runCmd(t, "", args...)
	mustSucceed(t, stdout, stderr, code)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 5 {
		t.Errorf("want 5 result lines:\n%s", stdout)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "ok ") {
			t.Errorf("not ok: %q", l)
		}
	}

	t.Run("failures exit 1 with fixes", func(t *testing.T) {
		zone.Add("example.org. MX 30 backup.example.net.")
		zone.Remove("_smtp._tls.example.org.", dns.TypeTXT)
		t.Cleanup(func() {
			zone.Remove("example.org.", dns.TypeMX)
			zone.Add("example.org. MX 10 mail.example.org.", "example.org. MX 20 a.mx.example.org.",
				`_smtp._tls.example.org. TXT "v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`)
		})
		stdout, stderr, code := runCmd(t, "", args...)
		if code != 1 || !strings.Contains(stderr, "2 checks failed for example.org") {
			t.Errorf("code %d, stderr %q", code, stderr)
		}
		for _, want := range []string{
			"fail  MX hosts",
			"backup.example.net match no mx pattern",
			"fail  _smtp._tls TXT",
			`fix: publish _smtp._tls.example.org. TXT "v=TLSRPTv1; rua=https://mta-sts.example.org/report/tlsrpt"`,
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		stdout, _, code := runCmd(t, "", "--config", cfgPath, "dns", "check", "example.org", "--port", port)
		if code != 1 || !strings.Contains(stdout, "certificate is not valid") {
			t.Errorf("code %d without --ca-file:\n%s", code, stdout)
		}
	})
	t.Run("json", func(t *testing.T) {
		stdout, stderr, code := runCmd(t, "", append([]string{"--json"}, args...)...)
		mustSucceed(t, stdout, stderr, code)
		var out []struct{ Check, Status string }
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || len(out) != 5 || out[0].Status != "ok" {
			t.Errorf("JSON %v %+v", err, out)
		}
	})
	t.Run("--resolver overrides the configuration", func(t *testing.T) {
		_, _, code := runCmd(t, "", append(args, "--resolver", "127.0.0.1:9", "--timeout", "300ms")...)
		if code != 1 {
			t.Errorf("code %d with an unreachable resolver", code)
		}
	})
}

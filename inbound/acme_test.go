package inbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	pebbleca "github.com/letsencrypt/pebble/v2/ca"
	pebbledb "github.com/letsencrypt/pebble/v2/db"
	pebbleva "github.com/letsencrypt/pebble/v2/va"
	pebblewfe "github.com/letsencrypt/pebble/v2/wfe"

	"github.com/relaysec/relay/internal/testnet"
)

// lockedBuffer collects Pebble's log for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pebble is Let's Encrypt's test ACME CA run in-process: its web front end
// on an httptest TLS server, its validation authority resolving names with
// dnsAddr and connecting to tlsPort for TLS-ALPN-01.
type pebble struct {
	directory string
	apiRoots  *x509.CertPool // verify the ACME API's HTTPS certificate
	issuer    *x509.CertPool // verify the certificates it issues
	log       *lockedBuffer
	close     func()
}

func startPebble(t *testing.T, dnsAddr string, tlsPort int) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random validation delays
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately rejected nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order is validated
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0") // really connect to the server
	logs := &lockedBuffer{}
	logger := log.New(logs, "pebble ", log.Lmicroseconds)
	db := pebbledb.NewMemoryStore()
	ca := pebbleca.New(logger, db, "", "ecdsa", 0, 1, map[string]pebbleca.Profile{"default": {Description: "default"}})
	va := pebbleva.New(logger, 0, tlsPort, false, dnsAddr, db)
	wfe := pebblewfe.New(logger, db, va, ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	api := httptest.NewTLSServer(wfe.Handler())
	apiRoots := x509.NewCertPool()
	apiRoots.AddCert(api.Certificate())
	issuer := x509.NewCertPool()
	issuer.AddCert(ca.GetRootCert(0).Cert)
	p := &pebble{directory: api.URL + pebblewfe.DirectoryPath, apiRoots: apiRoots, issuer: issuer, log: logs, close: api.Close}
	t.Cleanup(api.Close)
	return p
}

// TestSRV03_ACMEIssuanceWithPebble obtains a certificate for a policy host
// from a real ACME server (Pebble) with TLS-ALPN-01 answered on the
// inbound listener itself, serves the policy with it, refuses names that
// are not configured, and reuses the cached certificate after a restart.
func TestSRV03_ACMEIssuanceWithPebble(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	port, _ := strconv.Atoi(addr[len("127.0.0.1:"):])
	zone := testnet.NewZone(
		"mta-sts.example.org. A 127.0.0.1",
		"relay.example.com. A 127.0.0.1",
		"other.example.org. A 127.0.0.1",
	)
	dnsSrv := testnet.StartDNS(t, zone)
	ca := startPebble(t, dnsSrv.Addr(), port)
	cacheDir := filepath.Join(t.TempDir(), "acme")
	opts := Options{
		ACME: &ACMEOptions{
			Directory: ca.directory,
			Email:     "postmaster@example.org",
			CacheDir:  cacheDir,
			RootCAs:   ca.apiRoots,
		},
		Policies:    []PolicyConfig{examplePolicy},
		ReportHosts: []string{"relay.example.com"},
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		if t.Failed() {
			t.Logf("Pebble log:\n%s", ca.log.String())
		}
	}()

	client := clientFor(t, addr, ca.issuer, true)
	client.Timeout = time.Minute // the first handshake waits for issuance
	for _, host := range []string{"mta-sts.example.org", "relay.example.com"} {
		req, _ := http.NewRequest(http.MethodGet, "https://"+host+PolicyPath, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET from %s with an ACME certificate: %v", host, err)
		}
		resp.Body.Close()
		leaf := resp.TLS.PeerCertificates[0]
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
			t.Errorf("%s: certificate for %v", host, leaf.DNSNames)
		}
		want := map[string]int{"mta-sts.example.org": 200, "relay.example.com": 404}[host]
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", host, resp.StatusCode, want)
		}
	}

	// A name that is neither a policy host nor a report host gets nothing:
	// the ACME account cannot be made to request certificates for it.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.example.org", RootCAs: ca.issuer})
	if err == nil {
		conn.Close()
		t.Error("a handshake for an unconfigured name succeeded")
	}

	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) < 3 { // account key and two certificates
		t.Errorf("cache directory holds %v, want the account key and both certificates", names)
	}

	client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}

	// After a restart the cached certificate is served with the ACME
	// server gone.
	ca.close()
	_, addr2 := startServer(t, opts)
	resp, body := do(t, clientFor(t, addr2, ca.issuer, false), http.MethodGet, "https://mta-sts.example.org"+PolicyPath)
	if resp.StatusCode != 200 || body != examplePolicyBody {
		t.Errorf("after restart: %s %q", resp.Status, body)
	}
}

// TestACMEWithFiles: with both files and ACME, a file certificate valid for
// the name is used, and the ACME manager is only asked for other
// configured names.
func TestACMEWithFiles(t *testing.T) {
	testCA := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", testCA.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{
		Certs:    []CertPair{pair},
		ACME:     &ACMEOptions{Directory: "https://127.0.0.1:1/dir", CacheDir: t.TempDir()},
		Policies: []PolicyConfig{examplePolicy},
	})
	resp, body := do(t, clientFor(t, addr, testCA.Pool(), true), http.MethodGet, "https://mta-sts.example.org"+PolicyPath)
	if resp.StatusCode != 200 || body != examplePolicyBody {
		t.Errorf("%s %q", resp.Status, body)
	}
	// ACME is offered for the challenge protocol.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "mta-sts.example.org", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

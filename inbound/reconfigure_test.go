package inbound

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/relaysec/relay/internal/testnet"
)

// TestReconfigure replaces the policies served and the certificates of a
// running server; an invalid policy or a missing certificate changes
// nothing.
func TestReconfigure(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	orgPair := writePair(t, dir, "org", ca.Issue("mta-sts.example.org"))
	var mu sync.Mutex
	codes := map[int]int{}
	srv, addr := startServer(t, Options{
		Certs:    []CertPair{orgPair},
		Policies: []PolicyConfig{examplePolicy},
		ObservePolicyRequest: func(status int) {
			mu.Lock()
			codes[status]++
			mu.Unlock()
		},
	})
	c := clientFor(t, addr, ca.Pool(), false)
	if resp, body := do(t, c, http.MethodGet, "https://mta-sts.example.org/.well-known/mta-sts.txt"); resp.StatusCode != 200 || body != examplePolicyBody {
		t.Fatalf("before: %s %q", resp.Status, body)
	}

	// example.org goes to testing, example.net is added with its own
	// certificate.
	netPair := writePair(t, dir, "net", ca.Issue("mta-sts.example.net"))
	testing2 := examplePolicy
	testing2.Mode = ModeTesting
	netPolicy := PolicyConfig{Domain: "example.net", Mode: ModeEnforce, MaxAge: 86400, MX: []string{"mx.example.net"}}
	if err := srv.Reconfigure([]PolicyConfig{testing2, netPolicy}, []CertPair{orgPair, netPair}); err != nil {
		t.Fatal(err)
	}
	if resp, body := do(t, c, http.MethodGet, "https://mta-sts.example.org/.well-known/mta-sts.txt"); resp.StatusCode != 200 || !strings.Contains(body, "mode: testing") {
		t.Errorf("example.org after: %s %q", resp.Status, body)
	}
	if resp, body := do(t, c, http.MethodGet, "https://mta-sts.example.net/.well-known/mta-sts.txt"); resp.StatusCode != 200 || !strings.Contains(body, "mx: mx.example.net") {
		t.Errorf("example.net after: %s %q", resp.Status, body)
	}
	if got := handshake(t, addr, "mta-sts.example.net"); got.Subject.CommonName != "mta-sts.example.net" && !slices.Contains(got.DNSNames, "mta-sts.example.net") {
		t.Errorf("example.net certificate %v", got.DNSNames)
	}
	if ids := srv.PolicyIDs(); len(ids) != 2 || ids["example.net"] == "" {
		t.Errorf("PolicyIDs %v", ids)
	}

	// Refused: an invalid policy, a certificate that does not load.
	bad := netPolicy
	bad.MX = nil
	if err := srv.Reconfigure([]PolicyConfig{examplePolicy, bad}, []CertPair{orgPair}); err == nil {
		t.Error("Reconfigure accepted an enforce policy without mx")
	}
	if err := srv.Reconfigure([]PolicyConfig{examplePolicy}, []CertPair{{CertFile: dir + "/missing.pem", KeyFile: dir + "/missing.key"}}); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("Reconfigure with a missing certificate: %v", err)
	}
	if err := srv.Reconfigure([]PolicyConfig{examplePolicy}, nil); err == nil {
		t.Error("Reconfigure accepted no certificate without ACME")
	}
	if resp, body := do(t, c, http.MethodGet, "https://mta-sts.example.net/.well-known/mta-sts.txt"); resp.StatusCode != 200 || !strings.Contains(body, "mx: mx.example.net") {
		t.Errorf("a refused Reconfigure changed what is served: %s %q", resp.Status, body)
	}
	if resp, _ := do(t, c, http.MethodPost, "https://mta-sts.example.net/.well-known/mta-sts.txt"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	if resp, _ := do(t, c, http.MethodGet, "https://mta-sts.example.org/.well-known/mta-sts.txt?x"); resp.StatusCode != 200 {
		t.Errorf("GET: %s", resp.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if codes[200] != 5 || codes[405] != 1 {
		t.Errorf("observed policy requests %v, want 5×200, 1×405", codes)
	}
}

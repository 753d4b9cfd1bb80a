package mtasts

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
)

const testDomain = "example.test"

// fetchFrom starts an HTTPS server with cert and handler h and returns a
// Fetcher pointed at it for mta-sts.example.test, trusting ca.
func fetchFrom(t *testing.T, ca *testnet.CA, cert tls.Certificate, h http.Handler, opts FetcherOptions) (*Fetcher, string) {
	t.Helper()
	srv := startPolicyServer(t, cert, h)
	if opts.RootCAs == nil {
		opts.RootCAs = ca.Pool()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	opts.DialContext = dialTo(srv.Listener.Addr().String(), "mta-sts."+testDomain)
	return NewFetcher(opts), srv.Listener.Addr().String()
}

// wantFetchError checks that err is a *FetchError of kind.
func wantFetchError(t *testing.T, p *Policy, err error, kind string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Fetch = %+v, want a %s error", p, kind)
	}
	if p != nil {
		t.Errorf("Fetch returned a policy with the error %v", err)
	}
	var fe *FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FetchError", err, err)
	}
	if fe.Kind != kind || fe.Domain != testDomain {
		t.Errorf("FetchError{Domain: %q, Kind: %q}, want {%q, %q}: %v", fe.Domain, fe.Kind, testDomain, kind, err)
	}
}

func TestSTS02_FetchValid(t *testing.T) {
	ca := testnet.NewCA(t)
	var gotPath, gotHost, gotMethod string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotHost, gotMethod = r.URL.Path, r.Host, r.Method
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(testPolicy))
	})
	f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})
	p, err := f.Fetch(context.Background(), "Example.Test.")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if p.Mode != ModeEnforce || !p.MatchMX("mx.example.test") || string(p.Raw) != testPolicy {
		t.Errorf("policy %+v", p)
	}
	if gotMethod != http.MethodGet || gotPath != "/.well-known/mta-sts.txt" || gotHost != "mta-sts.example.test" {
		t.Errorf("request %s %s Host %s", gotMethod, gotPath, gotHost)
	}
}

func TestSTS02_FetchIntermediateChain(t *testing.T) {
	ca := testnet.NewCA(t)
	cert := ca.IssueWith(testnet.IssueOptions{Names: []string{"mta-sts.example.test"}, IncludeIntermediate: true})
	f, _ := fetchFrom(t, ca, cert, textHandler(testPolicy), FetcherOptions{})
	if _, err := f.Fetch(context.Background(), testDomain); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
}

func textHandler(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})
}

func TestSTS02_WebPKIInvalid(t *testing.T) {
	ca := testnet.NewCA(t)
	other := testnet.NewCA(t)
	now := time.Now()
	tests := []struct {
		name string
		cert tls.Certificate
	}{
		{"self-signed", testnet.SelfSigned(t, "mta-sts.example.test")},
		{"other CA", other.Issue("mta-sts.example.test")},
		{"wrong name", ca.Issue("mta-sts.other.test")},
		{"domain instead of mta-sts host", ca.Issue("example.test")},
		{"wildcard does not cover", ca.Issue("*.mta-sts.example.test")},
		{"expired", ca.IssueWith(testnet.IssueOptions{Names: []string{"mta-sts.example.test"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})},
		{"not yet valid", ca.IssueWith(testnet.IssueOptions{Names: []string{"mta-sts.example.test"}, NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newPolicyHandler()
			h.set("mta-sts.example.test", testPolicy)
			f, _ := fetchFrom(t, ca, tt.cert, h, FetcherOptions{})
			p, err := f.Fetch(context.Background(), testDomain)
			wantFetchError(t, p, err, KindWebPKIInvalid)
			if n := h.count("mta-sts.example.test"); n != 0 {
				t.Errorf("server got %d requests over an unverified connection", n)
			}
		})
	}
	t.Run("wildcard certificate accepted", func(t *testing.T) {
		f, _ := fetchFrom(t, ca, ca.Issue("*.example.test"), textHandler(testPolicy), FetcherOptions{})
		if _, err := f.Fetch(context.Background(), testDomain); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
	})
}

// With RootCAs nil the system pool is used, and SSL_CERT_FILE extends it
// (STS02: the system trust store). The system pool is loaded once per
// process, so this runs in a child process that sets SSL_CERT_FILE first.
func TestSTS02_SystemTrustStore(t *testing.T) {
	if os.Getenv("MTASTS_TEST_CHILD") == "1" {
		ca := testnet.NewCA(t)
		file := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(file, ca.RootPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("SSL_CERT_FILE", file)
		t.Setenv("SSL_CERT_DIR", t.TempDir())
		srv := startPolicyServer(t, ca.Issue("mta-sts.example.test"), textHandler(testPolicy))
		f := NewFetcher(FetcherOptions{Timeout: 5 * time.Second, DialContext: dialTo(srv.Listener.Addr().String(), "mta-sts.example.test")})
		if _, err := f.Fetch(context.Background(), testDomain); err != nil {
			t.Fatalf("Fetch with SSL_CERT_FILE: %v", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSTS02_SystemTrustStore$", "-test.v")
	cmd.Env = append(os.Environ(), "MTASTS_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestSTS03_RedirectsAndStatus(t *testing.T) {
	ca := testnet.NewCA(t)
	tests := []struct {
		name   string
		status int
	}{
		{"301", http.StatusMovedPermanently},
		{"302", http.StatusFound},
		{"303", http.StatusSeeOther},
		{"307", http.StatusTemporaryRedirect},
		{"308", http.StatusPermanentRedirect},
		{"404", http.StatusNotFound},
		{"500", http.StatusInternalServerError},
		{"204", http.StatusNoContent},
		{"203", http.StatusNonAuthoritativeInfo},
		{"206", http.StatusPartialContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				w.Header().Set("Content-Type", "text/plain")
				if r.URL.Path == "/elsewhere" {
					_, _ = w.Write([]byte(testPolicy))
					return
				}
				if tt.status >= 300 && tt.status < 400 {
					w.Header().Set("Location", "https://mta-sts.example.test/elsewhere")
				}
				w.WriteHeader(tt.status)
				if tt.status != http.StatusNoContent {
					_, _ = w.Write([]byte(testPolicy))
				}
			})
			f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})
			p, err := f.Fetch(context.Background(), testDomain)
			wantFetchError(t, p, err, KindFetchError)
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 || paths[0] != wellKnownPath {
				t.Errorf("requests %q; want only %s (redirect followed?)", paths, wellKnownPath)
			}
		})
	}
}

func TestSTS04_MediaType(t *testing.T) {
	ca := testnet.NewCA(t)
	tests := []struct {
		ct string
		ok bool
	}{
		{"text/plain", true},
		{"text/plain; charset=utf-8", true},
		{"text/plain;charset=US-ASCII", true},
		{"Text/Plain", true},
		{"text/html", false},
		{"text/html; charset=utf-8", false},
		{"application/octet-stream", false},
		{"text/plainx", false},
		{"application/json", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = []string{tt.ct}
				if tt.ct == "" {
					w.Header()["Content-Type"] = nil // no sniffing either
				}
				_, _ = w.Write([]byte(testPolicy))
			})
			f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})
			p, err := f.Fetch(context.Background(), testDomain)
			if tt.ok {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				return
			}
			wantFetchError(t, p, err, KindFetchError)
		})
	}
}

func TestSTS04_BodySize(t *testing.T) {
	ca := testnet.NewCA(t)
	// A valid policy padded with an unknown key to exactly n bytes.
	padded := func(n int) string {
		s := testPolicy + "x: "
		return s + strings.Repeat("a", n-len(s)-2) + "\r\n"
	}
	tests := []struct {
		name    string
		body    string
		chunked bool
		ok      bool
	}{
		{"exactly 64 KiB", padded(64 << 10), false, true},
		{"64 KiB + 1 with Content-Length", padded(64<<10 + 1), false, false},
		{"64 KiB + 1 chunked", padded(64<<10 + 1), true, false},
		{"1 MiB chunked", padded(1 << 20), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				}
				for b := tt.body; b != ""; {
					n := min(len(b), 4096)
					_, _ = w.Write([]byte(b[:n]))
					if tt.chunked {
						w.(http.Flusher).Flush()
					}
					b = b[n:]
				}
			})
			f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})
			p, err := f.Fetch(context.Background(), testDomain)
			if tt.ok {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if len(p.Raw) != len(tt.body) {
					t.Errorf("Raw has %d bytes, want %d", len(p.Raw), len(tt.body))
				}
				return
			}
			wantFetchError(t, p, err, KindFetchError)
		})
	}
	t.Run("MaxBody option", func(t *testing.T) {
		f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), textHandler(testPolicy), FetcherOptions{MaxBody: 20})
		p, err := f.Fetch(context.Background(), testDomain)
		wantFetchError(t, p, err, KindFetchError)
	})
}

func TestSTS04_SlowServer(t *testing.T) {
	ca := testnet.NewCA(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"slow headers", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(30 * time.Second):
			case <-r.Context().Done():
			}
		}},
		{"slow body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("version: STSv1\r\n"))
			w.(http.Flusher).Flush()
			select {
			case <-time.After(30 * time.Second):
			case <-r.Context().Done():
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server stalls for 30s; only the fetch timeout can end
			// the fetch before that, with a timeout error.
			f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), tt.handler, FetcherOptions{Timeout: 2 * time.Second})
			p, err := f.Fetch(context.Background(), testDomain)
			wantFetchError(t, p, err, KindFetchError)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %v is not a timeout", err)
				}
			}
		})
	}
	t.Run("caller context", func(t *testing.T) {
		block := make(chan struct{})
		defer close(block)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		})
		f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := f.Fetch(ctx, testDomain)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Fetch error %v, want the context's deadline", err)
		}
	})
}

func TestSTS05_FetchInvalidPolicy(t *testing.T) {
	ca := testnet.NewCA(t)
	f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), textHandler("version: STSv1\nmode: enforce\nmax_age: 60\n"), FetcherOptions{})
	p, err := f.Fetch(context.Background(), testDomain)
	wantFetchError(t, p, err, KindPolicyInvalid)
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("error %v does not wrap ErrInvalidPolicy", err)
	}
}

func TestFetchNetworkError(t *testing.T) {
	f := NewFetcher(FetcherOptions{Timeout: time.Second, DialContext: dialTo(testnet.Refuse(t, "127.0.0.1"), "mta-sts.example.test")})
	p, err := f.Fetch(context.Background(), testDomain)
	wantFetchError(t, p, err, KindFetchError)
	if _, err := f.Fetch(context.Background(), "not a domain"); err == nil {
		t.Error("invalid domain accepted")
	}
}

// No proxy from the environment is used (the policy host must be reached
// directly, or the certificate check would be the proxy's business).
func TestSTS02_NoProxy(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("https_proxy", "http://127.0.0.1:1")
	ca := testnet.NewCA(t)
	f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), textHandler(testPolicy), FetcherOptions{})
	if _, err := f.Fetch(context.Background(), testDomain); err != nil {
		t.Fatalf("Fetch with HTTPS_PROXY set: %v", err)
	}
}

func TestSTS17_FetchCoalesced(t *testing.T) {
	ca := testnet.NewCA(t)
	h := newPolicyHandler()
	h.set("mta-sts.example.test", testPolicy)
	release := h.setBlock()
	f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})

	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			p, err := f.Fetch(context.Background(), testDomain)
			if err == nil && p.Mode != ModeEnforce {
				err = errors.New("wrong policy")
			}
			errs <- err
		})
	}
	waitFor(t, func() bool { return f.flight.waiting(testDomain) == n })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if hits := h.count("mta-sts.example.test"); hits != 1 {
		t.Errorf("%d concurrent fetches made %d requests, want 1", n, hits)
	}
	// Once done, a new fetch makes a new request.
	if _, err := f.Fetch(context.Background(), testDomain); err != nil {
		t.Fatal(err)
	}
	if hits := h.count("mta-sts.example.test"); hits != 2 {
		t.Errorf("%d requests after a later fetch, want 2", hits)
	}
}

// A waiter whose context ends returns at once; the shared fetch goes on for
// the others.
func TestSTS17_WaiterCancel(t *testing.T) {
	ca := testnet.NewCA(t)
	h := newPolicyHandler()
	h.set("mta-sts.example.test", testPolicy)
	release := h.setBlock()
	f, _ := fetchFrom(t, ca, ca.Issue("mta-sts.example.test"), h, FetcherOptions{})

	first := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := f.Fetch(ctx, testDomain)
		first <- err
	}()
	second := make(chan error, 1)
	go func() {
		_, err := f.Fetch(context.Background(), testDomain)
		second <- err
	}()
	waitFor(t, func() bool { return f.flight.waiting(testDomain) == 2 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: %v", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Errorf("other waiter: %v", err)
	}
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TLS 1.2 is the minimum; a policy host limited to TLS 1.1 fails to fetch.
func TestSTS02_TLS12Minimum(t *testing.T) {
	ca := testnet.NewCA(t)
	srv := httptestTLS(t, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue("mta-sts.example.test")},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
	}, textHandler(testPolicy))
	f := NewFetcher(FetcherOptions{RootCAs: ca.Pool(), Timeout: 5 * time.Second, DialContext: dialTo(srv, "mta-sts.example.test")})
	p, err := f.Fetch(context.Background(), testDomain)
	wantFetchError(t, p, err, KindFetchError)
	if !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("error %v is not about the protocol version", err)
	}
}

package inbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
)

// newTestHandler returns the handler of a Server serving examplePolicy
// and a policy for example.net, with a report handler answering 202.
func newTestHandler(t *testing.T) *handler {
	t.Helper()
	h, err := newHandler(Options{
		Policies: []PolicyConfig{
			examplePolicy,
			{Domain: "Example.NET.", Mode: ModeTesting, MaxAge: 86400, MX: []string{"MX.Example.NET"}},
		},
		ReportPath:    "/report/tlsrpt",
		ReportHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }),
		ReportHosts:   []string{"relay.example.com"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestSRV01_PolicyResponse(t *testing.T) {
	h := newTestHandler(t)
	tests := []struct {
		name, host, method string
		wantBody           string
		wantLen            string
	}{
		{"GET", "mta-sts.example.org", http.MethodGet, examplePolicyBody, fmt.Sprint(len(examplePolicyBody))},
		{"HEAD has headers only", "mta-sts.example.org", http.MethodHead, "", fmt.Sprint(len(examplePolicyBody))},
		{"second domain, normalized", "mta-sts.example.net", http.MethodGet,
			"version: STSv1\r\nmode: testing\r\nmx: mx.example.net\r\nmax_age: 86400\r\n", "67"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "https://"+tt.host+PolicyPath, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200", rec.Code)
			}
			if got := rec.Header().Get("Content-Type"); got != "text/plain" {
				t.Errorf("Content-Type %q, want text/plain", got)
			}
			if got := rec.Header().Get("Content-Length"); got != tt.wantLen {
				t.Errorf("Content-Length %q, want %q", got, tt.wantLen)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body %q, want %q", got, tt.wantBody)
			}
		})
	}
}

func TestSRV01_PolicyOverHTTPS(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy}})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			resp, body := do(t, clientFor(t, addr, ca.Pool(), h2), http.MethodGet, "https://mta-sts.example.org"+PolicyPath)
			if resp.StatusCode != http.StatusOK || body != examplePolicyBody {
				t.Fatalf("got %s %q, want 200 %q", resp.Status, body, examplePolicyBody)
			}
			if ct := resp.Header.Values("Content-Type"); len(ct) != 1 || ct[0] != "text/plain" {
				t.Errorf("Content-Type %q, want exactly text/plain", ct)
			}
			if resp.ContentLength != int64(len(examplePolicyBody)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(examplePolicyBody))
			}
			if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
				t.Errorf("protocol %s, want HTTP/%d", resp.Proto, want)
			}
		})
	}
}

func TestSRV02_HostRouting(t *testing.T) {
	h := newTestHandler(t)
	tests := []struct {
		name, host, path string
		want             int
	}{
		{"policy host", "mta-sts.example.org", PolicyPath, 200},
		{"with port", "mta-sts.example.org:443", PolicyPath, 200},
		{"other port", "mta-sts.example.org:8443", PolicyPath, 200},
		{"trailing dot", "mta-sts.example.org.", PolicyPath, 200},
		{"trailing dot and port", "mta-sts.example.org.:443", PolicyPath, 200},
		{"upper case", "MTA-STS.Example.ORG", PolicyPath, 200},
		{"upper case, dot and port", "MTA-STS.EXAMPLE.ORG.:443", PolicyPath, 200},
		{"the domain itself", "example.org", PolicyPath, 404},
		{"unconfigured domain", "mta-sts.example.com", PolicyPath, 404},
		{"other host of the domain", "www.example.org", PolicyPath, 404},
		{"suffix trick", "mta-sts.example.org.evil.test", PolicyPath, 404},
		{"prefix trick", "xmta-sts.example.org", PolicyPath, 404},
		{"report host has no policy", "relay.example.com", PolicyPath, 404},
		{"IP address", "127.0.0.1", PolicyPath, 404},
		{"IPv6 address", "[::1]:443", PolicyPath, 404},
		{"root path", "mta-sts.example.org", "/", 404},
		{"trailing slash", "mta-sts.example.org", PolicyPath + "/", 404},
		{"case of path", "mta-sts.example.org", "/.well-known/MTA-STS.txt", 404},
		{"other well-known", "mta-sts.example.org", "/.well-known/security.txt", 404},
		{"report path on policy host", "mta-sts.example.org", "/report/tlsrpt", 202},
		{"report path on report host", "relay.example.com", "/report/tlsrpt", 202},
		{"report path on other host", "www.example.org", "/report/tlsrpt", 404},
		{"report path prefix", "mta-sts.example.org", "/report/tlsrpt/x", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "https://placeholder"+tt.path, nil)
			req.Host = tt.host
			req.TLS.ServerName = "" // as from a client that sent no SNI
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("Host %q path %q: status %d, want %d", tt.host, tt.path, rec.Code, tt.want)
			}
			if tt.want == 404 && strings.Contains(rec.Body.String(), "STSv1") {
				t.Errorf("404 answer leaks the policy: %q", rec.Body.String())
			}
		})
	}
}

func TestSRV02_Methods(t *testing.T) {
	h := newTestHandler(t)
	tests := []struct {
		method    string
		want      int
		wantAllow string
	}{
		{http.MethodGet, 200, ""},
		{http.MethodHead, 200, ""},
		{http.MethodPost, 405, "GET, HEAD"},
		{http.MethodPut, 405, "GET, HEAD"},
		{http.MethodDelete, 405, "GET, HEAD"},
		{http.MethodOptions, 405, "GET, HEAD"},
		{http.MethodPatch, 405, "GET, HEAD"},
		{"BREW", 405, "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "https://mta-sts.example.org"+PolicyPath, strings.NewReader("x"))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d", rec.Code, tt.want)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if tt.want == 405 && strings.Contains(rec.Body.String(), "STSv1") {
				t.Errorf("405 answer leaks the policy")
			}
		})
	}
	t.Run("405 only for the policy host", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPost, "https://www.example.org"+PolicyPath, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 404 {
			t.Errorf("status %d, want 404", rec.Code)
		}
	})
}

func TestSRV02_HEADOverHTTPS(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy}})
	for _, h2 := range []bool{false, true} {
		resp, body := do(t, clientFor(t, addr, ca.Pool(), h2), http.MethodHead, "https://mta-sts.example.org"+PolicyPath)
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len(examplePolicyBody)) {
			t.Errorf("h2=%v: HEAD got %s, body %q, Content-Length %d", h2, resp.Status, body, resp.ContentLength)
		}
		resp, _ = do(t, clientFor(t, addr, ca.Pool(), h2), http.MethodPost, "https://mta-sts.example.org"+PolicyPath)
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("h2=%v: POST got %s, Allow %q", h2, resp.Status, resp.Header.Get("Allow"))
		}
	}
}

// TestSRV02_SNIMustNameTheHost: a connection made for one host (SNI) does
// not get another host's policy.
func TestSRV02_SNIMustNameTheHost(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "both", ca.Issue("mta-sts.example.org", "mta-sts.example.net"))
	_, addr := startServer(t, Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{
		examplePolicy, {Domain: "example.net", Mode: ModeNone, MaxAge: 86400},
	}})
	tests := []struct {
		sni, host string
		want      int
	}{
		{"mta-sts.example.org", "mta-sts.example.org", 200},
		{"MTA-STS.example.org", "mta-sts.example.org", 200},
		{"mta-sts.example.net", "mta-sts.example.org", 404},
		{"", "mta-sts.example.org", 200}, // no SNI (IP literal): the Host header decides
	}
	for _, tt := range tests {
		t.Run(tt.sni+"→"+tt.host, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: tt.sni, RootCAs: ca.Pool(), InsecureSkipVerify: tt.sni == ""})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", PolicyPath, tt.host)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestSRV02_ReportEndpointNeedsAHandler(t *testing.T) {
	h, err := newHandler(Options{Policies: []PolicyConfig{examplePolicy}, ReportPath: "/report/tlsrpt"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "https://mta-sts.example.org/report/tlsrpt", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Errorf("status %d, want 404 without a report handler", rec.Code)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no certificate", Options{Policies: []PolicyConfig{examplePolicy}}, "no certificate"},
		{"missing files", Options{Certs: []CertPair{{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}}, "/nonexistent/c.pem"},
		{"key of another certificate", Options{Certs: []CertPair{{CertFile: pair.CertFile, KeyFile: writePair(t, t.TempDir(), "x", ca.Issue("x.example")).KeyFile}}}, "private key does not match"},
		{"bad policy", Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{{Domain: "example.org", Mode: "enforced", MaxAge: 86400, MX: []string{"mx.example.org"}}}}, `mode "enforced"`},
		{"duplicate policy", Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy, examplePolicy}}, "more than one policy"},
		{"relative report path", Options{Certs: []CertPair{pair}, ReportPath: "report"}, "does not start with /"},
		{"bad report host", Options{Certs: []CertPair{pair}, ReportHosts: []string{"relay example"}}, "report host"},
		{"ACME without cache", Options{ACME: &ACMEOptions{}}, "cache directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSRV03_CertificateBySNI(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	org := writePair(t, dir, "org", ca.Issue("mta-sts.example.org"))
	netPair := writePair(t, dir, "net", ca.Issue("*.example.net"))
	com := writePair(t, dir, "com", ca.Issue("mta-sts.example.com", "relay.example.com"))
	_, addr := startServer(t, Options{Certs: []CertPair{org, netPair, com}})
	tests := []struct {
		sni, want string // want: first DNS name of the expected leaf
	}{
		{"mta-sts.example.org", "mta-sts.example.org"},
		{"MTA-STS.EXAMPLE.ORG", "mta-sts.example.org"},
		{"mta-sts.example.net", "*.example.net"},
		{"deep.mta-sts.example.net", "mta-sts.example.org"}, // a wildcard covers one label only
		{"relay.example.com", "mta-sts.example.com"},
		{"unknown.example", "mta-sts.example.org"}, // first pair by default
		{"", "mta-sts.example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			leaf := handshake(t, addr, tt.sni)
			if leaf.DNSNames[0] != tt.want {
				t.Errorf("SNI %q got a certificate for %v, want %s", tt.sni, leaf.DNSNames, tt.want)
			}
		})
	}
}

// TestSRV03_CertificateFilesReloaded: rewritten certificate files are used
// by the next handshake without a restart, and a connection established
// before keeps working.
func TestSRV03_CertificateFilesReloaded(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	first := ca.Issue("mta-sts.example.org")
	pair := writePair(t, dir, "org", first)
	_, addr := startServer(t, Options{
		Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy},
		CertCheckInterval: 10 * time.Millisecond,
	})

	// A keep-alive connection made with the first certificate.
	keep := clientFor(t, addr, ca.Pool(), false)
	var conns []httptrace.GotConnInfo
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns = append(conns, i) }}
	get := func() *http.Response {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "https://mta-sts.example.org"+PolicyPath, nil)
		resp, err := keep.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(); resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("first request did not see the first certificate")
	}

	second := ca.Issue("mta-sts.example.org")
	writePair(t, dir, "org", second)
	touch(t, pair, time.Second)
	time.Sleep(50 * time.Millisecond) // let the check interval pass

	if got := handshake(t, addr, "mta-sts.example.org"); got.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Errorf("new handshake got serial %v, want the rewritten certificate %v", got.SerialNumber, second.Leaf.SerialNumber)
	}
	resp := get()
	if len(conns) != 2 || !conns[1].Reused {
		t.Errorf("the keep-alive connection was not reused: %+v", conns)
	}
	if resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Errorf("the established connection changed certificate")
	}
}

func TestSRV03_ReloadCertificates(t *testing.T) {
	ca := testnet.NewCA(t)
	dir := t.TempDir()
	first := ca.Issue("mta-sts.example.org")
	pair := writePair(t, dir, "org", first)
	logs := &logRecorder{}
	srv, addr := startServer(t, Options{
		Certs: []CertPair{pair}, Logger: slog.New(logs),
		CertCheckInterval: time.Hour, // only ReloadCertificates reloads
	})

	second := ca.Issue("mta-sts.example.org")
	writePair(t, dir, "org", second)
	touch(t, pair, time.Second)
	if got := handshake(t, addr, "mta-sts.example.org"); got.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("the files were reloaded before the check interval or ReloadCertificates")
	}
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	if got := handshake(t, addr, "mta-sts.example.org"); got.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatal("ReloadCertificates did not load the new certificate")
	}

	// A half-written pair (key of another certificate) is refused and the
	// previous certificate stays in use.
	other := writePair(t, t.TempDir(), "other", ca.Issue("other.example"))
	key, err := os.ReadFile(other.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pair.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	err = srv.ReloadCertificates()
	if err == nil || !strings.Contains(err.Error(), pair.CertFile) {
		t.Fatalf("ReloadCertificates with a mismatched key: %v, want an error naming %s", err, pair.CertFile)
	}
	if got := handshake(t, addr, "mta-sts.example.org"); got.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Error("a failed reload replaced the working certificate")
	}
	if !containsAny(logs.messages(slog.LevelWarn), "not reloaded") {
		t.Errorf("no warning about the failed reload: %v", logs.messages(slog.LevelWarn))
	}
}

func TestHTTP2Negotiated(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy}})
	for _, tt := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
		{[]string{"acme-tls/1"}, ""}, // no ACME configured: refused
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "mta-sts.example.org", RootCAs: ca.Pool(), NextProtos: tt.offer})
		if tt.want == "" {
			if err == nil {
				conn.Close()
				t.Errorf("offer %v: handshake succeeded without ACME", tt.offer)
			}
			continue
		}
		if err != nil {
			t.Fatalf("offer %v: %v", tt.offer, err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != tt.want {
			t.Errorf("offer %v: negotiated %q, want %q", tt.offer, got, tt.want)
		}
		if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
			t.Errorf("TLS version %x", v)
		}
		conn.Close()
	}
	// TLS 1.1 and older are refused.
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "mta-sts.example.org", RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

func TestLimits(t *testing.T) {
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{
		Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy},
		MaxConns: 1, ReadHeaderTimeout: 300 * time.Millisecond,
	})
	dial := func() *tls.Conn {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Client(raw, &tls.Config{ServerName: "mta-sts.example.org", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
	}

	t.Run("headers are capped", func(t *testing.T) {
		c := clientFor(t, addr, ca.Pool(), false)
		req, _ := http.NewRequest(http.MethodGet, "https://mta-sts.example.org"+PolicyPath, nil)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", resp.StatusCode)
		}
	})

	t.Run("connections are capped", func(t *testing.T) {
		first := dial()
		if err := first.Handshake(); err != nil {
			t.Fatal(err)
		}
		second := dial()
		second.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := second.Handshake(); err == nil {
			t.Fatal("a second connection was served while MaxConns = 1 was in use")
		}
		second.Close()
		first.Close()
		third := dial()
		defer third.Close()
		third.SetDeadline(time.Now().Add(5 * time.Second))
		if err := third.Handshake(); err != nil {
			t.Fatalf("after the first connection closed: %v", err)
		}
	})

	t.Run("slow headers time out", func(t *testing.T) {
		c := dial()
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET "+PolicyPath+" HTTP/1.1\r\nHost: mta-sts.example.org\r\n") // and nothing more
		start := time.Now()
		_, err := io.ReadAll(c)
		if err != nil && strings.Contains(err.Error(), "timeout") {
			t.Fatalf("the server kept the connection open: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("connection closed after %v, want about the ReadHeaderTimeout", d)
		}
	})
}

// discardWriter is a minimal http.ResponseWriter for allocation tests.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// TestPolicyServingDoesNotAllocate: serving a policy allocates nothing in
// this package; the cost per request is net/http's own.
func TestPolicyServingDoesNotAllocate(t *testing.T) {
	h := newTestHandler(t)
	for _, host := range []string{"mta-sts.example.org", "mta-sts.example.org:443"} {
		req := httptest.NewRequest(http.MethodGet, "https://x"+PolicyPath, nil)
		req.Host = host
		req.TLS.ServerName = "mta-sts.example.org"
		w := &discardWriter{h: make(http.Header)}
		allocs := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, req) })
		if allocs != 0 {
			t.Errorf("Host %q: %v allocations per request, want 0", host, allocs)
		}
	}
}

func BenchmarkServePolicy(b *testing.B) {
	h, err := newHandler(Options{Policies: []PolicyConfig{examplePolicy}}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "https://mta-sts.example.org"+PolicyPath, nil)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

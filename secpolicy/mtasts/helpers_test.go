package mtasts

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/secpolicy"
)

const (
	testPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.mx.example.test\r\nmax_age: 86400\r\n"
	// testWait bounds waits for goroutines in tests.
	testWait = 10 * time.Second
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newResolver returns a resolver for srv without an answer cache, so that
// zone changes are seen at once.
func newResolver(t *testing.T, srv *testnet.DNSServer) *secpolicy.Resolver {
	t.Helper()
	return secpolicy.NewResolver(secpolicy.ResolverConfig{
		Addr:            srv.Addr(),
		Timeout:         time.Second,
		Logger:          discardLogger(),
		MaxCacheEntries: -1,
	})
}

// startPolicyServer starts an HTTPS server with cert, stopped by
// t.Cleanup.
func startPolicyServer(t *testing.T, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// httptestTLS starts an HTTPS server with the TLS configuration cfg and
// returns its address.
func httptestTLS(t *testing.T, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// dialTo returns a DialContext that sends connections for "host:443" to
// addr, for every host in hosts, and refuses others.
func dialTo(addr string, hosts ...string) func(ctx context.Context, network, a string) (net.Conn, error) {
	allowed := make(map[string]bool)
	for _, h := range hosts {
		allowed[net.JoinHostPort(h, "443")] = true
	}
	return func(ctx context.Context, network, a string) (net.Conn, error) {
		if !allowed[a] {
			return nil, fmt.Errorf("test dialer: unexpected address %s", a)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// policyHandler serves a policy that tests can change, and counts requests.
type policyHandler struct {
	mu          sync.Mutex
	body        map[string]string // by Host; missing = 404
	status      int               // 0 = 200
	contentType string            // "" = text/plain
	hits        map[string]int
	block       chan struct{} // when not nil, requests wait for it to close
}

func newPolicyHandler() *policyHandler {
	return &policyHandler{body: make(map[string]string), hits: make(map[string]int)}
}

func (h *policyHandler) set(host, body string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.body[host] = body
}

func (h *policyHandler) setStatus(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = status
}

func (h *policyHandler) setContentType(ct string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.contentType = ct
}

// setBlock makes requests wait until the returned channel is closed.
func (h *policyHandler) setBlock() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.block = make(chan struct{})
	return h.block
}

func (h *policyHandler) count(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hits[host]
}

func (h *policyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.hits[r.Host]++
	body, ok := h.body[r.Host]
	status, ct, block := h.status, h.contentType, h.block
	h.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if r.URL.Path != wellKnownPath || !ok {
		http.NotFound(w, r)
		return
	}
	if ct == "" {
		ct = "text/plain"
	}
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// fakeClock is a settable clock for Manager tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a complete MTA-STS test setup: DNS, a policy web server for
// mta-sts.example.test and mta-sts.other.test, a cache and a Manager.
type env struct {
	t        *testing.T
	dns      *testnet.DNSServer
	zone     *testnet.Zone
	handler  *policyHandler
	server   *httptest.Server
	ca       *testnet.CA
	clock    *fakeClock
	cachePth string
	cache    *Cache
	fetcher  *Fetcher
	resolver *secpolicy.Resolver
	mgr      *Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, zone: testnet.NewZone(), handler: newPolicyHandler(), ca: testnet.NewCA(t), clock: newFakeClock()}
	e.dns = testnet.StartDNS(t, e.zone)
	e.resolver = newResolver(t, e.dns)
	e.server = startPolicyServer(t, e.ca.Issue("mta-sts.example.test", "mta-sts.other.test"), e.handler)
	e.fetcher = NewFetcher(FetcherOptions{
		RootCAs:     e.ca.Pool(),
		Timeout:     2 * time.Second,
		DialContext: dialTo(e.server.Listener.Addr().String(), "mta-sts.example.test", "mta-sts.other.test"),
	})
	e.cachePth = filepath.Join(t.TempDir(), "mta-sts.db")
	e.open()
	t.Cleanup(func() { e.cache.Close() })
	return e
}

// open opens the cache and makes a new Manager on it.
func (e *env) open() {
	e.t.Helper()
	c, err := OpenCache(e.cachePth)
	if err != nil {
		e.t.Fatal(err)
	}
	e.cache = c
	m, err := NewManager(ManagerOptions{
		Resolver: e.resolver,
		Fetcher:  e.fetcher,
		Cache:    c,
		Now:      e.clock.Now,
		Logger:   discardLogger(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mgr = m
}

// restart closes the cache and opens it again with a new Manager.
func (e *env) restart() {
	e.t.Helper()
	if err := e.cache.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// setTXT replaces the _mta-sts TXT records of domain.
func (e *env) setTXT(domain string, records ...string) {
	name := "_mta-sts." + domain + "."
	e.zone.Remove(name, dns.TypeTXT)
	for _, r := range records {
		e.zone.Add(name + " 300 IN TXT " + r)
	}
}

// get calls Manager.Get and fails the test on error.
func (e *env) get(domain string) Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	res, err := e.mgr.Get(ctx, domain)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", domain, err)
	}
	return res
}

func policyWith(mode Mode, maxAge int, mx string) string {
	s := fmt.Sprintf("version: STSv1\r\nmode: %s\r\nmax_age: %d\r\n", mode, maxAge)
	if mx != "" {
		s += "mx: " + mx + "\r\n"
	}
	return s
}

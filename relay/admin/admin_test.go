package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/queue"
)

// clock is a settable time source for the queue.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	q      *queue.Queue
	c      *Client
	clock  *clock
	socket string
}

// newEnv serves the admin API of a fresh queue on a unix socket in a
// temporary directory.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	clk := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	socket := filepath.Join(dir, "run", "relay.sock")
	serve(t, socket, Handler(q, nil, Options{Version: "v1.2.3-test"}))
	c := NewClient(socket)
	t.Cleanup(c.Close)
	return &env{q: q, c: c, clock: clk, socket: socket}
}

// serve serves h on a socket made by Listen until the test ends.
func serve(t *testing.T, socket string, h http.Handler) {
	t.Helper()
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// enqueue stores a message received one second after the previous one, so
// that IDs sort in enqueue order.
func (e *env) enqueue(t *testing.T, from, body string, rcpts ...string) *queue.Message {
	t.Helper()
	e.clock.Advance(time.Second)
	m := &queue.Message{From: from, ClientAddr: "127.0.0.1:40000", AuthUser: "mailraven", Body: "8BITMIME"}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, queue.Recipient{Addr: r})
	}
	if err := e.q.Enqueue(context.Background(), m, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return m
}

// deferRcpt records a failed attempt that defers recipient i by an hour.
func (e *env) deferRcpt(t *testing.T, id string, i int) {
	t.Helper()
	now := e.clock.Now()
	_, err := e.q.Record(id, queue.Update{
		Attempts: []queue.Attempt{{
			Time: now, Host: "mx.example.org", IP: "127.0.0.2", Policy: "opportunistic",
			TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256", Verification: "none",
			Reply: "451 4.7.1 try later", Result: "deferred",
		}},
		Results: []queue.Result{{Rcpt: i, State: queue.StateDeferred, NextAttempt: now.Add(time.Hour), Error: "451 4.7.1 try later"}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	st, err := e.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "v1.2.3-test" || st.PID != os.Getpid() || st.Started.IsZero() {
		t.Errorf("status = %+v", st)
	}
	if _, err := time.ParseDuration(st.Uptime); err != nil {
		t.Errorf("uptime %q: %v", st.Uptime, err)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1 := e.enqueue(t, "a@example.com", "hello\r\n", "x@example.org", "y@example.org", "z@example.net")
	e.enqueue(t, "", "bounce\r\n", "b@example.com")
	e.deferRcpt(t, m1.ID, 2)

	st, err := e.c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 2 || st.Bytes != int64(len("hello\r\n")+len("bounce\r\n")) {
		t.Errorf("messages=%d bytes=%d", st.Messages, st.Bytes)
	}
	if st.Recipients[queue.StateQueued] != 3 || st.Recipients[queue.StateDeferred] != 1 {
		t.Errorf("recipients = %v", st.Recipients)
	}
	if st.Domains["example.org"] != 2 || st.Domains["example.net"] != 1 || st.Domains["example.com"] != 1 {
		t.Errorf("domains = %v", st.Domains)
	}
	if st.OldestID != m1.ID {
		t.Errorf("oldest = %s, want %s", st.OldestID, m1.ID)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	m1 := e.enqueue(t, "a@example.com", "1\r\n", "x@example.org", "y@example.net")
	m2 := e.enqueue(t, "", "2\r\n", "b@example.com")
	m3 := e.enqueue(t, "c@example.com", "3\r\n", "z@Example.ORG")
	e.deferRcpt(t, m1.ID, 1)
	if _, err := e.q.Hold(m3.ID); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		opts ListOptions
		want []string
	}{
		{"all", ListOptions{}, []string{m1.ID, m2.ID, m3.ID}},
		{"state deferred", ListOptions{State: queue.StateDeferred}, []string{m1.ID}},
		{"state held", ListOptions{State: queue.StateHeld}, []string{m3.ID}},
		{"state failed", ListOptions{State: queue.StateFailed}, []string{}},
		{"domain", ListOptions{Domain: "example.org"}, []string{m1.ID, m3.ID}},
		{"domain case-insensitive", ListOptions{Domain: "EXAMPLE.com"}, []string{m2.ID}},
		{"state and domain", ListOptions{State: queue.StateQueued, Domain: "example.org"}, []string{m1.ID}},
		{"limit", ListOptions{Limit: 2}, []string{m1.ID, m2.ID}},
		{"max limit", ListOptions{Limit: MaxListLimit}, []string{m1.ID, m2.ID, m3.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.c.List(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, s := range got {
				ids = append(ids, s.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Errorf("ids = %v, want %v", ids, tt.want)
			}
		})
	}

	t.Run("summary", func(t *testing.T) {
		got, err := e.c.List(context.Background(), ListOptions{State: queue.StateDeferred})
		if err != nil || len(got) != 1 {
			t.Fatalf("list = %v, %v", got, err)
		}
		s := got[0]
		if s.From != "a@example.com" || s.Size != 3 || !s.ReceivedAt.Equal(m1.ReceivedAt) || len(s.Recipients) != 2 {
			t.Fatalf("summary = %+v", s)
		}
		r := s.Recipients[1]
		if r.Addr != "y@example.net" || r.State != queue.StateDeferred || r.Attempts != 1 ||
			r.LastError != "451 4.7.1 try later" || !r.NextAttempt.Equal(e.clock.Now().Add(time.Hour)) {
			t.Errorf("recipient = %+v", r)
		}
	})

	bad := []struct {
		name string
		opts ListOptions
	}{
		{"unknown state", ListOptions{State: "stuck"}},
		{"negative limit", ListOptions{Limit: -1}},
		{"limit too large", ListOptions{Limit: MaxListLimit + 1}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.c.List(context.Background(), tt.opts)
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
				t.Errorf("err = %v, want a 400 APIError", err)
			}
		})
	}
}

func TestListDefaultLimit(t *testing.T) {
	e := newEnv(t)
	// Concurrent writers share fsyncs, which keeps this fast.
	var wg sync.WaitGroup
	errs := make(chan error, DefaultListLimit+1)
	sem := make(chan struct{}, 64)
	for range DefaultListLimit + 1 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			m := &queue.Message{From: "a@example.com", Recipients: []queue.Recipient{{Addr: "b@example.org"}}}
			errs <- e.q.Enqueue(context.Background(), m, strings.NewReader("x\r\n"))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.c.List(context.Background(), ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != DefaultListLimit {
		t.Errorf("listed %d messages, want %d", len(got), DefaultListLimit)
	}
}

func TestShowAndBody(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	body := "Subject: test\r\n\r\nhello \xff world\r\n"
	m := e.enqueue(t, "a@example.com", body, "x@example.org")
	e.deferRcpt(t, m.ID, 0)

	got, err := e.c.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := e.q.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("message =\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].TLSVersion != "TLS 1.3" || got.AuthUser != "mailraven" {
		t.Errorf("message = %+v", got)
	}

	var buf bytes.Buffer
	n, err := e.c.Body(ctx, m.ID, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != body || n != int64(len(body)) {
		t.Errorf("body = %q (%d bytes), want %q", buf.String(), n, body)
	}
}

func TestHoldReleaseRetry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m := e.enqueue(t, "a@example.com", "x\r\n", "x@example.org", "y@example.org")
	e.deferRcpt(t, m.ID, 1)

	steps := []struct {
		name   string
		op     func(context.Context, string) (int, error)
		want   int
		states []queue.State
	}{
		{"retry deferred", e.c.Retry, 1, []queue.State{queue.StateQueued, queue.StateDeferred}},
		{"retry again", e.c.Retry, 0, []queue.State{queue.StateQueued, queue.StateDeferred}},
		{"hold", e.c.Hold, 2, []queue.State{queue.StateHeld, queue.StateHeld}},
		{"hold again", e.c.Hold, 0, []queue.State{queue.StateHeld, queue.StateHeld}},
		{"release", e.c.Release, 2, []queue.State{queue.StateQueued, queue.StateQueued}},
		{"release again", e.c.Release, 0, []queue.State{queue.StateQueued, queue.StateQueued}},
	}
	for _, s := range steps {
		n, err := s.op(ctx, m.ID)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n != s.want {
			t.Errorf("%s: changed %d, want %d", s.name, n, s.want)
		}
		got, err := e.q.Get(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range got.Recipients {
			if r.State != s.states[i] {
				t.Errorf("%s: recipient %d is %s, want %s", s.name, i, r.State, s.states[i])
			}
		}
	}
	if got, _ := e.q.Get(m.ID); !got.Recipients[0].NextAttempt.Equal(e.clock.Now()) {
		t.Errorf("after release next attempt = %v, want now", got.Recipients[0].NextAttempt)
	}
}

func TestRetryWhere(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1 := e.enqueue(t, "a@example.com", "1\r\n", "x@example.org")
	m2 := e.enqueue(t, "a@example.com", "2\r\n", "y@example.net")
	m3 := e.enqueue(t, "a@example.com", "3\r\n", "z@example.net")
	for _, m := range []*queue.Message{m1, m2, m3} {
		e.deferRcpt(t, m.ID, 0)
	}

	n, err := e.c.RetryDomain(ctx, "example.net")
	if err != nil || n != 2 {
		t.Fatalf("retry domain = %d, %v; want 2", n, err)
	}
	if n, err := e.c.RetryDomain(ctx, "example.net"); err != nil || n != 0 {
		t.Fatalf("second retry domain = %d, %v; want 0", n, err)
	}
	if n, err := e.c.RetryDomain(ctx, "nowhere.example"); err != nil || n != 0 {
		t.Fatalf("retry unknown domain = %d, %v; want 0", n, err)
	}
	e.deferRcpt(t, m2.ID, 0)
	if n, err := e.c.RetryAll(ctx); err != nil || n != 2 {
		t.Fatalf("retry all = %d, %v; want 2 (m1 and m2)", n, err)
	}
	now := e.clock.Now()
	for _, m := range []*queue.Message{m1, m2, m3} {
		got, err := e.q.Get(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Recipients[0].NextAttempt.After(now) {
			t.Errorf("%s still waits until %v", m.ID, got.Recipients[0].NextAttempt)
		}
	}
}

func TestDelete(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m1 := e.enqueue(t, "a@example.com", "1\r\n", "x@example.org")
	m2 := e.enqueue(t, "a@example.com", "2\r\n", "y@example.org")
	if err := e.c.Delete(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Get(m1.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("deleted message still there: %v", err)
	}
	if err := e.c.Delete(ctx, m1.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("second delete: %v, want not found", err)
	}
	list, err := e.c.List(ctx, ListOptions{})
	if err != nil || len(list) != 1 || list[0].ID != m2.ID {
		t.Errorf("list after delete = %v, %v", list, err)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	e.enqueue(t, "a@example.com", "1\r\n", "x@example.org")
	ctx := context.Background()
	ops := []struct {
		name string
		call func(id string) error
	}{
		{"show", func(id string) error { _, err := e.c.Message(ctx, id); return err }},
		{"body", func(id string) error { _, err := e.c.Body(ctx, id, &bytes.Buffer{}); return err }},
		{"hold", func(id string) error { _, err := e.c.Hold(ctx, id); return err }},
		{"release", func(id string) error { _, err := e.c.Release(ctx, id); return err }},
		{"retry", func(id string) error { _, err := e.c.Retry(ctx, id); return err }},
		{"delete", func(id string) error { return e.c.Delete(ctx, id) }},
	}
	ids := []string{
		"0000000000000000",  // well-formed, unknown
		"not-a-message-id",  // malformed
		"ZZZZZZZZZZZZZZZZ",  // outside the alphabet
		"../queue.db",       // path traversal
		"..",                // cleaned by the mux
		"a/b",               // escaped slash
		"0123456789abcdefg", // too long
	}
	for _, op := range ops {
		for _, id := range ids {
			t.Run(op.name+" "+id, func(t *testing.T) {
				err := op.call(id)
				var ae *APIError
				if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
					t.Fatalf("err = %v, want a 404 APIError", err)
				}
				if !errors.Is(err, queue.ErrNotFound) {
					t.Errorf("errors.Is(%v, queue.ErrNotFound) = false", err)
				}
			})
		}
	}
	if _, err := e.c.Message(ctx, ""); err == nil {
		t.Error("empty ID accepted")
	}
}

// TestErrorAnswers checks that every error, including those of the mux
// itself, is a JSON object with an error member.
func TestErrorAnswers(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/nope", http.StatusNotFound},
		{"GET", "/", http.StatusNotFound},
		{"POST", "/v1/queue/stats", http.StatusMethodNotAllowed},
		{"GET", "/v1/queue/retry", http.StatusMethodNotAllowed},
		{"POST", "/v1/queue/retry", http.StatusBadRequest},
		{"POST", "/v1/queue/retry?all=1&domain=example.org", http.StatusBadRequest},
		{"POST", "/v1/queue/retry?all=maybe", http.StatusBadRequest},
		{"POST", "/v1/queue/retry?all=0", http.StatusBadRequest},
		{"GET", "/v1/queue/messages?limit=ten", http.StatusBadRequest},
		{"GET", "/v1/queue/messages/0000000000000000", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://relay"+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.c.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type = %q", ct)
			}
			var body errorResponse
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error == "" {
				t.Errorf("body: %+v, %v", body, err)
			}
		})
	}
}

func TestListenSocketMode(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "data", "relay.sock")
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(socket))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode = %v, want 0700", di.Mode().Perm())
	}
	ln.Close()
	if _, err := os.Lstat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}

func TestListenRefusesLiveDaemon(t *testing.T) {
	e := newEnv(t)
	ln, err := Listen(e.socket)
	if err == nil {
		ln.Close()
		t.Fatal("second Listen succeeded while a daemon serves the socket")
	}
	if want := "another relay is already running on " + e.socket; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	// The live daemon's socket is untouched.
	if _, err := e.c.Status(context.Background()); err != nil {
		t.Errorf("daemon unreachable after refused Listen: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "relay.sock")
	makeStaleSocket(t, socket)
	ln, err := Listen(socket)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Close()
		}
	}()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("new socket does not answer: %v", err)
	}
	conn.Close()
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("file changed: %q, %v", b, err)
	}
}

func TestListenPathTooLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("x", 120))
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen accepted a path longer than a unix socket address")
	} else if !strings.Contains(err.Error(), "too long") {
		t.Errorf("err = %v", err)
	}
}

// makeStaleSocket leaves a socket file that nothing listens on, as a
// daemon killed with SIGKILL would.
func makeStaleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
}

func TestClientDaemonNotRunning(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	makeStaleSocket(t, stale)
	missing := filepath.Join(dir, "missing", "relay.sock")
	tests := []struct {
		name, socket, want string
	}{
		{"missing socket", missing, "relay daemon is not running (no admin socket at " + missing + "): start it with `relay serve`"},
		{"stale socket", stale, "relay daemon is not running (cannot connect to " + stale + ": connection refused): start it with `relay serve`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClient(tt.socket)
			defer c.Close()
			_, err := c.Stats(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("err = %q, want %q", err, tt.want)
			}
			var ce *ConnectError
			if !errors.As(err, &ce) || !ce.NotRunning() {
				t.Errorf("err %T is not a not-running ConnectError", err)
			}
		})
	}
}

// POST .../bounce calls Options.Bounce; a message being delivered answers
// 409, and without Options.Bounce the endpoint does not exist.
func TestBounceEndpoint(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	var bounced []string
	bounce := func(id string) (int, error) {
		if id == "0000000000000000" {
			return 0, fmt.Errorf("%s: %w", id, queue.ErrLeased)
		}
		bounced = append(bounced, id)
		return 3, nil
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		bounce func(string) (int, error)
		id     string
		want   string // error text; "" for success
	}{
		{"bounced", bounce, "0dbq4t1c8hpmg2sa", ""},
		{"being delivered", bounce, "0000000000000000", "being delivered right now"},
		{"disabled", nil, "0dbq4t1c8hpmg2sa", "no endpoint"},
	} {
		socket := filepath.Join(dir, tc.name+".sock")
		serve(t, socket, Handler(q, nil, Options{Bounce: tc.bounce}))
		c := NewClient(socket)
		n, err := c.Bounce(ctx, tc.id)
		c.Close()
		switch {
		case tc.want == "" && (err != nil || n != 3):
			t.Errorf("%s: bounce = %d, %v; want 3", tc.name, n, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: bounce error %v, want %q", tc.name, err, tc.want)
		}
	}
	if len(bounced) != 1 || bounced[0] != "0dbq4t1c8hpmg2sa" {
		t.Errorf("bounced %v", bounced)
	}
}

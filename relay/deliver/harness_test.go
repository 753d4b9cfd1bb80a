package deliver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/secpolicy"
)

// fixture is an engine wired to an in-process DNS server, a queue in a
// temporary directory, and SMTP receivers on 127.0.0.x sharing one port.
type fixture struct {
	t      *testing.T
	q      *queue.Queue
	dns    *testnet.DNSServer
	zone   *testnet.Zone
	ca     *testnet.CA
	port   int
	opts   Options
	cancel context.CancelFunc
	done   chan struct{}
	clock  *testClock
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := &testClock{t: time.Now()}
	q, err := queue.Open(t.TempDir(), queue.Options{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	zone := testnet.NewZone()
	srv := testnet.StartDNS(t, zone)
	// One port for every receiver: find one free on 127.0.0.2.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	res := secpolicy.NewResolver(secpolicy.ResolverConfig{Addr: srv.Addr(), Timeout: 2 * time.Second, Logger: discard()})
	f := &fixture{t: t, q: q, dns: srv, zone: zone, ca: testnet.NewCA(t), port: port, clock: clock}
	f.opts = Options{
		Hostname:           "relay.test",
		Queue:              q,
		Resolver:           res,
		Policy:             secpolicy.NewPolicy(secpolicy.PolicyConfig{Resolver: res, DANE: true}),
		Workers:            8,
		PerHostConnections: 4,
		FirstRetry:         time.Minute,
		QueueLifetime:      time.Hour,
		ConnectTimeout:     2 * time.Second,
		Port:               port,
		PollInterval:       20 * time.Millisecond,
		Now:                clock.now,
	}
	return f
}

// receiver starts an SMTP receiver on ip at the fixture's port.
func (f *fixture) receiver(ip string, opts testnet.SMTPOptions) *testnet.SMTPReceiver {
	opts.Addr = net.JoinHostPort(ip, strconv.Itoa(f.port))
	return testnet.StartSMTP(f.t, opts)
}

// start runs the engine until the test ends.
func (f *fixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan struct{})
	e := New(f.opts)
	go func() { e.Run(ctx); close(f.done) }()
	f.t.Cleanup(f.stop)
}

func (f *fixture) stop() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.cancel = nil
	}
}

// submit queues a message like the intake would.
func (f *fixture) submit(from, body string, rcpts ...string) *queue.Message {
	f.t.Helper()
	m := &queue.Message{From: from, ReceivedAt: f.clock.now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, queue.Recipient{Addr: r})
	}
	if err := f.q.Enqueue(context.Background(), m, bytes.NewBufferString(body)); err != nil {
		f.t.Fatal(err)
	}
	return m
}

// waitState waits until every listed recipient of message id is in state
// (a message that left the queue counts as all delivered/failed).
func (f *fixture) waitFor(cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatal("condition not reached in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAttempts waits until message id has at least n recorded attempts or
// is gone from the queue, and returns its record (nil when gone).
func (f *fixture) waitAttempts(id string, n int) *queue.Message {
	f.t.Helper()
	var m *queue.Message
	f.waitFor(func() bool {
		var err error
		m, err = f.q.Get(id)
		if err != nil {
			m = nil
			return true
		}
		return len(m.Attempts) >= n && !f.q.Leased(id)
	})
	return m
}

// bounces returns the DSNs queued by the engine (null sender, Bounce).
func (f *fixture) bounces() []*queue.Message {
	msgs, err := f.q.List(queue.Filter{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*queue.Message
	for _, m := range msgs {
		if m.Bounce {
			out = append(out, m)
		}
	}
	return out
}

func (f *fixture) body(id string) []byte {
	f.t.Helper()
	r, err := f.q.Body(id)
	if err != nil {
		f.t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return b
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

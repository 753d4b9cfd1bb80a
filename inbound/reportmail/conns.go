package reportmail

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// connTracker bounds concurrent connections in total and per client IP,
// as the relay's intake does, and knows for every open connection whether
// a mail transaction is in progress, so that a shutdown closes idle
// sessions at once and lets transactions finish. Connections over a limit
// get a 421 greeting and are closed.
type connTracker struct {
	max, perIP int
	draining   atomic.Bool

	mu    sync.Mutex
	byIP  map[netip.Addr]int
	conns map[string]*trackedConn // by remote address
}

func newConnTracker(max, perIP int) *connTracker {
	return &connTracker{max: max, perIP: perIP, byIP: map[netip.Addr]int{}, conns: map[string]*trackedConn{}}
}

// add registers c, or returns the reason it is refused.
func (l *connTracker) add(c *trackedConn) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && len(l.conns) >= l.max {
		return "too many connections to this server"
	}
	if l.perIP > 0 && l.byIP[c.ip] >= l.perIP {
		return "too many connections from your address"
	}
	l.byIP[c.ip]++
	l.conns[c.RemoteAddr().String()] = c
	return ""
}

func (l *connTracker) remove(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c.RemoteAddr().String())
	if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
		delete(l.byIP, c.ip)
	}
}

// lookup returns the tracked connection of a remote address.
func (l *connTracker) lookup(remote net.Addr) *trackedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[remote.String()]
}

// drain makes every connection without a transaction in progress fail its
// next read (go-smtp then answers 421 and closes); connections in a
// transaction follow as soon as it ends.
func (l *connTracker) drain() {
	l.draining.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		if !c.busy.Load() {
			c.Conn.SetReadDeadline(time.Now())
		}
	}
}

// limitListener applies a connTracker to accepted connections.
type limitListener struct {
	net.Listener
	l        *connTracker
	hostname string
	log      *slog.Logger
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, ip: addrIP(c.RemoteAddr()), l: ll.l}
		if reason := ll.l.add(tc); reason != "" {
			ll.log.Warn("reportmail: connection refused", "client", c.RemoteAddr().String(), "reason", reason)
			go ll.refuse(c, reason)
			continue
		}
		return tc, nil
	}
}

func (ll *limitListener) refuse(c net.Conn, reason string) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("421 4.7.0 " + ll.hostname + " " + reason + ", try again later\r\n"))
}

// trackedConn is an accepted connection known to the tracker.
type trackedConn struct {
	net.Conn
	ip   netip.Addr
	l    *connTracker
	busy atomic.Bool // a mail transaction is in progress
	once sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.l.draining.Load() && !c.busy.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.remove(c) })
	return c.Conn.Close()
}

func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

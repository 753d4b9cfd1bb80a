package intake

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// connLimiter bounds concurrent connections in total and per client IP
// (checklist SUB04). Connections over a limit get a 421 greeting and are
// closed.
type connLimiter struct {
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newConnLimiter(max, perIP int) *connLimiter {
	return &connLimiter{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

// acquire reserves a slot for ip, or returns the reason it cannot.
func (l *connLimiter) acquire(ip netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return "too many connections to this relay"
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return "too many connections from your address"
	}
	l.total++
	l.byIP[ip]++
	return ""
}

func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

func (l *connLimiter) wrap(ln net.Listener, hostname string, greet bool, log *slog.Logger) net.Listener {
	return &limitListener{Listener: ln, l: l, hostname: hostname, greet: greet, log: log}
}

type limitListener struct {
	net.Listener
	l        *connLimiter
	hostname string
	greet    bool // send a plaintext 421; not on implicit-TLS listeners
	log      *slog.Logger
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrIP(c.RemoteAddr())
		if reason := ll.l.acquire(ip); reason != "" {
			ll.log.Warn("connection refused", "client", c.RemoteAddr().String(), "reason", reason)
			go ll.refuse(c, reason)
			continue
		}
		return &limitConn{Conn: c, release: func() { ll.l.release(ip) }}, nil
	}
}

func (ll *limitListener) refuse(c net.Conn, reason string) {
	defer c.Close()
	if ll.greet {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("421 4.7.0 " + ll.hostname + " " + reason + ", try again later\r\n"))
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

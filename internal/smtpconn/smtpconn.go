// Package smtpconn holds what the relay's SMTP servers (the submission
// intake and the TLS report mailbox) share about their connections: a
// tracker that bounds connections in total and per client address and
// knows which sessions are in a mail transaction, so that a shutdown
// closes idle sessions at once and lets transactions finish; a guard that
// closes a listener even when the shutdown comes before Serve; and a
// reader that keeps DATA alive while bytes arrive.
package smtpconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Tracker bounds concurrent connections in total and per client IP
// (checklist SUB04). Connections over a limit get a 421 greeting and are
// closed. It is safe for concurrent use.
type Tracker struct {
	max, perIP int
	draining   atomic.Bool

	mu    sync.Mutex
	byIP  map[netip.Addr]int
	conns map[string]*Conn // by remote address

	readBufs sync.Pool // *bufio.Reader of readBufferSize, lent to Conns while they hold unread bytes
}

// NewTracker returns a tracker allowing max connections in total and
// perIP from one address; zero means no limit.
func NewTracker(max, perIP int) *Tracker {
	t := &Tracker{max: max, perIP: perIP, byIP: map[netip.Addr]int{}, conns: map[string]*Conn{}}
	t.readBufs.New = func() any { return bufio.NewReaderSize(nil, readBufferSize) }
	return t
}

// add registers c, or returns the reason it is refused.
func (t *Tracker) add(c *Conn) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.max > 0 && len(t.conns) >= t.max {
		return "too many connections to this server"
	}
	if t.perIP > 0 && t.byIP[c.ip] >= t.perIP {
		return "too many connections from your address"
	}
	t.byIP[c.ip]++
	t.conns[c.RemoteAddr().String()] = c
	return ""
}

func (t *Tracker) remove(c *Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c.RemoteAddr().String())
	if t.byIP[c.ip]--; t.byIP[c.ip] <= 0 {
		delete(t.byIP, c.ip)
	}
}

// Lookup returns the tracked connection of a remote address, or nil.
func (t *Tracker) Lookup(remote net.Addr) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[remote.String()]
}

// Drain makes every connection without a transaction in progress fail its
// next read (go-smtp then answers 421 and closes); connections in a
// transaction follow as soon as it ends.
func (t *Tracker) Drain() {
	t.draining.Store(true)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		if !c.busy.Load() {
			c.Conn.SetReadDeadline(time.Now())
		}
	}
}

// ListenerOptions say how a tracked listener refuses connections.
type ListenerOptions struct {
	Hostname string // in the 421 reply
	// Greet sends the plaintext 421 reply; not on implicit-TLS listeners.
	Greet bool
	Log   *slog.Logger
	// OnRefuse, if set, is called for every refused connection.
	OnRefuse func()
}

// Wrap returns a listener whose accepted connections are tracked and
// limited.
func (t *Tracker) Wrap(ln net.Listener, opts ListenerOptions) net.Listener {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: ln, t: t, opts: opts}
}

type listener struct {
	net.Listener
	t    *Tracker
	opts ListenerOptions
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &Conn{Conn: c, ip: AddrIP(c.RemoteAddr()), t: l.t}
		if reason := l.t.add(tc); reason != "" {
			l.opts.Log.Warn("connection refused", "client", c.RemoteAddr().String(), "reason", reason)
			if l.opts.OnRefuse != nil {
				l.opts.OnRefuse()
			}
			go l.refuse(c, reason)
			continue
		}
		return tc, nil
	}
}

func (l *listener) refuse(c net.Conn, reason string) {
	defer c.Close()
	if l.opts.Greet {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("421 4.7.0 " + l.opts.Hostname + " " + reason + ", try again later\r\n"))
	}
}

// Conn is an accepted connection known to its tracker. Its reads are
// buffered: the SMTP server reads through a 4 KiB buffer of its own, and a
// message body would otherwise cost a read system call every 4 KiB.
type Conn struct {
	net.Conn
	ip   netip.Addr
	t    *Tracker
	busy atomic.Bool   // a mail transaction is in progress
	br   *bufio.Reader // from t.readBufs while it holds unread bytes
	once sync.Once
}

// readBufferSize is the size of a Conn's read buffer.
const readBufferSize = 32 << 10

// SetBusy marks whether a mail transaction is in progress on c; a
// draining tracker lets busy connections finish.
func (c *Conn) SetBusy(b bool) {
	if c != nil {
		c.busy.Store(b)
	}
}

// Read fails at once on an idle connection of a draining tracker.
func (c *Conn) Read(p []byte) (int, error) {
	if c.t.draining.Load() && !c.busy.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	if c.br == nil {
		c.br = c.t.readBufs.Get().(*bufio.Reader)
		c.br.Reset(c.Conn)
	}
	n, err := c.br.Read(p)
	if c.br.Buffered() == 0 {
		// Lent back between reads, so that a server with many
		// connections that each read one message (one connection per
		// message is common) does not allocate a buffer for each. Only
		// the reading goroutine touches br. A read error bufio kept is
		// not lost: the connection returns it again.
		c.br.Reset(nil)
		c.t.readBufs.Put(c.br)
		c.br = nil
	}
	return n, err
}

// Close closes the connection and frees its place in the tracker.
func (c *Conn) Close() error {
	c.once.Do(func() { c.t.remove(c) })
	return c.Conn.Close()
}

// AddrIP returns the IP address of a network address (unmapped), or the
// zero Addr.
func AddrIP(a net.Addr) netip.Addr {
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

// IsTimeout reports whether err is a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IdleTimeoutReader extends the connection's read deadline before each
// read, so DATA may take long as long as bytes keep arriving.
type IdleTimeoutReader struct {
	R       io.Reader
	Conn    net.Conn
	Timeout time.Duration
}

// Read reads from R after moving the deadline.
func (t *IdleTimeoutReader) Read(p []byte) (int, error) {
	if t.Timeout > 0 {
		t.Conn.SetReadDeadline(time.Now().Add(t.Timeout))
	}
	return t.R.Read(p)
}

// ErrorLog adapts slog to go-smtp's Server.ErrorLog: every line it is
// given becomes a warning, with Prefix in front.
type ErrorLog struct {
	Log    *slog.Logger
	Prefix string
}

// Printf logs a formatted line.
func (l ErrorLog) Printf(format string, v ...any) {
	l.Log.Warn(l.Prefix + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// Println logs its operands as one line.
func (l ErrorLog) Println(v ...any) {
	l.Log.Warn(l.Prefix + strings.TrimSpace(fmt.Sprintln(v...)))
}

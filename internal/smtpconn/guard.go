package smtpconn

import (
	"net"
	"sync"
)

// ListenerGuard closes a server's listeners at shutdown, including one
// that reaches Serve only after the shutdown began: go-smtp closes only the
// listeners its Serve has already recorded, so without the guard such a
// listener would go on accepting connections. The zero value is ready to
// use.
type ListenerGuard struct {
	mu     sync.Mutex
	lns    []net.Listener
	closed bool
}

// Open records ln, to be closed by Close, and returns it wrapped so that
// closing it more than once (by Close and by go-smtp) is harmless. When
// Close came first, Open closes ln and returns ok false: Serve should
// return at once.
func (g *ListenerGuard) Open(ln net.Listener) (guarded net.Listener, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		ln.Close()
		return nil, false
	}
	guarded = &onceCloseListener{Listener: ln}
	g.lns = append(g.lns, guarded)
	return guarded, true
}

// Close closes every listener given to Open, and makes later Opens fail.
func (g *ListenerGuard) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, ln := range g.lns {
		ln.Close()
	}
	g.lns = nil
}

// Closed reports whether Close was called: an Accept error after it is the
// shutdown, not a failure.
func (g *ListenerGuard) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// onceCloseListener closes its listener once; later calls return the
// first call's result.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

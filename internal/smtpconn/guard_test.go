package smtpconn

import (
	"net"
	"testing"
)

func TestListenerGuard(t *testing.T) {
	listen := func() net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	accepts := func(ln net.Listener) bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return false
		}
		c.Close()
		return true
	}

	var g ListenerGuard
	raw := listen()
	ln, ok := g.Open(raw)
	if !ok || g.Closed() {
		t.Fatal("Open before Close refused")
	}
	if !accepts(raw) {
		t.Fatal("guarded listener not listening")
	}
	g.Close()
	if !g.Closed() {
		t.Error("Closed false after Close")
	}
	if accepts(raw) {
		t.Error("Close left the listener open")
	}
	// go-smtp closes the listener as well; the second close is harmless
	// and gives the first one's result.
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	late := listen()
	if got, ok := g.Open(late); ok || got != nil {
		t.Error("Open after Close accepted the listener")
	}
	if accepts(late) {
		t.Error("Open after Close left the listener open")
	}
}

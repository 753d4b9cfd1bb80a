package testnet

import (
	"context"
	"net"
	"testing"
	"time"
)

// ShutdownBeforeServe checks a server whose Shutdown is called before its
// Serve, as a daemon stopped during start-up does: Serve must return nil
// at once and leave its listener closed, not accept connections after the
// shutdown.
func ShutdownBeforeServe(t *testing.T, shutdown func(context.Context) error, serve func(net.Listener) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("Shutdown before Serve: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		ln.Close()
		<-done
		t.Fatal("Serve after Shutdown went on serving")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener given to Serve after Shutdown still accepts connections")
	}
}

package intake

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
)

// TestSlowlorisIntake opens 200 connections from 127.0.0.5 that each send
// one byte every second and never finish a command. The per-IP cap turns
// most of them away; the ones admitted sit in their command timeout. A
// well-behaved client from 127.0.0.2 is meanwhile served at once: its
// message is queued within 10 s.
func TestSlowlorisIntake(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	r := startIntake(t, func(o *Options) {
		o.MaxConnections = 1000
		o.MaxConnectionsPerIP = 20
		o.CommandTimeout = 30 * time.Second
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := 0
	for i := 0; i < 200; i++ {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
		c, err := d.Dial("tcp", r.addr)
		if err != nil {
			continue
		}
		mu.Lock()
		opened++
		mu.Unlock()
		wg.Go(func() { testnet.Trickle(c, []byte("E"), stop) })
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(1500 * time.Millisecond) // the slow clients are all in
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		c := r.dial(t, "127.0.0.2", "plain")
		done <- send(c, "a@example.org", []string{"b@example.com"}, "Subject: good\r\n\r\nserved\r\n")
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("well-behaved client: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("well-behaved client not served within 10 s")
	}
	t.Logf("%d slow connections opened; good client served in %s", opened, time.Since(start).Round(time.Millisecond))
	onlyMessage(t, r.q)
}

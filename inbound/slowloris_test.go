package inbound

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
)

// TestSlowlorisHTTPS opens 200 connections to the policy listener: half
// stall in the TLS handshake (one byte of a ClientHello per second), half
// finish it and then send their request header one byte per second. A
// well-behaved client still gets the policy within 10 s; the slow ones
// are cut off by the handshake and ReadHeaderTimeout limits.
func TestSlowlorisHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	ca := testnet.NewCA(t)
	pair := writePair(t, t.TempDir(), "org", ca.Issue("mta-sts.example.org"))
	_, addr := startServer(t, Options{Certs: []CertPair{pair}, Policies: []PolicyConfig{examplePolicy},
		ReadHeaderTimeout: 3 * time.Second})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 200; i++ {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		if i%2 == 0 {
			wg.Go(func() { testnet.Trickle(raw, []byte{0x16, 0x03, 0x01, 0x02, 0x00}, stop) }) // a ClientHello that never ends
			continue
		}
		c := tls.Client(raw, &tls.Config{ServerName: "mta-sts.example.org", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatalf("slow connection %d: handshake: %v", i, err)
		}
		c.SetDeadline(time.Time{})
		wg.Go(func() {
			testnet.Trickle(c, []byte("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.org\r\nX-Slow: "), stop)
		})
	}
	time.Sleep(1500 * time.Millisecond)

	start := time.Now()
	client := clientFor(t, addr, ca.Pool(), false)
	client.Timeout = 10 * time.Second
	resp, body := do(t, client, http.MethodGet, "https://mta-sts.example.org"+PolicyPath)
	if resp.StatusCode != http.StatusOK || body != examplePolicyBody {
		t.Fatalf("well-behaved client got %s %q", resp.Status, body)
	}
	t.Logf("good client served in %s next to 200 slow connections", time.Since(start).Round(time.Millisecond))
}

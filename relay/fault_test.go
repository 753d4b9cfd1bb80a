package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
)

// deadResolver listens for DNS on UDP and TCP at addr and never answers:
// the resolver is down (queries time out rather than being refused).
func deadResolver(t *testing.T, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return pc.LocalAddr().String()
}

// listQueue returns every message of a running daemon's queue.
func listQueue(t *testing.T, ac *admin.Client) []admin.MessageSummary {
	t.Helper()
	msgs, err := ac.List(context.Background(), admin.ListOptions{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// fastRetries retries deferred mail within seconds.
const fastRetries = `[delivery]
first_retry = "1s"
max_retry_interval = "2s"
`

// TestFaultDNSResolverDown runs the daemon against a resolver that
// answers nothing: the message is deferred (the lookup failure is a
// temporary error), never bounced, and no DSN is queued.
func TestFaultDNSResolverDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for DNS timeouts")
	}
	dnsAddr := deadResolver(t, "127.0.0.41:0")
	addr, d := startDeliveringDaemon(t, dnsAddr, 1, fastRetries)

	id := sendMail(t, addr, "alice@example.org", "bob@dest.test", "Subject: dns down\r\n\r\nhello\r\n")
	deadline := time.Now().Add(60 * time.Second)
	var msgs []admin.MessageSummary
	for time.Now().Before(deadline) {
		msgs = listQueue(t, d.admin)
		if len(msgs) == 1 && msgs[0].Recipients[0].Attempts >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(msgs) != 1 {
		t.Fatalf("queue holds %d messages, want only the original (no DSN): %+v", len(msgs), msgs)
	}
	m := msgs[0]
	if m.ID != id || m.From == "" {
		t.Fatalf("queue holds %+v, want %s from alice", m, id)
	}
	r := m.Recipients[0]
	if r.Attempts < 2 {
		t.Fatalf("recipient %+v: fewer than 2 attempts in 60 s", r)
	}
	if r.State != queue.StateDeferred && r.State != queue.StateQueued {
		t.Fatalf("recipient state %q (%s), want deferred", r.State, r.LastError)
	}
	t.Logf("after %d attempts: %s: %s", r.Attempts, r.State, r.LastError)
}

// dropMX is a fake MX host that speaks enough SMTP to get to DATA. Its
// first connection reads the whole message and closes without a reply
// (the relay cannot know it arrived: a possible duplicate), its second
// closes half-way through the data; every later connection is passed to
// the good receiver.
type dropMX struct {
	ln       net.Listener
	good     string
	conns    atomic.Int32
	complete atomic.Int32 // messages read in full and then dropped
}

func startDropMX(t *testing.T, addr, good string) *dropMX {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &dropMX{ln: ln, good: good}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := m.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if n > 2 {
					m.proxy(c)
					return
				}
				m.drop(c, n == 1)
			}()
		}
	}()
	return m
}

func (m *dropMX) port() int { return m.ln.Addr().(*net.TCPAddr).Port }

func (m *dropMX) proxy(c net.Conn) {
	g, err := net.Dial("tcp", m.good)
	if err != nil {
		return
	}
	defer g.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(g, c); done <- struct{}{} }()
	go func() { io.Copy(c, g); done <- struct{}{} }()
	<-done
}

func (m *dropMX) drop(c net.Conn, whole bool) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "220 mx.dest.test ESMTP\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			io.WriteString(c, "250-mx.dest.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
		case cmd == "DATA":
			io.WriteString(c, "354 go ahead\r\n")
			for i := 0; ; i++ {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if !whole && i == 2 {
					return // mid-DATA
				}
				if l == ".\r\n" {
					m.complete.Add(1)
					return // whole message, no reply
				}
			}
		case cmd == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

// TestFaultReceiverDropsMidData: the MX host drops the connection after
// the whole message without replying, then in the middle of DATA; the
// relay retries and the message reaches the good receiver behind it, once
// there (it may also have arrived, unacknowledged, at the first attempt:
// delivered once or twice, never lost).
func TestFaultReceiverDropsMidData(t *testing.T) {
	zone := testnet.NewZone(
		"dest.test. 300 IN MX 10 mx.dest.test.",
		"mx.dest.test. 300 IN A 127.0.0.42",
	)
	dnsSrv := testnet.StartDNS(t, zone)
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.43:0"})
	mx := startDropMX(t, "127.0.0.42:0", rcv.Addr())

	addr, d := startDeliveringDaemon(t, dnsSrv.Addr(), mx.port(), fastRetries)

	body := "Message-ID: <drop-1@example.org>\r\nSubject: dropped\r\n\r\n" + strings.Repeat("line of body text\r\n", 50)
	sendMail(t, addr, "alice@example.org", "bob@dest.test", body)
	got := rcv.WaitMessages(t, 1, 60*time.Second)
	if !strings.HasSuffix(string(got[0].Data), body) {
		t.Fatalf("message changed on the way: %q", got[0].Data)
	}
	// The queue empties, and nothing more arrives.
	deadline := time.Now().Add(15 * time.Second)
	for len(listQueue(t, d.admin)) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if msgs := listQueue(t, d.admin); len(msgs) != 0 {
		t.Fatalf("queue not empty after delivery: %+v", msgs)
	}
	time.Sleep(500 * time.Millisecond)
	arrivals := len(rcv.Messages()) + int(mx.complete.Load())
	t.Logf("connections to the MX: %d; arrivals: %d (%d at the good receiver, %d read in full and dropped)",
		mx.conns.Load(), arrivals, len(rcv.Messages()), mx.complete.Load())
	if len(rcv.Messages()) != 1 {
		t.Errorf("good receiver got %d copies, want 1", len(rcv.Messages()))
	}
	if mx.conns.Load() < 3 {
		t.Errorf("%d connections to the MX, want at least 3 (two drops, then delivery)", mx.conns.Load())
	}
	if arrivals < 1 || arrivals > 2 {
		t.Errorf("message arrived %d times, want once or twice", arrivals)
	}
}

// writeCertFiles writes cert's chain and key as PEM to certPath and
// keyPath and sets their modification time to mtime.
func writeCertFiles(t *testing.T, cert tls.Certificate, certPath, keyPath string, mtime time.Time) {
	t.Helper()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then the certificate whose mtime the daemon watches.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyPath + ".tmp", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, {certPath + ".tmp", chain}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(keyPath+".tmp", keyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certPath+".tmp", mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certPath+".tmp", certPath); err != nil {
		t.Fatal(err)
	}
}

// starttlsLeaf opens an SMTP session, runs STARTTLS without verifying and
// returns the certificate the server presented.
func starttlsLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if err := c.Noop(); err != nil { // completes the handshake
		t.Fatalf("NOOP over TLS: %v", err)
	}
	cs, ok := c.TLSConnectionState()
	if !ok || len(cs.PeerCertificates) == 0 {
		t.Fatal("no TLS state after STARTTLS")
	}
	return cs.PeerCertificates[0]
}

// TestFaultExpiredIntakeCertReplaced starts the daemon with an expired
// intake certificate, replaces the files while it runs, and checks that
// the next STARTTLS handshake presents the new certificate, without a
// restart or reload.
func TestFaultExpiredIntakeCertReplaced(t *testing.T) {
	ca := testnet.NewCA(t)
	expired := ca.IssueWith(testnet.IssueOptions{Names: []string{"relay.test"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	fresh := ca.Issue("relay.test")
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCertFiles(t, expired, certPath, keyPath, time.Now().Add(-time.Hour))

	addr := freeAddr(t)
	runDaemon(t, fmt.Sprintf(`
hostname = "relay.test"
data_dir = "DATA_DIR"
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
tls = "starttls"
trusted_networks = ["127.0.0.0/8"]
[tls]
cert_file = %q
key_file = %q
`, addr, certPath, keyPath), Options{SkipDNSSECCheck: true})

	if leaf := starttlsLeaf(t, addr); !leaf.Equal(expired.Leaf) {
		t.Fatalf("first handshake presented %s (until %s), want the expired certificate", leaf.Subject, leaf.NotAfter)
	}
	writeCertFiles(t, fresh, certPath, keyPath, time.Now())
	leaf := starttlsLeaf(t, addr)
	if !leaf.Equal(fresh.Leaf) {
		t.Fatalf("after replacing the files the handshake presented a certificate valid until %s, want the new one (until %s)", leaf.NotAfter, fresh.Leaf.NotAfter)
	}
	// The new certificate verifies against the CA, and mail flows over it.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{RootCAs: ca.Pool(), ServerName: "relay.test"})
	if err != nil {
		t.Fatalf("STARTTLS verifying the new certificate: %v", err)
	}
	defer c.Close()
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP verifying the new certificate: %v", err)
	}
}

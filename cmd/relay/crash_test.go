package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/relay/admin"
)

// buildRelay compiles this command into a temporary directory.
func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startRelay runs the binary and waits until its SMTP port answers.
func startRelay(t *testing.T, bin, configPath, smtpAddr string, logw io.Writer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", configPath)
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", smtpAddr, time.Second)
		if err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("relay did not start listening on %s", smtpAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// submit sends one message and returns the queue ID from the 250 reply.
func submit(addr, body string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("sender.test"); err != nil {
		return "", err
	}
	if err := c.Mail("sender@example.org", nil); err != nil {
		return "", err
	}
	if err := c.Rcpt("rcpt@crash.test", nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("250 reply without queue ID: %q", resp.StatusText)
	}
	return strings.TrimSpace(id), nil
}

func randomBody(sender, seq int) string {
	n, _ := rand.Int(rand.Reader, big.NewInt(64*1024))
	var b strings.Builder
	fmt.Fprintf(&b, "From: <sender@example.org>\r\nMessage-ID: <%d.%d@crash.test>\r\nSubject: crash test\r\n\r\n", sender, seq)
	line := strings.Repeat("0123456789abcdef", 4)
	for b.Len() < int(n.Int64()) {
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.String()
}

// stripReceived removes the Received header the relay prepends.
func stripReceived(stored []byte) []byte {
	for i := 0; i+2 < len(stored); i++ {
		if stored[i] == '\r' && stored[i+1] == '\n' && stored[i+2] != ' ' && stored[i+2] != '\t' {
			return stored[i+2:]
		}
	}
	return nil
}

// TestSUB05_SIGKILLLosesNoAcknowledgedMessage starts the real relay binary,
// submits from 20 concurrent connections, kills the process with SIGKILL
// in mid-stream several times, and checks after each restart that every
// message that got 250 is in the queue with an identical body.
func TestSUB05_SIGKILLLosesNoAcknowledgedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildRelay(t)
	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "relay.toml")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q

[dns]
resolver = "127.0.0.1:9"   # nothing answers: no test query leaves the machine

[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]

[delivery]
first_retry = "1h"

# Keep the test's mail inside the machine: every attempt is refused at once.
[[route]]
domain = "crash.test"
next_hop = "127.0.0.1:1"
`, filepath.Join(dir, "data"), smtpAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	logw := writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) })
	defer func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("relay log:\n%s", logs.String())
			logMu.Unlock()
		}
	}()

	const senders, rounds = 20, 3
	acked := map[string][32]byte{}
	var mu sync.Mutex
	for round := range rounds {
		cmd := startRelay(t, bin, cfgPath, smtpAddr, logw)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for s := range senders {
			wg.Go(func() {
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					body := randomBody(s, round*100000+seq)
					id, err := submit(smtpAddr, body)
					if err != nil {
						continue // killed mid-transaction: not acknowledged
					}
					mu.Lock()
					acked[id] = sha256.Sum256([]byte(body))
					mu.Unlock()
				}
			})
		}
		d, _ := rand.Int(rand.Reader, big.NewInt(700))
		time.Sleep(time.Duration(300+d.Int64()) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
		close(stop)
		wg.Wait()
	}
	if len(acked) < senders {
		t.Fatalf("only %d messages acknowledged in %d rounds; the test proves nothing", len(acked), rounds)
	}

	cmd := startRelay(t, bin, cfgPath, smtpAddr, logw)
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	client := admin.NewClient(filepath.Join(dir, "data", "relay.sock"))
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for id, want := range acked {
		var buf bytes.Buffer
		if _, err := client.Body(ctx, id, &buf); err != nil {
			t.Errorf("acknowledged message %s: %v", id, err)
			continue
		}
		if got := sha256.Sum256(stripReceived(buf.Bytes())); got != want {
			t.Errorf("acknowledged message %s: body differs after crash", id)
		}
	}
	st, err := client.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages acknowledged across %d SIGKILLs; %d in the queue after restart", len(acked), rounds, st.Messages)
	if st.Messages < len(acked) {
		t.Errorf("queue holds %d messages, fewer than the %d acknowledged", st.Messages, len(acked))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

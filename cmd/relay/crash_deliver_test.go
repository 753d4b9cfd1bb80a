package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
)

var messageIDRe = regexp.MustCompile(`(?m)^Message-ID: <([^>]+)>`)

// TestSIGKILLWhileDeliveringLosesNothing runs the real binary delivering
// to an in-process SMTP receiver (route next_hop on 127.0.0.51) while 20
// senders submit and the relay is SIGKILLed in a loop. After the last
// restart every acknowledged message (by its unique Message-ID) must
// arrive at least once; duplicates (delivered but not yet recorded as
// such when killed) are counted and reported.
func TestSIGKILLWhileDeliveringLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildRelay(t)
	rcv := testnet.StartSMTP(t, testnet.SMTPOptions{Addr: "127.0.0.51:0"})
	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "relay.toml")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
[dns]
resolver = "127.0.0.1:9"
[[listener]]
address = %q
trusted_networks = ["127.0.0.0/8"]
[delivery]
first_retry = "1s"
max_retry_interval = "2s"
[[route]]
domain = "crash.test"
next_hop = %q
`, filepath.Join(dir, "data"), smtpAddr, rcv.Addr())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "relay.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	var mu sync.Mutex
	acked := map[string]bool{}
	const rounds = 6
	for round := 0; round < rounds; round++ {
		cmd := startRelay(t, bin, cfgPath, smtpAddr, logf)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for s := 0; s < 20; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					body := randomBody(round*1000+s, seq)
					if _, err := submit(smtpAddr, body); err == nil {
						mu.Lock()
						acked[fmt.Sprintf("%d.%d@crash.test", round*1000+s, seq)] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(700+200*round) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
	}
	cmd := startRelay(t, bin, cfgPath, smtpAddr, logf)
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()

	count := func() (map[string]int, int) {
		seen := map[string]int{}
		for _, m := range rcv.Messages() {
			if sm := messageIDRe.FindSubmatch(m.Data); sm != nil {
				seen[string(sm[1])]++
			}
		}
		missing := 0
		for id := range acked {
			if seen[id] == 0 {
				missing++
			}
		}
		return seen, missing
	}
	deadline := time.Now().Add(120 * time.Second)
	seen, missing := count()
	for missing > 0 && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		seen, missing = count()
	}
	dups := 0
	for _, n := range seen {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("%d rounds: %d acknowledged, %d distinct delivered, %d duplicate deliveries, %d missing",
		rounds, len(acked), len(seen), dups, missing)
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged")
	}
	if missing > 0 {
		t.Fatalf("%d acknowledged messages never delivered", missing)
	}
}

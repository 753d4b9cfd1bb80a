package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
)

// serveIntake runs an intake listener on 127.0.0.1 that stores into q and
// trusts 127.0.0.0/8.
func serveIntake(t testing.TB, q *queue.Queue, mod func(*Options)) *testRelay {
	t.Helper()
	opts := Options{
		Hostname:            "relay.test",
		Address:             "127.0.0.1:0",
		TLS:                 TLSNone,
		Auth:                AuthNone,
		TrustedNetworks:     []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MaxMessageBytes:     16 << 20,
		MaxRecipients:       5,
		MaxLineLength:       2000,
		MaxConnections:      50,
		MaxConnectionsPerIP: 10,
		CommandTimeout:      10 * time.Second,
		DataTimeout:         10 * time.Second,
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(q, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &testRelay{q: q, addr: ln.Addr().String()}
}

// TestStoreErrorDiskFull checks the reply chosen for storage errors: a full
// disk (however deeply wrapped) is 452 4.3.1, anything else 451 4.3.0.
func TestStoreErrorDiskFull(t *testing.T) {
	full := fmt.Errorf("write spool file X: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})
	full = fmt.Errorf("%w: %w", errSpoolWrite, full)
	var e *smtp.SMTPError
	if !errors.As(storeError(full), &e) || e.Code != 452 || e.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Errorf("ENOSPC: %v, want 452 4.3.1", storeError(full))
	}
	if !errors.As(storeError(syscall.EDQUOT), &e) || e.Code != 452 {
		t.Errorf("EDQUOT: %v, want 452", storeError(syscall.EDQUOT))
	}
	if !errors.As(storeError(errors.New("io error")), &e) || e.Code != 451 || e.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
		t.Errorf("other error: %v, want 451 4.3.0", storeError(errors.New("io error")))
	}
}

// TestDiskFullDuringData fills a small tmpfs that holds the queue while a
// client is in DATA: the client gets 452 4.3.1, the message acknowledged
// before is intact, the partial spool file is gone and, with the space it
// took freed, the next message is accepted. It needs root (mount); it is
// skipped otherwise.
func TestDiskFullDuringData(t *testing.T) {
	dir := smallTmpfs(t)
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Skipf("queue on a 2 MiB tmpfs: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	r := serveIntake(t, q, nil)

	small := "Subject: first\r\n\r\nacknowledged before the disk filled\r\n"
	c := r.dial(t, "127.0.0.2", "plain")
	if err := send(c, "a@example.org", []string{"b@example.com"}, small); err != nil {
		t.Fatalf("first message: %v", err)
	}
	first, _ := onlyMessage(t, q)

	// 4 MiB in a 2 MiB file system.
	line := strings.Repeat("x", 998) + "\r\n"
	big := "Subject: big\r\n\r\n" + strings.Repeat(line, 4<<10)
	err = send(c, "a@example.org", []string{"b@example.com"}, big)
	var e *smtp.SMTPError
	if !errors.As(err, &e) || e.Code != 452 || e.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("DATA on a full disk: %v, want 452 4.3.1", err)
	}

	got, body := onlyMessage(t, q)
	if got.ID != first.ID || !strings.HasSuffix(body, small) {
		t.Fatalf("acknowledged message changed: %s %q", got.ID, body)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "queue"))
	for _, e := range ents {
		if e.IsDir() {
			files, _ := os.ReadDir(filepath.Join(dir, "queue", e.Name()))
			for _, f := range files {
				if f.Name() != first.ID && (e.Name() == "spool" || e.Name() == "incoming") {
					t.Errorf("partial spool file left: %s/%s", e.Name(), f.Name())
				}
			}
		}
	}

	// The session goes on, and the freed space takes the next message.
	if err := c.Reset(); err != nil {
		t.Fatalf("RSET after 452: %v", err)
	}
	if err := send(c, "a@example.org", []string{"c@example.com"}, "Subject: after\r\n\r\nok\r\n"); err != nil {
		t.Fatalf("message after the failure: %v", err)
	}
	msgs, err := q.List(queue.Filter{})
	if err != nil || len(msgs) != 2 {
		t.Fatalf("queue has %d messages (%v), want 2", len(msgs), err)
	}
	f, err := q.Body(first.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); !strings.HasSuffix(string(b), small) {
		t.Errorf("first body now %q", b)
	}
}

// smallTmpfs mounts a 2 MiB tmpfs for the test, or skips it without root.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// With the disk already full, small messages (stored inline in the queue
// database) either get 250 and are kept, body and all, across a reopen,
// or get 452 4.3.1 and leave nothing behind; once space is freed, mail is
// accepted again.
func TestDiskFullSmallInlineMessages(t *testing.T) {
	dir := smallTmpfs(t)
	qdir := filepath.Join(dir, "queue")
	q, err := queue.Open(qdir, queue.Options{})
	if err != nil {
		t.Skipf("queue on a 2 MiB tmpfs: %v", err)
	}
	r := serveIntake(t, q, nil)
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	f.Close()

	c := r.dial(t, "127.0.0.2", "plain")
	acked := map[string]bool{} // subject of every message acknowledged
	for i := range 20 {
		subject := fmt.Sprintf("small %d", i)
		err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: "+subject+"\r\n\r\nbody\r\n")
		var e *smtp.SMTPError
		switch {
		case err == nil:
			acked[subject] = true
		case errors.As(err, &e) && e.Code == 452 && e.EnhancedCode == (smtp.EnhancedCode{4, 3, 1}):
			c.Reset()
		default:
			t.Fatalf("message %d on a full disk: %v, want 250 or 452 4.3.1", i, err)
		}
	}
	t.Logf("%d of 20 messages accepted on the full disk", len(acked))
	c.Close()
	q.Close()

	q, err = queue.Open(qdir, queue.Options{})
	if err != nil {
		t.Fatalf("reopen after the disk filled: %v", err)
	}
	defer q.Close()
	msgs, err := q.List(queue.Filter{})
	if err != nil || len(msgs) != len(acked) {
		t.Fatalf("%d messages queued (%v), %d acknowledged", len(msgs), err, len(acked))
	}
	for _, m := range msgs {
		b, err := q.Body(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(b)
		b.Close()
		subject := ""
		if i := strings.Index(string(body), "Subject: "); i >= 0 {
			subject = strings.SplitN(string(body[i+9:]), "\r\n", 2)[0]
		}
		if !acked[subject] || !strings.HasSuffix(string(body), "\r\n\r\nbody\r\n") {
			t.Errorf("queued message %s: subject %q, body %q", m.ID, subject, body)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r = serveIntake(t, q, nil)
	c = r.dial(t, "127.0.0.2", "plain")
	if err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: after\r\n\r\nbody\r\n"); err != nil {
		t.Fatalf("message after space was freed: %v", err)
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	srv, err := New(q, Options{Hostname: "relay.test", Address: "127.0.0.1:0", TLS: TLSNone, Auth: AuthNone,
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	testnet.ShutdownBeforeServe(t, srv.Shutdown, srv.Serve)
}

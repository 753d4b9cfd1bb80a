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

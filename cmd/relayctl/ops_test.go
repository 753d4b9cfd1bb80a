package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
	"github.com/relaysec/relay/relay/config"
)

// TestEveryCommandHasExamples: `relayctl CMD --help` shows examples for
// every command, completion included.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		seen++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no examples: add them to the examples table", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if seen < 30 {
		t.Errorf("walked only %d commands", seen)
	}
	out, _, code := runCmd(t, "", "queue", "retry", "--help")
	if code != 0 || !strings.Contains(out, "Examples:\n  relayctl queue retry 0dbq4t1c8hpmg2sa") {
		t.Errorf("queue retry --help:\n%s", out)
	}
}

// TestCompletion: the completion scripts are there.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_relayctl", "zsh": "#compdef relayctl", "fish": "complete -c relayctl"} {
		out, errOut, code := runCmd(t, "", "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %q, output lacks %q", shell, code, errOut, want)
		}
	}
}

// reloadDaemon serves the admin API with a reload function.
func reloadDaemon(t *testing.T, reload admin.ReloadFunc) string {
	t.Helper()
	q, err := queue.Open(filepath.Join(t.TempDir(), "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	socket := filepath.Join(t.TempDir(), "relay.sock")
	ln, err := admin.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.Handler(q, nil, admin.Options{Reload: reload}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return socket
}

func TestReloadCommand(t *testing.T) {
	socket := reloadDaemon(t, func(context.Context) (*admin.ReloadResult, error) {
		return &admin.ReloadResult{Config: "/etc/relay/relay.toml", Changed: []string{"user", "route"},
			RestartNeeded: []string{"listener[0].address", "delivery.workers"}}, nil
	})
	out, errOut, code := runCmd(t, "", "--socket", socket, "reload")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Reloaded: /etc/relay/relay.toml", "Changed: user, route (now in force)", "Needs a restart: listener[0].address, delivery.workers"} {
		if !strings.Contains(squash(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A refused configuration: every problem with its line, exit 1.
	_, err := config.Parse([]byte("data_dir = \"/x\"\n[[listener]]\naddress = \"127.0.0.1:2525\"\nauth = \"required\"\nbogus = 1\n"), "/etc/relay/relay.toml")
	if err == nil {
		t.Fatal("the broken configuration parsed")
	}
	socket = reloadDaemon(t, func(context.Context) (*admin.ReloadResult, error) { return nil, err })
	out, errOut, code = runCmd(t, "", "--socket", socket, "reload")
	if code != 1 || out != "" {
		t.Errorf("refused reload: exit %d, stdout %q", code, out)
	}
	for _, want := range []string{"configuration not reloaded, the running one stays in force", "/etc/relay/relay.toml:4: listener[0].auth", "/etc/relay/relay.toml:5: listener[0].bogus is not a known key"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

// TestBulkDelete deletes many messages read from standard input: no line
// per message, a final count naming what was not found.
func TestBulkDelete(t *testing.T) {
	d := newDaemon(t)
	var ids []string
	for range 30 {
		m := d.enqueue(t, &queue.Message{From: "a@example.com", Recipients: rcpts("x@example.org")}, "Subject: x\r\n\r\n")
		ids = append(ids, m.ID)
	}
	stdin := strings.Join(ids, "\n") + "\n0000000000000000 0000000000000001\n"
	out, errOut, code := runCmd(t, stdin, "--socket", d.socket, "queue", "hold", "-")
	if code != 1 {
		t.Errorf("hold: exit %d, want 1 for the two unknown IDs", code)
	}
	if want := "held 30 recipients in 30 messages, 2 not found (0000000000000000, 0000000000000001)\n"; out != want {
		t.Errorf("hold: stdout %q, want %q", out, want)
	}
	if !strings.Contains(errOut, "hold failed for 2 of 32 messages") || strings.Contains(errOut, "0000000000000000:") {
		t.Errorf("hold: stderr %q", errOut)
	}
	out, errOut, code = runCmd(t, strings.Join(ids, " "), "--socket", d.socket, "queue", "delete", "-")
	if code != 0 || out != "deleted 30 messages\n" || errOut != "" {
		t.Errorf("delete: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if st, _ := d.q.Stats(); st.Messages != 0 {
		t.Errorf("%d messages left", st.Messages)
	}
}

// TestProgress: a slow bulk operation shows progress lines on a pipe at
// most every second; a fast one none.
func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	p := newProgress(&buf, func(done, total int) string { return fmt.Sprintf("deleted %d/%d", done, total) })
	p.now = func() time.Time { return now }
	p.start = now
	for i := 1; i <= 500; i++ {
		now = now.Add(10 * time.Millisecond) // 5 s in all
		p.update(i, 500)
	}
	p.done()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 4 || len(lines) > 5 || lines[0] != "deleted 100/500" {
		t.Errorf("progress lines %q", lines)
	}

	buf.Reset()
	fast := newProgress(&buf, func(done, total int) string { return "x" })
	for i := 1; i <= 500; i++ {
		fast.update(i, 500)
	}
	fast.done()
	if buf.Len() != 0 {
		t.Errorf("a fast operation showed progress: %q", buf.String())
	}
}

// TestSocketFromBrokenConfig: a configuration file with problems still
// leads to the daemon's socket, so that `relayctl reload` can have the
// daemon report them; a file that is not TOML does not.
func TestSocketFromBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.toml")
	broken := "data_dir = \"/srv/relay\"\n[[listener]]\naddress = \"127.0.0.1:2525\"\nauth = \"required\"\n[admin]\nsocket = \"ctl.sock\"\n"
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := discoverSocket("", path, nil)
	if err != nil || got != "/srv/relay/ctl.sock" {
		t.Errorf("socket of a file with problems: %q, %v", got, err)
	}
	if err := os.WriteFile(path, []byte("data_dir = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := discoverSocket("", path, nil); err == nil || !strings.Contains(err.Error(), "cannot find the admin socket") {
		t.Errorf("socket of a file that is not TOML: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
)

// daemon is an in-process admin server over a real queue, as `relay serve`
// runs it.
type daemon struct {
	q      *queue.Queue
	socket string
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	socket := filepath.Join(dir, "relay.sock")
	ln, err := admin.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           admin.Handler(q, nil, admin.Options{Version: "v9.9.9-test"}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return &daemon{q: q, socket: socket}
}

// enqueue stores a message; IDs sort by arrival, so it waits for the
// clock to move on to keep the order of calls.
func (d *daemon) enqueue(t *testing.T, m *queue.Message, body string) *queue.Message {
	t.Helper()
	time.Sleep(2 * time.Millisecond)
	if err := d.q.Enqueue(context.Background(), m, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return m
}

// deferRcpt records a deferred attempt for recipient i, due in an hour.
func (d *daemon) deferRcpt(t *testing.T, id string, i int) {
	t.Helper()
	now := time.Now()
	_, err := d.q.Record(id, queue.Update{
		Attempts: []queue.Attempt{{
			Time: now, Host: "mx1.example.org", IP: "127.0.0.9", Policy: "mta-sts",
			TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_256_GCM_SHA384", Verification: "webpki",
			Reply: "451 4.3.0 greylisted\r\n\x1b[31mtry again", Result: "deferred",
		}},
		Results: []queue.Result{{Rcpt: i, State: queue.StateDeferred, NextAttempt: now.Add(time.Hour), Error: "451 4.3.0 greylisted"}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rcpts(addrs ...string) []queue.Recipient {
	var out []queue.Recipient
	for _, a := range addrs {
		out = append(out, queue.Recipient{Addr: a})
	}
	return out
}

// relayctl runs the command in-process against the daemon's socket.
func (d *daemon) relayctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCmd(t, "", append([]string{"--socket", d.socket}, args...)...)
}

func runCmd(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// fixture fills the queue with three messages:
//
//	m1 from a@example.com to two example.org recipients and one at
//	   example.net, the latter deferred
//	m2 a bounce (null sender) to example.com
//	m3 to example.org, held
func fixture(t *testing.T, d *daemon) (m1, m2, m3 *queue.Message) {
	t.Helper()
	m1 = d.enqueue(t, &queue.Message{
		From: "a@example.com", ClientAddr: "127.0.0.1:40001", ClientHelo: "mailraven.example.com",
		AuthUser: "mailraven", Body: "8BITMIME", SMTPUTF8: true, RequireTLS: true, DSNRet: "HDRS", DSNEnvID: "env-42",
		Recipients: []queue.Recipient{
			{Addr: "x@example.org", Notify: []string{"SUCCESS", "FAILURE"}, ORcpt: "rfc822;x@example.org"},
			{Addr: "y@example.org"},
			{Addr: "z@example.net"},
		},
	}, "Subject: one\r\n\r\nfirst message\r\n")
	m2 = d.enqueue(t, &queue.Message{From: "", Bounce: true, Recipients: rcpts("b@example.com")}, "Subject: bounce\r\n\r\n")
	m3 = d.enqueue(t, &queue.Message{From: "c@example.com", Recipients: rcpts("w@example.org")}, "Subject: three\r\n\r\n")
	d.deferRcpt(t, m1.ID, 2)
	if _, err := d.q.Hold(m3.ID); err != nil {
		t.Fatal(err)
	}
	return m1, m2, m3
}

// squash collapses runs of white space to one space, so that tests do not
// depend on column widths.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func mustSucceed(t *testing.T, stdout, stderr string, code int) {
	t.Helper()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestQueueInspect(t *testing.T) {
	d := newDaemon(t)
	m1, m2, m3 := fixture(t, d)
	out, errOut, code := d.relayctl(t, "queue", "inspect")
	mustSucceed(t, out, errOut, code)
	for _, want := range []string{
		"Messages: 3",
		"Total size: " + fmtSize(m1.Size+m2.Size+m3.Size),
		"Oldest: " + m1.ID + ", received ",
		"Next retry: now",
		"STATE RECIPIENTS queued 3 deferred 1 held 1 delivered 0 failed 0",
		// by undelivered count, largest first, then by name
		"DOMAIN UNDELIVERED example.org 3 example.com 1 example.net 1",
	} {
		if !strings.Contains(squash(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestQueueInspectEmpty(t *testing.T) {
	d := newDaemon(t)
	out, errOut, code := d.relayctl(t, "queue", "inspect")
	mustSucceed(t, out, errOut, code)
	if flat := squash(out); !strings.Contains(flat, "Messages: 0") || !strings.Contains(flat, "Next retry: - (no recipient waiting)") {
		t.Errorf("output:\n%s", out)
	}
}

func TestQueueList(t *testing.T) {
	d := newDaemon(t)
	m1, m2, m3 := fixture(t, d)
	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{"all", nil, []string{m1.ID, m2.ID, m3.ID}, nil},
		{"state", []string{"--state", "held"}, []string{m3.ID}, []string{m1.ID, m2.ID}},
		{"domain", []string{"--domain", "example.org"}, []string{m1.ID, m3.ID}, []string{m2.ID}},
		{"state and domain", []string{"--state", "deferred", "--domain", "example.net"}, []string{m1.ID}, []string{m2.ID, m3.ID}},
		{"limit", []string{"--limit", "1"}, []string{m1.ID}, []string{m2.ID, m3.ID}},
		{"no match", []string{"--state", "failed"}, []string{"No messages match."}, []string{m1.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := d.relayctl(t, append([]string{"queue", "list"}, tt.args...)...)
			mustSucceed(t, out, errOut, code)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}

	t.Run("table", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "queue", "list")
		mustSucceed(t, out, errOut, code)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1+5 { // header and one line per recipient
			t.Fatalf("%d lines:\n%s", len(lines), out)
		}
		col := strings.Index(lines[0], "STATE")
		for _, l := range lines[1:] {
			if len(l) <= col || l[col] == ' ' || l[col-1] != ' ' {
				t.Errorf("STATE column not aligned at %d in %q", col, l)
			}
		}
		bounce := lines[4]
		if !strings.HasPrefix(bounce, m2.ID) || !strings.Contains(bounce, " <> ") {
			t.Errorf("bounce line %q lacks <> sender", bounce)
		}
		if !strings.Contains(lines[3], "z@example.net") || !strings.Contains(lines[3], "deferred") ||
			!strings.Contains(lines[3], " in ") || !strings.Contains(lines[3], "451 4.3.0 greylisted") {
			t.Errorf("deferred line: %q", lines[3])
		}
		if strings.HasPrefix(lines[2], m1.ID) {
			t.Errorf("continuation line repeats the ID: %q", lines[2])
		}
	})

	t.Run("limit notice", func(t *testing.T) {
		_, errOut, _ := d.relayctl(t, "queue", "list", "--limit", "2")
		if !strings.Contains(errOut, "showing the first 2 messages") {
			t.Errorf("stderr: %q", errOut)
		}
	})

	t.Run("json", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "--json", "queue", "list", "--domain", "example.org")
		mustSucceed(t, out, errOut, code)
		var got []admin.MessageSummary
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if len(got) != 2 || got[0].ID != m1.ID || got[1].ID != m3.ID || len(got[0].Recipients) != 3 {
			t.Errorf("json list = %+v", got)
		}
	})

	t.Run("json empty", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "--json", "queue", "list", "--state", "failed")
		mustSucceed(t, out, errOut, code)
		if strings.TrimSpace(out) != "[]" {
			t.Errorf("output %q, want []", out)
		}
	})

	bad := [][]string{
		{"--state", "stuck"},
		{"--limit", "0"},
		{"--limit", "100001"},
		{"extra-arg"},
	}
	for _, args := range bad {
		t.Run("bad "+strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := d.relayctl(t, append([]string{"queue", "list"}, args...)...)
			if code != 1 || errOut == "" || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

func TestQueueShow(t *testing.T) {
	d := newDaemon(t)
	m1, m2, _ := fixture(t, d)

	out, errOut, code := d.relayctl(t, "queue", "show", m1.ID)
	mustSucceed(t, out, errOut, code)
	flat := squash(out)
	for _, want := range []string{
		"ID: " + m1.ID,
		"From: a@example.com",
		"Size: 31 B (31 bytes)",
		"Client: 127.0.0.1:40001 (HELO mailraven.example.com)",
		"Auth user: mailraven",
		"BODY: 8BITMIME",
		"SMTPUTF8: yes",
		"REQUIRETLS: yes",
		"RET: HDRS",
		"ENVID: env-42",
		"x@example.org queued 0 now SUCCESS,FAILURE rfc822;x@example.org -",
		"z@example.net deferred 1 in ",
		"TIME HOST IP POLICY TLS VERIFICATION RESULT REPLY",
		// the multi-line reply on one line, the escape sequence defused
		" mx1.example.org 127.0.0.9 mta-sts TLS 1.3 TLS_AES_256_GCM_SHA384 webpki deferred 451 4.3.0 greylisted U+001B[31mtry again",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("output contains a raw escape character")
	}

	t.Run("null sender, no attempts", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "queue", "show", m2.ID)
		mustSucceed(t, out, errOut, code)
		for _, want := range []string{"From: <>", "Bounce: yes", "No delivery attempts yet."} {
			if !strings.Contains(squash(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("body", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "queue", "show", "--body", m1.ID)
		mustSucceed(t, out, errOut, code)
		if out != "Subject: one\r\n\r\nfirst message\r\n" {
			t.Errorf("body = %q", out)
		}
	})

	t.Run("json", func(t *testing.T) {
		out, errOut, code := d.relayctl(t, "--json", "queue", "show", m1.ID)
		mustSucceed(t, out, errOut, code)
		var got queue.Message
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if got.ID != m1.ID || got.DSNEnvID != "env-42" || len(got.Recipients) != 3 || len(got.Attempts) != 1 ||
			got.Attempts[0].TLSCipher != "TLS_AES_256_GCM_SHA384" {
			t.Errorf("json message = %+v", got)
		}
	})

	for _, id := range []string{"0000000000000000", "bogus"} {
		t.Run("unknown "+id, func(t *testing.T) {
			out, errOut, code := d.relayctl(t, "queue", "show", id)
			if code != 1 || out != "" || !strings.Contains(errOut, "not found") {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

func TestQueueHoldReleaseDelete(t *testing.T) {
	d := newDaemon(t)
	m1, m2, m3 := fixture(t, d)
	states := func(id string) string {
		m, err := d.q.Get(id)
		if errors.Is(err, queue.ErrNotFound) {
			return "gone"
		}
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, r := range m.Recipients {
			s = append(s, string(r.State))
		}
		return strings.Join(s, ",")
	}

	steps := []struct {
		args     []string
		wantCode int
		wantOut  []string
		wantErr  string
		check    map[string]string // message ID → recipient states afterwards
	}{
		{
			args:    []string{"hold", m1.ID, m2.ID},
			wantOut: []string{m1.ID + ": held 3 recipients", m2.ID + ": held 1 recipient"},
			check:   map[string]string{m1.ID: "held,held,held", m2.ID: "held"},
		},
		{
			args:    []string{"hold", m3.ID},
			wantOut: []string{m3.ID + ": nothing to hold"},
			check:   map[string]string{m3.ID: "held"},
		},
		{
			args:     []string{"release", m1.ID, "0000000000000000", m3.ID},
			wantCode: 1,
			wantOut:  []string{m1.ID + ": released 3 recipients", m3.ID + ": released 1 recipient"},
			wantErr:  "0000000000000000: message \"0000000000000000\" not found",
			check:    map[string]string{m1.ID: "queued,queued,queued", m3.ID: "queued"},
		},
		{
			args:    []string{"retry", m1.ID},
			wantOut: []string{m1.ID + ": nothing to retry"},
		},
		{
			args:    []string{"delete", m2.ID, m3.ID},
			wantOut: []string{m2.ID + ": deleted", m3.ID + ": deleted"},
			check:   map[string]string{m2.ID: "gone", m3.ID: "gone", m1.ID: "queued,queued,queued"},
		},
		{
			args:     []string{"delete", m2.ID},
			wantCode: 1,
			wantErr:  "delete failed for 1 of 1 message",
		},
		{
			args:     []string{"hold"},
			wantCode: 1,
			wantErr:  "queue hold needs at least one message ID",
		},
	}
	for _, s := range steps {
		out, errOut, code := d.relayctl(t, append([]string{"queue"}, s.args...)...)
		if code != s.wantCode {
			t.Errorf("%v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.args, code, s.wantCode, out, errOut)
		}
		for _, w := range s.wantOut {
			if !strings.Contains(out, w) {
				t.Errorf("%v: stdout lacks %q:\n%s", s.args, w, out)
			}
		}
		if !strings.Contains(errOut, s.wantErr) {
			t.Errorf("%v: stderr lacks %q:\n%s", s.args, s.wantErr, errOut)
		}
		for id, want := range s.check {
			if got := states(id); got != want {
				t.Errorf("%v: %s is %s, want %s", s.args, id, got, want)
			}
		}
	}
}

func TestQueueActionJSON(t *testing.T) {
	d := newDaemon(t)
	m1, _, m3 := fixture(t, d)
	out, _, code := d.relayctl(t, "--json", "queue", "release", m3.ID, m1.ID, "bogus")
	if code != 1 {
		t.Errorf("exit %d, want 1 for the bogus ID", code)
	}
	var got []struct {
		ID      string `json:"id"`
		Changed *int   `json:"changed"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(got) != 3 || *got[0].Changed != 1 || *got[1].Changed != 0 || got[2].Error == "" || got[2].Changed != nil {
		t.Errorf("json = %s", out)
	}
}

func TestQueueRetry(t *testing.T) {
	d := newDaemon(t)
	m1, m2, _ := fixture(t, d)
	due := func(id string) bool {
		m, err := d.q.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Recipients {
			if r.State.Pending() && r.NextAttempt.After(time.Now()) {
				return false
			}
		}
		return true
	}
	tests := []struct {
		args    []string
		setup   func()
		wantOut string
		wantDue bool // whether m1 is due afterwards
	}{
		{[]string{"--domain", "example.com"}, nil, "No messages with recipients at example.com were waiting", false},
		{[]string{"--domain", "example.net"}, nil, "1 message with recipients at example.net due for delivery now.", true},
		{[]string{"--all"}, func() { d.deferRcpt(t, m1.ID, 2) }, "1 message due for delivery now.", true},
		{[]string{m1.ID}, func() { d.deferRcpt(t, m1.ID, 2) }, m1.ID + ": 1 recipient due for delivery now", true},
	}
	for _, tt := range tests {
		if tt.setup != nil {
			tt.setup()
		}
		out, errOut, code := d.relayctl(t, append([]string{"queue", "retry"}, tt.args...)...)
		mustSucceed(t, out, errOut, code)
		if !strings.Contains(out, tt.wantOut) {
			t.Errorf("%v: output %q lacks %q", tt.args, out, tt.wantOut)
		}
		if due(m1.ID) != tt.wantDue || !due(m2.ID) {
			t.Errorf("%v: m1 due %v, want %v; m2 due %v", tt.args, due(m1.ID), tt.wantDue, due(m2.ID))
		}
	}

	out, errOut, code := d.relayctl(t, "--json", "queue", "retry", "--all")
	mustSucceed(t, out, errOut, code)
	var got struct {
		Messages *int `json:"messages"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Messages == nil {
		t.Errorf("json %q: %v", out, err)
	}

	for _, args := range [][]string{{}, {"--all", "--domain", "example.org"}, {m1.ID, "--all"}} {
		_, errOut, code := d.relayctl(t, append([]string{"queue", "retry"}, args...)...)
		if code != 1 || !strings.Contains(errOut, "exactly one") {
			t.Errorf("retry %v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestInspectJSON(t *testing.T) {
	d := newDaemon(t)
	m1, _, _ := fixture(t, d)
	out, errOut, code := d.relayctl(t, "--json", "queue", "inspect")
	mustSucceed(t, out, errOut, code)
	var st queue.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if st.Messages != 3 || st.OldestID != m1.ID || st.Recipients[queue.StateHeld] != 1 || st.Domains["example.org"] != 3 {
		t.Errorf("stats = %+v", st)
	}
	if !strings.Contains(out, "\n  \"messages\": 3") {
		t.Errorf("JSON not indented:\n%s", out)
	}
}

func TestDaemonNotRunning(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "relay.sock")
	for _, args := range [][]string{
		{"queue", "inspect"},
		{"queue", "list"},
		{"queue", "show", "0000000000000000"},
		{"queue", "hold", "0000000000000000", "0000000000000001"},
		{"queue", "retry", "--all"},
	} {
		out, errOut, code := runCmd(t, "", append([]string{"--socket", socket}, args...)...)
		want := "relayctl: relay daemon is not running (no admin socket at " + socket + "): start it with `relay serve`\n"
		if code != 1 || out != "" || errOut != want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want stderr %q", args, code, out, errOut, want)
		}
	}
}

func TestUserHash(t *testing.T) {
	tests := []struct {
		name, stdin, password string
		args                  []string
	}{
		{"newline", "correct horse\n", "correct horse", nil},
		{"crlf", "s3cret\r\nignored second line\n", "s3cret", nil},
		{"no newline", "  spaces kept  ", "  spaces kept  ", nil},
		{"json", "pw\n", "pw", []string{"--json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{}, tt.args...), "user", "hash", "--cost", "4")
			out, errOut, code := runCmd(t, tt.stdin, args...)
			mustSucceed(t, out, errOut, code)
			hash := strings.TrimSpace(out)
			if len(tt.args) > 0 {
				var v struct {
					PasswordHash string `json:"password_hash"`
				}
				if err := json.Unmarshal([]byte(out), &v); err != nil {
					t.Fatal(err)
				}
				hash = v.PasswordHash
			}
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(tt.password)); err != nil {
				t.Errorf("hash %q does not match %q: %v", hash, tt.password, err)
			}
			if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != 4 {
				t.Errorf("cost = %d, %v", cost, err)
			}
			if !strings.Contains(errOut, "password_hash = \""+hash+"\"") || !strings.Contains(errOut, "[[user]]") {
				t.Errorf("hint: %q", errOut)
			}
		})
	}

	t.Run("default cost", func(t *testing.T) {
		f := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
		cmd, _, err := f.Find([]string{"user", "hash"})
		if err != nil {
			t.Fatal(err)
		}
		if got := cmd.Flags().Lookup("cost").DefValue; got != "12" {
			t.Errorf("default cost %s, want 12", got)
		}
	})

	refused := []struct{ name, stdin, args, wantErr string }{
		{"empty", "\n", "", "empty password refused"},
		{"no input", "", "", "empty password refused"},
		{"too long", strings.Repeat("x", 73) + "\n", "", "bcrypt uses at most 72"},
		{"bad cost", "pw\n", "99", "--cost must be"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"user", "hash"}
			if tt.args != "" {
				args = append(args, "--cost", tt.args)
			}
			out, errOut, code := runCmd(t, tt.stdin, args...)
			if code != 1 || out != "" || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	d := newDaemon(t)
	out, errOut, code := d.relayctl(t, "version")
	mustSucceed(t, out, errOut, code)
	if !strings.HasPrefix(out, "relayctl ") || !strings.Contains(out, "relay daemon v9.9.9-test (pid ") {
		t.Errorf("output:\n%s", out)
	}

	out, errOut, code = runCmd(t, "", "--json", "--socket", filepath.Join(t.TempDir(), "none.sock"), "version")
	mustSucceed(t, out, errOut, code)
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Relayctl == "" || v.Daemon != nil || !strings.Contains(v.DaemonError, "not running") {
		t.Errorf("version = %+v", v)
	}
}

func TestDiscoverSocket(t *testing.T) {
	dir := t.TempDir()
	writeConfig := func(name, dataDir, socket string) string {
		p := filepath.Join(dir, name)
		doc := "data_dir = \"" + dataDir + "\"\n\n" +
			"[[listener]]\naddress = \"127.0.0.1:2525\"\ntrusted_networks = [\"127.0.0.0/8\"]\n\n" +
			"[admin]\nsocket = \"" + socket + "\"\n"
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagCfg := writeConfig("flag.toml", "/srv/a", "admin.sock")
	localCfg := writeConfig("relay.toml", "/srv/b", "/run/relay/b.sock")
	missing := filepath.Join(dir, "missing.toml")
	broken := filepath.Join(dir, "broken.toml")
	if err := os.WriteFile(broken, []byte("no_such_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, socket, config string
		candidates           []string
		want, wantErr        string
	}{
		{"socket flag wins", "/tmp/x.sock", flagCfg, []string{localCfg}, "/tmp/x.sock", ""},
		{"config flag", "", flagCfg, []string{localCfg}, "/srv/a/admin.sock", ""},
		{"first existing candidate", "", "", []string{missing, localCfg, flagCfg}, "/run/relay/b.sock", ""},
		{"built-in default", "", "", []string{missing}, filepath.Join("relay-data", "relay.sock"), ""},
		{"missing config flag", "", missing, nil, "", "missing.toml"},
		{"broken candidate", "", "", []string{broken}, "", "broken.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discoverSocket(tt.socket, tt.config, tt.candidates)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "--socket") {
					t.Errorf("err = %v, want one naming %s and --socket", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Clean(got) != filepath.Clean(tt.want) {
				t.Errorf("socket = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	ages := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {45 * time.Second, "45s"}, {12*time.Minute + 30*time.Second, "12m"},
		{3 * time.Hour, "3h"}, {3*time.Hour + 12*time.Minute, "3h12m"}, {50 * time.Hour, "2d2h"}, {48 * time.Hour, "2d"},
	}
	for _, tt := range ages {
		if got := fmtAge(tt.d); got != tt.want {
			t.Errorf("fmtAge(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	sizes := []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}}
	for _, tt := range sizes {
		if got := fmtSize(tt.n); got != tt.want {
			t.Errorf("fmtSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	cleans := []struct{ in, want string }{
		{"plain", "plain"},
		{"250-a\r\n250 b", "250-a 250 b"},
		{"tab\there", "tab here"},
		{"\x1b[2J", "U+001B[2J"},
		{"ünïcode ok", "ünïcode ok"},
	}
	for _, tt := range cleans {
		if got := clean(tt.in); got != tt.want {
			t.Errorf("clean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

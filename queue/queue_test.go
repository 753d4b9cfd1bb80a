package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// clock is a settable time source for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openTest(t *testing.T, dir string, c *clock) *Queue {
	t.Helper()
	return openTestOpts(t, dir, c, Options{})
}

// filesOnly stores every body in a file of its own.
var filesOnly = Options{InlineMax: -1}

func openTestOpts(t *testing.T, dir string, c *clock, opts Options) *Queue {
	t.Helper()
	if c != nil {
		opts.Now = c.now
	}
	q, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func enqueue(t *testing.T, q *Queue, body string, rcpts ...string) *Message {
	t.Helper()
	m := &Message{From: "sender@example.org"}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, Recipient{Addr: r})
	}
	if err := q.Enqueue(context.Background(), m, bytes.NewBufferString(body)); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSUB05_CommitIsDurableAndReadable(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, nil)
	w, err := q.Create()
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\r\n\r\nbody\r\n"
	io.WriteString(w, body)
	m := &Message{From: "a@example.org", DSNRet: "HDRS", DSNEnvID: "env1", RequireTLS: true,
		Recipients: []Recipient{{Addr: "b@Example.COM", Notify: []string{"FAILURE"}, ORcpt: "rfc822;b@example.com"}}}
	if err := w.Commit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if m.ID != w.ID() || m.Size != int64(len(body)) {
		t.Fatalf("id/size not filled: %+v", m)
	}
	q.Close()

	q2 := openTest(t, dir, nil)
	got, err := q2.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.From != "a@example.org" || got.DSNRet != "HDRS" || got.DSNEnvID != "env1" || !got.RequireTLS {
		t.Fatalf("envelope not preserved: %+v", got)
	}
	r := got.Recipients[0]
	if r.State != StateQueued || r.Notify[0] != "FAILURE" || r.ORcpt != "rfc822;b@example.com" || r.Domain() != "example.com" {
		t.Fatalf("recipient not preserved: %+v", r)
	}
	f, err := q2.Body(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if string(b) != body {
		t.Fatalf("body = %q", b)
	}
}

func TestRecoverFinishesWhatACrashLeftHalfDone(t *testing.T) {
	dir := t.TempDir()
	q := openTestOpts(t, dir, nil, filesOnly)
	keep := enqueue(t, q, "keep", "x@example.com")
	unmoved := enqueue(t, q, "unmoved", "y@example.com")
	gone := enqueue(t, q, "gone", "z@example.com")
	w, err := q.Create() // never committed: a crash mid-DATA
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "partial")
	orphan := w.ID()
	// A crash after the commit of unmoved, before its rename.
	if err := os.Rename(filepath.Join(dir, "spool", unmoved.ID), filepath.Join(dir, "incoming", unmoved.ID)); err != nil {
		t.Fatal(err)
	}
	// A crash after gone's record was removed, before its body was.
	if err := q.Delete(gone.ID); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "spool", gone.ID), []byte("gone"), 0o600)
	q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRemoved).Put([]byte(gone.ID), nil) })
	q.Close()

	q2 := openTestOpts(t, dir, nil, filesOnly)
	if _, err := os.Stat(filepath.Join(dir, "incoming", orphan)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("uncommitted body still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "spool", gone.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("body of a removed record still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "spool", unmoved.ID)); err != nil {
		t.Errorf("committed body not moved into the spool: %v", err)
	}
	for _, m := range []*Message{keep, unmoved} {
		f, err := q2.Body(m.ID)
		if err != nil {
			t.Fatalf("good message lost: %v", err)
		}
		f.Close()
	}
	q2.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketRemoved).Cursor().First(); k != nil {
			t.Errorf("removed bucket not emptied: %s", k)
		}
		return nil
	})
	if st, _ := q2.Stats(); st.Messages != 2 {
		t.Errorf("stats count %d messages, want 2", st.Messages)
	}
}

// A record whose body vanished (disk trouble, an operator's rm) is kept;
// Body reports it, so delivery defers it with a clear error.
func TestRecordWithoutBodyIsReportedNotDropped(t *testing.T) {
	dir := t.TempDir()
	q := openTestOpts(t, dir, nil, filesOnly)
	m := enqueue(t, q, "body", "x@example.com")
	os.Remove(filepath.Join(dir, "spool", m.ID))
	if _, err := q.Body(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Body of a missing file: %v", err)
	}
	if _, err := q.Get(m.ID); err != nil {
		t.Fatalf("record dropped: %v", err)
	}
}

// scanStats computes Stats the slow way, from every record.
func scanStats(t *testing.T, q *Queue) Stats {
	t.Helper()
	s := Stats{Recipients: map[State]int{}, Domains: map[string]int{}}
	err := q.forEach(func(m *Message) bool {
		s.Messages++
		s.Bytes += m.Size
		if s.Oldest.IsZero() || m.ReceivedAt.Before(s.Oldest) {
			s.Oldest, s.OldestID = m.ReceivedAt, m.ID
		}
		for _, r := range m.Recipients {
			s.Recipients[r.State]++
			if !r.State.Final() {
				s.Domains[r.Domain()]++
			}
			if r.State.Pending() && (s.NextRetry.IsZero() || r.NextAttempt.Before(s.NextRetry)) {
				s.NextRetry = r.NextAttempt
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameStats(a, b Stats) bool {
	return fmt.Sprint(a.Messages, a.Bytes, a.Recipients, a.Domains, a.OldestID, a.Oldest.UnixNano(), a.NextRetry.UnixNano()) ==
		fmt.Sprint(b.Messages, b.Bytes, b.Recipients, b.Domains, b.OldestID, b.Oldest.UnixNano(), b.NextRetry.UnixNano())
}

// The counters kept with every change agree with a full scan after every
// kind of change, after a restart, and after a rebuild from the records.
func TestStatsCountersAgreeWithAFullScan(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	q := openTest(t, dir, c)
	check := func(step string) {
		t.Helper()
		got, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if want := scanStats(t, q); !sameStats(got, want) {
			t.Fatalf("%s: stats\n got %+v\nwant %+v", step, got, want)
		}
	}
	check("empty")
	var ids []string
	for i := range 12 {
		c.add(time.Millisecond)
		m := enqueue(t, q, strings.Repeat("x", i+1), fmt.Sprintf("a%d@d%d.example", i, i%3), fmt.Sprintf("b@d%d.example", (i+1)%3))
		ids = append(ids, m.ID)
	}
	check("enqueued")
	held := &Message{From: "h@example.org", Recipients: []Recipient{{Addr: "h@held.example", State: StateHeld}}}
	if err := q.Enqueue(context.Background(), held, strings.NewReader("held")); err != nil {
		t.Fatal(err)
	}
	check("held at commit")
	if _, err := q.Hold(ids[0]); err != nil {
		t.Fatal(err)
	}
	check("hold")
	if _, err := q.Release(held.ID); err != nil {
		t.Fatal(err)
	}
	check("release")
	leases, err := q.Lease(100)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range leases {
		var u Update
		for _, r := range l.Rcpts {
			switch (i + r) % 3 {
			case 0:
				u.Results = append(u.Results, Result{Rcpt: r, State: StateDelivered})
			case 1:
				u.Results = append(u.Results, Result{Rcpt: r, State: StateDeferred, NextAttempt: c.now().Add(time.Duration(i+1) * time.Minute)})
			default:
				u.Results = append(u.Results, Result{Rcpt: r, State: StateFailed, Error: "550 no"})
			}
		}
		if _, err := q.Record(l.Message.ID, u); err != nil {
			t.Fatal(err)
		}
		q.Unlease(l.Message.ID)
	}
	check("recorded")
	if _, err := q.Retry(ids[1]); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := q.Delete(ids[2]); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	check("retry and delete")
	q.Close()
	q = openTest(t, dir, c)
	check("reopened")
	// A queue from before the counters existed: they are built once.
	q.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketCounts) })
	q.Close()
	q = openTest(t, dir, c)
	check("rebuilt")
}

func TestLeaseRecordRetry(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := openTest(t, t.TempDir(), c)
	m := enqueue(t, q, "b", "a@one.example", "b@two.example", "c@one.example")

	leases, err := q.Lease(10)
	if err != nil || len(leases) != 1 || len(leases[0].Rcpts) != 3 {
		t.Fatalf("lease = %+v, %v", leases, err)
	}
	if again, _ := q.Lease(10); len(again) != 0 {
		t.Fatalf("leased twice: %+v", again)
	}
	next := c.now().Add(5 * time.Minute)
	got, err := q.Record(m.ID, Update{
		Attempts: []Attempt{{Host: "mx.one.example", Result: "deferred", Reply: "451 try later"}},
		Results: []Result{
			{Rcpt: 0, State: StateDelivered},
			{Rcpt: 1, State: StateFailed, Error: "550 no such user"},
			{Rcpt: 2, State: StateDeferred, NextAttempt: next, Error: "451 try later"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	q.Unlease(m.ID)
	if got.Recipients[2].State != StateDeferred || got.Recipients[2].Attempts != 1 || len(got.Attempts) != 1 {
		t.Fatalf("record: %+v", got)
	}
	if l, _ := q.Lease(10); len(l) != 0 {
		t.Fatalf("deferred recipient leased before its time: %+v", l)
	}
	c.add(5 * time.Minute)
	l, _ := q.Lease(10)
	if len(l) != 1 || len(l[0].Rcpts) != 1 || l[0].Rcpts[0] != 2 {
		t.Fatalf("lease after retry time = %+v", l)
	}
	if _, err := q.Record(m.ID, Update{Results: []Result{{Rcpt: 2, State: StateDelivered}}}); err != nil {
		t.Fatal(err)
	}
	q.Unlease(m.ID)
	if _, err := q.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("finished message still queued: %v", err)
	}
	if _, err := q.Body(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("finished message body still spooled: %v", err)
	}
}

func TestHoldReleaseRetryDelete(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := openTest(t, t.TempDir(), c)
	m := enqueue(t, q, "b", "a@one.example")
	if n, err := q.Hold(m.ID); err != nil || n != 1 {
		t.Fatalf("hold = %d, %v", n, err)
	}
	if l, _ := q.Lease(10); len(l) != 0 {
		t.Fatalf("held message leased")
	}
	if n, err := q.Release(m.ID); err != nil || n != 1 {
		t.Fatalf("release = %d, %v", n, err)
	}
	l, _ := q.Lease(10)
	if len(l) != 1 {
		t.Fatalf("released message not due")
	}
	q.Record(m.ID, Update{Results: []Result{{Rcpt: 0, State: StateDeferred, NextAttempt: c.now().Add(time.Hour)}}})
	q.Unlease(m.ID)
	if n, err := q.RetryWhere("ONE.example"); err != nil || n != 1 {
		t.Fatalf("retry domain = %d, %v", n, err)
	}
	if l, _ := q.Lease(10); len(l) != 1 {
		t.Fatalf("retried message not due")
	}
	q.Unlease(m.ID)
	if err := q.Delete(m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted message found")
	}
	if err := q.Delete(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := q.Get("../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path-like id: %v", err)
	}
}

func TestHeldRecipientStaysHeldWhenDeferred(t *testing.T) {
	q := openTest(t, t.TempDir(), nil)
	m := enqueue(t, q, "b", "a@one.example")
	if _, err := q.Lease(1); err != nil {
		t.Fatal(err)
	}
	q.Hold(m.ID) // operator holds while the attempt runs
	got, err := q.Record(m.ID, Update{Results: []Result{{Rcpt: 0, State: StateDeferred, NextAttempt: time.Now()}}})
	if err != nil || got.Recipients[0].State != StateHeld {
		t.Fatalf("state = %v, %v", got.Recipients[0].State, err)
	}
}

func TestConcurrentCommitsShareFsyncs(t *testing.T) {
	for name, opts := range map[string]Options{"inline": {}, "files": filesOnly, "mixed": {InlineMax: 3000}} {
		t.Run(name, func(t *testing.T) { testConcurrentCommits(t, opts) })
	}
}

func testConcurrentCommits(t *testing.T, opts Options) {
	dir := t.TempDir()
	q := openTestOpts(t, dir, nil, opts)
	const n = 200
	sums := make(map[string][32]byte)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("Message-ID: <%d@test>\r\n\r\n%s\r\n", i, bytes.Repeat([]byte("x"), i*37))
			m := enqueue(t, q, body, "r@example.com")
			mu.Lock()
			sums[m.ID] = sha256.Sum256([]byte(body))
			mu.Unlock()
		}()
	}
	wg.Wait()
	q.Close()
	q2 := openTestOpts(t, dir, nil, opts)
	st, err := q2.Stats()
	if err != nil || st.Messages != n || st.Recipients[StateQueued] != n || st.Domains["example.com"] != n {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	for id, want := range sums {
		f, err := q2.Body(id)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		if [32]byte(h.Sum(nil)) != want {
			t.Fatalf("body of %s differs", id)
		}
	}
}

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, nil)
	_, err := Open(dir, Options{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("already running")) {
		t.Fatalf("second open: %v", err)
	}
}

func TestIDsSortByTime(t *testing.T) {
	a := newID(time.UnixMilli(1000))
	b := newID(time.UnixMilli(1001))
	if !(a < b) || !validID(a) || !validID(b) {
		t.Fatalf("%s !< %s", a, b)
	}
}

func TestListLimit(t *testing.T) {
	q := openTest(t, t.TempDir(), nil)
	for range 3 {
		enqueue(t, q, "b", "a@one.example")
	}
	msgs, err := q.List(Filter{Limit: 2})
	if err != nil || len(msgs) != 2 {
		t.Fatalf("List(limit 2) = %d, %v", len(msgs), err)
	}
}

func TestHeldAtCommitIsNotScheduledAndReleaseLeavesNoStaleEntry(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := openTest(t, t.TempDir(), c)
	m := &Message{From: "a@example.org", Recipients: []Recipient{{Addr: "b@example.com", State: StateHeld}}}
	if err := q.Enqueue(context.Background(), m, bytes.NewBufferString("x")); err != nil {
		t.Fatal(err)
	}
	if l, err := q.Lease(10); err != nil || len(l) != 0 {
		t.Fatalf("held message leased: %v %v", l, err)
	}
	c.add(time.Second)
	if n, err := q.Release(m.ID); err != nil || n != 1 {
		t.Fatalf("release = %d, %v", n, err)
	}
	l, err := q.Lease(10)
	if err != nil || len(l) != 1 {
		t.Fatalf("released message not leased: %v %v", l, err)
	}
	if _, err := q.Record(m.ID, Update{Results: []Result{{Rcpt: 0, State: StateDelivered}}}); err != nil {
		t.Fatal(err)
	}
	q.Unlease(m.ID)
	c.add(time.Hour)
	if l, err := q.Lease(10); err != nil || len(l) != 0 {
		t.Fatalf("after delivery: lease = %v, %v", l, err)
	}
	n := 0
	q.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketSchedule).Stats().KeyN; return nil })
	if n != 0 {
		t.Fatalf("%d schedule entries left", n)
	}
}

func TestLeaseSkipsAndRemovesStaleScheduleEntries(t *testing.T) {
	q := openTest(t, t.TempDir(), nil)
	m := enqueue(t, q, "b", "a@one.example")
	err := q.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSchedule).Put(scheduleKey(time.Unix(1, 0), "00000000000000aa"), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(10)
	if err != nil || len(l) != 1 || l[0].Message.ID != m.ID {
		t.Fatalf("lease with a stale entry first = %v, %v", l, err)
	}
	n := 0
	q.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketSchedule).Stats().KeyN; return nil })
	if n != 1 {
		t.Fatalf("%d schedule entries, want only the live one", n)
	}
}

// A small body lives in the database with its record: no file is made,
// it reads back byte for byte with its size, and it goes with its record.
// A body larger than InlineMax spills into a file as it is written.
func TestInlineBodiesAndSpill(t *testing.T) {
	dir := t.TempDir()
	q := openTestOpts(t, dir, nil, Options{InlineMax: 100})
	small := strings.Repeat("s", 100)
	large := strings.Repeat("l", 101)
	ms := enqueue(t, q, small, "a@example.com")
	ml := enqueue(t, q, large, "b@example.com")
	files := func() []string {
		var names []string
		for _, d := range []string{"spool", "incoming"} {
			ents, _ := os.ReadDir(filepath.Join(dir, d))
			for _, e := range ents {
				names = append(names, d+"/"+e.Name())
			}
		}
		return names
	}
	if got := files(); len(got) != 1 || got[0] != "spool/"+ml.ID {
		t.Fatalf("files %v, want only spool/%s", got, ml.ID)
	}
	for _, c := range []struct {
		m    *Message
		body string
	}{{ms, small}, {ml, large}} {
		b, err := q.Body(c.m.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(b)
		b.Close()
		if string(got) != c.body || b.Size() != int64(len(c.body)) || c.m.Size != int64(len(c.body)) {
			t.Errorf("%s: body %d bytes, Size %d, record %d; want %d", c.m.ID, len(got), b.Size(), c.m.Size, len(c.body))
		}
	}
	if err := q.Delete(ms.ID); err != nil {
		t.Fatal(err)
	}
	leases, _ := q.Lease(10)
	if len(leases) != 1 || leases[0].Message.ID != ml.ID {
		t.Fatalf("leases %+v", leases)
	}
	if _, err := q.Record(ml.ID, Update{Results: []Result{{Rcpt: 0, State: StateDelivered}}}); err != nil {
		t.Fatal(err)
	}
	q.Unlease(ml.ID)
	if got := files(); len(got) != 0 {
		t.Errorf("files left after both messages left the queue: %v", got)
	}
	q.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketBodies).Cursor().First(); k != nil {
			t.Errorf("inline body left: %s", k)
		}
		return nil
	})
	for _, id := range []string{ms.ID, ml.ID} {
		if _, err := q.Body(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Body(%s) after removal: %v", id, err)
		}
	}
}

// RetryWhere walks a queue larger than one batch, changes every matching
// message once, and reports progress up to the total.
func TestRetryWhereInBatches(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	q := openTest(t, t.TempDir(), c)
	const n = retryBatch*2 + 50
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := w; i < n; i += 20 {
				domain := "a.example"
				if i%2 == 1 {
					domain = "b.example"
				}
				enqueue(t, q, "x", "r@"+domain)
			}
		})
	}
	wg.Wait()
	// Defer everything by an hour.
	later := c.now().Add(time.Hour)
	for {
		leases, err := q.Lease(500)
		if err != nil {
			t.Fatal(err)
		}
		if len(leases) == 0 {
			break
		}
		for _, l := range leases {
			if _, err := q.Record(l.Message.ID, Update{Results: []Result{{Rcpt: 0, State: StateDeferred, NextAttempt: later}}}); err != nil {
				t.Fatal(err)
			}
			q.Unlease(l.Message.ID)
		}
	}
	var last, lastTotal int
	changed, err := q.RetryWhereProgress("b.example", func(done, total int) { last, lastTotal = done, total })
	if err != nil || changed != n/2 {
		t.Fatalf("retry b.example: %d changed, %v; want %d", changed, err, n/2)
	}
	if last != n/2 || lastTotal != n/2 {
		t.Errorf("last progress %d of %d, want %d of %d", last, lastTotal, n/2, n/2)
	}
	// Without a domain every message is looked at; those already due are
	// not changed again.
	changed, err = q.RetryWhereProgress("", func(done, total int) { last, lastTotal = done, total })
	if err != nil || changed != n/2 {
		t.Fatalf("retry all: %d changed, %v; want %d", changed, err, n/2)
	}
	if last != n || lastTotal != n {
		t.Errorf("last progress %d of %d, want %d of %d", last, lastTotal, n, n)
	}
	if got, _ := q.Lease(n); len(got) != n {
		t.Errorf("%d messages due after retry all, want %d", len(got), n)
	}
}

// Inline bodies arrive in key order and are never rewritten, so their pages
// are packed fuller than bbolt's half-full default (bodiesFillPercent).
// The bodies go in one transaction, as a group commit under load stores
// many: bbolt splits a page that got one insert the same way whatever the
// fill percent.
func TestInlineBodiesPackedPages(t *testing.T) {
	q, err := Open(t.TempDir(), Options{TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	body := []byte(strings.Repeat("b", 800))
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := bodiesBucket(tx)
		for i := range 500 {
			if err := b.Put(fmt.Appendf(nil, "%016d", i), body); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = q.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketBodies).Stats()
		if used := float64(st.LeafInuse) / float64(st.LeafAlloc); used < 0.75 {
			t.Errorf("bodies' leaf pages %.0f%% used, want at least 75%% (%+v)", 100*used, st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

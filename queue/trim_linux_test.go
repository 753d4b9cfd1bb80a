//go:build linux

package queue

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// rssFileKiB reads this process's file-backed resident memory.
func rssFileKiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// After a full read of the database its pages are resident; trimMapping
// gives them back to the page cache, and every record still reads the
// same afterwards.
func TestTrimMappingDropsResidentDatabasePages(t *testing.T) {
	q, err := Open(t.TempDir(), Options{TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 2000
	pad := strings.Repeat("e", 8000) // a large ENVID makes a large record
	var wg sync.WaitGroup
	for range 20 { // concurrent commits share fsyncs
		wg.Go(func() {
			for range n / 20 {
				m := &Message{From: "a@example.org", DSNEnvID: pad, Recipients: []Recipient{{Addr: "b@example.com"}}}
				if err := q.Enqueue(context.Background(), m, bytes.NewBufferString("x")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	before, err := q.List(Filter{}) // faults in every page
	if err != nil || len(before) != n {
		t.Fatalf("list: %d, %v", len(before), err)
	}
	full := rssFileKiB(t)
	if did, err := q.trimMapping(); err != nil || !did {
		t.Fatalf("trim after reads: trimmed %v, %v", did, err)
	}
	trimmed := rssFileKiB(t)
	// 2000 records of 8 KB are at least 16 MB of mapped pages.
	if full-trimmed < 8<<10 {
		t.Errorf("RssFile %d KiB before the trim, %d KiB after: want at least 8 MiB dropped", full, trimmed)
	}
	after, err := q.List(Filter{})
	if err != nil || len(after) != len(before) {
		t.Fatalf("list after trim: %d, %v", len(after), err)
	}
	for i := range after {
		if after[i].ID != before[i].ID || after[i].DSNEnvID != pad {
			t.Fatalf("record %d changed by the trim", i)
		}
	}
}

// An idle queue is not trimmed again: no transaction, no madvise. Any read
// or write in between makes the next tick trim.
func TestTrimMappingSkipsIdleQueue(t *testing.T) {
	q, err := Open(t.TempDir(), Options{TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	trim := func() bool {
		t.Helper()
		did, err := q.trimMapping()
		if err != nil {
			t.Fatal(err)
		}
		return did
	}
	if !trim() {
		t.Error("first trim skipped")
	}
	if trim() {
		t.Error("trim of an idle queue not skipped")
	}
	m := &Message{From: "a@example.org", Recipients: []Recipient{{Addr: "b@example.com"}}}
	if err := q.Enqueue(context.Background(), m, bytes.NewBufferString("x")); err != nil {
		t.Fatal(err)
	}
	if !trim() {
		t.Error("trim after a write skipped")
	}
	if trim() {
		t.Error("second trim after a write not skipped")
	}
	if _, err := q.Get(m.ID); err != nil {
		t.Fatal(err)
	}
	if !trim() {
		t.Error("trim after a read skipped")
	}
	if _, err := q.List(Filter{}); err != nil {
		t.Fatal(err)
	}
	if !trim() {
		t.Error("trim after a listing skipped")
	}
	// A read still under way may be mapping pages in: it is trimmed
	// before it ends.
	inView, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- q.db.View(func(*bolt.Tx) error {
			close(inView)
			<-release
			return nil
		})
	}()
	<-inView
	if !trim() {
		t.Error("trim during an open read transaction skipped")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

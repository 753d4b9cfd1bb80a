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
	if err := q.trimMapping(); err != nil {
		t.Fatal(err)
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

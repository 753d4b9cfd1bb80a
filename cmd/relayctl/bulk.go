package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// Bulk operations (queue hold/release/retry/delete and reports delete on
// many IDs, queue retry --all) report differently from small ones: up to
// bulkVerboseMax IDs get a line each; more get progress on standard error
// and a final count on standard output.
const (
	bulkVerboseMax = 20
	// bulkProgressEvery is the time between two progress lines on a file
	// or pipe, and how long an operation runs before any is shown.
	bulkProgressEvery = time.Second
	// bulkProgressTTY is the time between two updates of the progress
	// line on a terminal.
	bulkProgressTTY = 100 * time.Millisecond
	// bulkListMax is how many IDs of a kind of failure the final count
	// names.
	bulkListMax = 5
)

// readIDs expands the argument "-" into the IDs read from r, separated by
// white space (one per line, as `jq -r '.[].id'` prints them); other
// arguments are IDs themselves.
func readIDs(args []string, r io.Reader) ([]string, error) {
	var ids []string
	for _, a := range args {
		if a != "-" {
			ids = append(ids, a)
			continue
		}
		sc := bufio.NewScanner(r)
		sc.Split(bufio.ScanWords)
		for sc.Scan() {
			ids = append(ids, sc.Text())
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read IDs from standard input: %w", err)
		}
	}
	return ids, nil
}

// progress shows how far a bulk operation is on standard error: on a
// terminal one line rewritten in place, otherwise a line every
// bulkProgressEvery. An operation that ends within bulkProgressEvery
// shows nothing.
type progress struct {
	w      io.Writer
	tty    bool
	format func(done, total int) string // the line, without newline
	start  time.Time
	last   time.Time // when a line was last shown; zero: never
	now    func() time.Time
}

// newProgress returns a progress report on w whose lines format makes.
func newProgress(w io.Writer, format func(done, total int) string) *progress {
	p := &progress{w: w, format: format, now: time.Now}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	p.start = p.now()
	return p
}

// update reports that done of total items are done.
func (p *progress) update(done, total int) {
	now := p.now()
	if now.Sub(p.start) < bulkProgressEvery {
		return
	}
	every := bulkProgressEvery
	if p.tty {
		every = bulkProgressTTY
	}
	if !p.last.IsZero() && now.Sub(p.last) < every {
		return
	}
	p.last = now
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", p.format(done, total))
		return
	}
	fmt.Fprintln(p.w, p.format(done, total))
}

// done ends the report; on a terminal it clears the progress line.
func (p *progress) done() {
	if p.tty && !p.last.IsZero() {
		fmt.Fprint(p.w, "\r\033[K")
	}
	p.last = time.Time{}
}

// bulkTally counts the outcomes of a bulk operation for its final report.
type bulkTally struct {
	ok       int
	notFound []string
	failed   []string
}

// summary is the final line: head, such as "deleted 498 messages",
// followed by the failures: ", 2 not found (x, y)".
func (t *bulkTally) summary(head string) string {
	var b strings.Builder
	b.WriteString(head)
	if n := len(t.notFound); n > 0 {
		fmt.Fprintf(&b, ", %d not found (%s)", n, someIDs(t.notFound))
	}
	if n := len(t.failed); n > 0 {
		fmt.Fprintf(&b, ", %d failed (%s)", n, someIDs(t.failed))
	}
	return b.String()
}

// someIDs lists up to bulkListMax IDs.
func someIDs(ids []string) string {
	if len(ids) <= bulkListMax {
		return strings.Join(cleanAll(ids), ", ")
	}
	return strings.Join(cleanAll(ids[:bulkListMax]), ", ") + fmt.Sprintf(", and %d more", len(ids)-bulkListMax)
}

func cleanAll(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = clean(id)
	}
	return out
}

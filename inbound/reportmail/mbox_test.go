package reportmail

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

func TestRPT08_MboxSplit(t *testing.T) {
	type msg struct {
		data string
		err  error
	}
	collect := func(in string, max int64) []msg {
		var out []msg
		for m, err := range Mbox(strings.NewReader(in), max) {
			out = append(out, msg{string(m), err})
		}
		return out
	}
	long := strings.Repeat("x", 100<<10) // longer than the read buffer
	tests := []struct {
		name string
		in   string
		max  int64
		want []msg
	}{
		{"two messages", "From a@b Sat Feb 28 10:00:00 2026\nSubject: 1\n\nbody 1\n\nFrom c@d Sat Feb 28 10:00:01 2026\nSubject: 2\n\nbody 2\n",
			1 << 20, []msg{{"Subject: 1\n\nbody 1\n", nil}, {"Subject: 2\n\nbody 2\n", nil}}},
		{"escaped From lines", "From a@b Sat Feb 28 10:00:00 2026\nSubject: 1\n\n>From here\n>>From there\nFrom the middle of a paragraph\n",
			1 << 20, []msg{{"Subject: 1\n\nFrom here\n>From there\nFrom the middle of a paragraph\n", nil}}},
		{"separator without blank line before it", "From a@b Sat Feb 28 10:00:00 2026\nSubject: 1\n\nbody\nFrom c@d Sat Feb 28 10:00:01 2026\nSubject: 2\n\n",
			1 << 20, []msg{{"Subject: 1\n\nbody\n", nil}, {"Subject: 2\n", nil}}},
		{"CRLF", "From a@b Sat Feb 28 10:00:00 2026\r\nSubject: 1\r\n\r\nbody\r\n\r\nFrom c@d Sat Feb 28 10:00:01 2026\r\nSubject: 2\r\n",
			1 << 20, []msg{{"Subject: 1\r\n\r\nbody\r\n", nil}, {"Subject: 2\r\n", nil}}},
		{"oversize message skipped", "From a@b Sat Feb 28 10:00:00 2026\nSubject: big\n\n" + long + "\n\nFrom c@d Sat Feb 28 10:00:01 2026\nSubject: 2\n",
			50 << 10, []msg{{"", tlsrpt.ErrTooLarge}, {"Subject: 2\n", nil}}},
		{"long lines kept", "From a@b Sat Feb 28 10:00:00 2026\nSubject: long\n\n" + long + "\n",
			1 << 20, []msg{{"Subject: long\n\n" + long + "\n", nil}}},
		{"text before the first separator skipped", "junk\n\nFrom a@b Sat Feb 28 10:00:00 2026\nSubject: 1\n", 1 << 20, []msg{{"Subject: 1\n", nil}}},
		{"empty", "", 1 << 20, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(tt.in, tt.max)
			if len(got) != len(tt.want) {
				t.Fatalf("%d messages, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				if got[i].data != w.data || !errors.Is(got[i].err, w.err) || (w.err == nil) != (got[i].err == nil) {
					t.Errorf("message %d = %q, %v; want %q, %v", i, got[i].data, got[i].err, w.data, w.err)
				}
			}
		})
	}

	// A read error is reported once, after the message read so far.
	r := iotest.TimeoutReader(bytes.NewReader([]byte("From a@b Sat Feb 28 10:00:00 2026\nSubject: 1\n")))
	var errs int
	for _, err := range Mbox(iotest.OneByteReader(r), 1<<20) {
		if err != nil {
			errs++
		}
	}
	if errs > 1 {
		t.Errorf("%d errors", errs)
	}

	// The sample mailbox: four messages, the escaped line restored.
	var msgs [][]byte
	for m, err := range Mbox(bytes.NewReader(sample(t, "mailbox.mbox")), 1<<20) {
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) != 4 || !bytes.Contains(msgs[1], []byte("\nFrom the postmaster")) {
		t.Fatalf("%d messages; second:\n%s", len(msgs), msgs[1])
	}
}

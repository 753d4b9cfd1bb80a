package intake

// Regression suite for the DATA phase, talking raw SMTP over TCP so that
// the exact bytes on the wire (and how they are cut into writes) are under
// the test's control. It pins what the intake does today on top of
// go-smtp v0.25.1: what is stored for a given byte stream, which replies
// come back in which order, and where the limits bite. A faster DATA path
// must give the same results for every case here.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaysec/relay/queue"
)

// rawTimeout bounds every raw dialog: connect, replies and the whole run.
const rawTimeout = 5 * time.Second

var (
	rawFinal = regexp.MustCompile(`^[2-5][0-9][0-9]( |$)`)
	rawCont  = regexp.MustCompile(`^[2-5][0-9][0-9]-`)
)

// Commands of a plain transaction from a trusted client.
const (
	rawEHLO = "EHLO client.test\r\n"
	rawMAIL = "MAIL FROM:<a@example.org>\r\n"
	rawRCPT = "RCPT TO:<b@example.com>\r\n"
	rawDATA = "DATA\r\n"
	rawQUIT = "QUIT\r\n"
)

// rawStep is one write of a raw dialog.
type rawStep struct {
	// wait holds the write back until this many final replies (not
	// counting the greeting) have arrived.
	wait int
	// pause is slept before the write (after wait).
	pause time.Duration
	data  string
	// slow writes the first slow bytes of data one byte per write; chunk,
	// if set, writes the rest in pieces of chunk bytes. Small writes are
	// 1 ms apart (the connection has TCP_NODELAY, so each is a segment).
	slow, chunk int
	// hangup closes the connection after the write; halfClose shuts down
	// only the sending side, so that the replies can still be read.
	hangup, halfClose bool
}

// rawConn is a client connection speaking SMTP byte by byte.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dialRaw connects from the local address from to addr and reads the
// 220 greeting.
func dialRaw(t testing.TB, addr, from string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: rawTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(rawTimeout))
	rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	g, err := rc.readReply()
	if err != nil || !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	return rc
}

var errPartialReply = errors.New("connection closed inside a reply line")

// readReply reads one complete reply, possibly of several lines, and
// returns its last line without the CRLF.
func (rc *rawConn) readReply() (string, error) {
	for {
		line, err := rc.br.ReadString('\n')
		if err != nil {
			if line != "" && err == io.EOF {
				return "", fmt.Errorf("%w: %q", errPartialReply, line)
			}
			return "", err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return "", fmt.Errorf("reply line without CRLF: %q", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		switch {
		case rawCont.MatchString(line):
			continue
		case rawFinal.MatchString(line):
			return line, nil
		}
		return "", fmt.Errorf("malformed reply line %q", line)
	}
}

// cmd writes one command and reads its reply; for the steps before a
// dialog proper (STARTTLS).
func (rc *rawConn) cmd(line string) string {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, line); err != nil {
		rc.t.Fatalf("%q: %v", line, err)
	}
	reply, err := rc.readReply()
	if err != nil {
		rc.t.Fatalf("%q: %v", line, err)
	}
	return reply
}

// startTLS sends STARTTLS and continues the connection over TLS.
func (rc *rawConn) startTLS() {
	rc.t.Helper()
	if reply := rc.cmd("STARTTLS\r\n"); !strings.HasPrefix(reply, "220 ") {
		rc.t.Fatalf("STARTTLS: %q", reply)
	}
	if rc.br.Buffered() != 0 {
		rc.t.Fatal("data after the STARTTLS reply")
	}
	tc := tls.Client(rc.c, &tls.Config{InsecureSkipVerify: true, ServerName: "relay.test"})
	if err := tc.Handshake(); err != nil {
		rc.t.Fatal(err)
	}
	rc.c, rc.br = tc, bufio.NewReader(tc)
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// run plays steps and returns every final reply line that arrived after
// the greeting, in order. It reads until the server closes the connection
// (or the client hung up), or until want replies arrived if want > 0. A
// stalled dialog fails the test after rawTimeout; it never hangs.
func (rc *rawConn) run(steps []rawStep, want int) []string {
	t := rc.t
	t.Helper()
	rc.c.SetDeadline(time.Now().Add(rawTimeout))
	type result struct {
		line string
		err  error
	}
	ch := make(chan result)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := rc.readReply()
			select {
			case ch <- result{line, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		rc.c.Close()
		<-done
	}()

	var replies []string
	closed := false
	recv := func() {
		res := <-ch
		if res.err != nil {
			closed = true
			if !isClosedErr(res.err) {
				t.Errorf("after replies %q: %v", replies, res.err)
			}
			return
		}
		replies = append(replies, res.line)
	}
	broken := false // a write failed: the server is gone
	write := func(b string) {
		if broken {
			return
		}
		if _, err := io.WriteString(rc.c, b); err != nil {
			broken = true
			t.Logf("write after replies %q: %v", replies, err)
		}
	}
	for _, s := range steps {
		for !closed && len(replies) < s.wait {
			recv()
		}
		time.Sleep(s.pause)
		data := s.data
		for i := 0; i < s.slow && data != "" && !broken; i++ {
			write(data[:1])
			data = data[1:]
			time.Sleep(time.Millisecond)
		}
		for s.chunk > 0 && len(data) > s.chunk && !broken {
			write(data[:s.chunk])
			data = data[s.chunk:]
			time.Sleep(time.Millisecond)
		}
		if data != "" {
			write(data)
		}
		if s.hangup {
			return replies
		}
		if s.halfClose {
			if cw, ok := rc.c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}
	}
	for !closed && (want <= 0 || len(replies) < want) {
		recv()
	}
	return replies
}

// replyCodes returns the three-digit codes of replies.
func replyCodes(replies []string) string {
	codes := make([]string, len(replies))
	for i, r := range replies {
		codes[i] = r[:3]
	}
	return strings.Join(codes, " ")
}

// stripReceived returns the stored message without the Received header
// the relay put in front: everything after the first CRLF that is not
// followed by a tab (the header is folded with tabs).
func stripReceived(t testing.TB, stored string) string {
	t.Helper()
	if !strings.HasPrefix(stored, "Received: from ") {
		t.Fatalf("stored message does not start with Received: %q", stored[:min(len(stored), 80)])
	}
	for i := 0; ; {
		j := strings.Index(stored[i:], "\r\n")
		if j < 0 {
			t.Fatalf("Received header not terminated: %q", stored)
		}
		i += j + 2
		if i == len(stored) || stored[i] != '\t' {
			return stored[i:]
		}
	}
}

// readStored returns the message stored as id, Received header included.
func readStored(t testing.TB, q *queue.Queue, id string) string {
	t.Helper()
	f, err := q.Body(id)
	if err != nil {
		t.Fatalf("body of %s: %v", id, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("body of %s: %v", id, err)
	}
	return string(b)
}

// storedBodies returns, in the order of the replies, the stored message
// (Received header stripped) of every "250 ... queued as ID" reply, and
// checks that the queue holds no other message.
func storedBodies(t testing.TB, q *queue.Queue, replies []string) []string {
	t.Helper()
	var bodies []string
	ids := map[string]bool{}
	for _, r := range replies {
		_, id, ok := strings.Cut(r, " queued as ")
		if !ok || !strings.HasPrefix(r, "250 ") {
			continue
		}
		ids[id] = true
		bodies = append(bodies, stripReceived(t, readStored(t, q, id)))
	}
	msgs, err := q.List(queue.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !ids[m.ID] {
			t.Errorf("queue holds %s, which was not acknowledged in this dialog", m.ID)
		}
	}
	return bodies
}

// deliverRaw dials the relay from 127.0.0.2, writes script in one write
// (everything pipelined, without waiting for any reply), shuts down the
// sending side and reads until the server closes. It returns the final
// reply lines after the greeting and the stored messages of the 250
// "queued as" replies, Received header stripped, in reply order; the queue
// must hold no other message. For differential tests and fuzzing.
func deliverRaw(t *testing.T, r *testRelay, script []byte) (replies []string, bodies []string) {
	t.Helper()
	return deliverRawChunks(t, r, [][]byte{script}, 0)
}

// deliverRawChunks is deliverRaw with the script cut into several writes,
// pause apart.
func deliverRawChunks(t *testing.T, r *testRelay, chunks [][]byte, pause time.Duration) (replies []string, bodies []string) {
	t.Helper()
	rc := dialRaw(t, r.addr, "127.0.0.2")
	steps := make([]rawStep, len(chunks))
	for i, c := range chunks {
		steps[i] = rawStep{data: string(c)}
		if i > 0 {
			steps[i].pause = pause
		}
	}
	if len(steps) == 0 {
		steps = []rawStep{{}}
	}
	steps[len(steps)-1].halfClose = true
	replies = rc.run(steps, 0)
	return replies, storedBodies(t, r.q, replies)
}

// Write modes: how a script of units (one reply each) is put on the wire.
var rawModes = []string{"pipelined", "rfc2920", "lockstep", "split", "bytewise"}

// unitSteps turns units, each of which draws exactly one reply, into the
// writes of a mode:
//
//	pipelined: everything in one write, before any reply
//	rfc2920:   commands in one write up to DATA, wait for 354, then the
//	           body and the next commands in one write (RFC 2920 client)
//	lockstep:  one unit per write, each after the previous reply
//	split:     lockstep, bodies in about 50 writes (at least 5 bytes each)
//	bytewise:  lockstep, the first 50 bytes of bodies one byte per write
//
// A body is the unit after a DATA unit.
func unitSteps(mode string, units []string) []rawStep {
	if mode == "pipelined" {
		return []rawStep{{data: strings.Join(units, "")}}
	}
	var steps []rawStep
	for i, u := range units {
		isBody := i > 0 && strings.EqualFold(strings.TrimSpace(units[i-1]), "DATA")
		if mode == "rfc2920" {
			if i == 0 || isBody {
				steps = append(steps, rawStep{wait: i})
			}
			steps[len(steps)-1].data += u
			continue
		}
		s := rawStep{wait: i, data: u}
		if isBody {
			switch mode {
			case "split":
				s.chunk = max(5, len(u)/50)
			case "bytewise":
				s.slow = 50
			}
		}
		steps = append(steps, s)
	}
	return steps
}

// txn is one transaction from a@example.org to b@example.com with the
// given DATA body as sent (dot-stuffed, with the end marker).
func txn(body string) []string { return []string{rawMAIL, rawRCPT, rawDATA, body} }

func units(parts ...[]string) []string {
	var u []string
	for _, p := range parts {
		u = append(u, p...)
	}
	return u
}

func one(s string) []string { return []string{s} }

// rawCase is a dialog from 127.0.0.2 and what it must produce.
type rawCase struct {
	name   string
	units  []string
	codes  string   // reply codes after the greeting, space separated
	bodies []string // stored messages, Received header stripped
	modes  []string // nil: all of rawModes
}

// singleMessage is a case of one message and QUIT.
func singleMessage(name, wire, stored string) rawCase {
	return rawCase{name: name, units: units(one(rawEHLO), txn(wire), one(rawQUIT)),
		codes: "250 250 250 354 250 221", bodies: []string{stored}}
}

// clearQueue deletes every message, so that the next dialog on a shared
// relay starts from an empty queue.
func clearQueue(t testing.TB, q *queue.Queue) {
	msgs, err := q.List(queue.Filter{})
	if err != nil {
		t.Error(err)
	}
	for _, m := range msgs {
		if err := q.Delete(m.ID); err != nil {
			t.Error(err)
		}
	}
}

// startShared starts a relay for many dialogs in a row (no per-IP limit),
// with Options changed by mod.
func startShared(t *testing.T, mod func(*Options)) *testRelay {
	return startIntake(t, func(o *Options) {
		o.MaxConnectionsPerIP = 0
		if mod != nil {
			mod(o)
		}
	})
}

// runRawCases runs every case in every mode, one after the other on one
// relay; the queue is emptied after each dialog.
func runRawCases(t *testing.T, mod func(*Options), cases []rawCase) {
	r := startShared(t, mod)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			modes := tc.modes
			if modes == nil {
				modes = rawModes
			}
			for _, mode := range modes {
				t.Run(mode, func(t *testing.T) {
					t.Cleanup(func() { clearQueue(t, r.q) })
					rc := dialRaw(t, r.addr, "127.0.0.2")
					replies := rc.run(unitSteps(mode, tc.units), 0)
					if got := replyCodes(replies); got != tc.codes {
						t.Fatalf("replies %s, want %s\n%q", got, tc.codes, replies)
					}
					bodies := storedBodies(t, r.q, replies)
					if len(bodies) != len(tc.bodies) {
						t.Fatalf("stored %d messages, want %d: %q", len(bodies), len(tc.bodies), bodies)
					}
					for i := range bodies {
						if bodies[i] != tc.bodies[i] {
							t.Errorf("message %d stored as\n%q\nwant\n%q", i, bodies[i], tc.bodies[i])
						}
					}
				})
			}
		})
	}
}

// TestSMTP03_BodyStoredExactly: what go-smtp's DATA reader makes of
// regular and dot-stuffed bodies, in every write mode.
func TestSMTP03_BodyStoredExactly(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_=+!@#$%^&*()[]{}<>\r\n..dot\r\n", 50) // ~5 kB, crosses the 4 kB read buffer
	cases := []rawCase{
		singleMessage("simple", "Subject: s\r\n\r\nhello\r\n.\r\n", "Subject: s\r\n\r\nhello\r\n"),
		singleMessage("dot-stuffed",
			"Subject: d\r\n\r\n..leading\r\n..\r\n...\r\n....\r\nmid.dot\r\ntrailing.\r\n.\r\n",
			"Subject: d\r\n\r\n.leading\r\n.\r\n..\r\n...\r\nmid.dot\r\ntrailing.\r\n"),
		singleMessage("first line stuffed dot", "..From: x\r\n\r\nb\r\n.\r\n", ".From: x\r\n\r\nb\r\n"),
		// A leading dot is removed even when it was not doubled.
		singleMessage("first line unstuffed dot", ".From: x\r\n\r\nb\r\n.\r\n", "From: x\r\n\r\nb\r\n"),
		singleMessage("lone dots unstuffed mid-message", "a\r\n.x\r\n.\r\n", "a\r\nx\r\n"),
		singleMessage("empty message", ".\r\n", ""),
		singleMessage("one empty line", "\r\n.\r\n", "\r\n"),
		singleMessage("no header", "just text\r\n.\r\n", "just text\r\n"),
		singleMessage("8-bit and NUL", "Subject: \xc3\xa9\r\n\r\n\x00\xff\x7f\x80\r\n.\r\n", "Subject: \xc3\xa9\r\n\r\n\x00\xff\x7f\x80\r\n"),
		singleMessage("trailing white space", "a \t\r\n \r\n\t\r\n.\r\n", "a \t\r\n \r\n\t\r\n"),
		singleMessage("commands as content",
			"Subject: c\r\n\r\nDATA\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nRSET\r\nQUIT\r\n..\r\nQUIT\r\n.\r\n",
			"Subject: c\r\n\r\nDATA\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nRSET\r\nQUIT\r\n.\r\nQUIT\r\n"),
		singleMessage("5 kB", "Subject: big\r\n\r\n"+big+".\r\n", "Subject: big\r\n\r\n"+strings.ReplaceAll(big, "\r\n..dot", "\r\n.dot")),
		{name: "lower-case data", units: []string{rawEHLO, rawMAIL, rawRCPT, "data\r\n", "x\r\n.\r\n", rawQUIT},
			codes: "250 250 250 354 250 221", bodies: []string{"x\r\n"}},
		{name: "mixed-case Data", units: []string{rawEHLO, "mail FROM:<a@example.org>\r\n", "Rcpt TO:<b@example.com>\r\n", "Data\r\n", "x\r\n.\r\n", "quit\r\n"},
			codes: "250 250 250 354 250 221", bodies: []string{"x\r\n"}},
		// textproto accepts a bare LF as the end of a command line.
		{name: "DATA ended by bare LF", units: []string{rawEHLO, rawMAIL, rawRCPT, "DATA\n", "x\r\n.\r\n", rawQUIT},
			codes: "250 250 250 354 250 221", bodies: []string{"x\r\n"}},
		{name: "HELO instead of EHLO", units: []string{"HELO client.test\r\n", rawMAIL, rawRCPT, rawDATA, "x\r\n.\r\n", rawQUIT},
			codes: "250 250 250 354 250 221", bodies: []string{"x\r\n"}},
		// BDAT (CHUNKING is advertised): no dot-stuffing, stored as sent.
		{name: "BDAT", units: []string{rawEHLO, rawMAIL, rawRCPT, "BDAT 12 LAST\r\n..x\r\n.\r\nyz\r\n", rawQUIT},
			codes: "250 250 250 250 221", bodies: []string{"..x\r\n.\r\nyz\r\n"}},
		{name: "BDAT in two chunks", units: []string{rawEHLO, rawMAIL, rawRCPT, "BDAT 3\r\n.\r\n", "BDAT 0 LAST\r\n", rawQUIT},
			codes: "250 250 250 250 250 221", bodies: []string{".\r\n"}},
	}
	runRawCases(t, nil, cases)
}

// TestSMTP03_IrregularInput pins what go-smtp stores for bodies that are
// not clean CRLF text. Its DATA reader (a copy of net/textproto's, without
// the CRLF -> LF rewrite) only knows a line start after CRLF: a bare LF,
// or CR CR LF, does not start a line, so a dot after it is content and
// neither unstuffed nor an end marker. A leading dot is removed before
// whatever follows, and ".\r" then anything but LF loses both bytes.
func TestSMTP03_IrregularInput(t *testing.T) {
	t.Parallel()
	cases := []rawCase{
		singleMessage("bare LF", "a\nb\r\n.\r\n", "a\nb\r\n"),
		singleMessage("bare CR", "a\rb\r\n.\r\n", "a\rb\r\n"),
		singleMessage("CR CR LF", "a\r\r\nb\r\n.\r\n", "a\r\r\nb\r\n"),
		singleMessage("LF CR LF", "a\n\r\nb\r\n.\r\n", "a\n\r\nb\r\n"),
		singleMessage("bare LF then dot line", "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n"),
		singleMessage("bare LF then stuffed dot", "a\n..b\r\n.\r\n", "a\n..b\r\n"),
		singleMessage("CR CR LF then dot line", "a\r\r\n.\r\nb\r\n.\r\n", "a\r\r\n.\r\nb\r\n"),
		singleMessage("bare LF as end marker", "a\r\n.\n.\r\n.\r\n", "a\r\n\n.\r\n"),
		singleMessage("dot CR CR LF", "a\r\n.\r\r\n.\r\nb\r\n.\r\n", "a\r\n\r\n.\r\nb\r\n"),
		singleMessage("dot CR then other byte", "a\r\n.\rX\r\n.\r\n", "a\r\nX\r\n"),
		singleMessage("dot LF", ".\nx\r\n.\r\n", "\nx\r\n"),
		singleMessage("dot space", "a\r\n. \r\n.\r\n", "a\r\n \r\n"),
		singleMessage("bare LF only lines", "a\nb\nc\n\r\n.\r\n", "a\nb\nc\n\r\n"),
		singleMessage("bare CR before end", "a\r\r\n.\r\n.\r\n", "a\r\r\n.\r\n"),
		singleMessage("CR LF CR LF dot", "a\r\n\r\n..\r\n\r\n.\r\n", "a\r\n\r\n.\r\n\r\n"),
	}
	runRawCases(t, nil, cases)
}

// TestSMTP03_MultipleTransactionsPerConnection: transactions one after
// the other on one connection, also all pipelined in one write before any
// reply (a client that does not wait for 354).
func TestSMTP03_MultipleTransactionsPerConnection(t *testing.T) {
	t.Parallel()
	five := units(one(rawEHLO))
	var fiveBodies []string
	for i := range 5 {
		b := fmt.Sprintf("Subject: %d\r\n\r\n.%d\r\n", i, i)
		five = append(five, txn(fmt.Sprintf("Subject: %d\r\n\r\n..%d\r\n.\r\n", i, i))...)
		fiveBodies = append(fiveBodies, b)
	}
	five = append(five, rawQUIT)
	cases := []rawCase{
		{name: "two", units: units(one(rawEHLO), txn("Subject: 1\r\n\r\none\r\n.\r\n"), txn("Subject: 2\r\n\r\n..two\r\n.\r\n"), one(rawQUIT)),
			codes:  "250 250 250 354 250 250 250 354 250 221",
			bodies: []string{"Subject: 1\r\n\r\none\r\n", "Subject: 2\r\n\r\n.two\r\n"}},
		{name: "five", units: five,
			codes:  "250" + strings.Repeat(" 250 250 354 250", 5) + " 221",
			bodies: fiveBodies},
		{name: "empty then non-empty", units: units(one(rawEHLO), txn(".\r\n"), txn("x\r\n.\r\n"), one(rawQUIT)),
			codes:  "250 250 250 354 250 250 250 354 250 221",
			bodies: []string{"", "x\r\n"}},
		{name: "RSET and NOOP between", units: units(one(rawEHLO), txn("a\r\n.\r\n"), one("RSET\r\n"), one("NOOP\r\n"), txn("b\r\n.\r\n"), one(rawQUIT)),
			codes:  "250 250 250 354 250 250 250 250 250 354 250 221",
			bodies: []string{"a\r\n", "b\r\n"}},
		{name: "two recipients", units: units(one(rawEHLO), []string{rawMAIL, rawRCPT, "RCPT TO:<c@example.net>\r\n", rawDATA, "two\r\n.\r\n"}, one(rawQUIT)),
			codes:  "250 250 250 250 354 250 221",
			bodies: []string{"two\r\n"}},
		{name: "irregular then regular", units: units(one(rawEHLO), txn("a\n.\r\n.\r\n"), txn("b\r\n.\r\n"), one(rawQUIT)),
			codes:  "250 250 250 354 250 250 250 354 250 221",
			bodies: []string{"a\n.\r\n", "b\r\n"}},
	}
	runRawCases(t, nil, cases)
}

// TestSMTP03_EndMarkerSplitAcrossWrites cuts the end of a message at
// every position into two writes with a pause between them, so that the
// server sees the end marker (and stuffed dots) in pieces.
func TestSMTP03_EndMarkerSplitAcrossWrites(t *testing.T) {
	t.Parallel()
	wires := []struct{ name, wire, stored string }{
		{"stuffed", "Subject: x\r\n\r\n...\r\n..\r\nz\r\n.\r\n", "Subject: x\r\n\r\n..\r\n.\r\nz\r\n"},
		{"irregular", "a\n.\r\n.\rX\r\nb\r\r\n.\r\nc\r\n.\r\n", "a\n.\r\nX\r\nb\r\r\n.\r\nc\r\n"},
	}
	for _, w := range wires {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			r := startIntake(t, nil)
			for cut := 1; cut < len(w.wire); cut++ {
				pause := 2 * time.Millisecond
				if cut >= len(w.wire)-5 {
					pause = 30 * time.Millisecond // inside the final CRLF . CRLF
				}
				rc := dialRaw(t, r.addr, "127.0.0.2")
				steps := []rawStep{
					{data: rawEHLO + rawMAIL + rawRCPT + rawDATA},
					{wait: 4, data: w.wire[:cut]},
					{pause: pause, data: w.wire[cut:] + rawQUIT},
				}
				replies := rc.run(steps, 0)
				if got := replyCodes(replies); got != "250 250 250 354 250 221" {
					t.Fatalf("cut at %d (%q | %q): replies %q", cut, w.wire[:cut], w.wire[cut:], replies)
				}
				_, id, _ := strings.Cut(replies[4], " queued as ")
				if got := stripReceived(t, readStored(t, r.q, id)); got != w.stored {
					t.Errorf("cut at %d: stored %q, want %q", cut, got, w.stored)
				}
			}
			if st, _ := r.q.Stats(); st.Messages != len(w.wire)-1 {
				t.Errorf("queue holds %d messages, want %d", st.Messages, len(w.wire)-1)
			}
		})
	}
}

// TestSMTP03_DataRefused: DATA without a recipient is refused by go-smtp
// itself (502, it never reaches the session) and the session goes on;
// a client that sends its body anyway has every body line taken as a
// command, and after the fourth syntax error go-smtp hangs up.
func TestSMTP03_DataRefused(t *testing.T) {
	t.Parallel()
	type refusedCase struct {
		name   string
		from   string
		steps  []rawStep
		codes  string
		bodies []string
	}
	lockstep := func(units ...string) []rawStep { return unitSteps("lockstep", units) }
	cases := []refusedCase{
		{name: "untrusted client, lockstep", from: "127.0.0.1",
			steps: lockstep(rawEHLO, rawMAIL, rawRCPT, rawDATA, "RSET\r\n", rawMAIL, rawRCPT, rawDATA, "NOOP\r\n", rawQUIT),
			codes: "250 250 554 502 250 250 554 502 250 221"},
		{name: "untrusted client, body sent blindly", from: "127.0.0.1",
			steps: unitSteps("pipelined", []string{rawEHLO, rawMAIL, rawRCPT, rawDATA, "Subject: x\r\n\r\nhello\r\n.\r\n", rawQUIT}),
			// Subject: x -> 501 Bad command, "" -> 500 bad syntax,
			// hello -> 501, "." -> 501 then 500 Too many errors, closed.
			codes: "250 250 554 502 501 500 501 501 500"},
		{name: "untrusted client, body is commands", from: "127.0.0.1",
			steps: unitSteps("pipelined", []string{rawEHLO, rawMAIL, rawRCPT, rawDATA, "NOOP\r\nMAIL FROM:<x@example.org>\r\n.\r\n", rawQUIT}),
			// A second MAIL is accepted (go-smtp has no "nested MAIL" check).
			codes: "250 250 554 502 250 250 501 221"},
		{name: "no RCPT", from: "127.0.0.2",
			steps:  lockstep(rawEHLO, rawMAIL, rawDATA, rawRCPT, rawDATA, "x\r\n.\r\n", rawQUIT),
			codes:  "250 250 502 250 354 250 221",
			bodies: []string{"x\r\n"}},
		{name: "no MAIL", from: "127.0.0.2",
			steps:  lockstep(rawEHLO, rawDATA, rawMAIL, rawRCPT, rawDATA, "x\r\n.\r\n", rawQUIT),
			codes:  "250 502 250 250 354 250 221",
			bodies: []string{"x\r\n"}},
		{name: "DATA with argument", from: "127.0.0.2",
			steps:  lockstep(rawEHLO, rawMAIL, rawRCPT, "DATA x\r\n", rawDATA, "x\r\n.\r\n", rawQUIT),
			codes:  "250 250 250 501 354 250 221",
			bodies: []string{"x\r\n"}},
		{name: "DATA with trailing space", from: "127.0.0.2",
			steps:  lockstep(rawEHLO, rawMAIL, rawRCPT, "DATA \r\n", rawDATA, "x\r\n.\r\n", rawQUIT),
			codes:  "250 250 250 501 354 250 221",
			bodies: []string{"x\r\n"}},
		{name: "second DATA after the message", from: "127.0.0.2",
			steps:  lockstep(rawEHLO, rawMAIL, rawRCPT, rawDATA, "x\r\n.\r\n", rawDATA, rawQUIT),
			codes:  "250 250 250 354 250 502 221",
			bodies: []string{"x\r\n"}},
		{name: "no EHLO", from: "127.0.0.2",
			steps: lockstep(rawMAIL, rawRCPT, rawDATA, "NOOP\r\n", rawQUIT),
			codes: "502 502 502 250 221"},
	}
	r := startShared(t, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { clearQueue(t, r.q) })
			rc := dialRaw(t, r.addr, tc.from)
			replies := rc.run(tc.steps, 0)
			if got := replyCodes(replies); got != tc.codes {
				t.Fatalf("replies %s, want %s\n%q", got, tc.codes, replies)
			}
			bodies := storedBodies(t, r.q, replies)
			if strings.Join(bodies, "|") != strings.Join(tc.bodies, "|") || len(bodies) != len(tc.bodies) {
				t.Fatalf("stored %q, want %q", bodies, tc.bodies)
			}
		})
	}
}

// TestSMTP03_ClientDisconnectsInBody: nothing is stored for a message cut
// off before its end marker, and the server goes on serving.
func TestSMTP03_ClientDisconnectsInBody(t *testing.T) {
	t.Parallel()
	prefixes := []struct{ name, data string }{
		{"right after 354", ""},
		{"mid-line", "Subject: x\r\n\r\nhal"},
		{"after CRLF", "Subject: x\r\n\r\nhalf\r\n"},
		{"after CRLF dot", "Subject: x\r\n\r\nhalf\r\n."},
		{"after CRLF dot CR", "Subject: x\r\n\r\nhalf\r\n.\r"},
		{"after stuffed dot line", "Subject: x\r\n\r\n..\r\n"},
		{"after bare LF dot CRLF", "Subject: x\r\n\r\na\n.\r\n"},
	}
	r := startShared(t, nil)
	for _, p := range prefixes {
		for _, half := range []bool{false, true} {
			name := p.name + "/hangup"
			if half {
				name = p.name + "/half-close"
			}
			t.Run(name, func(t *testing.T) {
				t.Cleanup(func() { clearQueue(t, r.q) })
				rc := dialRaw(t, r.addr, "127.0.0.2")
				steps := unitSteps("lockstep", []string{rawEHLO, rawMAIL, rawRCPT, rawDATA, p.data})
				last := &steps[len(steps)-1]
				last.hangup, last.halfClose = !half, half
				replies := rc.run(steps, 0)
				want := "250 250 250 354"
				if half {
					// The session's Data gets io.ErrUnexpectedEOF, which
					// go-smtp answers with 554 before it sees the EOF.
					want += " 554"
				}
				if got := replyCodes(replies); got != want {
					t.Fatalf("replies %s, want %s\n%q", got, want, replies)
				}
				if half && !strings.Contains(replies[4], "unexpected EOF") {
					t.Errorf("reply %q", replies[4])
				}
				// A new connection is served; the cut message never shows.
				rc = dialRaw(t, r.addr, "127.0.0.2")
				replies = rc.run(unitSteps("pipelined", units(one(rawEHLO), txn("next\r\n.\r\n"), one(rawQUIT))), 0)
				if got := replyCodes(replies); got != "250 250 250 354 250 221" {
					t.Fatalf("next connection: %q", replies)
				}
				if bodies := storedBodies(t, r.q, replies); len(bodies) != 1 || bodies[0] != "next\r\n" {
					t.Fatalf("stored %q", bodies)
				}
			})
		}
	}
}

// TestSMTP03_STARTTLSThenMessage: the body path over TLS.
func TestSMTP03_STARTTLSThenMessage(t *testing.T) {
	t.Parallel()
	r := startShared(t, func(o *Options) { o.TLS = TLSStartTLS })
	for _, mode := range rawModes {
		t.Run(mode, func(t *testing.T) {
			t.Cleanup(func() { clearQueue(t, r.q) })
			rc := dialRaw(t, r.addr, "127.0.0.2")
			if reply := rc.cmd(rawEHLO); !strings.HasPrefix(reply, "250 ") {
				t.Fatalf("EHLO: %q", reply)
			}
			rc.startTLS()
			u := units(one(rawEHLO), txn("Subject: tls\r\n\r\n..dot\r\na\nb\r\n.\r\n"), txn(".\r\n"), one(rawQUIT))
			replies := rc.run(unitSteps(mode, u), 0)
			if got := replyCodes(replies); got != "250 250 250 354 250 250 250 354 250 221" {
				t.Fatalf("replies %q", replies)
			}
			bodies := storedBodies(t, r.q, replies)
			if len(bodies) != 2 || bodies[0] != "Subject: tls\r\n\r\n.dot\r\na\nb\r\n" || bodies[1] != "" {
				t.Fatalf("stored %q", bodies)
			}
			_, id, _ := strings.Cut(replies[4], " queued as ")
			if b := readStored(t, r.q, id); !strings.Contains(b, "\r\n\t(using TLS") || !strings.Contains(b, " with ESMTPS id ") {
				t.Errorf("Received header does not show TLS: %q", b)
			}
		})
	}
}

// TestSUB04_MessageSizeBoundary with max_message_bytes = 1000: the limit
// counts the message as stored (after unstuffing, without the Received
// header), and a message of exactly the limit is refused (go-smtp stops
// once it has passed on limit bytes and does not look for the end marker
// first). After 552 the rest of the message is drained and the session
// goes on. MAIL SIZE= is refused only above the limit.
func TestSUB04_MessageSizeBoundary(t *testing.T) {
	t.Parallel()
	const limit = 1000
	msg := func(n int) string { // n bytes as stored, CRLF lines
		var b strings.Builder
		b.WriteString("Subject: size\r\n\r\n")
		for rest := n - b.Len(); rest > 0; rest = n - b.Len() {
			w := rest - 2
			if rest >= 74 {
				w = 70
			}
			b.WriteString(strings.Repeat("x", w) + "\r\n")
		}
		s := b.String()
		if len(s) != n || !strings.HasSuffix(s, "\r\n") {
			panic(fmt.Sprintf("msg(%d) is %d bytes", n, len(s)))
		}
		return s
	}
	stuffed := func(n int) (wire, stored string) { // every line a stuffed dot line
		for rest := n; rest > 0; rest = n - len(stored) {
			k := rest - 3
			if rest >= 56 {
				k = 50
			}
			stored += "." + strings.Repeat("d", k) + "\r\n"
			wire += ".." + strings.Repeat("d", k) + "\r\n"
		}
		return wire, stored
	}
	s999w, s999 := stuffed(limit - 1)
	s1000w, _ := stuffed(limit)
	small := "Subject: after\r\n\r\nok\r\n"
	cases := []rawCase{
		singleMessage("limit-2", msg(limit-2)+".\r\n", msg(limit-2)),
		singleMessage("limit-1", msg(limit-1)+".\r\n", msg(limit-1)),
		{name: "limit", units: units(one(rawEHLO), txn(msg(limit)+".\r\n"), txn(small+".\r\n"), one(rawQUIT)),
			codes: "250 250 250 354 552 250 250 354 250 221", bodies: []string{small}},
		{name: "limit+1", units: units(one(rawEHLO), txn(msg(limit+1)+".\r\n"), txn(small+".\r\n"), one(rawQUIT)),
			codes: "250 250 250 354 552 250 250 354 250 221", bodies: []string{small}},
		{name: "twice the limit", units: units(one(rawEHLO), txn(msg(2*limit)+".\r\n"), txn(small+".\r\n"), one(rawQUIT)),
			codes: "250 250 250 354 552 250 250 354 250 221", bodies: []string{small}},
		// On the wire well over the limit, as stored one byte under it.
		singleMessage("stuffed limit-1", s999w+".\r\n", s999),
		{name: "stuffed limit", units: units(one(rawEHLO), txn(s1000w+".\r\n"), txn(small+".\r\n"), one(rawQUIT)),
			codes: "250 250 250 354 552 250 250 354 250 221", bodies: []string{small}},
		// Bare LF and CR count as stored bytes like any other.
		singleMessage("irregular limit-1", strings.Repeat("a\n", 497)+"b\rc\r\n.\r\n", strings.Repeat("a\n", 497)+"b\rc\r\n"),
		{name: "MAIL SIZE", units: []string{rawEHLO, "MAIL FROM:<a@example.org> SIZE=1001\r\n", "MAIL FROM:<a@example.org> SIZE=1000\r\n", rawRCPT, rawDATA, msg(limit) + ".\r\n", rawQUIT},
			codes: "250 552 250 250 354 552 221"},
	}
	if len(s999w) <= limit || len(s999) != limit-1 {
		t.Fatalf("stuffed message: wire %d, stored %d", len(s999w), len(s999))
	}
	runRawCases(t, func(o *Options) { o.MaxMessageBytes = limit }, cases)
}

// TestSUB04_LineLengthBoundary with max_line_length = 100. go-smtp counts
// raw bytes as they come off the socket, below its read buffer: a line may
// have 100 bytes with its CRLF (a stuffed dot counts), and only LF ends a
// line. An over-long line fails the whole socket read it arrived in: 552
// for the message (nothing stored), then 500 and the connection is
// closed. When the whole dialog arrives in one read (pipelined), not even
// EHLO is answered: the only reply is the 500.
func TestSUB04_LineLengthBoundary(t *testing.T) {
	t.Parallel()
	const limit = 100
	x := func(n int) string { return strings.Repeat("x", n) }
	tooLong := func(name, line string) []rawCase {
		u := units(one(rawEHLO), txn("Subject: long\r\n\r\n"+line+".\r\n"), one(rawQUIT))
		return []rawCase{
			{name: name, units: u, codes: "250 250 250 354 552 500", modes: []string{"rfc2920", "lockstep", "split", "bytewise"}},
			{name: name + " pipelined", units: u, codes: "500", modes: []string{"pipelined"}},
		}
	}
	cases := []rawCase{
		singleMessage("limit", "Subject: long\r\n\r\n"+x(limit-2)+"\r\n.\r\n", "Subject: long\r\n\r\n"+x(limit-2)+"\r\n"),
		singleMessage("limit as first body line", x(limit-2)+"\r\n.\r\n", x(limit-2)+"\r\n"),
		// CR CR LF is no line end for the DATA reader, hence the extra CRLF.
		singleMessage("limit with CR CR LF", "Subject: long\r\n\r\n"+x(limit-3)+"\r\r\n\r\n.\r\n", "Subject: long\r\n\r\n"+x(limit-3)+"\r\r\n\r\n"),
		singleMessage("bare LF splits lines", "Subject: long\r\n\r\n"+x(60)+"\n"+x(60)+"\r\n.\r\n", "Subject: long\r\n\r\n"+x(60)+"\n"+x(60)+"\r\n"),
		singleMessage("bare CR does not split", "Subject: long\r\n\r\n"+x(40)+"\r"+x(57)+"\r\n.\r\n", "Subject: long\r\n\r\n"+x(40)+"\r"+x(57)+"\r\n"),
		singleMessage("stuffed dot at limit", "Subject: long\r\n\r\n."+x(limit-3)+"\r\n.\r\n", "Subject: long\r\n\r\n"+x(limit-3)+"\r\n"),
	}
	cases = append(cases, tooLong("limit+1", x(limit-1)+"\r\n")...)
	cases = append(cases, tooLong("stuffed dot over limit", ".."+x(limit-3)+"\r\n")...)
	cases = append(cases, tooLong("bare CR does not split over limit", x(50)+"\r"+x(50)+"\r\n")...)
	far := tooLong("far over", x(5000)+"\r\n")
	far[0].modes = []string{"rfc2920", "lockstep"}
	cases = append(cases, far...)
	runRawCases(t, func(o *Options) { o.MaxLineLength = limit; o.MaxMessageBytes = 100000 }, cases)
}

// TestRawDeliverHelper shows deliverRaw on a script without QUIT: the
// half-close ends the session after the last reply.
func TestRawDeliverHelper(t *testing.T) {
	t.Parallel()
	r := startIntake(t, nil)
	replies, bodies := deliverRaw(t, r, []byte(rawEHLO+rawMAIL+rawRCPT+rawDATA+"..a\r\nb\n.\r\n.\r\n"))
	if got := replyCodes(replies); got != "250 250 250 354 250" {
		t.Fatalf("replies %q", replies)
	}
	if len(bodies) != 1 || bodies[0] != ".a\r\nb\n.\r\n" {
		t.Fatalf("bodies %q", bodies)
	}
}

package intake

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// The fast DATA path.
//
// go-smtp decodes the message one byte at a time (dot-stuffing and the
// end-of-data line, RFC 5321 §4.5.2), under a reader that checks line
// lengths one byte at a time: on 100 KiB messages that was close to half
// of the relay's CPU. A plaintext session's connection is therefore a
// dataConn, which passes bytes to go-smtp unchanged and watches the
// command lines go by. When go-smtp calls Data for the last DATA line it
// was given and holds nothing after it (the client waited for 354, as RFC
// 2920 §3.1 requires), Data reads the message from the socket itself,
// whole lines at a time. What it cannot take as go-smtp would — a line
// that does not end in CRLF or holds another CR, a line over the length
// limit, the line that reaches the size limit — it hands back, from the
// start of that line, and go-smtp's reader decodes the rest as it always
// did. At the end it gives go-smtp the end-of-data line and whatever the
// client sent after it, so that go-smtp's own read to the end of the data
// stops at once and its next command comes from the same bytes.
//
// The two paths differ only where go-smtp's answer depends on timing. A
// client that times out or leaves in DATA: the fast path closes the
// session after its reply, where go-smtp would wait for another command.
// A line over the limit that follows the message in the same read: go-smtp
// refuses the message with it (its line check fails the whole read); the
// fast path accepts the message, and go-smtp refuses the line.
//
// Implicit-TLS listeners do not get a dataConn (go-smtp learns that a
// session is encrypted from its connection's type), and a session that
// says STARTTLS or BDAT leaves the fast path for good.

// dataListener gives go-smtp dataConns.
type dataListener struct {
	net.Listener
	bufs *sync.Pool // *[]byte of dataBufSize, for the dataConns' fast reads
}

func (l dataListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &dataConn{Conn: c, bufs: l.bufs}, nil
}

// dataConn is the connection go-smtp reads a plaintext session from. It is
// used by one session goroutine at a time.
type dataConn struct {
	net.Conn
	bufs *sync.Pool

	// pending was read from Conn by the fast path and is given to go-smtp
	// before anything else; err, once set, is returned after it.
	pending []byte
	err     error

	// What go-smtp has been given, line by line (lines end at LF, as
	// go-smtp splits them).
	off       bool    // a STARTTLS or BDAT line went by: never fast again
	lineLen   int     // bytes of the current line so far
	prefix    [4]byte // its first bytes
	dataLines int     // lines that begin with "DATA" in any case
	atDataEnd bool    // the last byte given ends such a line
	dataCalls int     // Data calls so far
}

// Read gives go-smtp pending bytes first, then the connection's.
func (c *dataConn) Read(p []byte) (int, error) {
	var n int
	var err error
	switch {
	case len(c.pending) > 0:
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	case c.err != nil:
		return 0, c.err
	default:
		n, err = c.Conn.Read(p)
	}
	if !c.off && n > 0 {
		c.watch(p[:n])
	}
	return n, err
}

// watch follows the lines given to go-smtp. go-smtp takes a line's first
// four bytes, upper-cased, as its command, so counting every line that
// starts with "DATA" counts every DATA command, and more (a DATA line
// inside a message go-smtp decoded itself, a refused DATA): a count that
// is too high only turns the fast path off.
func (c *dataConn) watch(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		seg := b
		if i >= 0 {
			seg = b[:i+1]
		}
		if c.lineLen < len(c.prefix) {
			copy(c.prefix[c.lineLen:], seg)
		}
		c.lineLen += len(seg)
		b = b[len(seg):]
		if i < 0 {
			c.atDataEnd = false
			return
		}
		// A line shorter than its four-letter prefix and the LF is no
		// command that matters here.
		whole := c.lineLen > len(c.prefix)
		isData := whole && asciiEqualFold(c.prefix[:], "DATA")
		if isData {
			c.dataLines++
		}
		if whole && (asciiEqualFold(c.prefix[:], "STAR") || asciiEqualFold(c.prefix[:], "BDAT")) {
			// STARTTLS: from here go-smtp reads through TLS. BDAT
			// (RFC 3030): go-smtp reads chunks that are not lines, and
			// calls Data for them from another goroutine.
			c.off = true
		}
		c.lineLen = 0
		c.atDataEnd = isData && len(b) == 0
	}
}

func asciiEqualFold(b []byte, upper string) bool {
	for i := range b {
		if b[i]&^0x20 != upper[i] {
			return false
		}
	}
	return true
}

// startData is called once for every Data call, first thing. It reports
// whether go-smtp holds no byte past the DATA line it acts on: that line is
// the last byte it was given, every DATA line it was given has had its
// Data call, and nothing was read past it.
func (c *dataConn) startData() bool {
	c.dataCalls++
	return !c.off && c.err == nil && len(c.pending) == 0 && c.atDataEnd && c.dataLines == c.dataCalls
}

// newDataBufs returns the pool of the fast path's read buffers.
func newDataBufs() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, dataBufSize); return &b }}
}

// dataBufSize is the fast path's read buffer, held while a session is in
// DATA (as much as the listener's read buffer and go-smtp's held before);
// a line that does not fit is handed back to go-smtp.
const dataBufSize = 32 << 10

// endOfData is what go-smtp is given when the fast path has read the whole
// message: its reader stops at this line.
var endOfData = []byte(".\r\n")

// dataLimits are the limits go-smtp would apply to the message.
type dataLimits struct {
	MaxBytes int64 // decoded bytes; the message must stay below it; 0: none
	MaxLine  int   // bytes per line, CRLF included; 0: none
	Timeout  time.Duration
}

// readData decodes the message into w. done reports that it read the
// end-of-data line; otherwise, without error, it handed the rest back to
// go-smtp from a line start, after n decoded bytes. A client error (time-out,
// lost connection) ends the session: go-smtp gets the same error next.
func (c *dataConn) readData(w io.Writer, lim dataLimits) (n int64, done bool, err error) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	start, end := 0, 0 // buf[start:end] is read and not yet decoded; start is a line start
	for {
		if start > 0 && start == end {
			start, end = 0, 0
		} else if end == len(buf) {
			if start == 0 {
				// A line longer than the buffer: go-smtp's to read (and
				// to refuse, unless the limit is above the buffer size).
				c.pending = bytes.Clone(buf[start:end])
				return n, false, nil
			}
			end = copy(buf, buf[start:end])
			start = 0
		}
		if lim.Timeout > 0 {
			c.Conn.SetReadDeadline(time.Now().Add(lim.Timeout))
		}
		nr, rerr := c.Conn.Read(buf[end:])
		end += nr
		var stop bool
		var werr error
		start, n, stop, done, werr = decodeLines(w, buf[:end], start, n, lim)
		switch {
		case werr != nil:
			// Let go-smtp read what is left of the message, from the
			// line whose write failed.
			c.pending = bytes.Clone(buf[start:end])
			return n, false, fmt.Errorf("%w: %w", errSpoolWrite, werr)
		case done:
			c.pending = append(append(make([]byte, 0, len(endOfData)+end-start), endOfData...), buf[start:end]...)
			return n, true, nil
		case stop:
			c.pending = bytes.Clone(buf[start:end])
			return n, false, nil
		case rerr != nil:
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			// go-smtp reads to the end of the data next, and then its
			// next command: both end here, and it closes the session
			// after Data's reply.
			c.err = io.EOF
			return n, false, rerr
		}
	}
}

// decodeLines decodes the complete lines of b from start, writing them to
// w with their leading dot removed. It returns where it stopped (a line
// start), the decoded count, and whether it stopped at a line go-smtp must
// read (stop), or after the end-of-data line (done).
func decodeLines(w io.Writer, b []byte, start int, n int64, lim dataLimits) (next int, total int64, stop, done bool, err error) {
	pos, span := start, start // b[span:pos] is decoded and not yet written
	flush := func() error {
		if pos > span {
			if _, err := w.Write(b[span:pos]); err != nil {
				return err
			}
		}
		return nil
	}
	for pos < len(b) {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			if lim.MaxLine > 0 && len(b)-pos > lim.MaxLine {
				stop = true
			}
			break
		}
		line := b[pos : pos+i+1]
		// Only a line ending in CRLF with no other CR is decoded here, so
		// that go-smtp's state after it (start of a line) is the state it
		// would be in had it read the line itself.
		if i == 0 || line[i-1] != '\r' || bytes.IndexByte(line[:i-1], '\r') >= 0 ||
			(lim.MaxLine > 0 && len(line) > lim.MaxLine) {
			stop = true
			break
		}
		size := int64(len(line))
		if line[0] == '.' {
			if len(line) == len(endOfData) { // RFC 5321 §4.1.1.4: end of data
				if err := flush(); err != nil {
					return pos, n, false, false, err
				}
				return pos + len(line), n, false, true, nil
			}
			// RFC 5321 §4.5.2: drop the leading dot.
			if err := flush(); err != nil {
				return pos, n, false, false, err
			}
			span = pos + 1
			size--
		}
		if lim.MaxBytes > 0 && n+size >= lim.MaxBytes {
			// go-smtp refuses a message once it reaches the limit; let
			// it decide, with what is left of the limit.
			stop = true
			break
		}
		n += size
		pos += len(line)
	}
	if err := flush(); err != nil {
		// The lines of b[span:pos] are lost; the caller refuses the
		// message, and go-smtp reads on from pos.
		return pos, n, false, false, err
	}
	return pos, n, stop, false, nil
}

// remainingLimit caps what go-smtp decodes after a hand-back, so that the
// message as a whole keeps go-smtp's size limit.
type remainingLimit struct {
	R io.Reader
	N int64
}

func (l *remainingLimit) Read(p []byte) (int, error) {
	if l.N <= 0 {
		return 0, smtp.ErrDataTooLarge
	}
	if int64(len(p)) > l.N {
		p = p[:l.N]
	}
	n, err := l.R.Read(p)
	l.N -= int64(n)
	return n, err
}

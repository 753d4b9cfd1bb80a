// Package smtpclient is the SMTP client the relay delivers mail with.
//
// It speaks RFC 5321 with the extensions an outbound relay needs:
// STARTTLS (RFC 3207), PIPELINING (RFC 2920), DSN parameters (RFC 3461),
// SMTPUTF8 (RFC 6531), REQUIRETLS (RFC 8689), SIZE (RFC 1870), 8BITMIME
// (RFC 6152) and enhanced status codes (RFC 2034, RFC 3463).
//
// Unlike a general-purpose client it leaves every policy decision to the
// caller: New only greets the server (EHLO with the caller's host name) so
// that the caller can inspect the advertised extensions and decide whether
// and how to call StartTLS with a tls.Config it built (DANE, MTA-STS or
// opportunistic). Send reports one reply per recipient so that a 5xx for
// one recipient fails only that recipient and a 4xx defers only that
// recipient.
//
// Every step runs under the RFC 5321 §4.5.3.2 timeout for that step
// (see Timeouts) and under the context passed to the method: cancelling the
// context closes the connection. Replies are read with a cap on line length
// and line count so a hostile server cannot exhaust memory, and message
// bodies are streamed, never loaded whole.
//
// A Client is not safe for concurrent use by several goroutines.
package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Timeouts bounds each step of an SMTP session (RFC 5321 §4.5.3.2). A zero
// (or negative) field means the RFC's value, given in brackets.
type Timeouts struct {
	// Greeting bounds the wait for the server's 220 greeting [5m].
	Greeting time.Duration
	// Command bounds each command and its reply: EHLO, STARTTLS (and its
	// handshake), MAIL, RCPT, RSET [5m].
	Command time.Duration
	// DataInit bounds the wait for the 354 reply to DATA [2m].
	DataInit time.Duration
	// DataBlock bounds each write of message data [3m].
	DataBlock time.Duration
	// DataTerm bounds the wait for the reply after the final "." [10m].
	DataTerm time.Duration
}

// withDefaults returns t with zero fields set to the RFC 5321 values.
func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Greeting, 5*time.Minute)
	def(&t.Command, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataTerm, 10*time.Minute)
	return t
}

// quitTimeout bounds QUIT, which is only a courtesy.
const quitTimeout = 10 * time.Second

// Client is one SMTP session with a server, created by New.
type Client struct {
	raw       net.Conn  // the TCP connection; closing it ends everything
	conn      net.Conn  // raw, or the *tls.Conn after StartTLS
	tlsConn   *tls.Conn // nil before StartTLS
	br        *bufio.Reader
	bw        *bufio.Writer
	copyBuf   []byte // bodies are copied to bw through it; made on first use
	t         Timeouts
	localName string

	greeting *Reply
	ehlo     bool              // the server accepted EHLO (not only HELO)
	ext      map[string]string // upper-case keyword -> parameters

	// Per operation state.
	ctx    context.Context // context of the running operation
	wTime  time.Duration   // timeout for each write in the running step
	broken error           // non-nil once the connection is unusable
	closed bool
}

// New reads the server's greeting on conn and introduces the client with
// EHLO localName, falling back to HELO when the server answers EHLO with a
// 5xx reply (RFC 5321 §3.2). A greeting other than 220, or a negative reply
// to EHLO/HELO, is returned as an error wrapping the *Reply (use
// errors.As). ctx bounds this call only: cancelling it while New runs
// closes conn. On any error New closes conn.
func New(ctx context.Context, conn net.Conn, localName string, t Timeouts) (*Client, error) {
	if localName == "" || strings.ContainsFunc(localName, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		conn.Close()
		return nil, fmt.Errorf("%w: EHLO name %q", ErrInvalidArgument, localName)
	}
	if n := len("EHLO " + localName + "\r\n"); n > maxCommandLine {
		conn.Close()
		return nil, fmt.Errorf("%w: EHLO line is %d octets, limit %d", ErrLineTooLong, n, maxCommandLine)
	}
	c := &Client{raw: conn, conn: conn, t: t.withDefaults(), localName: localName}
	c.setIO(conn)
	err := c.op(ctx, func() error {
		if err := c.readStep("greeting", c.t.Greeting, func(r *Reply) { c.greeting = r }); err != nil {
			return err
		}
		if c.greeting.Code != 220 {
			if c.greeting.Code != 421 { // 421: the server closes anyway
				c.quitQuietly()
			}
			return fmt.Errorf("greeting: %w", c.greeting)
		}
		return c.hello()
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// setIO (re)builds the buffered reader and writer on conn.
func (c *Client) setIO(conn net.Conn) {
	c.conn = conn
	c.br = bufio.NewReaderSize(conn, maxReplyLine)
	c.bw = bufio.NewWriterSize(deadlineWriter{c}, 32*1024)
}

// deadlineWriter writes to the client's current connection, setting a
// fresh write deadline (the running step's timeout, capped by the
// context's deadline) before every write, so that a long message body is
// bounded per block (RFC 5321 §4.5.3.2.5) rather than as a whole.
type deadlineWriter struct{ c *Client }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.c.conn.SetWriteDeadline(w.c.deadline(w.c.wTime)); err != nil {
		return 0, err
	}
	return w.c.conn.Write(p)
}

// deadline returns now+d, or the running operation's context deadline if
// that is earlier.
func (c *Client) deadline(d time.Duration) time.Time {
	t := time.Now().Add(d)
	if c.ctx != nil {
		if cd, ok := c.ctx.Deadline(); ok && cd.Before(t) {
			t = cd
		}
	}
	return t
}

// op runs f as one operation under ctx: cancelling ctx closes the
// connection, and an error from f that leaves the connection in an unknown
// state marks the client unusable.
func (c *Client) op(ctx context.Context, f func() error) error {
	if err := c.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.ctx = ctx
	raw := c.raw
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	err := f()
	if !stop() {
		// The connection was closed because ctx ended.
		c.markBroken(ctx.Err())
		if err != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
	}
	c.ctx = nil
	return err
}

// usable returns nil when commands may be sent.
func (c *Client) usable() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.broken != nil:
		return fmt.Errorf("%w: earlier error: %v", ErrClosed, c.broken)
	}
	return nil
}

// markBroken records that the connection can no longer be used.
func (c *Client) markBroken(err error) {
	if c.broken == nil {
		c.broken = err
	}
}

// ioErr marks the connection broken after an I/O or protocol error and
// describes err for the step what that took up to d.
func (c *Client) ioErr(what string, d time.Duration, err error) error {
	c.markBroken(err)
	if c.ctx != nil && c.ctx.Err() != nil {
		return fmt.Errorf("%s: %w (%v)", what, c.ctx.Err(), err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: timeout (limit %v): %w", what, d, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// readStep reads one reply within d and hands it to f. A 421 reply (the
// server is closing the connection) marks the client unusable.
func (c *Client) readStep(what string, d time.Duration, f func(*Reply)) error {
	if err := c.conn.SetReadDeadline(c.deadline(d)); err != nil {
		return c.ioErr(what, d, err)
	}
	r, err := readReply(c.br)
	if err != nil {
		return c.ioErr(what, d, err)
	}
	if r.Code == 421 {
		c.markBroken(fmt.Errorf("%s: %w", what, r))
	}
	f(r)
	return nil
}

// writeLines writes the command lines (without CRLF) and flushes them in
// one go, each write bounded by d.
func (c *Client) writeLines(what string, d time.Duration, lines ...string) error {
	c.wTime = d
	for _, l := range lines {
		c.bw.WriteString(l)
		c.bw.WriteString("\r\n")
	}
	if err := c.bw.Flush(); err != nil {
		return c.ioErr(what, d, err)
	}
	return nil
}

// cmd sends one command and reads its reply, both within d. The error is
// an I/O or protocol error; negative replies are returned as replies.
func (c *Client) cmd(what string, d time.Duration, line string) (*Reply, error) {
	if err := c.writeLines(what, d, line); err != nil {
		return nil, err
	}
	var r *Reply
	if err := c.readStep(what, d, func(x *Reply) { r = x }); err != nil {
		return nil, err
	}
	return r, nil
}

// hello sends EHLO, or HELO when EHLO gets a 5xx reply, and records the
// advertised extensions.
func (c *Client) hello() error {
	c.ext = map[string]string{}
	c.ehlo = false
	r, err := c.cmd("EHLO", c.t.Command, "EHLO "+c.localName)
	if err != nil {
		return err
	}
	if r.Code == 250 {
		c.ehlo = true
		for _, l := range r.Lines[1:] {
			kw, param, _ := strings.Cut(strings.TrimSpace(l), " ")
			if kw != "" {
				c.ext[strings.ToUpper(kw)] = strings.TrimSpace(param)
			}
		}
		return nil
	}
	if !r.Permanent() {
		return fmt.Errorf("EHLO: %w", r)
	}
	r, err = c.cmd("HELO", c.t.Command, "HELO "+c.localName)
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return fmt.Errorf("HELO: %w", r)
	}
	return nil
}

// Greeting returns the server's 220 greeting.
func (c *Client) Greeting() *Reply { return c.greeting }

// Extension reports whether the server advertised the EHLO keyword name
// (case-insensitive) in its latest EHLO reply, and with which parameters
// (for example "AUTH" -> "PLAIN LOGIN"). After StartTLS only the
// extensions advertised over TLS count.
func (c *Client) Extension(name string) (param string, ok bool) {
	param, ok = c.ext[strings.ToUpper(name)]
	return param, ok
}

// MaxSize returns the message size limit the server advertised with SIZE
// (RFC 1870), or 0 when it advertised none or no limit.
func (c *Client) MaxSize() int64 {
	p, ok := c.Extension("SIZE")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(p, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// StartTLS upgrades the connection with STARTTLS (RFC 3207) and the
// caller's tls.Config (server name, verification: DANE, MTA-STS or none).
//
// If the server did not advertise STARTTLS it returns ErrNoSTARTTLS
// without sending anything (checklist TLS03). A negative reply to STARTTLS
// is returned as an error wrapping the *Reply; the connection then stays
// usable in cleartext. A failed handshake is returned as a *TLSError and
// leaves the connection unusable; the caller must Close it. After the
// handshake the earlier EHLO answer is discarded and EHLO is sent again
// (checklist TLS02), so Extension and MaxSize describe the TLS session.
func (c *Client) StartTLS(ctx context.Context, cfg *tls.Config) error {
	if err := c.usable(); err != nil {
		return err
	}
	if c.tlsConn != nil {
		return fmt.Errorf("%w: STARTTLS: TLS is already active", ErrInvalidArgument)
	}
	if cfg == nil {
		return fmt.Errorf("%w: STARTTLS: nil tls.Config", ErrInvalidArgument)
	}
	if _, ok := c.Extension("STARTTLS"); !ok {
		return ErrNoSTARTTLS
	}
	return c.op(ctx, func() error {
		r, err := c.cmd("STARTTLS", c.t.Command, "STARTTLS")
		if err != nil {
			return err
		}
		if r.Code != 220 {
			return fmt.Errorf("STARTTLS: %w", r)
		}
		// Anything the server sent after its 220 arrived in cleartext and
		// must not be taken for a reply sent over TLS (cf. CVE-2011-0411).
		if n := c.br.Buffered(); n > 0 {
			err := fmt.Errorf("%w: %d octets of cleartext after the 220 reply to STARTTLS", ErrProtocol, n)
			c.markBroken(err)
			return fmt.Errorf("STARTTLS: %w", err)
		}
		tc := tls.Client(c.raw, cfg)
		if err := c.raw.SetDeadline(c.deadline(c.t.Command)); err != nil {
			return c.ioErr("STARTTLS", c.t.Command, err)
		}
		if err := tc.HandshakeContext(c.ctx); err != nil {
			terr := &TLSError{Err: err}
			c.markBroken(terr)
			return terr
		}
		c.tlsConn = tc
		c.setIO(tc)
		return c.hello()
	})
}

// TLSState returns the TLS connection state and true after a successful
// StartTLS, and false before.
func (c *Client) TLSState() (tls.ConnectionState, bool) {
	if c.tlsConn == nil {
		return tls.ConnectionState{}, false
	}
	return c.tlsConn.ConnectionState(), true
}

// Reset sends RSET (RFC 5321 §4.1.1.5), ending any transaction so that
// the connection can carry the next message (checklist SMTP04). A negative
// reply is returned as an error wrapping the *Reply.
func (c *Client) Reset(ctx context.Context) error {
	return c.op(ctx, func() error {
		r, err := c.cmd("RSET", c.t.Command, "RSET")
		if err != nil {
			return err
		}
		if !r.Positive() {
			return fmt.Errorf("RSET: %w", r)
		}
		return nil
	})
}

// Quit sends QUIT and waits briefly for the reply (best effort), then
// closes the connection. Its error is only that of closing.
func (c *Client) Quit() error {
	if c.usable() == nil {
		c.quitQuietly()
	}
	return c.Close()
}

// quitQuietly sends QUIT and reads the reply, ignoring errors.
func (c *Client) quitQuietly() {
	d := min(c.t.Command, quitTimeout)
	if err := c.writeLines("QUIT", d, "QUIT"); err != nil {
		return
	}
	c.readStep("QUIT", d, func(*Reply) {})
}

// Close closes the connection without QUIT. Calling it again does nothing.
func (c *Client) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var err error
	if c.tlsConn != nil {
		err = c.tlsConn.Close()
	} else {
		err = c.raw.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

var _ io.Writer = deadlineWriter{}

package smtpclient

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Command line limits: RFC 5321 §4.5.3.1.4 allows 512 octets including
// CRLF for a command; the extensions enlarge that by the room their
// parameters need, and bound the parameters themselves.
const (
	maxCommandLine = 512 // "MAIL FROM:<path>" or "RCPT TO:<path>" with CRLF
	maxEnvID       = 100 // RFC 3461 §4.4: ENVID value, xtext-encoded
	maxORcpt       = 500 // RFC 3461 §4.2: ORCPT value, encoded
)

// MailParams describes a message for the MAIL command. Parameters are sent
// only when the server advertised the extension that defines them.
type MailParams struct {
	// Size is the message size in octets; sent as SIZE= when the server
	// advertised SIZE (RFC 1870) and Size > 0. Send fails with ErrTooBig
	// when it exceeds the server's advertised limit.
	Size int64
	// Body is "7BIT", "8BITMIME" or "" (unknown); sent as BODY= when the
	// server advertised 8BITMIME (RFC 6152).
	Body string
	// SMTPUTF8 marks a message that needs SMTPUTF8 (RFC 6531). Send fails
	// with ErrNeedsSMTPUTF8 when the server does not offer it. SMTPUTF8 is
	// also sent, or required, when an envelope address is not ASCII.
	SMTPUTF8 bool
	// RequireTLS marks a message received with REQUIRETLS (RFC 8689). Send
	// fails with ErrNeedsREQUIRETLS unless the connection uses TLS and the
	// server advertised REQUIRETLS; whether the TLS connection was
	// authenticated strongly enough is the caller's decision.
	RequireTLS bool
	// Ret is "FULL", "HDRS" or ""; sent as RET= when the server advertised
	// DSN (RFC 3461 §4.3).
	Ret string
	// EnvID is the envelope identifier, sent xtext-encoded as ENVID= when
	// the server advertised DSN (RFC 3461 §4.4).
	EnvID string
}

// Rcpt is one recipient of a transaction.
type Rcpt struct {
	// Addr is the recipient address, without angle brackets.
	Addr string
	// Notify holds the NOTIFY= values (NEVER, SUCCESS, FAILURE, DELAY),
	// sent when the server advertised DSN (RFC 3461 §4.1).
	Notify []string
	// ORcpt is the original recipient as "type;address" with the address
	// decoded, for example "rfc822;user@example.org". It is sent, when the
	// server advertised DSN, as ORCPT= with the address xtext-encoded (or,
	// for the "utf-8" type, in RFC 6533 utf-8-addr-xtext form).
	ORcpt string
}

// Result holds the server's replies in one transaction.
type Result struct {
	// Mail is the reply to MAIL FROM.
	Mail *Reply
	// Rcpts holds one reply per recipient, in the order given to Send.
	// It is nil when MAIL was rejected, and shorter than the recipient
	// list only when the transaction failed with an error.
	Rcpts []*Reply
	// Data is the reply to DATA when that was not 354, or else the final
	// reply after the message; nil if DATA was not sent or no final reply
	// was read.
	Data *Reply
}

// Send runs one mail transaction: MAIL FROM:<from>, RCPT TO for each
// recipient, then DATA with body when at least one recipient was
// accepted. When PIPELINING is advertised (RFC 2920) MAIL and all RCPT
// commands are sent together and their replies read in order; otherwise
// each command waits for its reply. When no recipient is accepted Send
// sends RSET instead of DATA and returns the replies without error.
//
// The body is streamed with dot-stuffing; it should use CRLF line endings
// (bare CR and LF are sent as CRLF), and CRLF is added when it does not end
// with one. If reading body fails after DATA was accepted, the connection
// is closed at once, so that no truncated message can be delivered.
//
// The error is non-nil only when the transaction as a whole failed:
// MAIL, DATA or the final reply was negative (the error wraps the *Reply;
// use errors.As), a 421 reply ended the session, or an I/O, timeout or
// protocol error occurred (the error names the command; the client is
// unusable afterwards). A rejected recipient is not an error: see
// Result.Rcpts. Before anything is sent, Send checks its preconditions and
// may return ErrNeedsSMTPUTF8, ErrNeedsREQUIRETLS, ErrTooBig,
// ErrLineTooLong or ErrInvalidArgument (wrapped) with a nil Result; the
// connection stays usable then.
//
// Before reusing the connection for another transaction after an error,
// call Reset.
func (c *Client) Send(ctx context.Context, from string, p MailParams, rcpts []Rcpt, body io.Reader) (*Result, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	mail, rcptLines, err := c.envelope(from, p, rcpts)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	err = c.op(ctx, func() error { return c.transaction(res, from, mail, rcpts, rcptLines, body) })
	return res, err
}

// envelope checks the preconditions and builds the MAIL and RCPT lines.
func (c *Client) envelope(from string, p MailParams, rcpts []Rcpt) (string, []string, error) {
	if len(rcpts) == 0 {
		return "", nil, fmt.Errorf("%w: no recipients", ErrInvalidArgument)
	}
	if hasControl(from) {
		return "", nil, fmt.Errorf("%w: control character in MAIL FROM address %q", ErrInvalidArgument, from)
	}
	for _, r := range rcpts {
		if r.Addr == "" || hasControl(r.Addr) {
			return "", nil, fmt.Errorf("%w: RCPT TO address %q", ErrInvalidArgument, r.Addr)
		}
	}

	_, haveUTF8 := c.Extension("SMTPUTF8")
	needUTF8 := p.SMTPUTF8
	if !isASCII(from) {
		needUTF8 = true
		if !haveUTF8 {
			return "", nil, fmt.Errorf("%w: MAIL FROM address %q is not ASCII", ErrNeedsSMTPUTF8, from)
		}
	}
	for _, r := range rcpts {
		if !isASCII(r.Addr) {
			needUTF8 = true
			if !haveUTF8 {
				return "", nil, fmt.Errorf("%w: RCPT TO address %q is not ASCII", ErrNeedsSMTPUTF8, r.Addr)
			}
		}
	}
	if needUTF8 && !haveUTF8 {
		return "", nil, ErrNeedsSMTPUTF8
	}
	if p.RequireTLS {
		if _, ok := c.Extension("REQUIRETLS"); !ok || c.tlsConn == nil {
			return "", nil, ErrNeedsREQUIRETLS
		}
	}
	if limit := c.MaxSize(); limit > 0 && p.Size > limit {
		return "", nil, fmt.Errorf("%w: message is %d octets, server limit is %d", ErrTooBig, p.Size, limit)
	}
	bodyType := strings.ToUpper(p.Body)
	switch bodyType {
	case "", "7BIT", "8BITMIME":
	default:
		return "", nil, fmt.Errorf("%w: BODY=%q", ErrInvalidArgument, p.Body)
	}
	ret := strings.ToUpper(p.Ret)
	switch ret {
	case "", "FULL", "HDRS":
	default:
		return "", nil, fmt.Errorf("%w: RET=%q", ErrInvalidArgument, p.Ret)
	}
	_, dsn := c.Extension("DSN")

	var b strings.Builder
	b.WriteString("MAIL FROM:<" + from + ">")
	if b.Len()+2 > maxCommandLine {
		return "", nil, fmt.Errorf("%w: MAIL FROM:<%s> is %d octets, limit %d", ErrLineTooLong, from, b.Len()+2, maxCommandLine)
	}
	if _, ok := c.Extension("SIZE"); ok && p.Size > 0 {
		b.WriteString(" SIZE=" + strconv.FormatInt(p.Size, 10))
	}
	if _, ok := c.Extension("8BITMIME"); ok && bodyType != "" {
		b.WriteString(" BODY=" + bodyType)
	}
	if needUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if p.RequireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if dsn && ret != "" {
		b.WriteString(" RET=" + ret)
	}
	if dsn && p.EnvID != "" {
		e := xtext(p.EnvID)
		if len(e) > maxEnvID {
			return "", nil, fmt.Errorf("%w: ENVID is %d characters encoded, limit %d", ErrLineTooLong, len(e), maxEnvID)
		}
		b.WriteString(" ENVID=" + e)
	}
	mail := b.String()

	lines := make([]string, len(rcpts))
	for i, r := range rcpts {
		b.Reset()
		b.WriteString("RCPT TO:<" + r.Addr + ">")
		if b.Len()+2 > maxCommandLine {
			return "", nil, fmt.Errorf("%w: RCPT TO:<%s> is %d octets, limit %d", ErrLineTooLong, r.Addr, b.Len()+2, maxCommandLine)
		}
		if dsn && len(r.Notify) > 0 {
			vals := make([]string, len(r.Notify))
			for j, n := range r.Notify {
				vals[j] = strings.ToUpper(n)
				switch vals[j] {
				case "NEVER", "SUCCESS", "FAILURE", "DELAY":
				default:
					return "", nil, fmt.Errorf("%w: NOTIFY value %q for <%s>", ErrInvalidArgument, n, r.Addr)
				}
			}
			b.WriteString(" NOTIFY=" + strings.Join(vals, ","))
		}
		if dsn && r.ORcpt != "" {
			v, err := encodeORcpt(r.ORcpt)
			if err != nil {
				return "", nil, fmt.Errorf("ORCPT for <%s>: %w", r.Addr, err)
			}
			b.WriteString(" ORCPT=" + v)
		}
		lines[i] = b.String()
	}
	return mail, lines, nil
}

// encodeORcpt turns "type;address" into the ORCPT parameter value.
func encodeORcpt(s string) (string, error) {
	typ, addr, ok := strings.Cut(s, ";")
	if !ok || typ == "" || addr == "" || !isAtom(typ) {
		return "", fmt.Errorf("%w: ORCPT %q is not \"type;address\"", ErrInvalidArgument, s)
	}
	var v string
	if strings.EqualFold(typ, "utf-8") {
		v = typ + ";" + utf8AddrXtext(addr)
	} else {
		v = typ + ";" + xtext(addr)
	}
	if len(v) > maxORcpt {
		return "", fmt.Errorf("%w: ORCPT is %d characters encoded, limit %d", ErrLineTooLong, len(v), maxORcpt)
	}
	return v, nil
}

// transaction runs MAIL, RCPT, DATA and fills res.
func (c *Client) transaction(res *Result, from, mail string, rcpts []Rcpt, rcptLines []string, body io.Reader) error {
	mailWhat := "MAIL FROM:<" + from + ">"
	rcptWhat := func(i int) string { return "RCPT TO:<" + rcpts[i].Addr + ">" }
	d := c.t.Command

	if _, ok := c.Extension("PIPELINING"); ok {
		if err := c.pipelined(res, mailWhat, rcptWhat, append([]string{mail}, rcptLines...)); err != nil {
			return err
		}
	} else {
		r, err := c.cmd(mailWhat, d, mail)
		if err != nil {
			return err
		}
		res.Mail = r
		if !r.Positive() {
			return fmt.Errorf("%s: %w", mailWhat, r)
		}
		for i, l := range rcptLines {
			r, err := c.cmd(rcptWhat(i), d, l)
			if err != nil {
				return err
			}
			res.Rcpts = append(res.Rcpts, r)
			if r.Code == 421 {
				return fmt.Errorf("%s: %w", rcptWhat(i), r)
			}
		}
	}

	accepted := false
	for _, r := range res.Rcpts {
		accepted = accepted || r.Positive()
	}
	if !accepted {
		// No transaction to finish. RSET leaves the session clean for the
		// next message; its failure only makes the client unusable.
		c.cmd("RSET", d, "RSET")
		return nil
	}
	return c.data(res, body)
}

// pipelined sends lines (MAIL then the RCPTs) in one flush and reads their
// replies in order (RFC 2920). The lines are written by a separate
// goroutine so that a server that answers while the client is still
// writing a long recipient list cannot deadlock the two sides.
func (c *Client) pipelined(res *Result, mailWhat string, rcptWhat func(int) string, lines []string) error {
	d := c.t.Command
	c.wTime = d
	werr := make(chan error, 1)
	go func() {
		for _, l := range lines {
			c.bw.WriteString(l)
			c.bw.WriteString("\r\n")
		}
		werr <- c.bw.Flush()
	}()

	var rerr error
	read := func(what string) *Reply {
		var r *Reply
		rerr = c.readStep(what, d, func(x *Reply) { r = x })
		return r
	}
	var rcptReplies []*Reply
	var stop error // a 421 reply
	if res.Mail = read(mailWhat); rerr == nil {
		if res.Mail.Code == 421 {
			stop = fmt.Errorf("%s: %w", mailWhat, res.Mail)
		}
		for i := 1; i < len(lines) && stop == nil; i++ {
			r := read(rcptWhat(i - 1))
			if rerr != nil {
				break
			}
			rcptReplies = append(rcptReplies, r)
			if r.Code == 421 {
				stop = fmt.Errorf("%s: %w", rcptWhat(i-1), r)
			}
		}
	}
	if rerr != nil || stop != nil {
		// The session is over; closing unblocks a writer stuck on a server
		// that stopped reading.
		c.raw.Close()
	}
	if err := <-werr; err != nil && rerr == nil {
		rerr = c.ioErr(mailWhat+" (pipelined with RCPT)", d, err)
	}
	if res.Mail != nil && !res.Mail.Positive() {
		// The MAIL reply explains the failure better than an I/O error
		// from a server that hung up after rejecting the sender.
		return fmt.Errorf("%s: %w", mailWhat, res.Mail)
	}
	if rerr != nil {
		if res.Mail != nil {
			res.Rcpts = rcptReplies
		}
		return rerr
	}
	res.Rcpts = rcptReplies
	return stop
}

// data sends DATA, the body, and the terminating ".", and reads the
// final reply.
func (c *Client) data(res *Result, body io.Reader) error {
	r, err := c.cmd("DATA", c.t.DataInit, "DATA")
	if err != nil {
		return err
	}
	if r.Code != 354 {
		res.Data = r
		return fmt.Errorf("DATA: %w", r)
	}
	c.wTime = c.t.DataBlock
	br := &bodyReader{r: body}
	dw := newDotWriter(c.bw)
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, 32<<10) // kept for the next message on this connection
	}
	if _, err := io.CopyBuffer(dw, br, c.copyBuf); err != nil {
		if br.err != nil {
			// Never let a partial body be completed with ".": drop the
			// connection so the server discards the message.
			err = fmt.Errorf("reading message body: %w", br.err)
			c.markBroken(err)
			c.raw.Close()
			return err
		}
		return c.ioErr("DATA (message body)", c.t.DataBlock, err)
	}
	if err := dw.Close(); err != nil {
		return c.ioErr("DATA (message body)", c.t.DataBlock, err)
	}
	if err := c.bw.Flush(); err != nil {
		return c.ioErr("DATA (message body)", c.t.DataBlock, err)
	}
	if err := c.readStep("end of DATA", c.t.DataTerm, func(x *Reply) { res.Data = x }); err != nil {
		return err
	}
	if !res.Data.Positive() {
		return fmt.Errorf("end of DATA: %w", res.Data)
	}
	return nil
}

// bodyReader remembers the body's read error so that it can be told apart
// from a write error on the connection. It hides any WriterTo of the
// underlying reader.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// hasControl reports whether s contains an ASCII control character (which
// could split a command line) or DEL.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// isASCII reports whether s is 7-bit.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isAtom reports whether s is a plausible ORCPT address type (an atom of
// letters, digits and '-', such as "rfc822" or "utf-8").
func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
			return false
		}
	}
	return s != ""
}

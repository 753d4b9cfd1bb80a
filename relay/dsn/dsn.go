// Package dsn builds and parses delivery status notifications ("bounces"):
// multipart/report messages (RFC 6522) whose machine-readable part is a
// message/delivery-status body (RFC 3464), or its SMTPUTF8 variant
// message/global-delivery-status (RFC 6533). The RET, ENVID and ORCPT
// parameters a client gave in the original transaction (RFC 3461) are echoed
// in the report.
//
// The package only renders and reads messages; deciding when a DSN is due
// (NOTIFY, queue lifetime, delay warnings) and sending it with a null reverse
// path (MAIL FROM:<>) is up to the caller.
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// Action values of the per-recipient Action field (RFC 3464 §2.3.3).
const (
	// ActionFailed: the message could not be delivered and will not be retried.
	ActionFailed = "failed"
	// ActionDelayed: delivery has not succeeded yet and is still being retried.
	ActionDelayed = "delayed"
	// ActionDelivered: the message was delivered to the recipient.
	ActionDelivered = "delivered"
	// ActionRelayed: the message was relayed to a system that does not issue DSNs.
	ActionRelayed = "relayed"
	// ActionExpanded: the recipient was an alias or list that was expanded.
	ActionExpanded = "expanded"
)

// DefaultFullLimit is the size up to which the whole original message is
// returned when the client gave no RET parameter (see Message.Ret).
const DefaultFullLimit int64 = 1 << 20

// Error is the type of the sentinel errors returned by Build; test for them
// with errors.Is.
type Error string

// Error implements the error interface.
func (e Error) Error() string { return string(e) }

const (
	// ErrNullSender is returned by Build when Message.To is empty: a DSN is
	// never sent to the null reverse path (RFC 5321 §4.5.5).
	ErrNullSender = Error("dsn: no DSN for a message with a null envelope sender")
	// ErrNoRecipients is returned by Build when Message.Recipients is empty.
	ErrNoRecipients = Error("dsn: no recipients to report")
	// ErrInvalid is wrapped by the errors Build returns for a field it
	// cannot render (unknown action, malformed status code, bad address...).
	ErrInvalid = Error("dsn: invalid message")
)

// Recipient is the outcome for one envelope recipient; it becomes one
// per-recipient block of the delivery-status part and one entry of the
// human-readable part.
type Recipient struct {
	// Addr is the envelope recipient (RCPT TO), reported as
	// "Final-Recipient: rfc822;Addr" ("utf-8;..." for a non-ASCII address,
	// RFC 6533 §3). Required.
	Addr string
	// ORcpt is the ORCPT parameter as given by the client, "type;address",
	// already decoded from xtext. It is emitted as is in Original-Recipient
	// (RFC 3461 §4.2, RFC 3464 §2.3.1); a value without ";" is taken to be
	// an rfc822 address. Empty: no Original-Recipient field.
	ORcpt string
	// Action is one of the Action* constants. Required.
	Action string
	// Status is the RFC 3463 status code, "5.1.1", "4.4.1"... Required.
	Status string
	// RemoteMTA is the host name of the remote MTA that gave Diagnostic
	// ("Remote-MTA: dns;host"); empty if no remote MTA was reached.
	RemoteMTA string
	// Diagnostic is the remote SMTP reply, for example
	// "550 5.1.1 no such user", rendered as
	// "Diagnostic-Code: smtp; 550 5.1.1 no such user". Line breaks of a
	// multi-line reply become spaces. Empty: see Reason.
	Diagnostic string
	// LastAttempt is rendered as Last-Attempt-Date; zero: omitted.
	LastAttempt time.Time
	// WillRetryUntil is rendered as Will-Retry-Until for a delayed
	// recipient; zero, or an Action other than delayed: omitted
	// (RFC 3464 §2.3.9).
	WillRetryUntil time.Time
	// Reason is a human-readable explanation from the relay itself, for
	// example "DANE: TLSA 3 1 1 matched no certificate in the chain". It is
	// always shown in the human-readable part; when Diagnostic is empty it is
	// also rendered as "Diagnostic-Code: X-Relay; <reason>".
	Reason string
}

// Message describes the DSN to build for one original message. All
// recipients reported together go into one DSN.
type Message struct {
	// ReportingMTA is the relay's host name ("Reporting-MTA: dns;host").
	// Required.
	ReportingMTA string
	// From is the relay's postmaster address, used in the From header
	// with the display name "Mail Delivery System". Empty:
	// "postmaster@" + ReportingMTA.
	From string
	// To is the envelope sender of the original message: the To header
	// and the envelope recipient of the DSN. Empty is refused with
	// ErrNullSender.
	To string
	// QueueID is the relay's queue identifier of the original message,
	// emitted as the "X-Queue-ID" extension field of the per-message part
	// (RFC 3464 §2.1 allows extension fields). Empty: omitted.
	QueueID string
	// EnvID is the ENVID parameter (decoded from xtext), echoed as
	// Original-Envelope-Id (RFC 3464 §2.2.1). Empty: omitted.
	EnvID string
	// ArrivalDate is when the relay received the message (Arrival-Date);
	// zero: omitted.
	ArrivalDate time.Time
	// Ret is the RET parameter: "FULL" returns the whole original message
	// (message/rfc822), "HDRS" only its header block (text/rfc822-headers).
	// "" (not given) returns the whole message if it is at most FullLimit
	// bytes, else only its headers. RET governs "failed" DSNs only: a DSN
	// in which no recipient failed (delay warning, success report) always
	// returns only the headers (RFC 3461 §4.3). Case-insensitive; any other
	// value is an error.
	Ret string
	// FullLimit is the size limit for Ret == ""; zero or negative means
	// DefaultFullLimit.
	FullLimit int64
	// Original is the original message as spooled (header and body, CRLF
	// line endings). It is copied as is: never re-encoded or re-wrapped.
	// Nil: the DSN has no third part.
	Original io.Reader
	// SMTPUTF8 is true when the original was sent with SMTPUTF8: the
	// report then uses message/global-delivery-status and message/global
	// or message/global-headers (RFC 6533 §6, RFC 6532 §3.7), and must
	// itself be sent with SMTPUTF8.
	SMTPUTF8 bool
	// Recipients are the recipients reported together; at least one.
	Recipients []Recipient
	// Date is the Date header; zero means time.Now().
	Date time.Time
	// MessageID is the Message-ID header value without angle brackets;
	// empty generates a random one "<hex@ReportingMTA>".
	MessageID string
}

// Subjects of the generated DSNs.
const (
	subjectFailed    = "Undelivered Mail Returned to Sender"
	subjectDelayed   = "Delayed Mail (still being retried)"
	subjectDelivered = "Successful Mail Delivery Report"
)

// rfc5322Date is the date-time format of RFC 5322 §3.3, used for every date.
const rfc5322Date = "Mon, 02 Jan 2006 15:04:05 -0700"

// maxID bounds identifiers that must fit, unfolded, on one header line.
const maxID = 900

// Build renders a complete DSN: an RFC 5322 message with CRLF line endings,
// Content-Type multipart/report; report-type=delivery-status (RFC 6522),
// made of a text/plain human-readable part, a message/delivery-status part
// (message/global-delivery-status when SMTPUTF8) and, when m.Original is
// not nil, the original message or its headers (see Message.Ret).
//
// Every line Build generates is at most 998 octets (RFC 5322 §2.1.1); the
// returned original is copied unchanged. When the result contains 8-bit
// data the top-level Content-Transfer-Encoding is 8bit and the caller must
// send it with BODY=8BITMIME (or SMTPUTF8).
//
// Build refuses an empty m.To (ErrNullSender), an empty m.Recipients
// (ErrNoRecipients), and an unknown action, malformed status, or missing
// address (errors wrapping ErrInvalid).
func Build(m Message) ([]byte, error) {
	if strings.TrimSpace(m.To) == "" {
		return nil, ErrNullSender
	}
	if len(m.Recipients) == 0 {
		return nil, ErrNoRecipients
	}
	g := m.SMTPUTF8
	mta := strings.TrimSpace(m.ReportingMTA)
	if mta == "" || len(mta) > 255 || strings.IndexFunc(mta, isSpaceOrControl) >= 0 {
		return nil, fmt.Errorf("%w: ReportingMTA %q is not a host name", ErrInvalid, m.ReportingMTA)
	}
	to, err := headerAddress("To", m.To)
	if err != nil {
		return nil, err
	}
	fromAddr := m.From
	if strings.TrimSpace(fromAddr) == "" {
		fromAddr = "postmaster@" + mta
	}
	from, err := headerAddress("From", fromAddr)
	if err != nil {
		return nil, err
	}
	from.Name = "Mail Delivery System"
	ret := strings.ToUpper(strings.TrimSpace(m.Ret))
	if ret != "" && ret != "FULL" && ret != "HDRS" {
		return nil, fmt.Errorf("%w: RET %q is neither FULL nor HDRS", ErrInvalid, m.Ret)
	}
	rcpts := make([]Recipient, len(m.Recipients))
	var failed, delayed bool
	for i, r := range m.Recipients {
		r.Action = strings.ToLower(strings.TrimSpace(r.Action))
		switch r.Action {
		case ActionFailed:
			failed = true
		case ActionDelayed:
			delayed = true
		case ActionDelivered, ActionRelayed, ActionExpanded:
		default:
			return nil, fmt.Errorf("%w: recipient %d (%s): unknown action %q", ErrInvalid, i, r.Addr, r.Action)
		}
		r.Status = strings.TrimSpace(r.Status)
		if !validStatus(r.Status) {
			return nil, fmt.Errorf("%w: recipient %d (%s): malformed status code %q (RFC 3463)", ErrInvalid, i, r.Addr, r.Status)
		}
		r.Addr = strings.TrimSpace(r.Addr)
		if r.Addr == "" {
			return nil, fmt.Errorf("%w: recipient %d has no address", ErrInvalid, i)
		}
		rcpts[i] = r
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID := strings.TrimSpace(m.MessageID)
	if msgID == "" {
		msgID = randomHex(16) + "@" + mta
	} else if !validMessageID(msgID) {
		return nil, fmt.Errorf("%w: Message-ID %q", ErrInvalid, m.MessageID)
	}

	orig, headersOnly, err := original(m, ret, failed)
	if err != nil {
		return nil, err
	}
	human := humanText(m, mta, rcpts, m.Original != nil, headersOnly)
	humanCTE := "7bit"
	if !isASCII(human) {
		var qp bytes.Buffer
		w := quotedprintable.NewWriter(&qp)
		w.Write(human) // writes to a bytes.Buffer cannot fail
		w.Close()
		human, humanCTE = qp.Bytes(), "quoted-printable"
	}
	status := statusFields(m, mta, rcpts)

	statusType, origType := "message/delivery-status", "message/rfc822"
	switch {
	case g && headersOnly:
		statusType, origType = "message/global-delivery-status", "message/global-headers"
	case g:
		statusType, origType = "message/global-delivery-status", "message/global"
	case headersOnly:
		origType = "text/rfc822-headers"
	}
	statusCTE := "7bit"
	if g {
		// RFC 6533 §6: message/global-delivery-status is labelled 8bit.
		statusCTE = "8bit"
	}
	origCTE := "7bit"
	if !isASCII(orig) {
		origCTE = "8bit"
	}
	topCTE := "7bit"
	if statusCTE == "8bit" || (m.Original != nil && origCTE == "8bit") {
		topCTE = "8bit"
	}

	const preamble = "This is a MIME-encapsulated message.\r\n\r\n"
	boundary, err := newBoundary([]byte(preamble), human, status, orig)
	if err != nil {
		return nil, err
	}

	subject := subjectDelivered
	switch {
	case failed:
		subject = subjectFailed
	case delayed:
		subject = subjectDelayed
	}
	var b bytes.Buffer
	b.Grow(len(human) + len(status) + len(orig) + 2048)
	hdr := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	hdr("Date", date.Format(rfc5322Date))
	hdr("From", from.String())
	hdr("To", to.String())
	hdr("Subject", subject)
	hdr("Message-ID", "<"+msgID+">")
	hdr("Auto-Submitted", "auto-replied") // RFC 3834 §5
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "multipart/report; report-type=delivery-status;\r\n\tboundary=\""+boundary+"\"")
	hdr("Content-Transfer-Encoding", topCTE)
	b.WriteString("\r\n" + preamble)

	part := func(ctype, desc, cte string, body []byte) {
		b.WriteString("--" + boundary + "\r\n")
		hdr("Content-Type", ctype)
		hdr("Content-Description", desc)
		if cte != "7bit" {
			hdr("Content-Transfer-Encoding", cte)
		}
		b.WriteString("\r\n")
		b.Write(body)
		// The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
		b.WriteString("\r\n")
	}
	part("text/plain; charset=utf-8", "Notification", humanCTE, human)
	part(statusType, "Delivery report", statusCTE, status)
	if m.Original != nil {
		desc := "Message"
		if headersOnly {
			desc = "Message Headers"
		}
		if failed || delayed {
			desc = "Undelivered " + desc
		}
		part(origType, desc, origCTE, orig)
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// headerAddress parses an envelope address (SMTP Mailbox, without angle
// brackets) into a header address.
func headerAddress(field, addr string) (*mail.Address, error) {
	addr = strings.TrimSpace(addr)
	if len(addr) > maxID || strings.IndexFunc(addr, isControl) >= 0 {
		return nil, fmt.Errorf("%w: %s address %q", ErrInvalid, field, addr)
	}
	a, err := mail.ParseAddress("<" + addr + ">")
	if err != nil {
		return nil, fmt.Errorf("%w: %s address %q: %v", ErrInvalid, field, addr, err)
	}
	return a, nil
}

// validStatus reports whether s is an RFC 3463 status code
// class "." subject "." detail, class 2, 4 or 5, 1 to 3 digits each.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// validMessageID accepts id-left "@" id-right without spaces, controls or
// angle brackets (RFC 5322 §3.6.4).
func validMessageID(id string) bool {
	return len(id) <= maxID && strings.Contains(id, "@") &&
		strings.IndexFunc(id, func(r rune) bool { return isSpaceOrControl(r) || r == '<' || r == '>' }) < 0
}

// original returns the content of the third part and whether it is only the
// header block.
func original(m Message, ret string, failed bool) ([]byte, bool, error) {
	if m.Original == nil {
		return nil, false, nil
	}
	var (
		data []byte
		err  error
	)
	switch {
	case ret == "HDRS" || !failed:
		// RFC 3461 §4.3: RET is about failed DSNs; other reports carry headers only.
		data, err = headerBlock(m.Original)
		return data, true, wrapRead(err)
	case ret == "FULL":
		data, err = io.ReadAll(m.Original)
		return data, false, wrapRead(err)
	}
	limit := m.FullLimit
	if limit <= 0 {
		limit = DefaultFullLimit
	}
	if limit == math.MaxInt64 {
		limit--
	}
	data, err = io.ReadAll(io.LimitReader(m.Original, limit+1))
	if err != nil {
		return nil, false, wrapRead(err)
	}
	if int64(len(data)) <= limit {
		return data, false, nil
	}
	data, err = headerBlock(io.MultiReader(bytes.NewReader(data), m.Original))
	return data, true, wrapRead(err)
}

func wrapRead(err error) error {
	if err != nil {
		return fmt.Errorf("dsn: reading the original message: %w", err)
	}
	return nil
}

// headerBlock returns the header lines of a message, up to and excluding
// the first empty line.
func headerBlock(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(r)
	var out []byte
	for {
		line, err := br.ReadBytes('\n')
		if string(line) == "\r\n" || string(line) == "\n" {
			return out, nil
		}
		out = append(out, line...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// newBoundary returns a random MIME boundary that occurs in none of parts.
func newBoundary(parts ...[]byte) (string, error) {
	for range 16 {
		bnd := "=_dsn_" + randomHex(18) // "=_" never occurs in quoted-printable text
		clash := false
		for _, p := range parts {
			if bytes.Contains(p, []byte(bnd)) {
				clash = true
				break
			}
		}
		if !clash {
			return bnd, nil
		}
	}
	return "", fmt.Errorf("dsn: could not find a MIME boundary absent from the content")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b)
}

func isASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return r <= 0x20 || r == 0x7f }

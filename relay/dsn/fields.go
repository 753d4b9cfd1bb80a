package dsn

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

const (
	// maxLine is the RFC 5322 §2.1.1 limit on a line, without CRLF.
	maxLine = 998
	// foldAt is the RFC 5322 §2.1.1 recommended line length.
	foldAt = 78
	// maxWord is the longest run without a space kept on one line; longer
	// runs (only ever garbage) are split so that no line exceeds maxLine.
	maxWord = 900
)

// statusFields renders the body of the message/delivery-status part: the
// per-message fields, then one block per recipient, each block preceded by
// an empty line (RFC 3464 §2.1). Fields are in the order of the ABNF of
// RFC 3464 §2.2 and §2.3.
func statusFields(m Message, mta string, rcpts []Recipient) []byte {
	g := m.SMTPUTF8
	var b bytes.Buffer
	field := func(name, value string, soft int) {
		for _, l := range fold(name, value, soft) {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
	}
	if v := clean(m.EnvID, g); v != "" {
		field("Original-Envelope-Id", v, maxLine) // RFC 3464 §2.2.1: echoed, not folded
	}
	field("Reporting-MTA", "dns;"+clean(mta, g), maxLine)
	if !m.ArrivalDate.IsZero() {
		field("Arrival-Date", m.ArrivalDate.Format(rfc5322Date), maxLine)
	}
	if v := clean(m.QueueID, g); v != "" {
		field("X-Queue-ID", v, maxLine) // extension field, RFC 3464 §2.1
	}
	for _, r := range rcpts {
		b.WriteString("\r\n")
		if v := origRecipient(r.ORcpt, g); v != "" {
			field("Original-Recipient", v, maxLine)
		}
		field("Final-Recipient", finalRecipient(r.Addr, g), maxLine)
		field("Action", r.Action, maxLine)
		field("Status", r.Status, maxLine)
		if v := clean(r.RemoteMTA, g); v != "" {
			field("Remote-MTA", "dns;"+v, maxLine)
		}
		if v := clean(r.Diagnostic, g); v != "" {
			field("Diagnostic-Code", "smtp; "+v, foldAt)
		} else if v := clean(r.Reason, g); v != "" {
			// RFC 3464 §2.3.6: "X-" diagnostic types are private.
			field("Diagnostic-Code", "X-Relay; "+v, foldAt)
		}
		if !r.LastAttempt.IsZero() {
			field("Last-Attempt-Date", r.LastAttempt.Format(rfc5322Date), maxLine)
		}
		if r.Action == ActionDelayed && !r.WillRetryUntil.IsZero() {
			field("Will-Retry-Until", r.WillRetryUntil.Format(rfc5322Date), maxLine)
		}
	}
	return b.Bytes()
}

// finalRecipient renders "address-type;address" for an envelope recipient:
// rfc822 for an ASCII address, utf-8 otherwise (RFC 6533 §3), as raw UTF-8
// in a global report and in the utf-8-addr-xtext form in a plain one.
func finalRecipient(addr string, global bool) string {
	a := clean(addr, true)
	switch {
	case isASCII(a):
		return "rfc822;" + a
	case global:
		return "utf-8;" + a
	default:
		return "utf-8;" + utf8AddrXtext(a)
	}
}

// origRecipient renders the ORCPT value as given; a bare address is taken
// to be of type rfc822.
func origRecipient(orcpt string, global bool) string {
	v := clean(orcpt, global)
	if v != "" && !strings.Contains(v, ";") {
		v = "rfc822;" + v
	}
	return v
}

// utf8AddrXtext encodes an address in the utf-8-addr-xtext form of
// RFC 6533 §3: QCHAR as is, anything else (including "+", "=" and "\") as
// \x{HEXPOINT}.
func utf8AddrXtext(a string) string {
	var b strings.Builder
	for _, r := range a {
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%02X}`, r)
		}
	}
	return b.String()
}

// clean makes s safe for one header field value or one line of text:
// invalid UTF-8 becomes U+FFFD, control characters (CR and LF included) and
// runs of spaces become a single space, and the result is trimmed. Unless
// utf8ok, non-ASCII characters are written \x{HEX} (the RFC 6533
// EmbeddedUnicodeChar notation), since a message/delivery-status body is
// US-ASCII.
func clean(s string, utf8ok bool) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if r <= 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\u2028' || r == '\u2029' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		if r >= 0x80 && !utf8ok {
			fmt.Fprintf(&b, `\x{%X}`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fold renders "name: value" as header lines (without CRLF), breaking at
// spaces before a line would exceed soft octets; continuation lines start
// with a space (RFC 5322 §2.2.3). value must be clean. Unfolding gives back
// value exactly, except that a run longer than maxWord octets is split.
func fold(name, value string, soft int) []string {
	var lines []string
	line := name + ":"
	hasWord := false
	for _, w := range splitLong(value) {
		if hasWord && len(line)+1+len(w) > soft {
			lines = append(lines, line)
			line = ""
		}
		line += " " + w
		hasWord = true
	}
	return append(lines, line)
}

// wrap renders text as lines of at most 72 octets where possible (never
// more than maxLine): the first starts with prefix, the others with indent.
// text must be clean.
func wrap(prefix, indent, text string) []string {
	const width = 72 // under the 76 of quoted-printable: few soft line breaks
	var lines []string
	line, empty := prefix, true
	for _, w := range splitLong(text) {
		if !empty && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line, empty = indent, true
		}
		if !empty {
			line += " "
		}
		line += w
		empty = false
	}
	return append(lines, line)
}

// splitLong splits clean text into words, cutting words longer than
// maxWord octets at character boundaries.
func splitLong(s string) []string {
	var out []string
	for _, w := range strings.Split(s, " ") {
		for len(w) > maxWord {
			i := maxWord
			for i > 0 && !utf8.RuneStart(w[i]) {
				i--
			}
			out = append(out, w[:i])
			w = w[i:]
		}
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

// humanText renders the text/plain part: what happened, then one entry per
// recipient with its status, the remote reply, the relay's reason and, for a
// delayed recipient, until when the relay keeps trying.
func humanText(m Message, mta string, rcpts []Recipient, hasOrig, headersOnly bool) []byte {
	var lines []string
	para := func(text string) {
		lines = append(lines, wrap("", "", text)...)
		lines = append(lines, "")
	}
	count := map[string]int{}
	for _, r := range rcpts {
		count[r.Action]++
	}
	para("This is the mail delivery system at " + clean(mta, true) + ".")
	if count[ActionFailed] > 0 {
		para("Your message could not be delivered to the recipients marked \"failed\" below. " +
			"This is a permanent error: the relay has given up on them. " +
			"The reason is given for each recipient.")
	}
	if count[ActionDelayed] > 0 {
		para("Your message has not yet been delivered to the recipients marked \"delayed\" below. " +
			"The relay is still trying and will keep trying until the time shown; " +
			"you do not need to send the message again.")
	}
	if count[ActionDelivered]+count[ActionRelayed]+count[ActionExpanded] > 0 {
		para("Your message was delivered to, or passed on for, the recipients " +
			"marked \"delivered\", \"relayed\" or \"expanded\" below.")
	}
	if v := clean(m.QueueID, true); v != "" {
		lines = append(lines, wrap("Queue ID: ", "    ", v)...)
	}
	if v := clean(m.EnvID, true); v != "" {
		lines = append(lines, wrap("Envelope ID: ", "    ", v)...)
	}
	if len(lines) > 0 && lines[len(lines)-1] != "" {
		lines = append(lines, "")
	}
	const ind, ind2 = "    ", "        "
	item := func(label, text string) {
		if text != "" {
			lines = append(lines, wrap(ind+label+": ", ind2, text)...)
		}
	}
	for _, r := range rcpts {
		addr := clean(r.Addr, true)
		lines = append(lines, wrap("", ind, "<"+addr+">: "+actionText(r.Action)+", status "+r.Status)...)
		if o := clean(r.ORcpt, true); o != "" {
			if _, a, ok := strings.Cut(o, ";"); !ok || !strings.EqualFold(a, addr) {
				item("Original recipient", o)
			}
		}
		item("Remote server", clean(r.RemoteMTA, true))
		item("Remote server said", clean(r.Diagnostic, true))
		item("Reason", clean(r.Reason, true))
		if !r.LastAttempt.IsZero() {
			item("Last attempt", r.LastAttempt.Format(rfc5322Date))
		}
		if r.Action == ActionDelayed && !r.WillRetryUntil.IsZero() {
			item("Will retry until", r.WillRetryUntil.Format(rfc5322Date))
		}
		lines = append(lines, "")
	}
	if hasOrig {
		if headersOnly {
			para("The header of your message is attached after the machine-readable report.")
		} else {
			para("Your message is attached after the machine-readable report.")
		}
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// actionText describes an action in the human-readable part.
func actionText(action string) string {
	switch action {
	case ActionRelayed:
		return "relayed to a system that sends no further reports"
	case ActionExpanded:
		return "expanded (alias or list) and delivered"
	}
	return action
}

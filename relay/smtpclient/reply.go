package smtpclient

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	// maxReplyLine is the longest reply line accepted, CRLF included.
	// RFC 5321 §4.5.3.1.5 allows 512 octets; real servers exceed that, so
	// the cap is generous but still bounded.
	maxReplyLine = 4096
	// maxReplyLines is the largest number of lines in one reply.
	maxReplyLines = 100
)

// Reply is one SMTP reply (RFC 5321 §4.2), possibly spanning several lines.
type Reply struct {
	// Code is the three-digit reply code, for example 250 or 550.
	Code int
	// Enhanced is the enhanced status code (RFC 3463, RFC 2034), for
	// example "5.1.1", or "" when the reply carries none. It is recognised
	// when a line's text starts with "class.subject.detail" whose class
	// matches the first digit of Code.
	Enhanced string
	// Lines holds the text of each reply line without the reply code and
	// without the enhanced status code.
	Lines []string
}

// Error formats the reply as "550 5.1.1 no such user"; the lines of a
// multi-line reply are joined with "; ".
func (r *Reply) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != "" {
		b.WriteByte(' ')
		b.WriteString(r.Enhanced)
	}
	if text := strings.Join(r.Lines, "; "); strings.TrimSpace(text) != "" {
		b.WriteByte(' ')
		b.WriteString(text)
	}
	return b.String()
}

// String returns the same text as Error.
func (r *Reply) String() string { return r.Error() }

// Positive reports whether the reply is a 2xx completion reply.
func (r *Reply) Positive() bool { return r.Code/100 == 2 }

// Temporary reports whether the reply is a 4xx transient negative reply.
func (r *Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports whether the reply is a 5xx permanent negative reply.
func (r *Reply) Permanent() bool { return r.Code/100 == 5 }

// readReply reads one complete (possibly multi-line) reply from br.
// Violations of the reply syntax and of the size limits are reported as
// errors wrapping ErrProtocol; I/O errors are returned as they are, with
// io.EOF turned into io.ErrUnexpectedEOF.
func readReply(br *bufio.Reader) (*Reply, error) {
	r := &Reply{}
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return nil, fmt.Errorf("%w: reply longer than %d lines", ErrProtocol, maxReplyLines)
		}
		raw, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: reply line longer than %d octets", ErrProtocol, maxReplyLine)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		code, last, text, ok := splitReplyLine(line)
		if !ok {
			return nil, fmt.Errorf("%w: malformed reply line %q", ErrProtocol, clip(line))
		}
		if n == 0 {
			r.Code = code
		} else if code != r.Code {
			return nil, fmt.Errorf("%w: reply code changed from %d to %d within one reply", ErrProtocol, r.Code, code)
		}
		if enh, rest, ok := cutEnhanced(text, code); ok {
			if r.Enhanced == "" {
				r.Enhanced = enh
			}
			text = rest
		}
		r.Lines = append(r.Lines, text)
		if last {
			return r, nil
		}
	}
}

// splitReplyLine parses "250-text", "250 text" or "250".
func splitReplyLine(line string) (code int, last bool, text string, ok bool) {
	if len(line) < 3 {
		return 0, false, "", false
	}
	if line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return 0, false, "", false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	switch {
	case len(line) == 3:
		return code, true, "", true
	case line[3] == ' ':
		return code, true, line[4:], true
	case line[3] == '-':
		return code, false, line[4:], true
	}
	return 0, false, "", false
}

// cutEnhanced splits a leading enhanced status code ("5.1.1 text") off
// text when its class matches the reply code's first digit.
func cutEnhanced(text string, code int) (enh, rest string, ok bool) {
	if len(text) < 5 || text[0] != byte('0'+code/100) || text[1] != '.' {
		return "", text, false
	}
	switch text[0] {
	case '2', '4', '5':
	default:
		return "", text, false
	}
	i := 2
	digits := func() bool {
		j := i
		for i < len(text) && i-j < 4 && text[i] >= '0' && text[i] <= '9' {
			i++
		}
		return i-j >= 1 && i-j <= 3
	}
	if !digits() || i >= len(text) || text[i] != '.' {
		return "", text, false
	}
	i++
	if !digits() {
		return "", text, false
	}
	if i < len(text) && text[i] != ' ' {
		return "", text, false
	}
	return text[:i], strings.TrimPrefix(text[i:], " "), true
}

// clip shortens s for use in an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

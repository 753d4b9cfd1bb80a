package reportmail

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"regexp"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

// fromLine matches the separator line of an mbox file ("From sender
// date") when it does not follow an empty line: a sender, then a time of
// day somewhere in the date.
var fromLine = regexp.MustCompile(`^From \S+ +.*\d\d:\d\d`)

// Mbox returns the messages of the mbox file read from r, in order, with
// the separator lines removed and ">From " lines unescaped (mboxrd; mboxo
// files read the same except for body lines that started with ">From ").
// A line starting with "From " separates messages when it is the first
// line, follows an empty line, or looks like a separator ("From sender
// date" with a time of day).
//
// A message longer than maxMessage bytes is yielded as a nil message with
// an error wrapping tlsrpt.ErrTooLarge, and the next message follows; a
// read error is yielded once and ends the sequence. Text before the first
// separator is skipped. The yielded slices are not reused.
func Mbox(r io.Reader, maxMessage int64) iter.Seq2[[]byte, error] {
	return func(yield func([]byte, error) bool) {
		br := bufio.NewReaderSize(r, 64<<10)
		var (
			cur       []byte
			started   bool // a separator has been seen
			over      bool // cur exceeded maxMessage
			n         int  // messages started
			lineStart = true
			prevBlank = true
		)
		flush := func() bool {
			if !started {
				return true
			}
			if over {
				return yield(nil, fmt.Errorf("mbox message %d: %w: over %d bytes", n, tlsrpt.ErrTooLarge, maxMessage))
			}
			// The empty line before the next separator belongs to the mbox
			// format, not to the message.
			msg := cur
			if bytes.HasSuffix(msg, []byte("\r\n\r\n")) {
				msg = msg[:len(msg)-2]
			} else if bytes.HasSuffix(msg, []byte("\n\n")) {
				msg = msg[:len(msg)-1]
			}
			return yield(msg, nil)
		}
		for {
			frag, err := br.ReadSlice('\n')
			if len(frag) > 0 {
				complete := frag[len(frag)-1] == '\n'
				isSep := lineStart && bytes.HasPrefix(frag, []byte("From ")) &&
					(!started || prevBlank || fromLine.Match(frag))
				switch {
				case isSep:
					if !flush() {
						return
					}
					started, over, cur = true, false, nil
					n++
					if !complete { // skip the rest of a long separator line
						for errors.Is(err, bufio.ErrBufferFull) {
							_, err = br.ReadSlice('\n')
						}
						complete = true
					}
					frag = nil
				case !started:
					frag = nil
				case lineStart && isEscapedFrom(frag):
					frag = frag[1:]
				}
				if frag != nil && !over {
					if int64(len(cur)+len(frag)) > maxMessage {
						over, cur = true, nil
					} else {
						cur = append(cur, frag...)
					}
				}
				if lineStart {
					prevBlank = complete && len(bytes.TrimRight(frag, "\r\n")) == 0 && frag != nil
				}
				lineStart = complete
			}
			switch {
			case err == nil, errors.Is(err, bufio.ErrBufferFull):
			case err == io.EOF:
				flush()
				return
			default:
				if flush() {
					yield(nil, fmt.Errorf("read mbox: %w", err))
				}
				return
			}
		}
	}
}

// isEscapedFrom reports whether line is ">From ", ">>From ", and so on.
func isEscapedFrom(line []byte) bool {
	t := bytes.TrimLeft(line, ">")
	return len(t) < len(line) && bytes.HasPrefix(t, []byte("From "))
}

package smtpclient

import (
	"bytes"
	"io"
)

// dotWriter streams a message body onto the wire in the DATA format of
// RFC 5321 §4.5.2: a '.' that starts a line is doubled, and Close ends the
// body with CRLF (only when the body does not already end with one)
// followed by ".", CRLF.
//
// Line endings are normalised: a bare LF or a bare CR becomes CRLF. RFC
// 5321 §2.3.8 forbids sending bare CR and LF, and passing them through
// would let a body smuggle an end-of-data sequence ("\n.\n", "\r\n.\n")
// past receivers that accept bare line endings. Bodies that use CRLF
// throughout are sent byte for byte.
type dotWriter struct {
	w   io.Writer
	bol bool // at the beginning of a line
	cr  bool // a CR was seen and not yet written
}

func newDotWriter(w io.Writer) *dotWriter { return &dotWriter{w: w, bol: true} }

var crlf = []byte("\r\n")

// Write encodes p. Its error is the underlying writer's.
func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.cr {
			d.cr = false
			if _, err := d.w.Write(crlf); err != nil {
				return 0, err
			}
			d.bol = true
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.bol && p[0] == '.' {
			if _, err := d.w.Write([]byte{'.'}); err != nil {
				return 0, err
			}
		}
		i := indexLineBreak(p)
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return 0, err
			}
			d.bol = false
			break
		}
		if i > 0 {
			if _, err := d.w.Write(p[:i]); err != nil {
				return 0, err
			}
			d.bol = false
		}
		if p[i] == '\r' {
			d.cr = true
		} else {
			if _, err := d.w.Write(crlf); err != nil {
				return 0, err
			}
			d.bol = true
		}
		p = p[i+1:]
	}
	return n, nil
}

// Close terminates the body; it does not close the underlying writer.
func (d *dotWriter) Close() error {
	if d.cr || !d.bol {
		if _, err := d.w.Write(crlf); err != nil {
			return err
		}
	}
	d.cr, d.bol = false, true
	_, err := d.w.Write([]byte(".\r\n"))
	return err
}

// indexLineBreak returns the index of the first CR or LF in p, or -1. Two
// IndexByte scans (vectorised) beat one IndexAny over a message body.
func indexLineBreak(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	limit := p
	if i >= 0 {
		limit = p[:i]
	}
	if j := bytes.IndexByte(limit, '\r'); j >= 0 {
		return j
	}
	return i
}

package tlsrpt

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Errors of Decode, wrapped with details; test them with errors.Is.
var (
	// ErrTooLarge: the body, or what it inflates to, exceeds its cap.
	ErrTooLarge = errors.New("report too large")
	// ErrUnsupportedType: a media type or content encoding that is not
	// a TLS report.
	ErrUnsupportedType = errors.New("unsupported media type")
	// ErrBadGzip: the body is declared gzip but is not valid gzip data.
	ErrBadGzip = errors.New("bad gzip data")
)

// Media types of TLS reports (RFC 8460 §6). application/json is accepted
// too: some senders use it for the JSON form.
const (
	MediaTypeJSON  = "application/tlsrpt+json"
	MediaTypeGzip  = "application/tlsrpt+gzip"
	MediaTypePlain = "application/json"
)

// gzipMagic starts every gzip member (RFC 1952 §2.3.1). No JSON text
// starts with it, so sniffing it is safe.
var gzipMagic = []byte{0x1f, 0x8b}

// Decode reads a report body of the given Content-Type and
// Content-Encoding and returns the JSON text, decompressed if needed.
//
// Accepted are application/tlsrpt+json, application/tlsrpt+gzip and
// application/json (RFC 8460 §5.3.2), with Content-Encoding empty,
// "identity", "gzip" or "x-gzip". The body is gzip-decompressed when the
// type or the encoding says gzip (RFC 8460 §5.2), or when a JSON type's
// body starts with the gzip magic bytes (mislabelled senders); when both
// type and encoding say gzip, a second layer is removed only if present.
// Bytes after the end of the gzip member are ignored (RPT03).
//
// At most maxCompressed+1 bytes are read from r and at most
// maxDecompressed+1 bytes are inflated, so a gzip bomb costs little memory
// and time: beyond either cap the error wraps ErrTooLarge. Caps of zero or
// less mean DefaultMaxBody and DefaultMaxDecompressed. An unknown type or
// encoding wraps ErrUnsupportedType, damaged gzip data ErrBadGzip; other
// errors are those of r.
func Decode(r io.Reader, contentType, contentEncoding string, maxCompressed, maxDecompressed int64) ([]byte, error) {
	if maxCompressed <= 0 {
		maxCompressed = DefaultMaxBody
	}
	if maxDecompressed <= 0 {
		maxDecompressed = DefaultMaxDecompressed
	}
	typeGzip, err := checkMediaType(contentType)
	if err != nil {
		return nil, err
	}
	encGzip, err := checkEncoding(contentEncoding)
	if err != nil {
		return nil, err
	}
	layers := 0
	if typeGzip {
		layers++
	}
	if encGzip {
		layers++
	}

	cr := &capReader{r: r, left: maxCompressed, max: maxCompressed}
	br := bufio.NewReader(cr)
	for layer := 0; layer < 2; layer++ { // two layers is the most a declaration allows
		magic, err := br.Peek(len(gzipMagic))
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read report: %w", err)
		}
		if !bytes.Equal(magic, gzipMagic) {
			if layer == 0 && layers > 0 {
				return nil, fmt.Errorf("%w: the body is declared gzip but does not start like gzip data", ErrBadGzip)
			}
			break // plain JSON, or a declared second layer that is absent
		}
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, gzipError(err)
		}
		// One member only: bytes after it are tolerated (RPT03).
		zr.Multistream(false)
		br = bufio.NewReader(&gzipErrReader{zr})
	}
	b, err := readCapped(br, maxDecompressed)
	if err == nil && cr.left < 0 {
		// The gzip member ended in the byte past the cap.
		err = fmt.Errorf("%w: body over %d bytes", ErrTooLarge, maxCompressed)
	}
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	return b, nil
}

// checkMediaType accepts the media types of TLS reports and reports
// whether the type says gzip.
func checkMediaType(contentType string) (gzipped bool, err error) {
	if strings.TrimSpace(contentType) == "" {
		return false, fmt.Errorf("%w: no Content-Type (want %s or %s)", ErrUnsupportedType, MediaTypeJSON, MediaTypeGzip)
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, fmt.Errorf("%w: Content-Type %s: %v", ErrUnsupportedType, quote(contentType), err)
	}
	switch mt {
	case MediaTypeJSON, MediaTypePlain:
		return false, nil
	case MediaTypeGzip:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s (want %s or %s)", ErrUnsupportedType, quote(mt), MediaTypeJSON, MediaTypeGzip)
}

// checkEncoding accepts the content encodings "identity" and "gzip" and
// reports whether the encoding is gzip. A list ("gzip, identity") is
// refused: nobody sends reports that way.
func checkEncoding(enc string) (gzipped bool, err error) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return false, nil
	case "gzip", "x-gzip":
		return true, nil
	}
	return false, fmt.Errorf("%w: Content-Encoding %s (want gzip or none)", ErrUnsupportedType, quote(enc))
}

// readCapped reads r to the end, failing with ErrTooLarge after max
// bytes. It reads at most max+1 bytes, into a buffer that doubles up to
// max, so that refusing an oversized report allocates about twice the cap.
func readCapped(r io.Reader, max int64) ([]byte, error) {
	buf := make([]byte, 0, min(max, 64<<10))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= max {
				// Full: one more byte means too large.
				var probe [1]byte
				n, err := io.ReadFull(r, probe[:])
				switch {
				case n > 0:
					return nil, fmt.Errorf("%w: the report inflates to more than %d bytes", ErrTooLarge, max)
				case err == io.EOF:
					return buf, nil
				}
				return nil, err
			}
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), max))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// capReader returns an error wrapping ErrTooLarge once more than left
// bytes have been read from r; it reads at most one byte more.
type capReader struct {
	r    io.Reader
	left int64
	max  int64 // the cap, for the message
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, c.max)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, c.max)
	}
	return n, err
}

// gzipErrReader marks errors of the gzip format as ErrBadGzip and passes
// the others (of the underlying reader, such as ErrTooLarge) through.
type gzipErrReader struct{ zr *gzip.Reader }

func (g *gzipErrReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = gzipError(err)
	}
	return n, err
}

func gzipError(err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, ErrTooLarge):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated gzip data", ErrBadGzip)
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, &corrupt):
		return fmt.Errorf("%w: %v", ErrBadGzip, err)
	}
	return err
}

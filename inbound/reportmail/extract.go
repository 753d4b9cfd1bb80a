package reportmail

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

// Errors of the extraction, wrapped with details; test them with
// errors.Is. Sizes over a cap wrap tlsrpt.ErrTooLarge.
var (
	// ErrNoReport: the message or file holds no TLS report that could be
	// decoded.
	ErrNoReport = errors.New("no TLS report found")
	// ErrLimit: the message has more MIME parts, nesting, reports or zip
	// entries than the Limits allow (a zip bomb, for example).
	ErrLimit = errors.New("over an extraction limit")
	// ErrNotMessage: the data is not an Internet message (RFC 5322).
	ErrNotMessage = errors.New("not a mail message")
)

// Defaults of Limits.
const (
	DefaultMaxReports    = 16
	DefaultMaxParts      = 256
	DefaultMaxDepth      = 8
	DefaultMaxZipEntries = 16
)

// Limits bound the work and memory of an extraction. The zero value means
// the defaults.
type Limits struct {
	// MaxPartBytes caps a report part after transfer decoding, as sent
	// (compressed or not); default tlsrpt.DefaultMaxBody.
	MaxPartBytes int64
	// MaxReportBytes caps one report's JSON text after decompression;
	// default tlsrpt.DefaultMaxDecompressed.
	MaxReportBytes int64
	// MaxTotalBytes caps the JSON text of all reports of one message or
	// file together; default twice MaxReportBytes.
	MaxTotalBytes int64
	// MaxReports is the most reports one message or file may hold;
	// default DefaultMaxReports.
	MaxReports int
	// MaxParts is the most MIME parts examined; default DefaultMaxParts.
	MaxParts int
	// MaxDepth is the deepest nesting of multiparts and attached messages;
	// default DefaultMaxDepth.
	MaxDepth int
	// MaxZipEntries is the most entries a zip archive may have; one with
	// more is refused whole. Default DefaultMaxZipEntries.
	MaxZipEntries int
}

func (l Limits) withDefaults() Limits {
	if l.MaxPartBytes <= 0 {
		l.MaxPartBytes = tlsrpt.DefaultMaxBody
	}
	if l.MaxReportBytes <= 0 {
		l.MaxReportBytes = tlsrpt.DefaultMaxDecompressed
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = 2 * l.MaxReportBytes
	}
	if l.MaxReports <= 0 {
		l.MaxReports = DefaultMaxReports
	}
	if l.MaxParts <= 0 {
		l.MaxParts = DefaultMaxParts
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxZipEntries <= 0 {
		l.MaxZipEntries = DefaultMaxZipEntries
	}
	return l
}

// Found is one report found in a message or file.
type Found struct {
	// JSON is the report's JSON text, decompressed; it is not validated
	// yet (see tlsrpt.Parse).
	JSON []byte
	// Where says where it was found, for logs: the MIME part's number,
	// media type and file name, or the zip entry.
	Where string
}

// Extraction is what Extract found.
type Extraction struct {
	// Reports are the report texts found, in message order.
	Reports []Found
	// Problems are the parts that looked like reports but could not be
	// decoded (bad base64, damaged gzip, a report over its cap), and
	// multiparts that could not be read to the end.
	Problems []error
}

// problem records a part that could not be decoded.
func (e *Extraction) problem(where string, err error) {
	e.Problems = append(e.Problems, fmt.Errorf("%s: %w", where, err))
}

// ExtractReports returns the JSON texts of the TLS reports in the mail
// message msg, decompressed, with the default Limits. The reports are not
// validated (see tlsrpt.Parse). When the message holds none, the error
// wraps ErrNoReport and says what was wrong with the parts that looked
// like reports; parts that fail while others succeed are left out
// silently (use Extract to see them).
func ExtractReports(msg []byte) ([][]byte, error) {
	ex, err := Extract(msg, Limits{})
	if err != nil {
		return nil, err
	}
	if err := ex.Err(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(ex.Reports))
	for i, f := range ex.Reports {
		out[i] = f.JSON
	}
	return out, nil
}

// Err returns nil when e holds a report, else an error wrapping
// ErrNoReport that says what was wrong with the parts that looked like
// reports, or that there were none.
func (e *Extraction) Err() error {
	if len(e.Reports) > 0 {
		return nil
	}
	if len(e.Problems) == 0 {
		return fmt.Errorf("%w: no part of type %s or %s, and no .json, .json.gz or .zip attachment",
			ErrNoReport, tlsrpt.MediaTypeGzip, tlsrpt.MediaTypeJSON)
	}
	return fmt.Errorf("%w: %w", ErrNoReport, problemList(e.Problems))
}

// problemList joins errors on one line, unlike errors.Join.
type problemList []error

func (p problemList) Error() string {
	s := make([]string, len(p))
	for i, e := range p {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (p problemList) Unwrap() []error { return p }

// Extract finds the TLS reports in the mail message msg (RFC 5322 with
// MIME, RFC 8460 §5.3.1): parts of type application/tlsrpt+gzip,
// application/tlsrpt+json or application/json, and attachments named
// *.json, *.json.gz or *.zip, in nested multiparts and attached messages
// too, in the transfer encodings base64, quoted-printable, 7bit, 8bit and
// binary. Zip archives yield their *.json and *.json.gz entries.
//
// The error is non-nil only when msg is not a message (ErrNotMessage) or
// exceeds a count in lim (ErrLimit); parts that cannot be decoded are
// listed in Extraction.Problems. An Extraction without Reports and without
// error means that no part looked like a report.
func Extract(msg []byte, lim Limits) (*Extraction, error) {
	x := &extractor{lim: lim.withDefaults(), out: &Extraction{}}
	if err := x.message(bytes.NewReader(msg), 0, ""); err != nil {
		return nil, err
	}
	return x.out, nil
}

// ExtractFile finds the TLS reports in a file an administrator imports:
// a report's JSON text, a gzip-compressed report, a zip archive of
// reports, a mail message (.eml) or an mbox file of messages. The kind is
// told by the content: gzip and zip magic bytes, JSON's opening brace, an
// mbox "From " line, else a message; name only labels the reports and
// problems. The error is that of Extract for a message; a file of another
// kind that cannot be decoded, and each message of an mbox file that
// cannot, is reported in Extraction.Problems. Limits hold for the whole
// file, except MaxParts and MaxDepth, which hold per message.
func ExtractFile(name string, data []byte, lim Limits) (*Extraction, error) {
	x := &extractor{lim: lim.withDefaults(), out: &Extraction{}}
	label := name
	if label == "" {
		label = "file"
	}
	switch kind := sniff(data); kind {
	case kindZip:
		if int64(len(data)) > x.lim.MaxPartBytes {
			x.out.problem(label, fmt.Errorf("%w: zip archive over %d bytes", tlsrpt.ErrTooLarge, x.lim.MaxPartBytes))
			return x.out, nil
		}
		if err := x.zip(data, label); err != nil {
			return nil, err
		}
	case kindGzip, kindJSON:
		if err := x.report(data, kind, label); err != nil {
			return nil, err
		}
	case kindMbox:
		n := 0
		for msg, err := range Mbox(bytes.NewReader(data), int64(len(data))) {
			n++
			where := fmt.Sprintf("%s message %d", label, n)
			if err != nil {
				x.out.problem(where, err)
				continue
			}
			// MaxParts counts per message; the caps on reports hold for
			// the whole file.
			x.parts = 0
			if err := x.message(bytes.NewReader(msg), 0, where+": "); err != nil {
				x.out.problem(where, err)
			}
		}
	default:
		if err := x.message(bytes.NewReader(data), 0, ""); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
	}
	return x.out, nil
}

// kinds of report data.
type kind int

const (
	kindNone kind = iota
	kindJSON      // JSON text, or gzip data mislabelled as JSON
	kindGzip
	kindZip
	kindMbox // only for files
)

var (
	zipMagic      = []byte("PK\x03\x04")
	zipEmptyMagic = []byte("PK\x05\x06")
	gzipMagic     = []byte{0x1f, 0x8b}
	bom           = []byte("\xef\xbb\xbf")
)

// sniff tells the kind of an imported file by its content; kindNone means
// a mail message.
func sniff(data []byte) kind {
	switch {
	case bytes.HasPrefix(data, zipMagic), bytes.HasPrefix(data, zipEmptyMagic):
		return kindZip
	case bytes.HasPrefix(data, gzipMagic):
		return kindGzip
	case bytes.HasPrefix(data, []byte("From ")):
		return kindMbox
	}
	t := bytes.TrimLeftFunc(bytes.TrimPrefix(data, bom), unicode.IsSpace)
	if bytes.HasPrefix(t, []byte("{")) {
		return kindJSON
	}
	return kindNone
}

// extractor walks one message or file.
type extractor struct {
	lim   Limits
	out   *Extraction
	parts int
	total int64
}

// message reads an Internet message from r and walks its body. prefix
// starts the labels of its parts.
func (x *extractor) message(r io.Reader, depth int, prefix string) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotMessage, oneLine(err.Error()))
	}
	return x.entity(textproto.MIMEHeader(m.Header), m.Body, depth, prefix+"part 1")
}

// entity examines one MIME entity with header h and (still transfer
// encoded) body; where labels it.
func (x *extractor) entity(h textproto.MIMEHeader, body io.Reader, depth int, where string) error {
	if x.parts++; x.parts > x.lim.MaxParts {
		return fmt.Errorf("%w: more than %d MIME parts", ErrLimit, x.lim.MaxParts)
	}
	if depth > x.lim.MaxDepth {
		return fmt.Errorf("%w: MIME parts nested deeper than %d levels", ErrLimit, x.lim.MaxDepth)
	}
	mediaType, params := contentType(h.Get("Content-Type"))
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		return x.multipart(params["boundary"], body, depth, where)
	case mediaType == "message/rfc822" || mediaType == "message/global":
		decoded, err := transferDecoder(h.Get("Content-Transfer-Encoding"), body)
		if err != nil {
			x.out.problem(where, err)
			return nil
		}
		err = x.message(decoded, depth+1, where+" message: ")
		if err != nil && !errors.Is(err, ErrLimit) {
			x.out.problem(where, err) // an attached message that does not parse
			return nil
		}
		return err
	}
	name := fileName(h, params)
	k := reportKind(mediaType, name)
	if k == kindNone {
		return nil
	}
	label := where + " " + mediaType
	if name != "" {
		label += " " + strconv.Quote(truncateName(name))
	}
	decoded, err := transferDecoder(h.Get("Content-Transfer-Encoding"), body)
	if err != nil {
		x.out.problem(label, err)
		return nil
	}
	data, err := readCapped(decoded, x.lim.MaxPartBytes)
	if err != nil {
		x.out.problem(label, err)
		return nil
	}
	if bytes.HasPrefix(data, zipMagic) || bytes.HasPrefix(data, zipEmptyMagic) {
		k = kindZip
	}
	if k == kindZip {
		return x.zip(data, label)
	}
	return x.report(data, k, label)
}

// multipart walks the parts of a multipart body.
func (x *extractor) multipart(boundary string, body io.Reader, depth int, where string) error {
	if boundary == "" {
		x.out.problem(where, errors.New("multipart without boundary"))
		return nil
	}
	mr := multipart.NewReader(body, boundary)
	for i := 1; ; i++ {
		// NextRawPart leaves quoted-printable alone: transfer encodings are
		// decoded in one place, entity.
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			x.out.problem(where, fmt.Errorf("malformed multipart: %v", oneLine(err.Error())))
			return nil
		}
		err = x.entity(p.Header, p, depth+1, fmt.Sprintf("%s.%d", where, i))
		p.Close()
		if err != nil {
			return err
		}
	}
}

// report decodes one report of kind k (plain or gzip-compressed JSON) and
// adds it.
func (x *extractor) report(data []byte, k kind, label string) error {
	if len(x.out.Reports) >= x.lim.MaxReports {
		return fmt.Errorf("%w: more than %d reports", ErrLimit, x.lim.MaxReports)
	}
	ctype := tlsrpt.MediaTypeJSON // Decode sniffs gzip data under it too
	if k == kindGzip && bytes.HasPrefix(data, gzipMagic) {
		ctype = tlsrpt.MediaTypeGzip
	}
	max := min(x.lim.MaxReportBytes, x.lim.MaxTotalBytes-x.total)
	if max <= 0 {
		return fmt.Errorf("%w: reports of more than %d bytes in all", ErrLimit, x.lim.MaxTotalBytes)
	}
	js, err := tlsrpt.Decode(bytes.NewReader(data), ctype, "", int64(len(data))+1, max)
	if err != nil {
		if errors.Is(err, tlsrpt.ErrTooLarge) && max < x.lim.MaxReportBytes {
			return fmt.Errorf("%w: reports of more than %d bytes in all", ErrLimit, x.lim.MaxTotalBytes)
		}
		x.out.problem(label, err)
		return nil
	}
	x.total += int64(len(js))
	x.out.Reports = append(x.out.Reports, Found{JSON: js, Where: label})
	return nil
}

// zip adds the *.json and *.json.gz entries of a zip archive. An archive
// with more than MaxZipEntries entries, or an entry that says or turns out
// to inflate beyond MaxReportBytes, is a problem: zip bombs cost little.
func (x *extractor) zip(data []byte, label string) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		x.out.problem(label, fmt.Errorf("bad zip archive: %v", oneLine(err.Error())))
		return nil
	}
	if len(zr.File) > x.lim.MaxZipEntries {
		x.out.problem(label, fmt.Errorf("%w: zip archive with %d entries (at most %d)", ErrLimit, len(zr.File), x.lim.MaxZipEntries))
		return nil
	}
	found := false
	for _, f := range zr.File {
		k := reportKind("", strings.ToLower(f.Name))
		if f.FileInfo().IsDir() || (k != kindJSON && k != kindGzip) {
			continue
		}
		found = true
		where := label + " entry " + strconv.Quote(truncateName(f.Name))
		if f.UncompressedSize64 > uint64(x.lim.MaxReportBytes) {
			x.out.problem(where, fmt.Errorf("%w: zip entry says it inflates to %d bytes (at most %d)", tlsrpt.ErrTooLarge, f.UncompressedSize64, x.lim.MaxReportBytes))
			continue
		}
		rc, err := f.Open()
		if err != nil {
			x.out.problem(where, fmt.Errorf("bad zip entry: %v", oneLine(err.Error())))
			continue
		}
		// The entry's declared size is checked by archive/zip as it
		// reads; the cap holds even if it lies.
		b, err := readCapped(rc, x.lim.MaxReportBytes)
		rc.Close()
		if err != nil {
			x.out.problem(where, err)
			continue
		}
		if err := x.report(b, k, where); err != nil {
			return err
		}
	}
	if !found {
		x.out.problem(label, errors.New("zip archive without a .json or .json.gz entry"))
	}
	return nil
}

// contentType parses a Content-Type header. A missing or unparsable one
// is text/plain (RFC 2045 §5.2); a type with bad parameters keeps its
// type.
func contentType(v string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if mt == "" || (err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter)) {
		return "text/plain", map[string]string{}
	}
	if params == nil {
		params = map[string]string{}
	}
	return strings.ToLower(mt), params
}

// fileName returns the lower-cased file name of a part: the
// Content-Disposition filename, else the Content-Type name, decoded from
// RFC 2231 and RFC 2047 forms; "" when there is none.
func fileName(h textproto.MIMEHeader, ctParams map[string]string) string {
	name := ""
	if cd := h.Get("Content-Disposition"); cd != "" {
		if _, p, err := mime.ParseMediaType(cd); err == nil || errors.Is(err, mime.ErrInvalidMediaParameter) {
			name = p["filename"]
		}
	}
	if name == "" {
		name = ctParams["name"]
	}
	if strings.Contains(name, "=?") {
		dec := &mime.WordDecoder{}
		if d, err := dec.DecodeHeader(name); err == nil {
			name = d
		}
	}
	return strings.ToLower(strings.TrimSpace(name))
}

// reportKind tells from a part's media type and (lower-case) file name
// whether it is a report, and of which kind.
func reportKind(mediaType, name string) kind {
	switch mediaType {
	case tlsrpt.MediaTypeGzip:
		return kindGzip
	case tlsrpt.MediaTypeJSON, tlsrpt.MediaTypePlain:
		return kindJSON
	}
	base := path.Base(strings.ReplaceAll(name, "\\", "/"))
	switch {
	case strings.HasSuffix(base, ".json.gz"), strings.HasSuffix(base, ".json.gzip"):
		return kindGzip
	case strings.HasSuffix(base, ".json"):
		return kindJSON
	case strings.HasSuffix(base, ".zip"):
		return kindZip
	}
	return kindNone
}

// transferDecoder returns a reader of body with its
// Content-Transfer-Encoding removed.
func transferDecoder(cte string, body io.Reader) (io.Reader, error) {
	switch enc := strings.ToLower(strings.TrimSpace(cte)); enc {
	case "", "7bit", "8bit", "binary":
		return body, nil
	case "base64":
		return base64.NewDecoder(base64.RawStdEncoding, &base64Filter{r: body}), nil
	case "quoted-printable":
		return quotedprintable.NewReader(body), nil
	default:
		return nil, fmt.Errorf("unknown Content-Transfer-Encoding %s", strconv.Quote(truncateName(enc)))
	}
}

// base64Filter passes on the characters of the base64 alphabet and drops
// line breaks and other white space, so that base64 text wrapped at any
// width decodes. The first '=' ends the data: padding, and anything
// senders put after it, is ignored (the decoder is RawStdEncoding). Other
// characters are an error.
type base64Filter struct {
	r    io.Reader
	done bool
}

func (f *base64Filter) Read(p []byte) (int, error) {
	for {
		if f.done {
			return 0, io.EOF
		}
		n, err := f.r.Read(p)
		w := 0
		for _, c := range p[:n] {
			switch {
			case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
				p[w] = c
				w++
			case c == '=':
				f.done = true
			case c == ' ', c == '\t', c == '\r', c == '\n':
			default:
				return w, fmt.Errorf("bad base64 data: character %q", c)
			}
			if f.done {
				break
			}
		}
		if f.done {
			return w, nil
		}
		if w > 0 || err != nil {
			return w, err
		}
	}
}

// readCapped reads r to the end, failing with an error wrapping
// tlsrpt.ErrTooLarge beyond max bytes.
func readCapped(r io.Reader, max int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read part: %v", oneLine(err.Error()))
	}
	if n > max {
		return nil, fmt.Errorf("%w: part over %d bytes", tlsrpt.ErrTooLarge, max)
	}
	return buf.Bytes(), nil
}

// truncateName bounds a name from the network for labels.
func truncateName(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// oneLine replaces line breaks so that an error message stays on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

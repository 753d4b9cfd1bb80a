package dsn

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
)

// Report is a DSN read back by Parse.
type Report struct {
	// Human is the text of the first (human-readable) part, with its
	// content-transfer-encoding removed.
	Human string
	// PerMessage holds the per-message fields of the delivery-status part
	// (Reporting-MTA, Original-Envelope-Id, Arrival-Date, X-Queue-ID...),
	// keyed by canonical header key: get them with PerMessage.Get, e.g.
	// Get("Reporting-MTA") (stored as "Reporting-Mta").
	PerMessage textproto.MIMEHeader
	// PerRecipient holds one set of per-recipient fields per recipient,
	// in order, keyed like PerMessage; folded values are unfolded.
	PerRecipient []textproto.MIMEHeader
	// OriginalType is the lower-case media type of the part following the
	// delivery-status part ("message/rfc822", "text/rfc822-headers",
	// "message/global", "message/global-headers"), or "" if there is none.
	OriginalType string
	// Original is the content of that part, exactly as it appears in the
	// DSN unless it carries a quoted-printable or base64 encoding, which is
	// removed.
	Original []byte
	// Header is the header of the DSN message itself.
	Header mail.Header
}

// Parse reads a DSN: a message whose Content-Type is multipart/report
// (RFC 6522) and which has a message/delivery-status or
// message/global-delivery-status part (RFC 3464, RFC 6533). The first part
// is taken as the human-readable text when it is text/*; the part after the
// delivery-status part, if any, as the returned original.
func Parse(data []byte) (*Report, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("dsn: reading message header: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("dsn: Content-Type: %w", err)
	}
	if mt != "multipart/report" {
		return nil, fmt.Errorf("dsn: Content-Type is %q, not multipart/report", mt)
	}
	if params["boundary"] == "" {
		return nil, errors.New("dsn: multipart/report without boundary")
	}
	rep := &Report{Header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	found := false
	for i := 0; ; i++ {
		p, err := mr.NextPart() // removes a quoted-printable encoding
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: part %d: %w", i+1, err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("dsn: part %d: %w", i+1, err)
		}
		if strings.EqualFold(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding")), "base64") {
			dec := base64.NewDecoder(base64.StdEncoding, bytes.NewReader(bytes.Map(dropSpace, body)))
			if body, err = io.ReadAll(dec); err != nil {
				return nil, fmt.Errorf("dsn: part %d: base64: %w", i+1, err)
			}
		}
		ptype := "text/plain" // RFC 2045 §5.2 default
		if ct := p.Header.Get("Content-Type"); ct != "" {
			if ptype, _, err = mime.ParseMediaType(ct); err != nil {
				return nil, fmt.Errorf("dsn: part %d: Content-Type: %w", i+1, err)
			}
		}
		switch {
		case i == 0 && strings.HasPrefix(ptype, "text/"):
			rep.Human = string(body)
		case !found && (ptype == "message/delivery-status" || ptype == "message/global-delivery-status"):
			if rep.PerMessage, rep.PerRecipient, err = parseStatus(body); err != nil {
				return nil, err
			}
			found = true
		case found && rep.OriginalType == "":
			rep.OriginalType, rep.Original = ptype, body
		}
	}
	if !found {
		return nil, errors.New("dsn: no message/delivery-status part")
	}
	return rep, nil
}

// parseStatus reads the per-message fields and the per-recipient blocks of
// a delivery-status body; blocks are separated by empty lines (RFC 3464 §2.1).
func parseStatus(body []byte) (textproto.MIMEHeader, []textproto.MIMEHeader, error) {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	var blocks []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			blocks = append(blocks, h)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("dsn: delivery-status fields: %w", err)
		}
	}
	if len(blocks) < 2 {
		return nil, nil, errors.New("dsn: delivery-status part without per-recipient fields")
	}
	return blocks[0], blocks[1:], nil
}

func dropSpace(r rune) rune {
	if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
		return -1
	}
	return r
}

package reportmail

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// LookupTXTFunc returns the TXT records of a DNS name, one string per
// record (the record's strings joined). A name that does not exist, or has
// no TXT records, is no records and no error; an error means the lookup
// failed (a timeout, SERVFAIL) and makes the DKIM result a temperror.
type LookupTXTFunc func(ctx context.Context, name string) ([]string, error)

// DKIMNone is the DKIM result of a message without a DKIM-Signature.
const DKIMNone = "none"

// maxDKIMSignatures bounds the signatures verified per message (each costs
// a DNS lookup and a hash of the body).
const maxDKIMSignatures = 5

// VerifyDKIM verifies the DKIM signatures (RFC 6376) of msg, looking keys
// up with lookup (nil: the system resolver), and returns the result stored
// with the reports the message carries:
//
//	pass (d=google.com)                          a signature verified
//	fail: body hash did not verify (d=google.com) none did; the first failure
//	temperror: key unavailable: ... (d=google.com) a key lookup failed
//	none                                          no signature
//
// A message with several signatures passes when one does; the passing
// domains are listed. Lookups stop when ctx ends. Only the first five
// signatures are verified.
func VerifyDKIM(ctx context.Context, msg []byte, lookup LookupTXTFunc) string {
	if lookup == nil {
		lookup = systemLookupTXT
	}
	opts := &dkim.VerifyOptions{
		MaxVerifications: maxDKIMSignatures,
		LookupTXT: func(name string) ([]string, error) {
			txts, err := lookup(ctx, name)
			if err != nil {
				// go-msgauth makes a temporary net.Error a temperror, any
				// other error a permerror ("no key").
				return nil, temporaryError{err}
			}
			return txts, nil
		},
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), opts)
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return clip("fail: " + dkimReason(err))
	}
	if len(verifs) == 0 {
		return DKIMNone
	}
	var passed []string
	var failed, temp *dkim.Verification
	for _, v := range verifs {
		switch {
		case v.Err == nil:
			passed = append(passed, "d="+clean(v.Domain))
		case dkim.IsTempFail(v.Err):
			if temp == nil {
				temp = v
			}
		default:
			if failed == nil {
				failed = v
			}
		}
	}
	switch {
	case len(passed) > 0:
		return clip("pass (" + strings.Join(passed, ", ") + ")")
	case failed != nil:
		return clip("fail: " + dkimReason(failed.Err) + domainNote(failed.Domain))
	}
	return clip("temperror: " + dkimReason(temp.Err) + domainNote(temp.Domain))
}

func domainNote(d string) string {
	if d == "" {
		return ""
	}
	return " (d=" + clean(d) + ")"
}

// dkimReason is the message of a go-msgauth error without its prefix.
func dkimReason(err error) string {
	return clean(strings.TrimPrefix(err.Error(), "dkim: "))
}

// clean keeps text from the network printable and on one line.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// clip bounds a DKIM result to what the report store accepts.
func clip(s string) string {
	const max = 512
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// temporaryError marks a failed key lookup as temporary for go-msgauth.
type temporaryError struct{ err error }

func (e temporaryError) Error() string   { return e.err.Error() }
func (e temporaryError) Unwrap() error   { return e.err }
func (e temporaryError) Timeout() bool   { return false }
func (e temporaryError) Temporary() bool { return true }

var _ net.Error = temporaryError{}

// systemLookupTXT looks TXT records up with the system resolver; a name
// that does not exist is no records.
func systemLookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := net.DefaultResolver.LookupTXT(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	return txts, err
}

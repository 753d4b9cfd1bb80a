package mtasts

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/relaysec/relay/secpolicy"
)

// maxIDLen is the longest policy id (RFC 8461 §3.1: 1*32(ALPHA / DIGIT)).
const maxIDLen = 32

// LookupID looks up the "_mta-sts.<domain>" TXT record (checklist STS01,
// RFC 8461 §3.1) and returns the policy id it announces.
//
// The character-strings of each TXT record are concatenated; records that do
// not start with "v=STSv1" are discarded. found is true only when exactly
// one record remains and it is valid: "v=STSv1; id=<1 to 32 letters or
// digits>", other fields ignored. NXDOMAIN, no records, several v=STSv1
// records or an invalid one all give found=false with a nil error.
//
// A failed lookup (SERVFAIL, timeout, ...) is returned as err, never as
// found=false: the caller must not take it for a missing record.
func LookupID(ctx context.Context, r *secpolicy.Resolver, domain string) (id string, found bool, err error) {
	id, why, err := lookupID(ctx, r, domain)
	return id, err == nil && why == "", err
}

// lookupID is LookupID that also says why no id was found (why is "" when
// one was).
func lookupID(ctx context.Context, r *secpolicy.Resolver, domain string) (id, why string, err error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return "", "", fmt.Errorf("look up MTA-STS TXT record: %w", err)
	}
	name := "_mta-sts." + d
	ans, err := r.Lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return "", "", fmt.Errorf("look up MTA-STS TXT record of %s: %w", d, err)
	}
	if ans.NXDomain {
		return "", "no " + name + " (NXDOMAIN)", nil
	}
	var records []string
	for _, rr := range ans.Records {
		txt, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		if s := secpolicy.TXTValue(txt); isSTSv1(s) {
			records = append(records, s)
		}
	}
	switch len(records) {
	case 0:
		return "", "no v=STSv1 TXT record at " + name, nil
	case 1:
	default:
		// RFC 8461 §3.1: more than one record means no policy.
		return "", fmt.Sprintf("%d v=STSv1 TXT records at %s", len(records), name), nil
	}
	id, err = parseTXT(records[0])
	if err != nil {
		return "", fmt.Sprintf("invalid TXT record at %s: %v", name, err), nil
	}
	return id, "", nil
}

// isSTSv1 reports whether a TXT record belongs to MTA-STS: it starts with
// the version field "v=STSv1", followed by the end, whitespace or ";".
func isSTSv1(s string) bool {
	rest, ok := strings.CutPrefix(s, "v=STSv1")
	return ok && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t')
}

// parseTXT parses an MTA-STS TXT record (RFC 8461 §3.1):
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-field-delim = *WSP ";" *WSP
//
// It returns the id. Extension fields must be name=value but are otherwise
// ignored; a repeated id makes the record invalid.
func parseTXT(s string) (string, error) {
	fields := strings.Split(s, ";")
	if strings.Trim(fields[0], " \t") != "v=STSv1" {
		return "", errors.New("first field is not v=STSv1")
	}
	var id string
	for i, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			if i == len(fields)-2 {
				break // optional trailing delimiter
			}
			return "", errors.New("empty field")
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("field %q is not name=value", f)
		}
		if name == "id" {
			if id != "" {
				return "", errors.New("more than one id")
			}
			if !validID(value) {
				return "", fmt.Errorf("id %q is not 1 to %d letters or digits", value, maxIDLen)
			}
			id = value
			continue
		}
		if !validKey(name) || !validExtValue(value) {
			return "", fmt.Errorf("malformed field %q", f)
		}
	}
	if id == "" {
		return "", errors.New("no id")
	}
	return id, nil
}

// validID checks 1*32(ALPHA / DIGIT).
func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// validExtValue checks sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E), that is
// printable ASCII except "=", ";" and space.
func validExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '=' || c == ';' {
			return false
		}
	}
	return true
}

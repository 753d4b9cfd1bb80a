package mtasts

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is the mode of a policy (RFC 8461 §5).
type Mode string

// Policy modes, as written in the policy file.
const (
	// ModeEnforce: MX hosts that match no pattern, or that fail validation,
	// must not be delivered to.
	ModeEnforce Mode = "enforce"
	// ModeTesting: validate and report failures, but deliver anyway.
	ModeTesting Mode = "testing"
	// ModeNone: the domain has no active policy; no restrictions apply
	// (checklist STS15).
	ModeNone Mode = "none"
)

// MaxMaxAge is the largest max_age a policy can have (RFC 8461 §3.2,
// 31557600 seconds); larger values are clamped to it.
const MaxMaxAge = 31557600 * time.Second

// Policy is a parsed MTA-STS policy (RFC 8461 §3.2).
type Policy struct {
	// Mode is enforce, testing or none.
	Mode Mode
	// MaxAge is how long the policy may be cached, 0 to MaxMaxAge, whole
	// seconds.
	MaxAge time.Duration
	// MX holds the mx patterns in the order of the file: lowercase domain
	// names without a trailing dot, each optionally starting with "*.".
	// It is empty only in mode none.
	MX []string
	// Raw is the policy file as received.
	Raw []byte
}

// ErrInvalidPolicy is wrapped by every error of Parse.
var ErrInvalidPolicy = errors.New("invalid MTA-STS policy")

// maxAgeDigits is the length limit of max_age (RFC 8461 §3.2: 1*10DIGIT).
const maxAgeDigits = 10

// Parse parses an MTA-STS policy file (checklist STS05). Lines are
// "key: value" separated by CRLF or LF; whitespace around keys and values
// and blank lines are tolerated. Keys and the values of version and mode are
// case-sensitive (the ABNF of RFC 8461 §3.2 uses %s strings).
//
// The policy is invalid when: a line has no colon, an empty key or a key
// with characters outside the extension-name syntax, or a control character;
// version (which must be STSv1), mode (enforce, testing or none) or max_age
// (1 to 10 digits) is missing, malformed or repeated; an mx pattern is not a
// domain name with an optional leading "*."; or there is no mx line and the
// mode is not none. A max_age above 31557600 is clamped to it; unknown keys
// are ignored. Every error wraps ErrInvalidPolicy.
//
// Note: RFC 8461 §3.2 says that all but the first of a duplicated field
// "SHALL be ignored"; the project's checklist (STS05) makes such a policy
// invalid instead, and Parse follows the checklist.
func Parse(body []byte) (*Policy, error) {
	p, err := parse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	return p, nil
}

func parse(body []byte) (*Policy, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("empty policy")
	}
	p := &Policy{Raw: bytes.Clone(body)}
	var haveVersion, haveMode, haveMaxAge bool
	text := strings.TrimPrefix(string(body), "\ufeff") // tolerate a UTF-8 byte order mark
	for n, line := range strings.Split(text, "\n") {
		lineNo := n + 1
		line = strings.TrimSuffix(line, "\r") // CRLF or LF (RFC 8461 §3.2)
		if i := strings.IndexFunc(line, isControl); i >= 0 {
			return nil, fmt.Errorf("line %d: control character %q", lineNo, line[i])
		}
		if strings.Trim(line, " \t") == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: no colon in %q", lineNo, line)
		}
		key = strings.Trim(key, " \t")
		value = strings.Trim(value, " \t")
		if !validKey(key) {
			return nil, fmt.Errorf("line %d: malformed key %q", lineNo, key)
		}
		switch key {
		case "version":
			if haveVersion {
				return nil, fmt.Errorf("line %d: duplicate version", lineNo)
			}
			haveVersion = true
			if value != "STSv1" {
				return nil, fmt.Errorf("line %d: version %q is not STSv1", lineNo, value)
			}
		case "mode":
			if haveMode {
				return nil, fmt.Errorf("line %d: duplicate mode", lineNo)
			}
			haveMode = true
			switch m := Mode(value); m {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = m
			default:
				return nil, fmt.Errorf("line %d: mode %q is not enforce, testing or none", lineNo, value)
			}
		case "max_age":
			if haveMaxAge {
				return nil, fmt.Errorf("line %d: duplicate max_age", lineNo)
			}
			haveMaxAge = true
			d, err := parseMaxAge(value)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			p.MaxAge = d
		case "mx":
			pat, err := normalizePattern(value)
			if err != nil {
				return nil, fmt.Errorf("line %d: mx %q: %w", lineNo, value, err)
			}
			p.MX = append(p.MX, pat)
		default:
			// Unknown keys are extensions and are ignored (RFC 8461 §3.2).
		}
	}
	switch {
	case !haveVersion:
		return nil, errors.New("no version")
	case !haveMode:
		return nil, errors.New("no mode")
	case !haveMaxAge:
		return nil, errors.New("no max_age")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, fmt.Errorf("mode %s without mx patterns", p.Mode)
	}
	return p, nil
}

// isControl reports ASCII control characters other than HTAB; a bare CR
// inside a line is one.
func isControl(r rune) bool {
	return r < 0x20 && r != '\t' || r == 0x7f
}

// validKey checks a key against sts-policy-ext-name of RFC 8461 §3.2:
// a letter or digit, then letters, digits, "_", "-" or ".". The length
// limit of 32 is not enforced: an overlong unknown key is ignored like any
// other unknown key.
func validKey(k string) bool {
	if k == "" || !isAlnum(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseMaxAge parses 1*10DIGIT seconds and clamps the result to MaxMaxAge.
func parseMaxAge(s string) (time.Duration, error) {
	if s == "" || len(s) > maxAgeDigits {
		return 0, fmt.Errorf("max_age %q is not 1 to %d digits", s, maxAgeDigits)
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Errorf("max_age %q is not a number of seconds", s)
		}
	}
	secs, err := strconv.ParseUint(s, 10, 64) // 10 digits always fit
	if err != nil {
		return 0, fmt.Errorf("max_age %q: %w", s, err)
	}
	d := time.Duration(secs) * time.Second
	if secs > uint64(MaxMaxAge/time.Second) {
		d = MaxMaxAge // RFC 8461 §3.2: "maximum value of 31557600"
	}
	return d, nil
}

// normalizePattern validates an mx pattern (RFC 8461 §3.2: ["*."] Domain,
// RFC 5321 syntax, A-labels only) and returns it lowercase without a
// trailing dot.
func normalizePattern(v string) (string, error) {
	pat := strings.ToLower(strings.TrimSuffix(v, "."))
	name := strings.TrimPrefix(pat, "*.")
	if strings.Contains(name, "*") {
		return "", errors.New(`a wildcard is only allowed as a whole leftmost label, "*."`)
	}
	if err := checkDomain(name); err != nil {
		return "", err
	}
	return pat, nil
}

// checkDomain checks that name (lowercase, no trailing dot) is a host name
// in the Domain syntax of RFC 5321 §4.1.2: dot-separated labels of letters,
// digits and inner hyphens, 1 to 63 octets each, 253 in all. A last label of
// digits only is refused, so that IP addresses are not taken for names.
func checkDomain(name string) error {
	if name == "" {
		return errors.New("empty domain name")
	}
	if len(name) > 253 {
		return errors.New("domain name longer than 253 octets")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q longer than 63 octets", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' {
				return fmt.Errorf("label %q: names have letters, digits and hyphens only (internationalized names in xn-- form)", l)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return fmt.Errorf("last label %q is all digits", last)
	}
	return nil
}

// normalizeDomain returns domain lowercase without a trailing dot, or an
// error when it is not a valid domain name.
// ErrInvalidDomain is wrapped by the errors for a domain name that cannot
// have an MTA-STS policy (not a valid ASCII domain name).
var ErrInvalidDomain = errors.New("invalid domain name")

func normalizeDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if err := checkDomain(d); err != nil {
		return "", fmt.Errorf("domain %q: %w: %v", domain, ErrInvalidDomain, err)
	}
	return d, nil
}

// MatchMX reports whether host, an MX host name, matches one of the
// policy's mx patterns (checklist STS06, RFC 8461 §4.1). Matching ignores
// case and a trailing dot; "*.example.com" matches a name with exactly one
// more label on the left ("mx1.example.com"), never "example.com" itself
// nor "a.b.example.com".
func (p *Policy) MatchMX(host string) bool {
	if p == nil {
		return false
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "" {
		return false
	}
	for _, pat := range p.MX {
		if matchPattern(pat, h) {
			return true
		}
	}
	return false
}

// matchPattern matches a normalized host against one normalized pattern.
func matchPattern(pat, host string) bool {
	suffix, wild := strings.CutPrefix(pat, "*.")
	if !wild {
		return host == pat
	}
	label, rest, ok := strings.Cut(host, ".")
	return ok && label != "" && label != "*" && rest == suffix
}

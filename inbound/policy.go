package inbound

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Values of PolicyConfig.Mode (RFC 8461 §5).
const (
	ModeEnforce = "enforce"
	ModeTesting = "testing"
	ModeNone    = "none"
)

const (
	// PolicyPath is where senders fetch a policy (RFC 8461 §3.3).
	PolicyPath = "/.well-known/mta-sts.txt"
	// MaxMaxAge is the largest max_age RFC 8461 §3.2 allows (about a year).
	MaxMaxAge = 31557600
	// MinRecommendedMaxAge is the shortest max_age that is not warned
	// about: RFC 8461 §3.2 recommends weeks or more; a day is the least
	// this relay accepts without a warning (checklist SRV05).
	MinRecommendedMaxAge = 86400
	// policyHostPrefix is the label the policy host adds to the domain.
	policyHostPrefix = "mta-sts."
	// policyIDLen is the length of PolicyID's result; RFC 8461 §3.1
	// allows 1 to 32 alphanumeric characters.
	policyIDLen = 20
)

// PolicyConfig is one domain's MTA-STS policy (RFC 8461 §3.2).
type PolicyConfig struct {
	// Domain is the policy domain, such as "example.org"; the policy is
	// served for "mta-sts.example.org".
	Domain string
	// Mode is ModeEnforce, ModeTesting or ModeNone.
	Mode string
	// MaxAge is how long senders may cache the policy, in seconds; at most
	// MaxMaxAge.
	MaxAge int
	// MX are the allowed MX host patterns, "mail.example.org" or
	// "*.example.org". At least one unless Mode is ModeNone.
	MX []string
}

// PolicyHost returns the host name a domain's policy is served on,
// "mta-sts.<domain>", lower-case and without a trailing dot.
func PolicyHost(domain string) string {
	return policyHostPrefix + normalizeDomain(domain)
}

// RenderPolicy validates p and returns the policy file: "key: value" lines
// ending in CRLF, in the order version, mode, one mx per pattern, max_age
// (RFC 8461 §3.2). Names are written lower-case.
func RenderPolicy(p PolicyConfig) ([]byte, error) {
	p = normalizePolicy(p)
	if err := validatePolicy(p); err != nil {
		return nil, err
	}
	return renderPolicy(p), nil
}

// PolicyID returns the id to publish in the domain's _mta-sts TXT record
// for a policy file: the first 20 characters of the base32 form of the
// body's SHA-256, so any change of the policy changes the id, and the id
// is 1–32 alphanumeric characters as RFC 8461 §3.1 requires.
func PolicyID(policyBody []byte) string {
	sum := sha256.Sum256(policyBody)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:policyIDLen]
}

// normalizePolicy lower-cases the names of p and strips trailing dots.
func normalizePolicy(p PolicyConfig) PolicyConfig {
	p.Domain = normalizeDomain(p.Domain)
	p.Mode = strings.ToLower(strings.TrimSpace(p.Mode))
	mx := make([]string, len(p.MX))
	for i, m := range p.MX {
		mx[i] = normalizeDomain(m)
	}
	p.MX = mx
	return p
}

// renderPolicy writes the policy file of a normalized p without checking it.
func renderPolicy(p PolicyConfig) []byte {
	var b bytes.Buffer
	b.WriteString("version: STSv1\r\n")
	b.WriteString("mode: " + p.Mode + "\r\n")
	for _, m := range p.MX {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(p.MaxAge) + "\r\n")
	return b.Bytes()
}

// validatePolicy checks a normalized policy. Every value ends up in the
// policy file, so nothing that could break its line structure passes.
func validatePolicy(p PolicyConfig) error {
	if err := checkDomainName(p.Domain, false); err != nil {
		return fmt.Errorf("policy domain %q: %w", p.Domain, err)
	}
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	default:
		return fmt.Errorf("policy for %s: mode %q is not enforce, testing or none", p.Domain, p.Mode)
	}
	if p.MaxAge < 0 || p.MaxAge > MaxMaxAge {
		return fmt.Errorf("policy for %s: max_age %d is outside 0..%d (RFC 8461 §3.2)", p.Domain, p.MaxAge, MaxMaxAge)
	}
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return fmt.Errorf("policy for %s: mode %s needs at least one mx pattern", p.Domain, p.Mode)
	}
	for _, m := range p.MX {
		if err := checkDomainName(m, true); err != nil {
			return fmt.Errorf("policy for %s: mx %q: %w", p.Domain, m, err)
		}
	}
	return nil
}

// normalizeDomain lower-cases a domain name and strips surrounding space
// and one trailing dot.
func normalizeDomain(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// checkDomainName checks a normalized host name: LDH labels of 1 to 63
// characters, at least two labels, at most 253 characters; internationalized
// names in their A-label (xn--) form. With wildcard,
// a leading "*." is allowed (an MX pattern, RFC 8461 §4.1).
func checkDomainName(name string, wildcard bool) error {
	if wildcard {
		name = strings.TrimPrefix(name, "*.")
	}
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return errors.New("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return errors.New("not a fully qualified host name")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("has an empty label or one longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("has a label that starts or ends with a hyphen")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("has the character %q, not allowed in a host name", c)
			}
		}
	}
	return nil
}

// MatchMX reports whether MX host name host matches the policy pattern
// (RFC 8461 §4.1): equal ignoring case and a trailing dot, or, for
// "*.example.org", host is one label followed by ".example.org".
func MatchMX(pattern, host string) bool {
	pattern, host = normalizeDomain(pattern), normalizeDomain(host)
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		i := strings.IndexByte(host, '.')
		return i > 0 && host[i+1:] == rest
	}
	return host != "" && host == pattern
}

// ParsePolicy parses a policy file as senders do (RFC 8461 §3.2): "key:
// value" lines ending in CRLF or LF; version, mode and max_age required,
// mx required unless mode is none; unknown keys ignored.
func ParsePolicy(body []byte) (PolicyConfig, error) {
	var (
		p                    PolicyConfig
		version, mode, maxAg bool
	)
	for line := range strings.SplitSeq(string(body), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return PolicyConfig{}, fmt.Errorf("line %q is not \"key: value\"", line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "version":
			if value != "STSv1" {
				return PolicyConfig{}, fmt.Errorf("version %q is not STSv1", value)
			}
			version = true
		case "mode":
			switch value {
			case ModeEnforce, ModeTesting, ModeNone:
			default:
				return PolicyConfig{}, fmt.Errorf("mode %q is not enforce, testing or none", value)
			}
			p.Mode, mode = value, true
		case "max_age":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 || len(value) > 10 {
				return PolicyConfig{}, fmt.Errorf("max_age %q is not a number of seconds", value)
			}
			p.MaxAge, maxAg = n, true
		case "mx":
			if err := checkDomainName(normalizeDomain(value), true); err != nil {
				return PolicyConfig{}, fmt.Errorf("mx %q: %w", value, err)
			}
			p.MX = append(p.MX, value)
		}
	}
	switch {
	case !version:
		return PolicyConfig{}, errors.New("no version: STSv1 line")
	case !mode:
		return PolicyConfig{}, errors.New("no mode line")
	case !maxAg:
		return PolicyConfig{}, errors.New("no max_age line")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return PolicyConfig{}, fmt.Errorf("mode %s without mx lines", p.Mode)
	}
	return p, nil
}

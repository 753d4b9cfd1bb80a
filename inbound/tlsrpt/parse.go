package tlsrpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds that Parse enforces. Lenient parsing of real-world quirks (RFC
// 8460 reports from large senders deviate in small ways) stays inside them.
const (
	// MaxDepth is the deepest nesting of JSON objects and arrays accepted;
	// a report needs 5.
	MaxDepth = 32
	// MaxStringLen is the longest JSON string (member name or value)
	// accepted, in bytes.
	MaxStringLen = 8192
	// MaxPolicies is the most "policies" elements a report may have.
	MaxPolicies = 1000
	// MaxFailureDetails is the most "failure-details" elements one policy
	// may have.
	MaxFailureDetails = 10000
	// MaxListLen is the most elements of "policy-string" and "mx-host".
	MaxListLen = 1000
	// MaxTokens is the most JSON tokens (values, member names and
	// brackets) a report may have; it bounds the time Parse takes. A
	// report at the MaxFailureDetails bound has about 150000.
	MaxTokens = 1 << 20
	// MaxCount is the largest session count accepted: the largest integer
	// that every JSON implementation represents exactly (2^53-1).
	MaxCount = 1<<53 - 1
)

// ErrInvalid is wrapped by every error of Parse: the data is not a valid
// TLS report.
var ErrInvalid = errors.New("invalid TLS report")

// FieldError is a validation error of Parse. Its message is one line that
// names the field, such as
// "policies[0].summary.total-failure-session-count: must be a non-negative integer".
type FieldError struct {
	// Field is the path of the offending member, empty for errors of the
	// JSON text as a whole.
	Field string
	// Reason says what is wrong, without the field.
	Reason string
}

// Error returns "field: reason", or the reason alone for the whole text.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Parse validates a TLS report in the JSON format of RFC 8460 §4.4 and
// returns it. Validation is strict about structure and types: every
// required member must be present with its type, counts must be
// non-negative integers (not floats, negative numbers or strings), a
// report without a "policies" array is refused, member names may not
// repeat, nesting deeper than MaxDepth, strings longer than MaxStringLen
// and texts of more than MaxTokens tokens are refused, and policy types
// must be those of the RFC.
// Members the RFC does not define are ignored.
//
// Known real-world quirks are accepted: dates without a time zone (taken
// as UTC), an end-datetime at the next midnight, "mx-host" as a string or
// an array, optional members missing, empty or null (an empty
// "sending-mta-ip", no "policy-string", no "policy-domain" for
// no-policy-found), a UTF-8 byte order mark, and result types that RFC
// 8460 §4.3 does not define (kept, with a warning in Report.Warnings).
//
// Errors wrap ErrInvalid and are a *FieldError whose message is one line.
func Parse(data []byte) (*Report, error) {
	return parse(data, MaxTokens)
}

// parse is Parse with a token limit that tests can lower.
func parse(data []byte, maxTokens int) (*Report, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	root, err := parseTree(data, maxTokens)
	if err != nil {
		return nil, err
	}
	v := &validator{}
	r := v.report(root)
	if v.err != nil {
		return nil, v.err
	}
	r.Warnings = v.warnings
	return r, nil
}

// treeParser turns JSON text into a tree of map[string]any, []any, string,
// json.Number, bool and nil, enforcing MaxDepth, MaxStringLen and unique
// member names as it goes, so that hostile input never gets deep or big.
type treeParser struct {
	dec       *json.Decoder
	path      pathStack
	tokens    int
	maxTokens int
}

func parseTree(data []byte, maxTokens int) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &FieldError{Reason: "empty report"}
	}
	p := &treeParser{dec: json.NewDecoder(bytes.NewReader(data)), maxTokens: maxTokens}
	p.dec.UseNumber()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, &FieldError{Reason: "invalid JSON: data after the report object"}
	}
	root, ok := v.(map[string]any)
	if !ok {
		return nil, &FieldError{Reason: "invalid report: the JSON text is not an object"}
	}
	return root, nil
}

func (p *treeParser) token() (json.Token, error) {
	if p.tokens++; p.tokens > p.maxTokens {
		return nil, &FieldError{Field: p.path.String(), Reason: fmt.Sprintf("more than %d JSON tokens", p.maxTokens)}
	}
	tok, err := p.dec.Token()
	if err == nil {
		return tok, nil
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return nil, &FieldError{Reason: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se.Error())}
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, &FieldError{Reason: "invalid JSON: unexpected end of data"}
	}
	return nil, &FieldError{Reason: "invalid JSON: " + oneLine(err.Error())}
}

// value reads one JSON value at nesting depth (the number of enclosing
// objects and arrays).
func (p *treeParser) value(depth int) (any, error) {
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= MaxDepth {
			return nil, &FieldError{Field: p.path.String(), Reason: fmt.Sprintf("JSON nested deeper than %d levels", MaxDepth)}
		}
		switch t {
		case '{':
			obj := map[string]any{}
			for p.dec.More() {
				kt, err := p.token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok { // the decoder only returns strings here
					return nil, &FieldError{Field: p.path.String(), Reason: "invalid JSON: member name is not a string"}
				}
				if len(key) > MaxStringLen {
					return nil, &FieldError{Field: p.path.String(), Reason: fmt.Sprintf("member name longer than %d bytes", MaxStringLen)}
				}
				if _, dup := obj[key]; dup {
					return nil, &FieldError{Field: p.path.child(key), Reason: "duplicate member"}
				}
				p.path.push(key)
				v, err := p.value(depth + 1)
				p.path.pop()
				if err != nil {
					return nil, err
				}
				obj[key] = v
			}
			if _, err := p.token(); err != nil { // '}'
				return nil, err
			}
			return obj, nil
		case '[':
			arr := []any{}
			for i := 0; p.dec.More(); i++ {
				p.path.push(i)
				v, err := p.value(depth + 1)
				p.path.pop()
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := p.token(); err != nil { // ']'
				return nil, err
			}
			return arr, nil
		}
		return nil, &FieldError{Field: p.path.String(), Reason: fmt.Sprintf("invalid JSON: unexpected %q", rune(t))}
	case string:
		if len(t) > MaxStringLen {
			return nil, &FieldError{Field: p.path.String(), Reason: fmt.Sprintf("string longer than %d bytes", MaxStringLen)}
		}
		return t, nil
	}
	return tok, nil // json.Number, bool or nil
}

// pathStack is the path of the value being parsed: member names and array
// indexes.
type pathStack []any

func (s *pathStack) push(e any) { *s = append(*s, e) }
func (s *pathStack) pop()       { *s = (*s)[:len(*s)-1] }

func (s pathStack) String() string {
	var b strings.Builder
	for _, e := range s {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(fieldName(e))
		}
	}
	return b.String()
}

func (s pathStack) child(key string) string {
	if len(s) == 0 {
		return fieldName(key)
	}
	return s.String() + "." + fieldName(key)
}

// fieldName makes a member name from the input safe to show in a path:
// one line, bounded.
func fieldName(s string) string {
	const max = 64
	clean := true
	for _, r := range s {
		if !unicode.IsPrint(r) || r == '.' || r == '[' || r == ' ' {
			clean = false
			break
		}
	}
	if clean && len(s) <= max && s != "" {
		return s
	}
	return quote(s)
}

// quote returns s quoted for an error message: one line, at most about
// 64 bytes of it.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// oneLine replaces line breaks so that an error message stays on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// validator builds a Report from the tree, stopping at the first error.
type validator struct {
	err      error
	warnings []string
}

func (v *validator) fail(field, format string, args ...any) {
	if v.err == nil {
		v.err = &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
}

func (v *validator) warn(field, format string, args ...any) {
	const maxWarnings = 100
	switch {
	case len(v.warnings) < maxWarnings:
		v.warnings = append(v.warnings, field+": "+fmt.Sprintf(format, args...))
	case len(v.warnings) == maxWarnings:
		v.warnings = append(v.warnings, "more warnings left out")
	}
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func typeName(x any) string {
	switch x.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", x)
}

// object returns the member key of o as an object.
func (v *validator) object(o map[string]any, parent, key string) map[string]any {
	field := join(parent, key)
	x, ok := o[key]
	if !ok || x == nil {
		v.fail(field, "required member is missing")
		return nil
	}
	m, ok := x.(map[string]any)
	if !ok {
		v.fail(field, "must be an object, not %s", typeName(x))
		return nil
	}
	return m
}

// str returns the member key of o as a string. A missing or null optional
// member is "". Required members must be present; nonEmpty ones must also
// not be empty.
func (v *validator) str(o map[string]any, parent, key string, required, nonEmpty bool) string {
	field := join(parent, key)
	x, ok := o[key]
	if !ok || x == nil {
		if required {
			v.fail(field, "required member is missing")
		}
		return ""
	}
	s, ok := x.(string)
	if !ok {
		v.fail(field, "must be a string, not %s", typeName(x))
		return ""
	}
	if nonEmpty && strings.TrimSpace(s) == "" {
		v.fail(field, "must not be empty")
	}
	return s
}

// count returns the member key of o as a session count: a required
// non-negative JSON integer of at most MaxCount.
func (v *validator) count(o map[string]any, parent, key string) int64 {
	field := join(parent, key)
	x, ok := o[key]
	if !ok || x == nil {
		v.fail(field, "required member is missing")
		return 0
	}
	n, ok := x.(json.Number)
	if !ok || !isDigits(string(n)) {
		v.fail(field, "must be a non-negative integer")
		return 0
	}
	c, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || c > MaxCount {
		v.fail(field, "must be at most %d", int64(MaxCount))
		return 0
	}
	return c
}

// isDigits reports whether s is a JSON integer without sign, fraction or
// exponent.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// strList returns the optional member key of o as a list of strings; a
// single string is taken as a list of one (RPT03: "mx-host" comes both
// ways).
func (v *validator) strList(o map[string]any, parent, key string) []string {
	field := join(parent, key)
	x, ok := o[key]
	if !ok || x == nil {
		return nil
	}
	switch x := x.(type) {
	case string:
		if x == "" {
			return nil
		}
		return []string{x}
	case []any:
		if len(x) > MaxListLen {
			v.fail(field, "more than %d elements", MaxListLen)
			return nil
		}
		out := make([]string, 0, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				v.fail(fmt.Sprintf("%s[%d]", field, i), "must be a string, not %s", typeName(e))
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	v.fail(field, "must be a string or an array of strings, not %s", typeName(x))
	return nil
}

// array returns the member key of o as an array of at most max elements.
func (v *validator) array(o map[string]any, parent, key string, required bool, max int) []any {
	field := join(parent, key)
	x, ok := o[key]
	if !ok || x == nil {
		if required {
			v.fail(field, "required member is missing")
		}
		return nil
	}
	a, ok := x.([]any)
	if !ok {
		v.fail(field, "must be an array, not %s", typeName(x))
		return nil
	}
	if len(a) > max {
		v.fail(field, "more than %d elements", max)
		return nil
	}
	return a
}

// report validates the top-level object (RFC 8460 §4.4).
func (v *validator) report(root map[string]any) *Report {
	r := &Report{
		OrganizationName: v.str(root, "", "organization-name", true, true),
		ContactInfo:      v.str(root, "", "contact-info", true, false),
		ReportID:         v.str(root, "", "report-id", true, true),
	}
	if dr := v.object(root, "", "date-range"); dr != nil {
		r.DateRange.Start = v.datetime(dr, "date-range", "start-datetime")
		r.DateRange.End = v.datetime(dr, "date-range", "end-datetime")
		if v.err == nil && r.DateRange.End.Before(r.DateRange.Start) {
			v.fail("date-range.end-datetime", "is before start-datetime")
		}
	}
	policies := v.array(root, "", "policies", true, MaxPolicies)
	if v.err == nil && len(policies) == 0 {
		v.fail("policies", "must contain at least one policy")
	}
	r.Policies = make([]PolicyResult, 0, len(policies))
	for i, x := range policies {
		if v.err != nil {
			break
		}
		field := fmt.Sprintf("policies[%d]", i)
		o, ok := x.(map[string]any)
		if !ok {
			v.fail(field, "must be an object, not %s", typeName(x))
			break
		}
		r.Policies = append(r.Policies, v.policyResult(o, field))
	}
	if v.err != nil {
		return nil
	}
	return r
}

func (v *validator) policyResult(o map[string]any, field string) PolicyResult {
	var pr PolicyResult
	if p := v.object(o, field, "policy"); p != nil {
		pr.Policy = v.policy(p, field+".policy")
	}
	if s := v.object(o, field, "summary"); s != nil {
		pr.Summary.TotalSuccessful = v.count(s, field+".summary", "total-successful-session-count")
		pr.Summary.TotalFailure = v.count(s, field+".summary", "total-failure-session-count")
	}
	details := v.array(o, field, "failure-details", false, MaxFailureDetails)
	for i, x := range details {
		if v.err != nil {
			break
		}
		df := fmt.Sprintf("%s.failure-details[%d]", field, i)
		d, ok := x.(map[string]any)
		if !ok {
			v.fail(df, "must be an object, not %s", typeName(x))
			break
		}
		pr.FailureDetails = append(pr.FailureDetails, v.failureDetail(d, df))
	}
	return pr
}

func (v *validator) policy(o map[string]any, field string) Policy {
	p := Policy{Type: PolicyType(v.str(o, field, "policy-type", true, false))}
	switch p.Type {
	case PolicySTS, PolicyTLSA, PolicyNoPolicyFound:
	default:
		if v.err == nil {
			v.fail(field+".policy-type", "unknown policy type %s (want sts, tlsa or no-policy-found)", quote(string(p.Type)))
		}
	}
	p.String = v.strList(o, field, "policy-string")
	// RPT03: no-policy-found reports may leave the policy domain out.
	required := p.Type != PolicyNoPolicyFound
	domain := v.str(o, field, "policy-domain", required, required)
	if domain != "" && v.err == nil {
		var ok bool
		if p.Domain, ok = normalizeDomain(domain); !ok {
			v.fail(field+".policy-domain", "%s is not a domain name", quote(domain))
		}
	}
	p.MXHost = v.strList(o, field, "mx-host")
	return p
}

func (v *validator) failureDetail(o map[string]any, field string) FailureDetail {
	d := FailureDetail{
		ResultType:            ResultType(v.str(o, field, "result-type", true, true)),
		SendingMTAIP:          v.str(o, field, "sending-mta-ip", false, false),
		ReceivingMXHostname:   v.str(o, field, "receiving-mx-hostname", false, false),
		ReceivingMXHelo:       v.str(o, field, "receiving-mx-helo", false, false),
		ReceivingIP:           v.str(o, field, "receiving-ip", false, false),
		FailedSessionCount:    v.count(o, field, "failed-session-count"),
		AdditionalInformation: v.str(o, field, "additional-information", false, false),
		FailureReasonCode:     v.str(o, field, "failure-reason-code", false, false),
	}
	if v.err != nil {
		return d
	}
	// RFC 8460 §4.3 result types are an IANA registry that may grow:
	// unknown ones are kept and flagged rather than refused.
	if !d.ResultType.Known() {
		v.warn(field+".result-type", "result type %s is not defined by RFC 8460 §4.3", quote(string(d.ResultType)))
	}
	for _, ip := range []struct{ key, val string }{{"sending-mta-ip", d.SendingMTAIP}, {"receiving-ip", d.ReceivingIP}} {
		if ip.val != "" {
			if _, err := netip.ParseAddr(ip.val); err != nil {
				v.warn(field+"."+ip.key, "%s is not an IP address", quote(ip.val))
			}
		}
	}
	return d
}

// dateLayouts are the accepted forms of a date-time: RFC 3339 (RFC 8460
// §4.4) and, as a real-world quirk (RPT03), the same without a zone.
var dateLayouts = [...]struct {
	layout string
	utc    bool
}{
	{time.RFC3339Nano, false},
	{"2006-01-02T15:04:05.999999999", true},
}

// datetime returns the member key of o as a time. Times without a zone
// are UTC.
func (v *validator) datetime(o map[string]any, parent, key string) time.Time {
	s := v.str(o, parent, key, true, true)
	if v.err != nil {
		return time.Time{}
	}
	// RFC 3339 §5.6 allows lower-case "t" and "z".
	norm := strings.ToUpper(strings.TrimSpace(s))
	for _, l := range dateLayouts {
		var t time.Time
		var err error
		if l.utc {
			t, err = time.ParseInLocation(l.layout, norm, time.UTC)
		} else {
			t, err = time.Parse(l.layout, norm)
		}
		if err == nil {
			return t.UTC()
		}
	}
	v.fail(join(parent, key), "%s is not an RFC 3339 date-time", quote(s))
	return time.Time{}
}

// normalizeDomain lower-cases a domain name and removes a trailing dot. It
// reports false for text that cannot be a domain name: empty labels,
// labels over 63 bytes, names over 253 bytes, white space, control
// characters, or characters of URLs and addresses.
func normalizeDomain(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || len(s) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || strings.ContainsRune("/\\@:;,\"'<>()[]{}?#%*!", r) || r == utf8.RuneError {
			return "", false
		}
	}
	return s, true
}

package tlsrpt

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRPT03_RealWorldQuirks parses every sample in testdata/tlsrpt: the
// RFC 8460 example and reports shaped like those of Google, Microsoft and
// a small provider, with their quirks.
func TestRPT03_RealWorldQuirks(t *testing.T) {
	day := func(d, h, m, s int) time.Time { return time.Date(2026, 2, d, h, m, s, 0, time.UTC) }
	tests := []struct {
		file       string
		org        string
		start, end time.Time
		domains    []string
		succ, fail int64
		mxHosts    [][]string // per policy
		details    int
		warnings   int
		check      func(t *testing.T, r *Report)
	}{
		{
			file: "rfc8460-example.json", org: "Company-X",
			start: time.Date(2016, 4, 1, 0, 0, 0, 0, time.UTC), end: time.Date(2016, 4, 1, 23, 59, 59, 0, time.UTC),
			domains: []string{"company-y.example"}, succ: 5326, fail: 303,
			mxHosts: [][]string{{"*.mail.company-y.example"}}, details: 3,
			check: func(t *testing.T, r *Report) {
				d := r.Policies[0].FailureDetails[2]
				if d.ResultType != ResultValidationFailure || d.FailureReasonCode != "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED" || d.ReceivingIP != "203.0.113.58" || d.FailedSessionCount != 3 {
					t.Errorf("third failure detail = %+v", d)
				}
				if got := r.Policies[0].Policy.String; len(got) != 4 || got[1] != "mode: testing" {
					t.Errorf("policy-string = %q", got)
				}
			},
		},
		{
			file: "google.json", org: "Google Inc.", start: day(27, 0, 0, 0), end: day(27, 23, 59, 59),
			domains: []string{"example.org"}, succ: 1843, fail: 27,
			mxHosts: [][]string{{"mail.example.org", "backup.example.org"}}, details: 2,
		},
		{
			file: "google.json.gz", org: "Google Inc.", start: day(27, 0, 0, 0), end: day(27, 23, 59, 59),
			domains: []string{"example.org"}, succ: 1843, fail: 27,
			mxHosts: [][]string{{"mail.example.org", "backup.example.org"}}, details: 2,
		},
		{
			// Dates without a zone (UTC), end-datetime at the next
			// midnight, empty sending-mta-ip, CRLF line ends.
			file: "microsoft.json", org: "Microsoft Corporation", start: day(27, 0, 0, 0), end: day(28, 0, 0, 0),
			domains: []string{"example.org"}, succ: 412, fail: 9,
			mxHosts: [][]string{{"mail.example.org", "backup.example.org"}}, details: 1,
			check: func(t *testing.T, r *Report) {
				if d := r.Policies[0].FailureDetails[0]; d.SendingMTAIP != "" || d.ResultType != ResultCertificateHostMismatch {
					t.Errorf("failure detail = %+v", d)
				}
			},
		},
		{
			// tlsa with mx-host as a string and null policy-string, an
			// upper-case policy domain with a trailing dot, lower-case
			// "t" and "z" in dates, no-policy-found without a domain.
			file: "smallprovider.json", org: "Example Mail Hosting e.K.", start: day(27, 0, 0, 0), end: day(27, 23, 59, 59),
			domains: []string{"example.org"}, succ: 33, fail: 4,
			mxHosts: [][]string{{"mail.example.org"}, nil}, details: 1,
			check: func(t *testing.T, r *Report) {
				if p := r.Policies[1].Policy; p.Type != PolicyNoPolicyFound || p.Domain != "" {
					t.Errorf("second policy = %+v", p)
				}
				if r.Policies[0].Policy.Type != PolicyTLSA || r.Policies[0].Policy.String != nil {
					t.Errorf("first policy = %+v", r.Policies[0].Policy)
				}
				if r.Policies[0].FailureDetails[0].ReceivingMXHelo != "mail.example.org" {
					t.Errorf("receiving-mx-helo lost")
				}
			},
		},
		{
			// A result type RFC 8460 §4.3 does not define is kept and
			// flagged.
			file: "unknown-result-type.json", org: "Future Sender",
			start: day(27, 0, 0, 0), end: day(27, 23, 59, 59),
			domains: []string{"example.org"}, succ: 10, fail: 1,
			mxHosts: [][]string{{"mail.example.org"}}, details: 1, warnings: 1,
			check: func(t *testing.T, r *Report) {
				d := r.Policies[0].FailureDetails[0]
				if d.ResultType != "quantum-certificate-unsupported" || d.ResultType.Known() {
					t.Errorf("result type = %q known=%v", d.ResultType, d.ResultType.Known())
				}
				if !strings.Contains(r.Warnings[0], "policies[0].failure-details[0].result-type") {
					t.Errorf("warning = %q", r.Warnings[0])
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data := readSample(t, tt.file)
			if strings.HasSuffix(tt.file, ".gz") {
				var err error
				if data, err = Decode(strings.NewReader(string(data)), MediaTypeGzip, "", 1<<20, 1<<20); err != nil {
					t.Fatal(err)
				}
			}
			r, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if r.OrganizationName != tt.org {
				t.Errorf("organization = %q, want %q", r.OrganizationName, tt.org)
			}
			if !r.DateRange.Start.Equal(tt.start) || !r.DateRange.End.Equal(tt.end) || r.DateRange.Start.Location() != time.UTC {
				t.Errorf("date range = %v .. %v, want %v .. %v (UTC)", r.DateRange.Start, r.DateRange.End, tt.start, tt.end)
			}
			if got := r.PolicyDomains(); !slices.Equal(got, tt.domains) {
				t.Errorf("policy domains = %q, want %q", got, tt.domains)
			}
			if s, f := r.Totals(); s != tt.succ || f != tt.fail {
				t.Errorf("totals = %d/%d, want %d/%d", s, f, tt.succ, tt.fail)
			}
			details := 0
			for i, p := range r.Policies {
				details += len(p.FailureDetails)
				if i < len(tt.mxHosts) && !slices.Equal(p.Policy.MXHost, tt.mxHosts[i]) {
					t.Errorf("policies[%d] mx-host = %q, want %q", i, p.Policy.MXHost, tt.mxHosts[i])
				}
			}
			if details != tt.details {
				t.Errorf("%d failure details, want %d", details, tt.details)
			}
			if len(r.Warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", r.Warnings, tt.warnings)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			checkBounds(t, r)
		})
	}
}

// TestRPT03_TrailingBytesAfterGzip: bytes after the end of the gzip
// member (padding, a second CRLF, garbage) are ignored.
func TestRPT03_TrailingBytesAfterGzip(t *testing.T) {
	body := append(readSample(t, "google.json.gz"), "\r\n\x00\x00garbage after the gzip member"...)
	data, err := Decode(strings.NewReader(string(body)), MediaTypeGzip, "", 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
}

// TestRPT02_Validation removes each required member of the RFC 8460
// example in turn and POSTs it: each gets 400 naming the member.
func TestRPT02_Validation(t *testing.T) {
	srv, _ := newTestServer(t, HandlerOptions{})
	required := []string{
		"organization-name",
		"date-range",
		"date-range.start-datetime",
		"date-range.end-datetime",
		"contact-info",
		"report-id",
		"policies",
		"policies[0].policy",
		"policies[0].policy.policy-type",
		"policies[0].policy.policy-domain",
		"policies[0].summary",
		"policies[0].summary.total-successful-session-count",
		"policies[0].summary.total-failure-session-count",
		"policies[0].failure-details[1].result-type",
		"policies[0].failure-details[1].failed-session-count",
	}
	for _, field := range required {
		t.Run(field, func(t *testing.T) {
			m := tree(t, readSample(t, "rfc8460-example.json"))
			deletePath(t, m, field)
			a := post(t, srv.URL, MediaTypeJSON, "", encode(t, m))
			if a.code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", a.code, a.body)
			}
			if want := field + ": required member is missing"; !strings.Contains(a.err, want) {
				t.Errorf("answer %q does not say %q", a.err, want)
			}
		})
	}

	// Required members with the wrong type.
	wrongType := []struct {
		field string
		value any
		want  string
	}{
		{"organization-name", 42, "organization-name: must be a string, not a number"},
		{"organization-name", "  ", "organization-name: must not be empty"},
		{"report-id", "", "report-id: must not be empty"},
		{"date-range", "2016-04-01", "date-range: must be an object, not a string"},
		{"date-range.start-datetime", "yesterday", `date-range.start-datetime: "yesterday" is not an RFC 3339 date-time`},
		{"policies", map[string]any{}, "policies: must be an array, not an object"},
		{"policies[0]", "sts", "policies[0]: must be an object, not a string"},
		{"policies[0].policy.policy-type", "dmarc", `policies[0].policy.policy-type: unknown policy type "dmarc"`},
		{"policies[0].policy.policy-domain", "company y.example", `policies[0].policy.policy-domain: "company y.example" is not a domain name`},
		{"policies[0].policy.mx-host", 7, "policies[0].policy.mx-host: must be a string or an array of strings, not a number"},
		{"policies[0].policy.policy-string", []any{"version: STSv1", 1}, "policies[0].policy.policy-string[1]: must be a string, not a number"},
		{"policies[0].summary.total-failure-session-count", -1, "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"policies[0].summary.total-failure-session-count", 1.5, "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"policies[0].summary.total-failure-session-count", "303", "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"policies[0].summary.total-failure-session-count", true, "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"policies[0].summary.total-successful-session-count", json9e15(), "policies[0].summary.total-successful-session-count: must be at most 9007199254740991"},
		{"policies[0].failure-details", map[string]any{}, "policies[0].failure-details: must be an array, not an object"},
		{"policies[0].failure-details[0].failed-session-count", -100, "policies[0].failure-details[0].failed-session-count: must be a non-negative integer"},
		{"policies[0].failure-details[0].sending-mta-ip", 17, "policies[0].failure-details[0].sending-mta-ip: must be a string, not a number"},
		{"policies[0].failure-details[0].result-type", nil, "policies[0].failure-details[0].result-type: required member is missing"},
	}
	for _, tt := range wrongType {
		t.Run(fmt.Sprintf("%s=%v", tt.field, tt.value), func(t *testing.T) {
			m := tree(t, readSample(t, "rfc8460-example.json"))
			setPath(t, m, tt.field, tt.value)
			a := post(t, srv.URL, MediaTypeJSON, "", encode(t, m))
			if a.code != http.StatusBadRequest || !strings.Contains(a.err, tt.want) {
				t.Errorf("answer %d %q, want 400 with %q", a.code, a.err, tt.want)
			}
		})
	}
}

// json9e15 is a count over MaxCount.
func json9e15() any { return jsonNumber("9007199254740992") }

// TestParseHostileSamples runs the hostile samples of testdata/tlsrpt/bad.
func TestParseHostileSamples(t *testing.T) {
	tests := []struct{ file, want string }{
		{"negative-count.json", "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"float-count.json", "policies[0].summary.total-successful-session-count: must be a non-negative integer"},
		{"exponent-count.json", "policies[0].summary.total-failure-session-count: must be a non-negative integer"},
		{"string-count.json", "policies[0].failure-details[0].failed-session-count: must be a non-negative integer"},
		{"missing-policies.json", "policies: required member is missing"},
		{"policies-not-array.json", "policies: must be an array, not an object"},
		{"empty-policies.json", "policies: must contain at least one policy"},
		{"report-id-number.json", "report-id: must be a string, not a number"},
		{"unknown-policy-type.json", `policies[0].policy.policy-type: unknown policy type "dmarc"`},
		{"end-before-start.json", "date-range.end-datetime: is before start-datetime"},
		{"bad-date.json", `date-range.start-datetime: "27/02/2026" is not an RFC 3339 date-time`},
		{"sts-without-domain.json", "policies[0].policy.policy-domain: required member is missing"},
		{"not-json.json", "invalid JSON at byte 1"},
		{"truncated.json", "invalid JSON"},
		{"array-top-level.json", "not an object"},
		{"duplicate-member.json", "report-id: duplicate member"},
		{"deep-nesting.json", "x-extension" + strings.Repeat("[0]", MaxDepth-1) + ": JSON nested deeper than 32 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := Parse(readSample(t, "bad/"+tt.file))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", r)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error %q, want one line with %q", msg, tt.want)
			}
		})
	}
}

// TestParseBounds checks the size bounds that lenient parsing keeps.
func TestParseBounds(t *testing.T) {
	base := func() map[string]any { return tree(t, readSample(t, "rfc8460-example.json")) }
	long := strings.Repeat("x", MaxStringLen+1)
	tests := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"long string", func(m map[string]any) { m["contact-info"] = long }, "contact-info: string longer than 8192 bytes"},
		{"long unknown member", func(m map[string]any) { m["x-note"] = long }, "x-note: string longer than 8192 bytes"},
		{"long member name", func(m map[string]any) { m[long] = 1 }, "member name longer than 8192 bytes"},
		{"too many policies", func(m map[string]any) {
			p := m["policies"].([]any)[0]
			m["policies"] = slices.Repeat([]any{p}, MaxPolicies+1)
		}, "policies: more than 1000 elements"},
		{"too many mx hosts", func(m map[string]any) {
			setPath(t, m, "policies[0].policy.mx-host", slices.Repeat([]any{"mx.example"}, MaxListLen+1))
		}, "policies[0].policy.mx-host: more than 1000 elements"},
		{"nesting at the limit", func(m map[string]any) {
			var v any = "deep"
			for range MaxDepth - 1 { // the report object is the first level
				v = []any{v}
			}
			m["x-deep"] = v
		}, ""},
		{"nesting over the limit", func(m map[string]any) {
			var v any = []any{}
			for range MaxDepth - 1 {
				v = []any{v}
			}
			m["x-deep"] = v
		}, "nested deeper than 32 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			tt.edit(m)
			r, err := Parse(encode(t, m))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want == "":
				checkBounds(t, r)
			case err == nil:
				t.Fatalf("Parse accepted it")
			case !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}

// TestParseTokenLimit: the number of JSON tokens is bounded, so that a
// body of a million tiny values cannot take long to parse.
func TestParseTokenLimit(t *testing.T) {
	data := readSample(t, "rfc8460-example.json")
	if _, err := parse(data, 200); err != nil {
		t.Fatalf("the example within 200 tokens: %v", err)
	}
	_, err := parse(data, 60)
	if err == nil || !strings.Contains(err.Error(), "more than 60 JSON tokens") {
		t.Errorf("error %v", err)
	}
}

// TestParseDeepNestingIsCheap: a body of a million '[' fails fast with a
// depth error, never a stack overflow.
func TestParseDeepNestingIsCheap(t *testing.T) {
	for _, data := range []string{
		strings.Repeat("[", 1<<20),
		`{"policies":` + strings.Repeat(`{"a":`, 1<<18),
	} {
		_, err := Parse([]byte(data))
		if err == nil || !strings.Contains(err.Error(), "nested deeper than 32 levels") && !strings.Contains(err.Error(), "not an object") {
			t.Errorf("error %v", err)
		}
	}
}

// TestParseQuirkDates lists the accepted date forms.
func TestParseQuirkDates(t *testing.T) {
	want := time.Date(2026, 2, 27, 10, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"2026-02-27T10:00:00Z",
		"2026-02-27T11:00:00+01:00",
		"2026-02-27T10:00:00.000Z",
		"2026-02-27t10:00:00z",
		"2026-02-27T10:00:00",
		"2026-02-27T10:00:00.000",
	} {
		m := tree(t, readSample(t, "rfc8460-example.json"))
		setPath(t, m, "date-range.start-datetime", s)
		setPath(t, m, "date-range.end-datetime", "2026-02-28T00:00:00Z")
		r, err := Parse(encode(t, m))
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if !r.DateRange.Start.Equal(want) || r.DateRange.Start.Location() != time.UTC {
			t.Errorf("%s: start = %v", s, r.DateRange.Start)
		}
	}
}

func TestParseByteOrderMark(t *testing.T) {
	data := append([]byte("\xef\xbb\xbf"), readSample(t, "google.json")...)
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
}

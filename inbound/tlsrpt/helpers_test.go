package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sampleDir holds the report samples shared with other packages' tests.
const sampleDir = "../../testdata/tlsrpt"

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sampleDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tree decodes JSON into a generic tree for tests that edit reports.
func tree(t testing.TB, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withReportID returns the RFC 8460 example report with another report-id
// (and optionally organization-name).
func withReportID(t testing.TB, id string) []byte {
	t.Helper()
	m := tree(t, readSample(t, "rfc8460-example.json"))
	m["report-id"] = id
	return encode(t, m)
}

func newTestStore(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "reports.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// fixedNow is the clock of handler tests.
var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestServer serves Handler over a store on 127.0.0.1.
func newTestServer(t testing.TB, opts HandlerOptions) (*httptest.Server, *Store) {
	t.Helper()
	s, _ := newTestStore(t)
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	if opts.RatePerIP == (Rate{}) {
		opts.RatePerIP = Rate{N: -1} // tests of other things post a lot
	}
	srv := httptest.NewServer(Handler(s, opts))
	t.Cleanup(srv.Close)
	return srv, s
}

type answer struct {
	code int
	hdr  http.Header
	body string // raw answer
	err  string // the error of an error answer
	resp response
}

func post(t testing.TB, url, ctype, cenc string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if cenc != "" {
		req.Header.Set("Content-Encoding", cenc)
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{code: resp.StatusCode, hdr: resp.Header, body: string(b)}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, &a.resp); err != nil {
			t.Fatalf("answer %d %q: %v", resp.StatusCode, b, err)
		}
	} else {
		var e errorBody
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
			t.Errorf("error answer %d is not one-line JSON: %q", resp.StatusCode, b)
		}
		a.err = e.Error
	}
	return a
}

func jsonNumber(s string) any { return json.Number(s) }

// pathElems splits "policies[0].policy.mx-host" into "policies", 0,
// "policy", "mx-host".
func pathElems(t testing.TB, path string) []any {
	t.Helper()
	var out []any
	for seg := range strings.SplitSeq(path, ".") {
		name, rest, _ := strings.Cut(seg, "[")
		out = append(out, name)
		for rest != "" {
			var n int
			if _, err := fmt.Sscanf(rest, "%d]", &n); err != nil {
				t.Fatalf("bad path %q", path)
			}
			out = append(out, n)
			_, rest, _ = strings.Cut(rest, "[")
		}
	}
	return out
}

// walk returns the container holding the last element of path.
func walk(t testing.TB, root map[string]any, elems []any) any {
	t.Helper()
	var cur any = root
	for _, e := range elems[:len(elems)-1] {
		switch e := e.(type) {
		case string:
			cur = cur.(map[string]any)[e]
		case int:
			cur = cur.([]any)[e]
		}
	}
	return cur
}

func setPath(t testing.TB, root map[string]any, path string, v any) {
	t.Helper()
	elems := pathElems(t, path)
	switch last := elems[len(elems)-1].(type) {
	case string:
		walk(t, root, elems).(map[string]any)[last] = v
	case int:
		walk(t, root, elems).([]any)[last] = v
	}
}

func deletePath(t testing.TB, root map[string]any, path string) {
	t.Helper()
	elems := pathElems(t, path)
	m := walk(t, root, elems).(map[string]any)
	last := elems[len(elems)-1].(string)
	if _, ok := m[last]; !ok {
		t.Fatalf("no member %s to delete", path)
	}
	delete(m, last)
}

// checkBounds fails if r violates a bound that Parse promises.
func checkBounds(t testing.TB, r *Report) {
	t.Helper()
	str := func(field, s string) {
		if len(s) > MaxStringLen {
			t.Errorf("%s: %d bytes", field, len(s))
		}
	}
	count := func(field string, n int64) {
		if n < 0 || n > MaxCount {
			t.Errorf("%s = %d", field, n)
		}
	}
	if r.OrganizationName == "" || r.ReportID == "" {
		t.Errorf("empty organization-name or report-id")
	}
	str("organization-name", r.OrganizationName)
	str("report-id", r.ReportID)
	str("contact-info", r.ContactInfo)
	if r.DateRange.Start.IsZero() || r.DateRange.End.Before(r.DateRange.Start) {
		t.Errorf("date range %v .. %v", r.DateRange.Start, r.DateRange.End)
	}
	if len(r.Policies) == 0 || len(r.Policies) > MaxPolicies {
		t.Errorf("%d policies", len(r.Policies))
	}
	for i, p := range r.Policies {
		switch p.Policy.Type {
		case PolicySTS, PolicyTLSA:
			if p.Policy.Domain == "" {
				t.Errorf("policies[%d]: %s without domain", i, p.Policy.Type)
			}
		case PolicyNoPolicyFound:
		default:
			t.Errorf("policies[%d]: policy type %q", i, p.Policy.Type)
		}
		if d := p.Policy.Domain; d != "" {
			if n, ok := normalizeDomain(d); !ok || n != d {
				t.Errorf("policies[%d]: domain %q not normalized", i, d)
			}
		}
		if len(p.Policy.MXHost) > MaxListLen || len(p.Policy.String) > MaxListLen {
			t.Errorf("policies[%d]: lists too long", i)
		}
		for _, s := range append(slices.Clone(p.Policy.MXHost), p.Policy.String...) {
			str("policy list", s)
		}
		count("summary", p.Summary.TotalSuccessful)
		count("summary", p.Summary.TotalFailure)
		if len(p.FailureDetails) > MaxFailureDetails {
			t.Errorf("policies[%d]: %d failure details", i, len(p.FailureDetails))
		}
		for _, d := range p.FailureDetails {
			if d.ResultType == "" {
				t.Errorf("empty result type")
			}
			count("failed-session-count", d.FailedSessionCount)
			for _, s := range []string{string(d.ResultType), d.SendingMTAIP, d.ReceivingMXHostname, d.ReceivingMXHelo, d.ReceivingIP, d.AdditionalInformation, d.FailureReasonCode} {
				str("failure detail", s)
			}
		}
	}
	for _, w := range r.Warnings {
		if strings.ContainsAny(w, "\r\n") {
			t.Errorf("warning %q is not one line", w)
		}
	}
}

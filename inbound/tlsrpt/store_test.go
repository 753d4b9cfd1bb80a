package tlsrpt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

func mustParse(t testing.TB, data []byte) *Report {
	t.Helper()
	r, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// served is the Served predicate of tests: the relay serves example.org
// and company-y.example.
func served(d string) bool { return d == "example.org" || d == "company-y.example" }

// TestRPT05_DurableAndDeduplicated: a report acknowledged by Add (and by
// the handler's 2xx) is in the file when the store is reopened, and the
// same organization and report-id are stored once.
func TestRPT05_DurableAndDeduplicated(t *testing.T) {
	ctx := context.Background()
	s, path := newTestStore(t)
	raw := readSample(t, "google.json")
	rep := mustParse(t, raw)
	received := time.Date(2026, 2, 28, 3, 4, 5, 0, time.UTC)
	id, dup, err := s.Add(ctx, rep, raw, Meta{Received: received, Source: SourceEmail, Sender: "noreply-smtp-tls-reporting@google.com", DKIM: "pass (d=google.com)", Served: served})
	if err != nil || dup {
		t.Fatalf("Add: %s %v %v", id, dup, err)
	}
	// The same report again, by another way: stored once.
	id2, dup, err := s.Add(ctx, mustParse(t, raw), raw, Meta{Source: SourceHTTPS, Sender: "127.0.0.1"})
	if err != nil || !dup || id2 != id {
		t.Fatalf("second Add: %s %v %v, want %s true", id2, dup, err, id)
	}

	// Reopen, as after a crash or restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.Raw, raw) {
		t.Errorf("raw changed:\n%s\nwant\n%s", st.Raw, raw)
	}
	want := Summary{
		ID: id, Received: received, Organization: "Google Inc.", ReportID: "2026-02-27T00:00:00Z_example.org",
		ContactInfo: "smtp-tls-reporting@google.com", PolicyDomains: []string{"example.org"},
		Start: time.Date(2026, 2, 27, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 2, 27, 23, 59, 59, 0, time.UTC),
		Successes: 1843, Failures: 27, Source: SourceEmail, Sender: "noreply-smtp-tls-reporting@google.com", DKIM: "pass (d=google.com)",
	}
	if !equalSummary(st.Summary, want) {
		t.Errorf("summary\n%+v\nwant\n%+v", st.Summary, want)
	}
	if len(st.Report.Policies[0].FailureDetails) != 2 || st.Report.Policies[0].FailureDetails[0].ResultType != ResultCertificateExpired {
		t.Errorf("report = %+v", st.Report)
	}
	// Deduplication survives the reopen.
	if id3, dup, err := s.Add(ctx, rep, raw, Meta{Source: SourceImport}); err != nil || !dup || id3 != id {
		t.Errorf("Add after reopen: %s %v %v", id3, dup, err)
	}
	list, err := s.List(Filter{})
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %d %v", len(list), err)
	}

	// Deleting makes room for the report again.
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := s.Delete(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v", err)
	}
	if _, dup, err := s.Add(ctx, rep, raw, Meta{Source: SourceImport}); err != nil || dup {
		t.Errorf("Add after Delete: %v %v", dup, err)
	}
}

func equalSummary(a, b Summary) bool {
	return a.ID == b.ID && a.Received.Equal(b.Received) && a.Organization == b.Organization && a.ReportID == b.ReportID &&
		a.ContactInfo == b.ContactInfo && slices.Equal(a.PolicyDomains, b.PolicyDomains) &&
		a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.Successes == b.Successes && a.Failures == b.Failures &&
		a.Foreign == b.Foreign && slices.Equal(a.ForeignDomains, b.ForeignDomains) &&
		a.Source == b.Source && a.Sender == b.Sender && a.DKIM == b.DKIM && a.Warnings == b.Warnings
}

// TestRPT05_ConcurrentDuplicates: the same report POSTed many times at
// once is stored once, and every POST is told the same ID.
func TestRPT05_ConcurrentDuplicates(t *testing.T) {
	srv, s := newTestServer(t, HandlerOptions{MaxConcurrent: 32})
	body := readSample(t, "microsoft.json")
	var wg sync.WaitGroup
	ids := make([]string, 20)
	codes := make([]int, 20)
	for i := range ids {
		wg.Go(func() {
			a := post(t, srv.URL, MediaTypeJSON, "", body)
			ids[i], codes[i] = a.resp.ID, a.code
		})
	}
	wg.Wait()
	created := 0
	for i := range ids {
		if ids[i] != ids[0] {
			t.Errorf("ids differ: %q", ids)
			break
		}
		switch codes[i] {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Errorf("status %d", codes[i])
		}
	}
	if created != 1 {
		t.Errorf("%d answers 201, want 1", created)
	}
	if list, _ := s.List(Filter{}); len(list) != 1 {
		t.Errorf("%d reports stored", len(list))
	}
}

// TestRPT06_ForeignFlagged: a report for a domain the relay does not serve
// is stored and flagged, through the handler.
func TestRPT06_ForeignFlagged(t *testing.T) {
	srv, s := newTestServer(t, HandlerOptions{Served: served})
	// Ours.
	if a := post(t, srv.URL, MediaTypeJSON, "", readSample(t, "google.json")); a.code != http.StatusCreated {
		t.Fatalf("status %d: %s", a.code, a.body)
	}
	// Someone else's domain.
	m := tree(t, readSample(t, "google.json"))
	m["report-id"] = "2026-02-27T00:00:00Z_example.net"
	setPath(t, m, "policies[0].policy.policy-domain", "Example.NET")
	a := post(t, srv.URL, MediaTypeJSON, "", encode(t, m))
	if a.code != http.StatusCreated {
		t.Fatalf("foreign report: status %d: %s", a.code, a.body)
	}
	// Mixed: one of ours, one not.
	m = tree(t, readSample(t, "smallprovider.json"))
	p := m["policies"].([]any)
	setPath(t, m, "policies[1].policy.policy-domain", "other.example")
	m["policies"] = p
	b := post(t, srv.URL, MediaTypeJSON, "", encode(t, m))
	if b.code != http.StatusCreated {
		t.Fatalf("mixed report: status %d: %s", b.code, b.body)
	}

	list, err := s.List(Filter{})
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %d %v", len(list), err)
	}
	got := map[string]Summary{}
	for _, sum := range list {
		got[sum.ID] = sum
	}
	if f := got[a.resp.ID]; !f.Foreign || !slices.Equal(f.ForeignDomains, []string{"example.net"}) || !slices.Equal(f.PolicyDomains, []string{"example.net"}) {
		t.Errorf("foreign report listed as %+v", f)
	}
	if f := got[b.resp.ID]; !f.Foreign || !slices.Equal(f.ForeignDomains, []string{"other.example"}) {
		t.Errorf("mixed report listed as %+v", f)
	}
	for id, sum := range got {
		if id != a.resp.ID && id != b.resp.ID && sum.Foreign {
			t.Errorf("own report flagged foreign: %+v", sum)
		}
	}
	// Nil Served: nothing is foreign.
	s2, _ := newTestStore(t)
	raw := encode(t, m)
	id, _, err := s2.Add(context.Background(), mustParse(t, raw), raw, Meta{Source: SourceImport})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := s2.Get(id); st.Foreign {
		t.Errorf("flagged without a Served predicate")
	}
}

// addAll stores the samples, received a minute apart in the given order.
func addAll(t *testing.T, s *Store, files ...string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for i, f := range files {
		raw := readSample(t, f)
		id, _, err := s.Add(context.Background(), mustParse(t, raw), raw, Meta{
			Received: fixedNow.Add(time.Duration(i) * time.Minute), Source: SourceHTTPS, Sender: "127.0.0.1", Served: served,
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[f] = id
	}
	return ids
}

func TestStoreListFilters(t *testing.T) {
	s, _ := newTestStore(t)
	ids := addAll(t, s, "rfc8460-example.json", "google.json", "microsoft.json", "smallprovider.json")
	order := func(list []Summary) []string {
		var out []string
		for _, sum := range list {
			for f, id := range ids {
				if id == sum.ID {
					out = append(out, f)
				}
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all, newest first", Filter{}, []string{"smallprovider.json", "microsoft.json", "google.json", "rfc8460-example.json"}},
		{"limit", Filter{Limit: 2}, []string{"smallprovider.json", "microsoft.json"}},
		{"domain", Filter{Domain: "company-y.example"}, []string{"rfc8460-example.json"}},
		{"domain case and dot", Filter{Domain: "EXAMPLE.org."}, []string{"smallprovider.json", "microsoft.json", "google.json"}},
		{"unknown domain", Filter{Domain: "nowhere.example"}, nil},
		{"since: the date range ends after it", Filter{Since: time.Date(2026, 2, 27, 23, 59, 59, 0, time.UTC)}, []string{"smallprovider.json", "microsoft.json", "google.json"}},
		{"since: only Microsoft's next-midnight end", Filter{Since: time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)}, []string{"microsoft.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := s.List(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := order(list); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := s.Get("not-an-id"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a malformed ID: %v", err)
	}
	if _, err := s.Get("0000000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unknown ID: %v", err)
	}
}

// TestStoreSummarize: failures by result type and MX host, as an
// administrator looks for a misconfigured certificate.
func TestStoreSummarize(t *testing.T) {
	s, _ := newTestStore(t)
	addAll(t, s, "rfc8460-example.json", "google.json", "microsoft.json", "smallprovider.json", "unknown-result-type.json")

	sr, err := s.Summarize(Filter{Domain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if sr.Reports != 4 || sr.Successes != 1843+412+31+10 || sr.Failures != 27+9+4+1 {
		t.Errorf("totals: %d reports, %d/%d", sr.Reports, sr.Successes, sr.Failures)
	}
	wantRT := map[ResultType]int64{
		ResultCertificateExpired: 25, ResultSTSWebPKIInvalid: 2, ResultCertificateHostMismatch: 9,
		ResultTLSAInvalid: 4, "quantum-certificate-unsupported": 1,
	}
	if fmt.Sprint(sr.ByResultType) != fmt.Sprint(wantRT) {
		t.Errorf("by result type %v, want %v", sr.ByResultType, wantRT)
	}
	wantMX := map[string]int64{"backup.example.org": 25 + 9, "": 2, "mail.example.org": 4 + 1}
	if fmt.Sprint(sr.ByMXHost) != fmt.Sprint(wantMX) {
		t.Errorf("by MX host %v, want %v", sr.ByMXHost, wantMX)
	}
	if len(sr.ByDomain) != 1 || sr.ByDomain["example.org"].Reports != 4 {
		t.Errorf("by domain %v", sr.ByDomain)
	}
	top := sr.Groups[0]
	if top.MXHost != "backup.example.org" || top.ResultType != ResultCertificateExpired || top.Sessions != 25 || top.Reports != 1 || top.Domain != "example.org" {
		t.Errorf("top group %+v", top)
	}
	for i := 1; i < len(sr.Groups); i++ {
		if sr.Groups[i].Sessions > sr.Groups[i-1].Sessions {
			t.Errorf("groups not sorted: %+v", sr.Groups)
		}
	}

	all, err := s.Summarize(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if all.Reports != 5 || all.Failures != 303+27+9+4+1 || all.ByDomain[""].Reports != 1 || all.ByDomain["company-y.example"].Failures != 303 {
		t.Errorf("all: %+v", all)
	}
	if all.ByMXHost["mx2.mail.company-y.example"] != 200 {
		t.Errorf("by MX host %v", all.ByMXHost)
	}
	empty, err := s.Summarize(Filter{Since: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil || empty.Reports != 0 || empty.ByResultType == nil || empty.Groups == nil {
		t.Errorf("empty summary: %+v %v", empty, err)
	}
}

func TestStoreAddRefuses(t *testing.T) {
	s, _ := newTestStore(t)
	raw := readSample(t, "google.json")
	rep := mustParse(t, raw)
	ctx := context.Background()
	if _, _, err := s.Add(ctx, rep, raw, Meta{Source: "carrier-pigeon"}); err == nil {
		t.Error("unknown source accepted")
	}
	if _, _, err := s.Add(ctx, rep, []byte("{not json"), Meta{Source: SourceHTTPS}); err == nil {
		t.Error("raw that is not JSON accepted")
	}
	if _, _, err := s.Add(ctx, nil, raw, Meta{Source: SourceHTTPS}); err == nil {
		t.Error("nil report accepted")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.Add(canceled, rep, raw, Meta{Source: SourceHTTPS}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
	// A second open of the same file fails instead of blocking.
	path := t.TempDir() + "/r.db"
	s1, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if _, err := OpenStore(path); err == nil {
		t.Error("second OpenStore of the same file succeeded")
	}
}

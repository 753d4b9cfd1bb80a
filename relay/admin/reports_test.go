package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
)

// reportEnv is the admin API of a daemon with a TLS report store.
type reportEnv struct {
	store *tlsrpt.Store
	c     *Client
	ids   map[string]string // sample file -> report ID
	raw   map[string][]byte
}

// newReportEnv serves the admin API with a report store holding the
// samples of testdata/tlsrpt, received a minute apart in this order.
func newReportEnv(t *testing.T) *reportEnv {
	t.Helper()
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	store, err := tlsrpt.OpenStore(filepath.Join(dir, "reports.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &reportEnv{store: store, ids: map[string]string{}, raw: map[string][]byte{}}
	received := time.Now().Add(-time.Hour)
	for i, f := range []string{"rfc8460-example.json", "google.json", "microsoft.json", "smallprovider.json"} {
		raw, err := os.ReadFile(filepath.Join("../../testdata/tlsrpt", f))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := tlsrpt.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := store.Add(context.Background(), rep, raw, tlsrpt.Meta{
			Received: received.Add(time.Duration(i) * time.Minute),
			Source:   tlsrpt.SourceHTTPS, Sender: "127.0.0.1",
			Served: func(d string) bool { return d == "example.org" },
		})
		if err != nil {
			t.Fatal(err)
		}
		e.ids[f], e.raw[f] = id, raw
	}
	socket := filepath.Join(dir, "relay.sock")
	serve(t, socket, Handler(q, nil, Options{Reports: store}))
	e.c = NewClient(socket)
	t.Cleanup(e.c.Close)
	return e
}

func (e *reportEnv) files(t *testing.T, list []tlsrpt.Summary) []string {
	t.Helper()
	var out []string
	for _, s := range list {
		for f, id := range e.ids {
			if id == s.ID {
				out = append(out, f)
			}
		}
	}
	return out
}

func TestReportsList(t *testing.T) {
	e := newReportEnv(t)
	ctx := context.Background()
	tests := []struct {
		name string
		f    tlsrpt.Filter
		want []string
	}{
		{"all", tlsrpt.Filter{}, []string{"smallprovider.json", "microsoft.json", "google.json", "rfc8460-example.json"}},
		{"domain", tlsrpt.Filter{Domain: "example.org"}, []string{"smallprovider.json", "microsoft.json", "google.json"}},
		{"limit", tlsrpt.Filter{Limit: 1}, []string{"smallprovider.json"}},
		{"since", tlsrpt.Filter{Since: time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)}, []string{"microsoft.json"}},
		{"nothing", tlsrpt.Filter{Domain: "example.com"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := e.c.Reports(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if list == nil {
				t.Error("nil list")
			}
			if got := e.files(t, list); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	list, _ := e.c.Reports(ctx, tlsrpt.Filter{})
	for _, s := range list {
		if foreign := s.ID == e.ids["rfc8460-example.json"]; s.Foreign != foreign {
			t.Errorf("%s foreign = %v", s.Organization, s.Foreign)
		}
	}
}

func TestReportsBadParameters(t *testing.T) {
	e := newReportEnv(t)
	for _, q := range []string{"limit=0", "limit=x", "limit=100001", "since=yesterday", "since=-5d"} {
		resp, err := e.c.http.Get("http://relay/v1/reports?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", q, resp.StatusCode)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	tests := map[string]time.Time{
		"7d":                   now.AddDate(0, 0, -7),
		"2w":                   now.AddDate(0, 0, -14),
		"36h":                  now.Add(-36 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"0d":                   now,
		"2026-03-01":           time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"2026-03-01T10:00:00Z": time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC),
	}
	for in, want := range tests {
		got, err := ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "7x", "-1h", "yesterday", "7dd"} {
		if _, err := ParseSince(bad, now); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
}

func TestReportShowRawDelete(t *testing.T) {
	e := newReportEnv(t)
	ctx := context.Background()
	id := e.ids["microsoft.json"]

	st, err := e.c.Report(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != id || st.Organization != "Microsoft Corporation" || st.Failures != 9 || st.Report == nil ||
		st.Report.Policies[0].FailureDetails[0].ResultType != tlsrpt.ResultCertificateHostMismatch {
		t.Errorf("report = %+v", st)
	}
	// The raw JSON in the answer is the report (as JSON, compacted).
	var compact bytes.Buffer
	json.Compact(&compact, e.raw["microsoft.json"])
	if !bytes.Equal(st.Raw, compact.Bytes()) {
		t.Errorf("raw = %s", st.Raw)
	}
	// ReportRaw gives the exact bytes (CRLF and all).
	var buf bytes.Buffer
	if _, err := e.c.ReportRaw(ctx, id, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), e.raw["microsoft.json"]) {
		t.Errorf("ReportRaw changed the bytes")
	}

	if err := e.c.DeleteReport(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := e.c.Report(ctx, id); return err }(),
		e.c.DeleteReport(ctx, id),
		func() error { _, err := e.c.ReportRaw(ctx, id, &buf); return err }(),
		func() error { _, err := e.c.Report(ctx, "../queue/stats"); return err }(),
	} {
		if !errors.Is(err, tlsrpt.ErrNotFound) || errors.Is(err, ErrReportsDisabled) {
			t.Errorf("after delete: %v", err)
		}
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("message %q", err)
		}
	}
	if list, _ := e.c.Reports(ctx, tlsrpt.Filter{}); len(list) != 3 {
		t.Errorf("%d reports after delete", len(list))
	}
}

func TestReportSummary(t *testing.T) {
	e := newReportEnv(t)
	sr, err := e.c.ReportSummary(context.Background(), tlsrpt.Filter{Domain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if sr.Reports != 3 || sr.Failures != 27+9+4 || sr.ByMXHost["backup.example.org"] != 25+9 ||
		sr.ByResultType[tlsrpt.ResultCertificateExpired] != 25 || len(sr.Groups) == 0 {
		t.Errorf("summary = %+v", sr)
	}
	all, err := e.c.ReportSummary(context.Background(), tlsrpt.Filter{})
	if err != nil || all.Reports != 4 || all.Foreign != 1 {
		t.Errorf("summary of all = %+v, %v", all, err)
	}
}

// TestReportsDisabled: without a store every report path answers 404 with
// a message saying how to enable them.
func TestReportsDisabled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.c.Reports(ctx, tlsrpt.Filter{})
	if !errors.Is(err, ErrReportsDisabled) || errors.Is(err, tlsrpt.ErrNotFound) {
		t.Errorf("Reports: %v", err)
	}
	if err == nil || err.Error() != "TLS-RPT reports are not enabled: configure [inbound]" {
		t.Errorf("message %v", err)
	}
	if _, err := e.c.Report(ctx, "0000000000000000"); !errors.Is(err, ErrReportsDisabled) {
		t.Errorf("Report: %v", err)
	}
	if err := e.c.DeleteReport(ctx, "0000000000000000"); !errors.Is(err, ErrReportsDisabled) {
		t.Errorf("DeleteReport: %v", err)
	}
	if _, err := e.c.ReportSummary(ctx, tlsrpt.Filter{}); !errors.Is(err, ErrReportsDisabled) {
		t.Errorf("ReportSummary: %v", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
		t.Errorf("not a 404 APIError: %v", err)
	}
}

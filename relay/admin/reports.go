package admin

// The TLS report endpoints of the admin API, over the store of
// inbound/tlsrpt:
//
//	GET    /v1/reports              []tlsrpt.Summary (?domain=&since=&limit=)
//	GET    /v1/reports/summary      tlsrpt.SummaryReport (?domain=&since=)
//	GET    /v1/reports/{id}         tlsrpt.Stored: summary, parsed report, raw JSON
//	GET    /v1/reports/{id}/raw     the report's JSON text exactly as received
//	DELETE /v1/reports/{id}         {"deleted": true}
//	POST   /v1/reports/import       ImportResult: the reports of the file in the body (?name=)
//
// since is an RFC 3339 time or an age such as "7d", "36h" or "2w"; it
// selects reports whose date range ends at or after it. Without a store
// (Options.Reports nil) every /v1/reports path answers 404 saying that
// reports are not enabled.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relaysec/relay/inbound/reportmail"
	"github.com/relaysec/relay/inbound/tlsrpt"
)

// Report list limits: without limit a listing returns at most
// DefaultReportLimit reports, and no request may ask for more than
// MaxReportLimit.
const (
	DefaultReportLimit = 1000
	MaxReportLimit     = 100000
)

// reportsDisabled is the error of every report endpoint when the daemon
// has no report store.
const reportsDisabled = "TLS-RPT reports are not enabled: configure [inbound]"

// ErrReportsDisabled is matched (errors.Is) by the client's error when the
// daemon does not receive TLS reports.
var ErrReportsDisabled = errors.New(reportsDisabled)

// registerReports adds the report endpoints: the real ones when the
// daemon has a report store, else a 404 for all of them.
func (s *server) registerReports() {
	if s.opts.Reports == nil {
		off := func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, reportsDisabled)
		}
		s.mux.HandleFunc("/v1/reports", off)
		s.mux.HandleFunc("/v1/reports/", off)
		return
	}
	s.mux.HandleFunc("GET /v1/reports", s.reportList)
	s.mux.HandleFunc("GET /v1/reports/summary", s.reportSummary)
	s.mux.HandleFunc("GET /v1/reports/{id}", s.reportShow)
	s.mux.HandleFunc("GET /v1/reports/{id}/raw", s.reportRaw)
	s.mux.HandleFunc("DELETE /v1/reports/{id}", s.reportDelete)
	s.mux.HandleFunc("POST /v1/reports/import", s.reportImport)
}

// reportFilter reads domain, since and (if withLimit) limit from the
// query.
func reportFilter(r *http.Request, withLimit bool) (tlsrpt.Filter, error) {
	q := r.URL.Query()
	f := tlsrpt.Filter{Domain: q.Get("domain")}
	if v := q.Get("since"); v != "" {
		t, err := ParseSince(v, time.Now())
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	if withLimit {
		f.Limit = DefaultReportLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxReportLimit {
				return f, fmt.Errorf("bad limit %q: want a number from 1 to %d", v, MaxReportLimit)
			}
			f.Limit = n
		}
	}
	return f, nil
}

// ParseSince parses a --since or since= value: an RFC 3339 time, a date
// (2006-01-02, UTC), or an age before now in hours, days or weeks ("36h",
// "7d", "2w", or any Go duration such as "90m").
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if n, unit := strings.TrimRight(s, "dw"), strings.TrimLeft(s, "0123456789"); (unit == "d" || unit == "w") && n != "" {
		k, err := strconv.Atoi(n)
		if err == nil && k >= 0 && k <= 100*365 {
			days := k
			if unit == "w" {
				days *= 7
			}
			return now.AddDate(0, 0, -days), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("bad since %q: want an age such as 7d, 36h or 2w, a date such as 2026-03-01, or an RFC 3339 time", s)
}

func (s *server) reportList(w http.ResponseWriter, r *http.Request) {
	f, err := reportFilter(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list, err := s.opts.Reports.List(f)
	if err != nil {
		s.reportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *server) reportSummary(w http.ResponseWriter, r *http.Request) {
	f, err := reportFilter(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sr, err := s.opts.Reports.Summarize(f)
	if err != nil {
		s.reportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sr)
}

func (s *server) reportShow(w http.ResponseWriter, r *http.Request) {
	st, err := s.opts.Reports.Get(r.PathValue("id"))
	if err != nil {
		s.reportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) reportRaw(w http.ResponseWriter, r *http.Request) {
	st, err := s.opts.Reports.Get(r.PathValue("id"))
	if err != nil {
		s.reportFail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(st.Raw)))
	w.WriteHeader(http.StatusOK)
	w.Write(st.Raw)
}

func (s *server) reportDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.opts.Reports.Delete(id); err != nil {
		s.reportFail(w, r, err)
		return
	}
	s.log.Info("admin: delete report", "report", id)
	writeJSON(w, http.StatusOK, deletedResponse{Deleted: true})
}

// reportFail answers with the error of a store operation: 404 for a report
// the store does not hold, 500 otherwise.
func (s *server) reportFail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, tlsrpt.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("report %q not found", r.PathValue("id")))
		return
	}
	s.log.Error("admin: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

// reportQuery encodes a filter for the report endpoints.
func reportQuery(f tlsrpt.Filter, withLimit bool) url.Values {
	q := url.Values{}
	if f.Domain != "" {
		q.Set("domain", f.Domain)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if withLimit && f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Reports returns the summaries of the stored TLS reports f selects, most
// recently received first, at most f.Limit (default DefaultReportLimit).
// The result is never nil.
func (c *Client) Reports(ctx context.Context, f tlsrpt.Filter) ([]tlsrpt.Summary, error) {
	out := []tlsrpt.Summary{}
	if err := c.getJSON(ctx, "/v1/reports", reportQuery(f, true), &out); err != nil {
		return nil, reportError(err)
	}
	return out, nil
}

// ReportSummary aggregates the stored TLS reports f selects (f.Limit is
// ignored).
func (c *Client) ReportSummary(ctx context.Context, f tlsrpt.Filter) (*tlsrpt.SummaryReport, error) {
	var sr tlsrpt.SummaryReport
	if err := c.getJSON(ctx, "/v1/reports/summary", reportQuery(f, false), &sr); err != nil {
		return nil, reportError(err)
	}
	return &sr, nil
}

// Report returns one stored TLS report: summary, parsed report and raw
// JSON. An unknown ID gives an error matching tlsrpt.ErrNotFound.
func (c *Client) Report(ctx context.Context, id string) (*tlsrpt.Stored, error) {
	p, err := reportPath(id, "")
	if err != nil {
		return nil, err
	}
	var st tlsrpt.Stored
	if err := c.getJSON(ctx, p, nil, &st); err != nil {
		return nil, reportError(err)
	}
	return &st, nil
}

// ReportRaw copies a stored report's JSON text, exactly as received, to w
// and returns the number of bytes copied.
func (c *Client) ReportRaw(ctx context.Context, id string, w io.Writer) (int64, error) {
	p, err := reportPath(id, "raw")
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, http.MethodGet, p, nil)
	if err != nil {
		return 0, reportError(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("read report %s: %w", id, err)
	}
	return n, nil
}

// DeleteReport removes a stored TLS report.
func (c *Client) DeleteReport(ctx context.Context, id string) error {
	p, err := reportPath(id, "")
	if err != nil {
		return err
	}
	var r deletedResponse
	if err := c.doJSON(ctx, http.MethodDelete, p, nil, &r); err != nil {
		return reportError(err)
	}
	if !r.Deleted {
		return fmt.Errorf("delete report %s: the daemon did not confirm the deletion", id)
	}
	return nil
}

func reportPath(id, sub string) (string, error) {
	if id == "" {
		return "", errors.New("empty report ID")
	}
	p := "/v1/reports/" + escapeSegment(id)
	if sub != "" {
		p += "/" + sub
	}
	return p, nil
}

// reportAPIError is a 404 of a report endpoint: it matches
// tlsrpt.ErrNotFound, or ErrReportsDisabled when the daemon has no store.
type reportAPIError struct{ *APIError }

func (e *reportAPIError) Is(target error) bool {
	disabled := e.Message == reportsDisabled
	return target == ErrReportsDisabled && disabled || target == tlsrpt.ErrNotFound && !disabled
}

func (e *reportAPIError) Unwrap() error { return e.APIError }

// reportError makes a 404 answer of a report endpoint match
// tlsrpt.ErrNotFound or ErrReportsDisabled.
func reportError(err error) error {
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
		return &reportAPIError{ae}
	}
	return err
}

// MaxImportBytes caps the body of POST /v1/reports/import: one file, or
// one message of an mbox file (relayctl sends those one by one).
const MaxImportBytes = 64 << 20

// importLimits bound the extraction of an imported file: larger than for
// mail from the internet, since only the administrator imports, yet
// still bounded against zip and gzip bombs.
func importLimits() reportmail.Limits {
	return reportmail.Limits{
		MaxPartBytes:  MaxImportBytes,
		MaxTotalBytes: 256 << 20,
		MaxReports:    1000,
		MaxZipEntries: 1000,
	}
}

// ImportResult is the answer of POST /v1/reports/import.
type ImportResult struct {
	// Reports has one entry per report found in the file, in file order.
	Reports []ImportedReport `json:"reports"`
	// Problems are the parts of the file that looked like reports but
	// could not be decoded.
	Problems []string `json:"problems,omitempty"`
}

// ImportedReport is the outcome for one report of an imported file.
type ImportedReport struct {
	// ID is the stored report's ID; with Duplicate, the ID of the report
	// stored before (by any way in). Empty with Error.
	ID           string `json:"id,omitempty"`
	Duplicate    bool   `json:"duplicate,omitempty"`
	Organization string `json:"organization,omitempty"`
	ReportID     string `json:"report_id,omitempty"`
	// Where says where in the file the report was found.
	Where string `json:"where,omitempty"`
	// Error says why the report was not stored: it is not a valid report.
	Error string `json:"error,omitempty"`
}

// maxImportName bounds the file name kept as a report's sender.
const maxImportName = 256

// reportImport stores the reports of an imported file with source
// import: 200 with an ImportResult when the file holds a report (stored,
// duplicate, or invalid), 422 when it holds none, 413 for a body over
// MaxImportBytes.
func (s *server) reportImport(w http.ResponseWriter, r *http.Request) {
	name := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return -1
		}
		return c
	}, r.URL.Query().Get("name"))
	if len(name) > maxImportName {
		name = strings.ToValidUTF8(name[:maxImportName], "")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxImportBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("file over %d bytes: split it (relayctl sends mbox files message by message)", MaxImportBytes))
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("read file: %v", err))
		return
	}
	ex, err := reportmail.ExtractFile(name, body, importLimits())
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	res := ImportResult{Reports: []ImportedReport{}}
	for _, p := range ex.Problems {
		res.Problems = append(res.Problems, p.Error())
	}
	if err := ex.Err(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	now := time.Now()
	for _, f := range ex.Reports {
		out := ImportedReport{Where: f.Where}
		rep, err := tlsrpt.Parse(f.JSON)
		if err != nil {
			out.Error = "invalid TLS report: " + err.Error()
			res.Reports = append(res.Reports, out)
			continue
		}
		out.Organization, out.ReportID = rep.OrganizationName, rep.ReportID
		out.ID, out.Duplicate, err = s.opts.Reports.Add(r.Context(), rep, f.JSON, tlsrpt.Meta{
			Received: now,
			Source:   tlsrpt.SourceImport,
			Sender:   name,
			Served:   s.opts.ReportServed,
		})
		if err != nil {
			s.reportFail(w, r, err)
			return
		}
		res.Reports = append(res.Reports, out)
	}
	stored := 0
	for _, o := range res.Reports {
		if o.ID != "" && !o.Duplicate {
			stored++
		}
	}
	s.log.Info("admin: reports imported", "file", name, "reports", len(res.Reports), "stored", stored, "problems", len(res.Problems))
	writeJSON(w, http.StatusOK, res)
}

// ImportReports sends a file of TLS reports to the daemon, which stores
// them with source import: a report's JSON (.json), gzip-compressed
// (.json.gz), a zip archive, a mail message (.eml) or a small mbox file.
// name is the file's name, kept as the reports' sender. A file without a
// report gives an *APIError with status 422 saying why.
func (c *Client) ImportReports(ctx context.Context, name string, body io.Reader) (*ImportResult, error) {
	const path = "/v1/reports/import"
	u := "http://relay" + path + "?" + url.Values{"name": {name}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, fmt.Errorf("admin API POST %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		var ce *ConnectError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fmt.Errorf("admin API POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, reportError(readError(resp))
	}
	var res ImportResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("admin API POST %s: decode answer: %w", path, err)
	}
	return &res, nil
}

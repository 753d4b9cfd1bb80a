package tlsrpt

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Sources of a stored report: how it reached the relay.
const (
	SourceHTTPS  = "https"  // POSTed to the HTTPS endpoint (RFC 8460 §5.3.2)
	SourceEmail  = "email"  // mailed to a report address (RFC 8460 §5.3.1)
	SourceImport = "import" // loaded from a file by an administrator
)

// ErrNotFound is returned for a report ID the store does not hold.
var ErrNotFound = errors.New("report not found")

// Limits on Meta fields, which come from the network.
const (
	maxSenderLen = 1024
	maxDKIMLen   = 1024
)

// Meta describes how a report arrived. It is stored with the report.
type Meta struct {
	// Received is when the report arrived; zero means now.
	Received time.Time
	// Source is SourceHTTPS, SourceEmail or SourceImport.
	Source string
	// Sender identifies who delivered the report: the client IP address
	// for HTTPS, the envelope or header sender for email, the file name
	// for an import. Optional.
	Sender string
	// DKIM is the DKIM verification result of a report that came by
	// email, for example "pass (d=google.com)" or "fail"; empty
	// otherwise.
	DKIM string
	// Served reports whether the relay serves a policy domain (given
	// lower-case, without a trailing dot). Reports with a policy domain
	// it does not serve are stored all the same and flagged Foreign
	// (RPT06). Nil means every domain is served. The predicate is given
	// per Add, not at OpenStore, so that a configuration reload applies
	// to the next report without reopening the store.
	Served func(domain string) bool
}

// Summary is a stored report as listed: what it covers and how it came.
type Summary struct {
	ID           string    `json:"id"`
	Received     time.Time `json:"received"`
	Organization string    `json:"organization"`
	ReportID     string    `json:"report_id"`
	ContactInfo  string    `json:"contact_info,omitempty"`
	// PolicyDomains are the distinct policy domains of the report; empty
	// only for a no-policy-found report without a domain.
	PolicyDomains []string  `json:"policy_domains"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	// Successes and Failures are the session counts of all policies.
	Successes int64 `json:"successes"`
	Failures  int64 `json:"failures"`
	// Foreign is set when a policy domain is one the relay does not
	// serve; ForeignDomains lists them.
	Foreign        bool     `json:"foreign"`
	ForeignDomains []string `json:"foreign_domains,omitempty"`
	Source         string   `json:"source"`
	Sender         string   `json:"sender,omitempty"`
	DKIM           string   `json:"dkim,omitempty"`
	// Warnings counts Report.Warnings.
	Warnings int `json:"warnings,omitempty"`
}

// Stored is one stored report in full.
type Stored struct {
	Summary
	Report *Report `json:"report"`
	// Raw is the report's JSON text as received (decompressed), without a
	// leading byte order mark.
	Raw json.RawMessage `json:"raw"`
}

// Filter selects reports. Empty fields match everything.
type Filter struct {
	// Domain selects reports with this policy domain (case-insensitive).
	// Summarize counts only the policies of this domain.
	Domain string
	// Since selects reports whose date range ends at or after it: the
	// period a report covers, not when it arrived, so that old reports
	// imported today do not count as recent.
	Since time.Time
	// Limit is the most reports returned (List) or considered
	// (Summarize), newest first; zero means no limit.
	Limit int
}

// SummaryReport aggregates reports: what an administrator needs to see
// that something (typically a certificate) is misconfigured.
type SummaryReport struct {
	Reports   int   `json:"reports"`
	Foreign   int   `json:"foreign_reports"`
	Successes int64 `json:"successes"`
	Failures  int64 `json:"failures"`
	// ByResultType and ByMXHost count failed sessions of the failure
	// details (which senders may leave out, so they can sum to less than
	// Failures). The MX host is the receiving-mx-hostname, else the
	// receiving-ip, else "".
	ByResultType map[ResultType]int64 `json:"by_result_type"`
	ByMXHost     map[string]int64     `json:"by_mx_host"`
	// ByDomain totals sessions per policy domain ("" for no-policy-found
	// without a domain).
	ByDomain map[string]DomainTotals `json:"by_domain"`
	// Groups are the failure details grouped by domain, MX host and
	// result type, most failed sessions first.
	Groups []FailureGroup `json:"groups"`
}

// DomainTotals are the session counts of one policy domain.
type DomainTotals struct {
	Reports   int   `json:"reports"`
	Successes int64 `json:"successes"`
	Failures  int64 `json:"failures"`
}

// FailureGroup is the failed sessions of one result type at one MX host
// of one policy domain.
type FailureGroup struct {
	Domain     string     `json:"domain"`
	MXHost     string     `json:"mx_host"`
	ResultType ResultType `json:"result_type"`
	Sessions   int64      `json:"sessions"`
	Reports    int        `json:"reports"`
	// Last is the latest end of the date ranges of those reports.
	Last time.Time `json:"last"`
	// ReasonCodes are the distinct failure-reason-code values seen, at
	// most a few.
	ReasonCodes []string `json:"reason_codes,omitempty"`
}

// Store keeps TLS reports in a bbolt database. It is safe for concurrent
// use; only one process may open the file at a time.
type Store struct {
	db *bolt.DB
}

// bbolt buckets and keys.
var (
	bucketMeta      = []byte("meta")      // "version" -> storeVersion
	bucketSummaries = []byte("summaries") // id -> Summary JSON
	bucketReports   = []byte("reports")   // id -> Report JSON
	bucketRaw       = []byte("raw")       // id -> raw JSON text
	bucketDedupe    = []byte("dedupe")    // organization NUL report-id -> id
	keyVersion      = []byte("version")
)

const storeVersion = "1"

// OpenStore opens (creating if needed) the report database at path, for
// example data_dir/reports.db. A second open of the same file, by this or
// another process, fails after a short wait.
func OpenStore(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("report store: create directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open report store %s: locked by another process (is the relay already running?)", path)
		}
		return nil, fmt.Errorf("open report store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketSummaries, bucketReports, bucketRaw, bucketDedupe} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyVersion); {
		case v == nil:
			return meta.Put(keyVersion, []byte(storeVersion))
		case string(v) != storeVersion:
			return fmt.Errorf("unknown store version %q (this relay knows %s)", v, storeVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open report store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close report store: %w", err)
	}
	return nil
}

// Add stores report r, parsed from raw, and returns its ID. The report is
// on disk (committed and fsynced) when Add returns without error (RPT05).
//
// A report with the same organization-name and report-id as a stored one
// is a duplicate (a retry, or the same report by email and HTTPS): Add
// then stores nothing and returns the stored report's ID and duplicate
// true.
func (s *Store) Add(ctx context.Context, r *Report, raw []byte, meta Meta) (id string, duplicate bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("store report: %w", err)
	}
	if r == nil || r.OrganizationName == "" || r.ReportID == "" {
		return "", false, errors.New("store report: no report, or one without organization-name and report-id")
	}
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
	if !json.Valid(raw) {
		return "", false, errors.New("store report: raw is not JSON text")
	}
	switch meta.Source {
	case SourceHTTPS, SourceEmail, SourceImport:
	default:
		return "", false, fmt.Errorf("store report: unknown source %q", meta.Source)
	}
	if len(meta.Sender) > maxSenderLen || len(meta.DKIM) > maxDKIMLen {
		return "", false, errors.New("store report: sender or DKIM result too long")
	}
	if meta.Received.IsZero() {
		meta.Received = time.Now()
	}
	sum := summarize(r, meta)
	sum.ID = newID(meta.Received)
	sumJSON, err := json.Marshal(sum)
	if err != nil {
		return "", false, fmt.Errorf("store report: encode summary: %w", err)
	}
	repJSON, err := json.Marshal(r)
	if err != nil {
		return "", false, fmt.Errorf("store report: encode report: %w", err)
	}
	key := dedupeKey(r.OrganizationName, r.ReportID)
	err = s.db.Update(func(tx *bolt.Tx) error {
		dd := tx.Bucket(bucketDedupe)
		if old := dd.Get(key); old != nil {
			id, duplicate = string(old), true
			return nil
		}
		id, duplicate = sum.ID, false
		for _, kv := range []struct {
			bucket, val []byte
		}{{bucketSummaries, sumJSON}, {bucketReports, repJSON}, {bucketRaw, raw}} {
			if err := tx.Bucket(kv.bucket).Put([]byte(id), kv.val); err != nil {
				return err
			}
		}
		return dd.Put(key, []byte(id))
	})
	if err != nil {
		return "", false, fmt.Errorf("store report %s from %s: %w", quote(r.ReportID), quote(r.OrganizationName), err)
	}
	return id, duplicate, nil
}

// summarize returns the listing entry of r, without ID.
func summarize(r *Report, meta Meta) Summary {
	succ, fail := r.Totals()
	sum := Summary{
		Received:      meta.Received.UTC(),
		Organization:  r.OrganizationName,
		ReportID:      r.ReportID,
		ContactInfo:   r.ContactInfo,
		PolicyDomains: r.PolicyDomains(),
		Start:         r.DateRange.Start,
		End:           r.DateRange.End,
		Successes:     succ,
		Failures:      fail,
		Source:        meta.Source,
		Sender:        meta.Sender,
		DKIM:          meta.DKIM,
		Warnings:      len(r.Warnings),
	}
	if sum.PolicyDomains == nil {
		sum.PolicyDomains = []string{}
	}
	if meta.Served != nil {
		for _, d := range sum.PolicyDomains {
			if !meta.Served(d) {
				sum.ForeignDomains = append(sum.ForeignDomains, d)
			}
		}
	}
	sum.Foreign = len(sum.ForeignDomains) > 0
	return sum
}

// dedupeKey identifies a report across deliveries (RPT05).
func dedupeKey(org, reportID string) []byte {
	return []byte(org + "\x00" + reportID)
}

// List returns the summaries of the reports f selects, most recently
// received first. The result is never nil.
func (s *Store) List(f Filter) ([]Summary, error) {
	out := []Summary{}
	err := s.scan(f, func(_ *bolt.Tx, sum Summary) error {
		out = append(out, sum)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list reports: %w", err)
	}
	return out, nil
}

// errStop ends a scan early.
var errStop = errors.New("stop")

// scan calls fn for each report f selects, most recently received first.
func (s *Store) scan(f Filter, fn func(tx *bolt.Tx, sum Summary) error) error {
	domain, _ := normalizeDomain(f.Domain)
	if f.Domain != "" && domain == "" {
		domain = strings.ToLower(f.Domain) // matches nothing, as it should
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSummaries).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var sum Summary
			if err := json.Unmarshal(v, &sum); err != nil {
				return fmt.Errorf("decode summary of %s: %w", k, err)
			}
			if domain != "" && !slices.Contains(sum.PolicyDomains, domain) {
				continue
			}
			if !f.Since.IsZero() && sum.End.Before(f.Since) {
				continue
			}
			if err := fn(tx, sum); err != nil {
				return err
			}
			if n++; f.Limit > 0 && n >= f.Limit {
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return err
}

// Get returns a stored report with its summary and raw JSON text.
func (s *Store) Get(id string) (*Stored, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%s: %w", quote(id), ErrNotFound)
	}
	st := &Stored{}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSummaries).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &st.Summary); err != nil {
			return fmt.Errorf("decode summary of %s: %w", id, err)
		}
		rep, err := getReport(tx, id)
		if err != nil {
			return err
		}
		st.Report = rep
		st.Raw = bytes.Clone(tx.Bucket(bucketRaw).Get([]byte(id)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get report: %w", err)
	}
	return st, nil
}

func getReport(tx *bolt.Tx, id string) (*Report, error) {
	v := tx.Bucket(bucketReports).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("report %s has a summary but no report", id)
	}
	var r Report
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode report %s: %w", id, err)
	}
	return &r, nil
}

// Delete removes a stored report. The same report may then be stored
// again.
func (s *Store) Delete(id string) error {
	if !validID(id) {
		return fmt.Errorf("delete report: %s: %w", quote(id), ErrNotFound)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		sums := tx.Bucket(bucketSummaries)
		v := sums.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		var sum Summary
		if err := json.Unmarshal(v, &sum); err != nil {
			return fmt.Errorf("decode summary of %s: %w", id, err)
		}
		key := dedupeKey(sum.Organization, sum.ReportID)
		if string(tx.Bucket(bucketDedupe).Get(key)) == id {
			if err := tx.Bucket(bucketDedupe).Delete(key); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketSummaries, bucketReports, bucketRaw} {
			if err := tx.Bucket(b).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete report: %w", err)
	}
	return nil
}

// maxReasonCodes bounds FailureGroup.ReasonCodes.
const maxReasonCodes = 5

// Summarize aggregates the reports f selects: session totals, failed
// sessions by result type, by MX host and by domain, and failure groups.
// With f.Domain, only the policies of that domain count.
func (s *Store) Summarize(f Filter) (*SummaryReport, error) {
	sr := &SummaryReport{
		ByResultType: map[ResultType]int64{},
		ByMXHost:     map[string]int64{},
		ByDomain:     map[string]DomainTotals{},
		Groups:       []FailureGroup{},
	}
	domain, _ := normalizeDomain(f.Domain)
	type groupKey struct {
		domain, mx string
		rt         ResultType
	}
	groups := map[groupKey]*FailureGroup{}
	err := s.scan(f, func(tx *bolt.Tx, sum Summary) error {
		r, err := getReport(tx, sum.ID)
		if err != nil {
			return err
		}
		sr.Reports++
		if sum.Foreign {
			sr.Foreign++
		}
		seenDomain := map[string]bool{}
		seenGroup := map[groupKey]bool{}
		for _, p := range r.Policies {
			if f.Domain != "" && p.Policy.Domain != domain {
				continue
			}
			sr.Successes = addSat(sr.Successes, p.Summary.TotalSuccessful)
			sr.Failures = addSat(sr.Failures, p.Summary.TotalFailure)
			dt := sr.ByDomain[p.Policy.Domain]
			if !seenDomain[p.Policy.Domain] {
				seenDomain[p.Policy.Domain] = true
				dt.Reports++
			}
			dt.Successes = addSat(dt.Successes, p.Summary.TotalSuccessful)
			dt.Failures = addSat(dt.Failures, p.Summary.TotalFailure)
			sr.ByDomain[p.Policy.Domain] = dt
			for _, d := range p.FailureDetails {
				mx := mxHostKey(d)
				sr.ByResultType[d.ResultType] = addSat(sr.ByResultType[d.ResultType], d.FailedSessionCount)
				sr.ByMXHost[mx] = addSat(sr.ByMXHost[mx], d.FailedSessionCount)
				k := groupKey{p.Policy.Domain, mx, d.ResultType}
				g := groups[k]
				if g == nil {
					g = &FailureGroup{Domain: k.domain, MXHost: k.mx, ResultType: k.rt}
					groups[k] = g
				}
				g.Sessions = addSat(g.Sessions, d.FailedSessionCount)
				if !seenGroup[k] {
					seenGroup[k] = true
					g.Reports++
				}
				if r.DateRange.End.After(g.Last) {
					g.Last = r.DateRange.End
				}
				if c := d.FailureReasonCode; c != "" && len(g.ReasonCodes) < maxReasonCodes && !slices.Contains(g.ReasonCodes, c) {
					g.ReasonCodes = append(g.ReasonCodes, c)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("summarize reports: %w", err)
	}
	for _, g := range groups {
		sr.Groups = append(sr.Groups, *g)
	}
	slices.SortFunc(sr.Groups, func(a, b FailureGroup) int {
		return cmp.Or(
			cmp.Compare(b.Sessions, a.Sessions),
			cmp.Compare(a.Domain, b.Domain),
			cmp.Compare(a.MXHost, b.MXHost),
			cmp.Compare(a.ResultType, b.ResultType),
		)
	})
	return sr, nil
}

// mxHostKey names the MX host of a failure detail for grouping.
func mxHostKey(d FailureDetail) string {
	if h := strings.ToLower(strings.TrimSuffix(d.ReceivingMXHostname, ".")); h != "" {
		return h
	}
	return d.ReceivingIP
}

// addSat adds non-negative counts, saturating instead of overflowing.
func addSat(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}

// idEncoding is base32 with the "extended hex" alphabet, which sorts like
// the bytes it encodes, lower-cased.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns a report ID: 6 bytes of milliseconds since the epoch and 4
// random bytes, so that IDs sort by arrival.
func newID(t time.Time) string {
	var b [10]byte
	ms := uint64(t.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	rand.Read(b[6:]) // never fails (crypto/rand)
	return idEncoding.EncodeToString(b[:])
}

// validID reports whether id has the shape of a report ID.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

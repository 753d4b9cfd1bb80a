package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/relay/admin"
)

func newReportsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reports",
		Short: "Inspect the TLS reports (RFC 8460) other mail systems sent about your domains",
		Long: `Inspect the TLS reports (TLS-RPT, RFC 8460) that sending mail systems such as
Google and Microsoft send about the domains the relay serves: how many of
their TLS sessions to your MX hosts succeeded, and why the others failed.`,
	}
	cmd.AddCommand(
		newReportsListCmd(a),
		newReportsShowCmd(a),
		newReportsSummaryCmd(a),
		newReportsDeleteCmd(a),
		newReportsImportCmd(a),
	)
	return cmd
}

// sinceFlag converts a --since value for the admin API.
func sinceFlag(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := admin.ParseSince(v, time.Now())
	if err != nil {
		return time.Time{}, fmt.Errorf("--since: %w", err)
	}
	return t, nil
}

func newReportsListCmd(a *app) *cobra.Command {
	var f tlsrpt.Filter
	var since string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List received reports, newest first",
		Long: `List received reports, newest first: when each arrived, who sent it, the
policy domains and date range it covers, its successful and failed session
counts, FOREIGN if it concerns a domain the relay does not serve, how it
came (https, email or import) and, for email, the DKIM result of the
message ("pass (d=google.com)", "fail: ...", "none"; "-" for the others).

--since selects reports whose date range ends at or after the given time:
an age such as 7d, 36h or 2w, a date, or an RFC 3339 time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.Limit < 1 || f.Limit > admin.MaxReportLimit {
				return fmt.Errorf("--limit must be from 1 to %d", admin.MaxReportLimit)
			}
			var err error
			if f.Since, err = sinceFlag(since); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			list, err := c.Reports(cmd.Context(), f)
			if err != nil {
				return err
			}
			if len(list) == f.Limit {
				fmt.Fprintf(a.stderr, "relayctl: showing the newest %d reports; use --limit for more\n", f.Limit)
			}
			if a.jsonOut {
				return a.printJSON(list)
			}
			return a.printReportList(list, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Domain, "domain", "", "only reports about this policy `domain`")
	fl.StringVar(&since, "since", "", "only reports covering time after this (`7d`, 36h, 2026-03-01, ...)")
	fl.IntVar(&f.Limit, "limit", admin.DefaultReportLimit, fmt.Sprintf("show at most `N` reports (up to %d)", admin.MaxReportLimit))
	return cmd
}

// fmtRange formats a report's date range in UTC.
func fmtRange(start, end time.Time) string {
	const layout = "2006-01-02 15:04"
	return start.UTC().Format(layout) + " .. " + end.UTC().Format(layout)
}

// fmtDomains formats policy domains for a table cell.
func fmtDomains(ds []string) string {
	if len(ds) == 0 {
		return "-"
	}
	return clean(strings.Join(ds, ","))
}

// fmtDKIM formats a report's DKIM result for a table cell.
func fmtDKIM(s tlsrpt.Summary) string {
	return truncate(orDash(s.DKIM), 48)
}

func (a *app) printReportList(list []tlsrpt.Summary, f tlsrpt.Filter) error {
	if len(list) == 0 {
		if f.Domain != "" || !f.Since.IsZero() {
			fmt.Fprintln(a.stdout, "No reports match.")
		} else {
			fmt.Fprintln(a.stdout, "No TLS reports have been received.")
		}
		return nil
	}
	tw := a.table()
	fmt.Fprintln(tw, "ID\tRECEIVED\tORGANIZATION\tPOLICY DOMAIN\tDATE RANGE (UTC)\tSUCCESSFUL\tFAILED\tFLAGS\tSOURCE\tDKIM")
	for _, s := range list {
		flags := "-"
		if s.Foreign {
			flags = "FOREIGN"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n",
			s.ID, fmtTime(s.Received), truncate(orDash(s.Organization), 40), fmtDomains(s.PolicyDomains),
			fmtRange(s.Start, s.End), s.Successes, s.Failures, flags, orDash(s.Source), fmtDKIM(s))
	}
	return tw.Flush()
}

func newReportsShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a report: its summary and every failure detail",
		Long: `Show a report: who sent it and how, the period it covers, and for each
policy the session counts and every failure detail (result type, MX host,
addresses, reason). With --json, print the report's original JSON as
received instead.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("reports show takes one report ID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if a.jsonOut {
				var buf bytes.Buffer
				if _, err := c.ReportRaw(cmd.Context(), args[0], &buf); err != nil {
					return err
				}
				if !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
					buf.WriteByte('\n')
				}
				_, err = a.stdout.Write(buf.Bytes())
				return err
			}
			st, err := c.Report(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printReport(st)
		},
	}
}

func (a *app) printReport(st *tlsrpt.Stored) error {
	tw := a.table()
	fmt.Fprintf(tw, "ID:\t%s\n", st.ID)
	fmt.Fprintf(tw, "Organization:\t%s\n", orDash(st.Organization))
	fmt.Fprintf(tw, "Contact:\t%s\n", orDash(st.ContactInfo))
	fmt.Fprintf(tw, "Report ID:\t%s\n", orDash(st.ReportID))
	fmt.Fprintf(tw, "Date range:\t%s UTC\n", fmtRange(st.Start, st.End))
	fmt.Fprintf(tw, "Received:\t%s\n", fmtTime(st.Received))
	fmt.Fprintf(tw, "Source:\t%s\n", orDash(st.Source))
	fmt.Fprintf(tw, "Sender:\t%s\n", orDash(st.Sender))
	if st.DKIM != "" || st.Source == tlsrpt.SourceEmail {
		fmt.Fprintf(tw, "DKIM:\t%s\n", orDash(st.DKIM))
	}
	fmt.Fprintf(tw, "Policy domains:\t%s\n", fmtDomains(st.PolicyDomains))
	if st.Foreign {
		fmt.Fprintf(tw, "Foreign:\tyes: the relay does not serve %s\n", fmtDomains(st.ForeignDomains))
	}
	fmt.Fprintf(tw, "Sessions:\t%d successful, %d failed\n", st.Successes, st.Failures)
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Report == nil {
		return nil
	}
	for _, w := range st.Report.Warnings {
		fmt.Fprintf(a.stdout, "Warning: %s\n", clean(w))
	}
	for i, p := range st.Report.Policies {
		fmt.Fprintln(a.stdout)
		fmt.Fprintf(a.stdout, "Policy %d: %s %s\n", i+1, clean(string(p.Policy.Type)), orDash(p.Policy.Domain))
		tw := a.table()
		if len(p.Policy.MXHost) > 0 {
			fmt.Fprintf(tw, "  MX hosts:\t%s\n", clean(strings.Join(p.Policy.MXHost, ", ")))
		}
		for j, line := range p.Policy.String {
			label := ""
			if j == 0 {
				label = "Policy:"
			}
			fmt.Fprintf(tw, "  %s\t%s\n", label, orDash(line))
		}
		fmt.Fprintf(tw, "  Sessions:\t%d successful, %d failed\n", p.Summary.TotalSuccessful, p.Summary.TotalFailure)
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(p.FailureDetails) == 0 {
			if p.Summary.TotalFailure > 0 {
				fmt.Fprintln(a.stdout, "  No failure details given.")
			}
			continue
		}
		tw = a.table()
		fmt.Fprintln(tw, "  RESULT TYPE\tSESSIONS\tMX HOST\tRECEIVING IP\tSENDING IP\tHELO\tREASON CODE\tADDITIONAL INFORMATION")
		for _, d := range p.FailureDetails {
			rt := clean(string(d.ResultType))
			if !d.ResultType.Known() {
				rt += " (unknown)"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", rt, d.FailedSessionCount,
				orDash(d.ReceivingMXHostname), orDash(d.ReceivingIP), orDash(d.SendingMTAIP),
				orDash(d.ReceivingMXHelo), orDash(d.FailureReasonCode), orDash(d.AdditionalInformation))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func newReportsSummaryCmd(a *app) *cobra.Command {
	var f tlsrpt.Filter
	var since string
	cmd := &cobra.Command{
		Use:   "summary",
		Short: "Sum up reports: failed sessions by result type and MX host",
		Long: `Sum up the reports: sessions per policy domain, failed sessions by result
type and by MX host, and the failures grouped by MX host and result type
with a hint for each kind, most failed sessions first. This is where a
certificate that expired or does not match an MX host name shows.

--since selects reports whose date range ends at or after the given time:
an age such as 7d, 36h or 2w, a date, or an RFC 3339 time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if f.Since, err = sinceFlag(since); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			sr, err := c.ReportSummary(cmd.Context(), f)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(sr)
			}
			return a.printReportSummary(sr, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Domain, "domain", "", "only policies of this `domain`")
	fl.StringVar(&since, "since", "", "only reports covering time after this (`7d`, 36h, 2026-03-01, ...)")
	return cmd
}

// countEntry is one line of a sorted count table.
type countEntry[K cmp.Ordered] struct {
	key K
	n   int64
}

// sortedCounts returns m's entries, largest count first, then by key.
func sortedCounts[K cmp.Ordered](m map[K]int64) []countEntry[K] {
	out := make([]countEntry[K], 0, len(m))
	for k, n := range m {
		out = append(out, countEntry[K]{k, n})
	}
	slices.SortFunc(out, func(x, y countEntry[K]) int {
		return cmp.Or(cmp.Compare(y.n, x.n), cmp.Compare(x.key, y.key))
	})
	return out
}

// resultHints says what to check for each result type of RFC 8460 §4.3.
var resultHints = map[tlsrpt.ResultType]string{
	tlsrpt.ResultSTARTTLSNotSupported:    "the MX host does not offer STARTTLS: enable TLS on it",
	tlsrpt.ResultCertificateHostMismatch: "the certificate does not name the MX host: add the MX host name to the certificate, or fix the policy's mx patterns",
	tlsrpt.ResultCertificateExpired:      "the certificate has expired: renew it and reload the MX host",
	tlsrpt.ResultCertificateNotTrusted:   "the certificate chain is not trusted: serve the full chain from a public CA",
	tlsrpt.ResultValidationFailure:       "TLS validation failed: see the reason codes",
	tlsrpt.ResultTLSAInvalid:             "no TLSA record matches the certificate: publish TLSA for the new key before rolling it",
	tlsrpt.ResultDNSSECInvalid:           "DNSSEC validation failed: check the zone's signatures and DS records",
	tlsrpt.ResultDANERequired:            "the sender requires DANE but found no TLSA records: publish them",
	tlsrpt.ResultSTSPolicyFetchError:     "the MTA-STS policy could not be fetched: check https://mta-sts.DOMAIN/.well-known/mta-sts.txt",
	tlsrpt.ResultSTSPolicyInvalid:        "the MTA-STS policy is invalid: check its syntax",
	tlsrpt.ResultSTSWebPKIInvalid:        "the certificate of mta-sts.DOMAIN is not valid: fix the policy host's certificate",
}

func (a *app) printReportSummary(sr *tlsrpt.SummaryReport, f tlsrpt.Filter) error {
	if sr.Reports == 0 {
		if f.Domain != "" || !f.Since.IsZero() {
			fmt.Fprintln(a.stdout, "No reports match.")
		} else {
			fmt.Fprintln(a.stdout, "No TLS reports have been received.")
		}
		return nil
	}
	tw := a.table()
	reports := plural(sr.Reports, "report")
	if sr.Foreign > 0 {
		reports += fmt.Sprintf(" (%d FOREIGN: about domains the relay does not serve)", sr.Foreign)
	}
	fmt.Fprintf(tw, "Reports:\t%s\n", reports)
	failedPct := ""
	if total := sr.Successes + sr.Failures; total > 0 {
		failedPct = fmt.Sprintf(" (%.2f%% failed)", 100*float64(sr.Failures)/float64(total))
	}
	fmt.Fprintf(tw, "Sessions:\t%d successful, %d failed%s\n", sr.Successes, sr.Failures, failedPct)
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	tw = a.table()
	fmt.Fprintln(tw, "POLICY DOMAIN\tREPORTS\tSUCCESSFUL\tFAILED")
	domains := make([]string, 0, len(sr.ByDomain))
	for d := range sr.ByDomain {
		domains = append(domains, d)
	}
	slices.SortFunc(domains, func(x, y string) int {
		return cmp.Or(cmp.Compare(sr.ByDomain[y].Failures, sr.ByDomain[x].Failures), cmp.Compare(x, y))
	})
	for _, d := range domains {
		t := sr.ByDomain[d]
		name := orDash(d)
		if d == "" {
			name = "- (no-policy-found)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", name, t.Reports, t.Successes, t.Failures)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if sr.Failures == 0 && len(sr.ByResultType) == 0 {
		fmt.Fprintln(a.stdout)
		fmt.Fprintln(a.stdout, "No failed sessions.")
		return nil
	}

	fmt.Fprintln(a.stdout)
	tw = a.table()
	fmt.Fprintln(tw, "RESULT TYPE\tFAILED SESSIONS")
	for _, c := range sortedCounts(sr.ByResultType) {
		rt := clean(string(c.key))
		if !c.key.Known() {
			rt += " (unknown)"
		}
		fmt.Fprintf(tw, "%s\t%d\n", rt, c.n)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	tw = a.table()
	fmt.Fprintln(tw, "MX HOST\tFAILED SESSIONS")
	for _, c := range sortedCounts(sr.ByMXHost) {
		fmt.Fprintf(tw, "%s\t%d\n", orDash(c.key), c.n)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(sr.Groups) > 0 {
		fmt.Fprintln(a.stdout)
		tw = a.table()
		fmt.Fprintln(tw, "POLICY DOMAIN\tMX HOST\tRESULT TYPE\tFAILED SESSIONS\tREPORTS\tLAST\tREASON CODES")
		for _, g := range sr.Groups {
			codes := "-"
			if len(g.ReasonCodes) > 0 {
				codes = truncate(clean(strings.Join(g.ReasonCodes, "; ")), 60)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", orDash(g.Domain), orDash(g.MXHost), clean(string(g.ResultType)),
				g.Sessions, g.Reports, g.Last.UTC().Format("2006-01-02"), codes)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout)
		seen := map[tlsrpt.ResultType]bool{}
		for _, g := range sr.Groups {
			hint, ok := resultHints[g.ResultType]
			if !ok || seen[g.ResultType] {
				continue
			}
			seen[g.ResultType] = true
			if g.Domain != "" {
				hint = strings.ReplaceAll(hint, "DOMAIN", clean(g.Domain))
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", g.ResultType, hint)
		}
	}
	return nil
}

// reportDeleteResult is the outcome for one report, as printed by --json.
type reportDeleteResult struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
	Error   string `json:"error,omitempty"`
}

func newReportsDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID... | -",
		Short: "Delete stored reports",
		Long: `Delete stored reports. Give the report IDs as arguments, or - to read
them from standard input (separated by spaces or newlines). Up to 20 IDs
get a line each; more show progress on standard error and a final count.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("reports delete needs at least one report ID")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := readIDs(args, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return a.deleteReports(cmd.Context(), c, ids)
		},
	}
}

// deleteReports deletes each report and fails if any deletion failed. Up
// to bulkVerboseMax IDs are reported one by one; more show progress on
// standard error and a final count on standard output. It stops at once
// when the daemon cannot be reached or does not keep reports.
func (a *app) deleteReports(ctx context.Context, c *admin.Client, ids []string) error {
	results := make([]reportDeleteResult, 0, len(ids))
	verbose := len(ids) <= bulkVerboseMax
	prog := newProgress(a.stderr, func(done, total int) string {
		return fmt.Sprintf("relayctl: reports delete: %d of %d reports done...", done, total)
	})
	defer prog.done()
	var tally bulkTally
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.DeleteReport(ctx, id)
		var ce *admin.ConnectError
		if errors.As(err, &ce) || errors.Is(err, admin.ErrReportsDisabled) {
			return err
		}
		res := reportDeleteResult{ID: id, Deleted: err == nil}
		switch {
		case err != nil:
			res.Error = err.Error()
			notFound := errors.Is(err, tlsrpt.ErrNotFound)
			if notFound {
				tally.notFound = append(tally.notFound, id)
			} else {
				tally.failed = append(tally.failed, id)
			}
			if !a.jsonOut && (verbose || !notFound) {
				fmt.Fprintf(a.stderr, "%s: %v\n", clean(id), err)
			}
		case verbose && !a.jsonOut:
			tally.ok++
			fmt.Fprintf(a.stdout, "%s: deleted\n", clean(id))
		default:
			tally.ok++
		}
		results = append(results, res)
		if !verbose {
			prog.update(i+1, len(ids))
		}
	}
	prog.done()
	if a.jsonOut {
		if err := a.printJSON(results); err != nil {
			return err
		}
	} else if !verbose {
		fmt.Fprintln(a.stdout, tally.summary("deleted "+plural(tally.ok, "report")))
	}
	if failed := len(tally.notFound) + len(tally.failed); failed > 0 {
		return fmt.Errorf("delete failed for %d of %s", failed, plural(len(ids), "report"))
	}
	return nil
}

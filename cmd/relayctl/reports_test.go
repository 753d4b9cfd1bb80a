package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/admin"
)

// reportDaemon is an in-process admin server with a TLS report store
// holding the samples of testdata/tlsrpt.
type reportDaemon struct {
	*daemon
	store *tlsrpt.Store
	ids   map[string]string // sample file -> report ID
	raw   map[string][]byte
}

func newReportDaemon(t *testing.T) *reportDaemon {
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
	socket := filepath.Join(dir, "relay.sock")
	ln, err := admin.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           admin.Handler(q, nil, admin.Options{Version: "v9.9.9-test", Reports: store}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	d := &reportDaemon{daemon: &daemon{q: q, socket: socket}, store: store, ids: map[string]string{}, raw: map[string][]byte{}}
	received := time.Now().Add(-time.Hour)
	for i, f := range []string{"rfc8460-example.json", "google.json", "microsoft.json", "smallprovider.json"} {
		raw, err := os.ReadFile(filepath.Join("../../testdata/tlsrpt", f))
		if err != nil {
			t.Fatal(err)
		}
		meta := tlsrpt.Meta{Received: received.Add(time.Duration(i) * time.Minute), Source: tlsrpt.SourceHTTPS, Sender: "127.0.0.1"}
		if f == "google.json" {
			meta.Source, meta.Sender, meta.DKIM = tlsrpt.SourceEmail, "noreply-smtp-tls-reporting@google.com", "pass"
		}
		d.ids[f] = d.add(t, raw, meta)
		d.raw[f] = raw
	}
	return d
}

func (d *reportDaemon) add(t *testing.T, raw []byte, meta tlsrpt.Meta) string {
	t.Helper()
	rep, err := tlsrpt.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	meta.Served = func(dom string) bool { return dom == "example.org" }
	id, _, err := d.store.Add(context.Background(), rep, raw, meta)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// line returns the squashed output line that contains id.
func line(out, id string) string {
	for l := range strings.SplitSeq(out, "\n") {
		if strings.Contains(l, id) {
			return squash(l)
		}
	}
	return ""
}

func TestReportsList(t *testing.T) {
	d := newReportDaemon(t)
	out, errOut, code := d.relayctl(t, "reports", "list")
	mustSucceed(t, out, errOut, code)
	if !strings.HasPrefix(squash(out), "ID RECEIVED ORGANIZATION POLICY DOMAIN DATE RANGE (UTC) SUCCESSFUL FAILED FLAGS SOURCE DKIM") {
		t.Errorf("header:\n%s", out)
	}
	for f, want := range map[string]string{
		"google.json":          "Google Inc. example.org 2026-02-27 00:00 .. 2026-02-27 23:59 1843 27 - email pass",
		"microsoft.json":       "Microsoft Corporation example.org 2026-02-27 00:00 .. 2026-02-28 00:00 412 9 - https -",
		"smallprovider.json":   "Example Mail Hosting e.K. example.org 2026-02-27 00:00 .. 2026-02-27 23:59 33 4 - https -",
		"rfc8460-example.json": "Company-X company-y.example 2016-04-01 00:00 .. 2016-04-01 23:59 5326 303 FOREIGN https -",
	} {
		if l := line(out, d.ids[f]); !strings.HasSuffix(l, want) {
			t.Errorf("%s: line %q, want it to end with %q", f, l, want)
		}
	}
	// Newest first.
	if strings.Index(out, d.ids["smallprovider.json"]) > strings.Index(out, d.ids["rfc8460-example.json"]) {
		t.Errorf("not newest first:\n%s", out)
	}

	out, errOut, code = d.relayctl(t, "reports", "list", "--domain", "company-y.example")
	mustSucceed(t, out, errOut, code)
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, d.ids["rfc8460-example.json"]) {
		t.Errorf("--domain:\n%s", out)
	}
	out, errOut, code = d.relayctl(t, "reports", "list", "--since", "2026-02-28")
	mustSucceed(t, out, errOut, code)
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, d.ids["microsoft.json"]) {
		t.Errorf("--since:\n%s", out)
	}
	out, errOut, code = d.relayctl(t, "reports", "list", "--limit", "2")
	mustSucceed(t, out, errOut, code)
	if strings.Count(out, "\n") != 3 || !strings.Contains(errOut, "showing the newest 2 reports") {
		t.Errorf("--limit:\n%s\nstderr: %s", out, errOut)
	}
	out, errOut, code = d.relayctl(t, "reports", "list", "--domain", "nowhere.example")
	mustSucceed(t, out, errOut, code)
	if squash(out) != "No reports match." {
		t.Errorf("no match: %q", out)
	}
	if _, errOut, code := d.relayctl(t, "reports", "list", "--since", "last tuesday"); code != 1 || !strings.Contains(errOut, "--since: bad since") {
		t.Errorf("bad --since: %d %s", code, errOut)
	}

	out, errOut, code = d.relayctl(t, "--json", "reports", "list")
	mustSucceed(t, out, errOut, code)
	var list []tlsrpt.Summary
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 4 {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if list[0].ID != d.ids["smallprovider.json"] || !list[3].Foreign {
		t.Errorf("--json list = %+v", list)
	}
}

func TestReportsListEmptyAndHostileText(t *testing.T) {
	d := newDaemonWithEmptyReports(t)
	out, errOut, code := d.relayctl(t, "reports", "list")
	mustSucceed(t, out, errOut, code)
	if squash(out) != "No TLS reports have been received." {
		t.Errorf("empty: %q", out)
	}
	raw := []byte(`{"organization-name":"Evil\u001b[2J Corp\nInc","date-range":{"start-datetime":"2026-02-27T00:00:00Z","end-datetime":"2026-02-27T23:59:59Z"},
"contact-info":"x","report-id":"evil-1","policies":[{"policy":{"policy-type":"sts","policy-domain":"example.org"},
"summary":{"total-successful-session-count":0,"total-failure-session-count":1},
"failure-details":[{"result-type":"certificate-expired\u0007","receiving-mx-hostname":"mx\u001b]0;pwned\u0007.example.org","failed-session-count":1}]}]}`)
	id := d.add(t, raw, tlsrpt.Meta{Source: tlsrpt.SourceHTTPS})
	for _, args := range [][]string{{"reports", "list"}, {"reports", "show", id}, {"reports", "summary"}} {
		out, errOut, code := d.relayctl(t, args...)
		mustSucceed(t, out, errOut, code)
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("%s: control characters reach the terminal:\n%q", args, out)
		}
	}
}

func newDaemonWithEmptyReports(t *testing.T) *reportDaemon {
	d := newReportDaemon(t)
	for _, id := range d.ids {
		if err := d.store.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestReportsShow(t *testing.T) {
	d := newReportDaemon(t)
	id := d.ids["rfc8460-example.json"]
	out, errOut, code := d.relayctl(t, "reports", "show", id)
	mustSucceed(t, out, errOut, code)
	sq := squash(out)
	for _, want := range []string{
		"ID: " + id,
		"Organization: Company-X",
		"Contact: sts-reporting@company-x.example",
		"Report ID: 5065427c-23d3-47ca-b6e0-946ea0e8c4be",
		"Date range: 2016-04-01 00:00 .. 2016-04-01 23:59 UTC",
		"Source: https",
		"Sender: 127.0.0.1",
		"Foreign: yes: the relay does not serve company-y.example",
		"Sessions: 5326 successful, 303 failed",
		"Policy 1: sts company-y.example",
		"MX hosts: *.mail.company-y.example",
		"Policy: version: STSv1 mode: testing",
		"RESULT TYPE SESSIONS MX HOST RECEIVING IP SENDING IP HELO REASON CODE ADDITIONAL INFORMATION",
		"certificate-expired 100 mx1.mail.company-y.example - 2001:db8:abcd:0012::1 - - -",
		"starttls-not-supported 200 mx2.mail.company-y.example 203.0.113.56 2001:db8:abcd:0013::1 - - https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
		"validation-failure 3 mx-backup.mail.company-y.example 203.0.113.58 198.51.100.62 - X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED -",
	} {
		if !strings.Contains(sq, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}

	// An email report shows its DKIM result; no-policy-found its lack of
	// a domain.
	out, errOut, code = d.relayctl(t, "reports", "show", d.ids["google.json"])
	mustSucceed(t, out, errOut, code)
	if sq := squash(out); !strings.Contains(sq, "Source: email") || !strings.Contains(sq, "DKIM: pass") || strings.Contains(sq, "Foreign") {
		t.Errorf("google:\n%s", out)
	}
	out, errOut, code = d.relayctl(t, "reports", "show", d.ids["smallprovider.json"])
	mustSucceed(t, out, errOut, code)
	if sq := squash(out); !strings.Contains(sq, "Policy 2: no-policy-found -") || !strings.Contains(sq, "tlsa-invalid 4 mail.example.org 192.0.2.25 198.51.100.7 mail.example.org") {
		t.Errorf("smallprovider:\n%s", out)
	}

	// --json prints the original report, byte for byte.
	out, errOut, code = d.relayctl(t, "--json", "reports", "show", d.ids["microsoft.json"])
	mustSucceed(t, out, errOut, code)
	if out != string(d.raw["microsoft.json"]) {
		t.Errorf("--json:\n%q\nwant\n%q", out, d.raw["microsoft.json"])
	}

	for _, args := range [][]string{{"reports", "show", "0000000000000000"}, {"reports", "show", "nonsense"}, {"--json", "reports", "show", "0000000000000000"}} {
		_, errOut, code := d.relayctl(t, args...)
		if code != 1 || !strings.Contains(errOut, "not found") {
			t.Errorf("%s: exit %d, %q", args, code, errOut)
		}
	}
	if _, errOut, code := d.relayctl(t, "reports", "show"); code != 1 || !strings.Contains(errOut, "one report ID") {
		t.Errorf("no ID: %d %q", code, errOut)
	}
}

func TestReportsSummary(t *testing.T) {
	d := newReportDaemon(t)
	out, errOut, code := d.relayctl(t, "reports", "summary", "--domain", "example.org")
	mustSucceed(t, out, errOut, code)
	sq := squash(out)
	for _, want := range []string{
		"Reports: 3 reports",
		"Sessions: 2286 successful, 40 failed (1.72% failed)",
		"POLICY DOMAIN REPORTS SUCCESSFUL FAILED example.org 3 2286 40",
		"RESULT TYPE FAILED SESSIONS certificate-expired 25 certificate-host-mismatch 9 tlsa-invalid 4 sts-webpki-invalid 2",
		"MX HOST FAILED SESSIONS backup.example.org 34 mail.example.org 4 - 2",
		"POLICY DOMAIN MX HOST RESULT TYPE FAILED SESSIONS REPORTS LAST REASON CODES",
		"example.org backup.example.org certificate-expired 25 1 2026-02-27 -",
		"example.org backup.example.org certificate-host-mismatch 9 1 2026-02-28 The certificate name does not match the host name",
		"certificate-expired: the certificate has expired: renew it and reload the MX host",
		"sts-webpki-invalid: the certificate of mta-sts.example.org is not valid",
	} {
		if !strings.Contains(sq, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}

	out, errOut, code = d.relayctl(t, "reports", "summary")
	mustSucceed(t, out, errOut, code)
	if sq := squash(out); !strings.Contains(sq, "Reports: 4 reports (1 FOREIGN") || !strings.Contains(sq, "- (no-policy-found) 1 2 0") {
		t.Errorf("all:\n%s", out)
	}
	out, errOut, code = d.relayctl(t, "reports", "summary", "--since", "2030-01-01")
	mustSucceed(t, out, errOut, code)
	if squash(out) != "No reports match." {
		t.Errorf("--since in the future: %q", out)
	}

	out, errOut, code = d.relayctl(t, "--json", "reports", "summary")
	mustSucceed(t, out, errOut, code)
	var sr tlsrpt.SummaryReport
	if err := json.Unmarshal([]byte(out), &sr); err != nil || sr.Reports != 4 || sr.ByMXHost["mx2.mail.company-y.example"] != 200 {
		t.Errorf("--json: %v %+v", err, sr)
	}
}

func TestReportsDelete(t *testing.T) {
	d := newReportDaemon(t)
	a, b := d.ids["google.json"], d.ids["microsoft.json"]
	out, errOut, code := d.relayctl(t, "reports", "delete", a, "0000000000000000", b)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if squash(out) != a+": deleted "+b+": deleted" {
		t.Errorf("stdout %q", out)
	}
	if !strings.Contains(errOut, `0000000000000000: report "0000000000000000" not found`) || !strings.Contains(errOut, "delete failed for 1 of 3 reports") {
		t.Errorf("stderr %q", errOut)
	}
	list, _ := d.store.List(tlsrpt.Filter{})
	if len(list) != 2 {
		t.Errorf("%d reports left", len(list))
	}
	out, errOut, code = d.relayctl(t, "--json", "reports", "delete", d.ids["smallprovider.json"])
	mustSucceed(t, out, errOut, code)
	var res []reportDeleteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || !res[0].Deleted {
		t.Errorf("--json: %v %s", err, out)
	}
	if _, errOut, code := d.relayctl(t, "reports", "delete"); code != 1 || !strings.Contains(errOut, "at least one report ID") {
		t.Errorf("no ID: %d %q", code, errOut)
	}
}

// TestReportsNotEnabled: a daemon without [inbound] says so.
func TestReportsNotEnabled(t *testing.T) {
	d := newDaemon(t)
	for _, args := range [][]string{{"reports", "list"}, {"reports", "show", "0000000000000000"}, {"reports", "summary"}, {"reports", "delete", "0000000000000000", "0000000000000001"}} {
		out, errOut, code := d.relayctl(t, args...)
		if code != 1 || out != "" || errOut != "relayctl: TLS-RPT reports are not enabled: configure [inbound]\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

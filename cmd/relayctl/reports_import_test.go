package main

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mailSample reads a report email of testdata/reportmail.
func mailSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../testdata/reportmail", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// importDir writes a directory as an administrator might collect it: a
// saved message, a mailbox export, a compressed report, a zip archive, a
// subdirectory, a hidden file and a file that is no report. The daemon of
// newReportDaemon already holds the Google, Microsoft, small provider and
// RFC example reports.
func importDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "google.eml"), mailSample(t, "google-gzip-base64.eml"))
	// google (duplicate), plain JSON (duplicate), DMARC (no report),
	// nested (new).
	writeFile(t, filepath.Join(dir, "mailbox.mbox"), mailSample(t, "mailbox.mbox"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"organization-name":"Future Sender","date-range":{"start-datetime":"2026-02-27T00:00:00Z","end-datetime":"2026-02-27T23:59:59Z"},"contact-info":"","report-id":"future-1","policies":[{"policy":{"policy-type":"sts","policy-domain":"example.org"},"summary":{"total-successful-session-count":10,"total-failure-session-count":1}}]}`))
	zw.Close()
	writeFile(t, filepath.Join(dir, "future.json.gz"), gz.Bytes())
	writeFile(t, filepath.Join(dir, "sub", "rfc.eml"), mailSample(t, "zip-attachment.eml"))
	var zb bytes.Buffer
	zipw := zip.NewWriter(&zb)
	w, _ := zipw.Create("quirky.json")
	w.Write([]byte(`{"organization-name":"Quirky Sender","date-range":{"start-datetime":"2026-02-27T00:00:00","end-datetime":"2026-02-28T00:00:00"},"contact-info":"","report-id":"quirky-1","policies":[{"policy":{"policy-type":"no-policy-found"},"summary":{"total-successful-session-count":3,"total-failure-session-count":0}}]}`))
	w, _ = zipw.Create("broken.json")
	w.Write([]byte(`{"organization-name":"Broken"}`))
	zipw.Close()
	writeFile(t, filepath.Join(dir, "reports.zip"), zb.Bytes())
	writeFile(t, filepath.Join(dir, ".hidden.eml"), mailSample(t, "quoted-printable-json.eml"))
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte("Reminder: publish the TLSRPT record.\n"))
	return dir
}

// TestRPT08_ImportDirectoryWithCount: importing a directory reads every
// file, stores new reports with source import, reports duplicates of the
// reports that came by HTTPS or email without storing them twice, says
// what failed, and ends with a count; a second run stores nothing.
func TestRPT08_ImportDirectoryWithCount(t *testing.T) {
	d := newReportDaemon(t)
	dir := importDir(t)
	out, errOut, code := d.relayctl(t, "reports", "import", dir)
	if code != 1 || !strings.Contains(errOut, "import incomplete: 3 errors") {
		t.Errorf("exit %d, stderr %q; want 1 for the three errors", code, errOut)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, want := range []string{
		p("future.json.gz") + ": stored ",
		"(Future Sender, future-1)",
		p("google.eml") + ": duplicate of " + d.ids["google.json"] + " (Google Inc., 2026-02-27T00:00:00Z_example.org)",
		p("mailbox.mbox") + "#1: duplicate of " + d.ids["google.json"],
		p("mailbox.mbox") + "#2: duplicate of " + d.ids["smallprovider.json"],
		p("mailbox.mbox") + "#3: error: no TLS report found: ",
		p("mailbox.mbox") + "#4: stored ",
		"(Nested Mail GmbH, nested-2026-02-27-example.org)",
		p("notes.txt") + ": error: no TLS report found: no part of type application/tlsrpt+gzip",
		p("reports.zip") + " (entry \"quirky.json\"): stored ",
		p("reports.zip") + " (entry \"broken.json\"): error: invalid TLS report: ",
		p("sub/rfc.eml") + ": duplicate of " + d.ids["rfc8460-example.json"],
		"6 files (4 messages from mbox): 3 stored, 4 duplicates, 3 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ".hidden") {
		t.Errorf("hidden file imported:\n%s", out)
	}

	// Listed next to the HTTPS and email reports, with source import and
	// the file as sender.
	list, errOut, code := d.relayctl(t, "reports", "list")
	mustSucceed(t, list, errOut, code)
	if n := strings.Count(list, "\n"); n != 1+4+3 {
		t.Errorf("%d lines:\n%s", n, list)
	}
	if l := line(list, "Future Sender"); !strings.HasSuffix(l, "10 1 - import -") {
		t.Errorf("imported report listed as %q", l)
	}

	// Again: everything is a duplicate now; --quiet prints the errors and
	// the count only.
	out, _, code = d.relayctl(t, "reports", "import", "--quiet", dir)
	if code != 1 || !strings.HasSuffix(out, "6 files (4 messages from mbox): 0 stored, 7 duplicates, 3 errors\n") || strings.Contains(out, "duplicate of") {
		t.Errorf("second import, exit %d:\n%s", code, out)
	}

	// --json gives every outcome and the counts.
	out, _, _ = d.relayctl(t, "--json", "reports", "import", p("google.eml"), p("reports.zip"))
	var sum importSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if sum.Files != 2 || sum.Duplicates != 2 || sum.Errors != 1 || len(sum.Results) != 3 || sum.Results[0].ID != d.ids["google.json"] {
		t.Errorf("JSON %+v", sum)
	}
}

// TestRPT08_ImportStdin: "-" reads standard input, as a mail server's
// pipe delivery feeds it (here with the "From " line Postfix prepends).
func TestRPT08_ImportStdin(t *testing.T) {
	d := newReportDaemon(t)
	msg := "From reports@hostile.example  Sat Feb 28 01:00:00 2026\n" + string(mailSample(t, "quoted-printable-json.eml"))
	out, errOut, code := runCmd(t, msg, "--socket", d.socket, "reports", "import", "-")
	mustSucceed(t, out, errOut, code)
	if !strings.Contains(out, "stdin#1: stored ") || !strings.HasSuffix(out, "1 file (1 message from mbox): 1 stored, 0 duplicates, 0 errors\n") {
		t.Errorf("output:\n%s", out)
	}
	// A bare message (no "From " line) and a JSON report work too.
	out, errOut, code = runCmd(t, string(mailSample(t, "nested-alternative-mixed.eml")), "--socket", d.socket, "reports", "import", "-")
	mustSucceed(t, out, errOut, code)
	if !strings.HasPrefix(out, "stdin: stored ") {
		t.Errorf("output:\n%s", out)
	}
	out, _, code = runCmd(t, "", "--socket", d.socket, "reports", "import")
	if code == 0 {
		t.Errorf("no arguments accepted: %s", out)
	}
	_, errOut, code = runCmd(t, "", "--socket", d.socket, "reports", "import", "/nonexistent/file")
	if code == 0 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, %s", code, errOut)
	}
}

// TestImportWithoutDaemon: no daemon, no import (and a clear message).
func TestImportWithoutDaemon(t *testing.T) {
	f := filepath.Join(t.TempDir(), "google.eml")
	writeFile(t, f, mailSample(t, "google-gzip-base64.eml"))
	_, errOut, code := runCmd(t, "", "--socket", filepath.Join(t.TempDir(), "none.sock"), "reports", "import", f)
	if code == 0 || !strings.Contains(errOut, "relay daemon is not running") {
		t.Errorf("exit %d, %s", code, errOut)
	}
}

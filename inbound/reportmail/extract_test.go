package reportmail

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/relaysec/relay/inbound/tlsrpt"
)

// TestRPT08_ExtractProviderFormats: every real-shaped report email yields
// the report of testdata/tlsrpt it carries, byte for byte as the HTTPS path
// would store it.
func TestRPT08_ExtractProviderFormats(t *testing.T) {
	tests := []struct {
		file      string
		wantOrg   string
		wantID    string
		wantJSON  string // the testdata/tlsrpt sample, when the report is one
		wantWhere string
	}{
		{"google-gzip-base64.eml", "Google Inc.", "2026-02-27T00:00:00Z_example.org", "google.json", "application/tlsrpt+gzip"},
		{"microsoft-gzip-base64.eml", "Microsoft Corporation", "", "microsoft.json", "enterprise.protection.outlook.com!example.org"},
		{"plain-json-part.eml", "Example Mail Hosting e.K.", "", "smallprovider.json", "application/tlsrpt+json"},
		{"zip-attachment.eml", "Company-X", "", "rfc8460-example.json", `entry "company-x.example!company-y.example!1459468800!1459555199.json"`},
		{"quoted-printable-json.eml", "Future Sender", "future-1", "", "part 1 application/tlsrpt+json"},
		{"nested-alternative-mixed.eml", "Nested Mail GmbH", "nested-2026-02-27-example.org", "", "part 1.2.2 application/octet-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			msg := sample(t, tt.file)
			reports, err := ExtractReports(msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) != 1 {
				t.Fatalf("%d reports, want 1", len(reports))
			}
			rep, err := tlsrpt.Parse(reports[0])
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, reports[0])
			}
			if rep.OrganizationName != tt.wantOrg || (tt.wantID != "" && rep.ReportID != tt.wantID) {
				t.Errorf("organization %q, report-id %q", rep.OrganizationName, rep.ReportID)
			}
			// A 7bit part travels with CRLF line endings.
			got := bytes.ReplaceAll(reports[0], []byte("\r\n"), []byte("\n"))
			if tt.wantJSON != "" && !bytes.Equal(got, bytes.ReplaceAll(reportSample(t, tt.wantJSON), []byte("\r\n"), []byte("\n"))) {
				t.Errorf("JSON differs from %s:\n%s", tt.wantJSON, reports[0])
			}
			ex, err := Extract(msg, Limits{})
			if err != nil || len(ex.Problems) != 0 {
				t.Fatalf("Extract: %v, problems %v", err, ex.Problems)
			}
			if !strings.Contains(ex.Reports[0].Where, tt.wantWhere) {
				t.Errorf("Where = %q, want it to contain %q", ex.Reports[0].Where, tt.wantWhere)
			}
		})
	}
}

// TestRPT08_ExtractNoReport: messages without a valid report part say why.
func TestRPT08_ExtractNoReport(t *testing.T) {
	tests := []struct {
		name    string
		msg     []byte
		wantErr error
		want    string
	}{
		{"DMARC aggregate report", sample(t, "dmarc-aggregate.eml"), ErrNoReport, "zip archive without a .json or .json.gz entry"},
		{"plain text", crlf("From: a@b.example\nSubject: hi\n\nno report here\n"), ErrNoReport, "no part of type application/tlsrpt+gzip"},
		{"not a message", []byte("\x00\x01binary junk without header end"), ErrNotMessage, "not a mail message"},
		{"bad base64", crlf("Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\nH4sI*AAA\n"), ErrNoReport, "bad base64 data"},
		{"declared gzip, damaged", crlf("Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n" + wrap64([]byte("\x1f\x8b\x08\x00garbage"), 76)), ErrNoReport, "bad gzip data"},
		{"unknown transfer encoding", crlf("Content-Type: application/tlsrpt+json\nContent-Transfer-Encoding: x-uuencode\n\n{}\n"), ErrNoReport, "unknown Content-Transfer-Encoding"},
		{"multipart without boundary", crlf("Content-Type: multipart/mixed\n\n--x\n\n--x--\n"), ErrNoReport, "multipart without boundary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reports, err := ExtractReports(tt.msg)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.want)
			}
			if reports != nil {
				t.Errorf("reports = %q", reports)
			}
		})
	}
}

// report makes a small valid report JSON with the given report-id.
func report(id string) []byte {
	return fmt.Appendf(nil, `{"organization-name":"Quirky Sender","date-range":{"start-datetime":"2026-02-27T00:00:00Z","end-datetime":"2026-02-28T00:00:00Z"},"contact-info":"","report-id":%q,"policies":[{"policy":{"policy-type":"no-policy-found"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}`, id)
}

// TestRPT03_ExtractQuirks: what real senders do beyond the textbook is
// accepted: base64 without padding or wrapped at odd widths, upper-case
// encodings and types, LF line endings, gzip data labelled JSON, bytes
// after the gzip stream, a byte order mark, a .json.gz name under
// application/gzip, a report forwarded as message/rfc822, several reports
// in one message.
func TestRPT03_ExtractQuirks(t *testing.T) {
	rep := report("q-1")
	unpadded := strings.TrimRight(base64.StdEncoding.EncodeToString(gz(t, rep)), "=")
	tests := []struct {
		name string
		msg  []byte
		n    int
	}{
		{"base64 without padding", crlf("Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n" + unpadded + "\n"), 1},
		{"base64 wrapped at 60 with trailing spaces", crlf("Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n" + strings.ReplaceAll(wrap64(gz(t, rep), 60), "\r\n", "  \r\n")), 1},
		{"upper-case type and encoding", crlf("Content-Type: Application/TLSRPT+GZIP\nContent-Transfer-Encoding: BASE64\n\n" + wrap64(gz(t, rep), 76)), 1},
		{"LF line endings", []byte("Content-Type: multipart/report; report-type=tlsrpt; boundary=b\n\n--b\nContent-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n" + strings.ReplaceAll(wrap64(gz(t, rep), 76), "\r\n", "\n") + "--b--\n"), 1},
		{"gzip labelled JSON", crlf("Content-Type: application/tlsrpt+json\nContent-Transfer-Encoding: base64\n\n" + wrap64(gz(t, rep), 76)), 1},
		{"JSON labelled gzip", crlf("Content-Type: application/tlsrpt+gzip\n\n" + string(rep) + "\n"), 1},
		{"bytes after the gzip stream", crlf("Content-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n" + wrap64(append(gz(t, rep), "\x00\x00trailing"...), 76)), 1},
		{"byte order mark", crlf("Content-Type: application/json\nContent-Transfer-Encoding: 8bit\n\n\xef\xbb\xbf" + string(rep) + "\n"), 1},
		{"application/gzip named .json.gz", crlf("Content-Type: application/gzip; name=\"r.JSON.GZ\"\nContent-Transfer-Encoding: base64\n\n" + wrap64(gz(t, rep), 76)), 1},
		{"octet-stream named .json in RFC 2231 form", crlf("Content-Type: application/octet-stream\nContent-Disposition: attachment; filename*0=\"sender.example!example.org!\"; filename*1=\"1.json\"\n\n" + string(rep) + "\n"), 1},
		{"forwarded as message/rfc822", crlf("Content-Type: multipart/mixed; boundary=fw\n\n--fw\nContent-Type: text/plain\n\nForwarded report.\n--fw\nContent-Type: message/rfc822\n\nFrom: r@sender.example\nContent-Type: application/tlsrpt+json\n\n" + string(rep) + "\n--fw--\n"), 1},
		{"two reports", crlf("Content-Type: multipart/mixed; boundary=two\n\n--two\nContent-Type: application/tlsrpt+json\n\n" + string(report("q-1")) + "\n--two\nContent-Type: application/tlsrpt+json\n\n" + string(report("q-2")) + "\n--two--\n"), 2},
		{"text part named .txt is not a report", crlf("Content-Type: multipart/mixed; boundary=t\n\n--t\nContent-Type: text/plain; name=\"notes.txt\"\n\n" + string(rep) + "\n--t\nContent-Type: application/tlsrpt+json\n\n" + string(rep) + "\n--t--\n"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reports, err := ExtractReports(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) != tt.n {
				t.Fatalf("%d reports, want %d", len(reports), tt.n)
			}
			for _, r := range reports {
				if _, err := tlsrpt.Parse(r); err != nil {
					t.Errorf("Parse: %v\n%q", err, r)
				}
			}
		})
	}
}

// zipOf makes a zip archive of the given entries.
func zipOf(t testing.TB, entries map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range entries {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRPT03_ExtractBombsRefused: what is lenient is still bounded: zip
// archives with too many entries or entries inflating beyond the cap,
// gzip bombs, deep nesting, too many parts or reports cost little and
// yield nothing.
func TestRPT03_ExtractBombsRefused(t *testing.T) {
	lim := Limits{MaxPartBytes: 64 << 10, MaxReportBytes: 256 << 10, MaxReports: 3, MaxParts: 20, MaxDepth: 4, MaxZipEntries: 4}
	zeros := make([]byte, 1<<20)
	manyEntries := map[string][]byte{}
	for i := range 5 {
		manyEntries[fmt.Sprintf("r%d.json", i)] = report(fmt.Sprint(i))
	}
	attach := func(ctype string, data []byte) []byte {
		return crlf("Content-Type: " + ctype + "\nContent-Transfer-Encoding: base64\n\n" + wrap64(data, 76))
	}
	nest := func(depth int) []byte {
		s := "Content-Type: application/tlsrpt+json\n\n" + string(report("deep")) + "\n"
		for i := range depth {
			b := fmt.Sprintf("n%d", i)
			s = "Content-Type: multipart/mixed; boundary=" + b + "\n\n--" + b + "\n" + s + "--" + b + "--\n"
		}
		return crlf(s)
	}
	many := func(parts int, ctype string) []byte {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/mixed; boundary=m\n\n")
		for i := range parts {
			fmt.Fprintf(&b, "--m\nContent-Type: %s\n\n%s\n", ctype, report(fmt.Sprint("r", i)))
		}
		b.WriteString("--m--\n")
		return crlf(b.String())
	}
	tests := []struct {
		name      string
		msg       []byte
		wantErr   error // of Extract
		wantProbl string
	}{
		{"zip with too many entries", attach("application/zip; name=r.zip", zipOf(t, manyEntries)), nil, "zip archive with 5 entries (at most 4)"},
		{"zip entry inflating beyond the cap", attach("application/zip; name=r.zip", zipOf(t, map[string][]byte{"bomb.json": zeros})), nil, "inflates to 1048576 bytes"},
		{"gzip bomb", attach("application/tlsrpt+gzip", gz(t, zeros)), nil, "inflates to more than 262144 bytes"},
		{"gzip bomb in a zip", attach("application/zip; name=r.zip", zipOf(t, map[string][]byte{"bomb.json.gz": gz(t, zeros)})), nil, "inflates to more than 262144 bytes"},
		{"part over MaxPartBytes", attach("application/tlsrpt+json", append(report("big"), bytes.Repeat([]byte(" "), 64<<10)...)), nil, "part over 65536 bytes"},
		{"nesting too deep", nest(6), ErrLimit, "nested deeper than 4 levels"},
		{"too many parts", many(25, "text/plain"), ErrLimit, "more than 20 MIME parts"},
		{"too many reports", many(4, "application/tlsrpt+json"), ErrLimit, "more than 3 reports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex, err := Extract(tt.msg, lim)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantProbl) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.wantProbl)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ex.Reports) != 0 {
				t.Errorf("%d reports extracted", len(ex.Reports))
			}
			if p := errors.Join(ex.Problems...); p == nil || !strings.Contains(p.Error(), tt.wantProbl) {
				t.Errorf("problems %v, want one containing %q", p, tt.wantProbl)
			}
		})
	}
	// Within the limits, a nested report is found.
	if ex, err := Extract(nest(3), lim); err != nil || len(ex.Reports) != 1 {
		t.Errorf("nest(3): %v, %+v", err, ex)
	}
}

// TestRPT08_ExtractFile: the kinds of files an administrator imports.
func TestRPT08_ExtractFile(t *testing.T) {
	google := reportSample(t, "google.json")
	tests := []struct {
		name  string
		data  []byte
		n     int
		probs int
	}{
		{"google.json", google, 1, 0},
		{"google.json.gz", reportSample(t, "google.json.gz"), 1, 0},
		{"reports.zip", zipOf(t, map[string][]byte{"a.json": google, "b.json.gz": gz(t, report("z-1")), "readme.txt": []byte("hi")}), 2, 0},
		{"google.eml", sample(t, "google-gzip-base64.eml"), 1, 0},
		{"mailbox.mbox", sample(t, "mailbox.mbox"), 3, 1}, // the DMARC report is a problem
		{"empty.json", []byte("  \n"), 0, 0},
		{"bad.json.gz", []byte("\x1f\x8b\x08garbage"), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex, err := ExtractFile(tt.name, tt.data, Limits{})
			if tt.name == "empty.json" {
				// Whitespace is no JSON object, and no message either.
				if !errors.Is(err, ErrNotMessage) {
					t.Fatalf("empty: %v %+v", err, ex)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ex.Reports) != tt.n || len(ex.Problems) != tt.probs {
				t.Fatalf("%d reports, problems %v; want %d and %d problems", len(ex.Reports), ex.Problems, tt.n, tt.probs)
			}
			for _, f := range ex.Reports {
				if _, err := tlsrpt.Parse(f.JSON); err != nil {
					t.Errorf("%s: %v", f.Where, err)
				}
			}
		})
	}
}

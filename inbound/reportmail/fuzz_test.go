package reportmail

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtract checks that the MIME and file extraction never panics, that
// its errors are ErrNotMessage or ErrLimit, that problems are one line,
// and that what it returns keeps the limits. The seeds are the report
// emails of testdata/reportmail (run by plain go test) and a few damaged
// messages.
func FuzzExtract(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(mailDir, "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	rep := string(report("fuzz-1"))
	for _, s := range []string{
		"",
		"\r\n\r\n",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n",
		"Content-Type: application/tlsrpt+json\r\n\r\n" + rep,
		"Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\nH4sIAAAAAAAA/w==\r\n",
		"Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==\r\n",
		"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: application/json\r\n\r\n" + rep,
		"Content-Type: application/octet-stream; name*=utf-8''r%2Ejson\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + rep + "=\r\n=4",
		"From x@y Sat Feb 28 10:00:00 2026\nContent-Type: application/json\n\n" + rep + "\n\nFrom \n",
		"PK\x03\x04junk",
		"\x1f\x8b\x08\x00",
		"{\"organization-name\":",
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxPartBytes: 64 << 10, MaxReportBytes: 128 << 10, MaxTotalBytes: 256 << 10, MaxReports: 4, MaxParts: 64, MaxDepth: 6, MaxZipEntries: 4}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(what string, ex *Extraction, err error) {
			if err != nil {
				if !errors.Is(err, ErrNotMessage) && !errors.Is(err, ErrLimit) {
					t.Fatalf("%s: error %v is neither ErrNotMessage nor ErrLimit", what, err)
				}
				if ex != nil {
					t.Fatalf("%s: extraction with an error", what)
				}
				return
			}
			if len(ex.Reports) > lim.MaxReports {
				t.Fatalf("%s: %d reports", what, len(ex.Reports))
			}
			var total int
			for _, r := range ex.Reports {
				if int64(len(r.JSON)) > lim.MaxReportBytes {
					t.Fatalf("%s: report of %d bytes", what, len(r.JSON))
				}
				total += len(r.JSON)
			}
			if int64(total) > lim.MaxTotalBytes {
				t.Fatalf("%s: %d bytes of reports", what, total)
			}
			for _, p := range ex.Problems {
				if strings.ContainsAny(p.Error(), "\r\n") {
					t.Fatalf("%s: problem on several lines: %q", what, p.Error())
				}
			}
		}
		ex, err := Extract(data, lim)
		check("Extract", ex, err)
		ex, err = ExtractFile("fuzz", data, lim)
		check("ExtractFile", ex, err)
		reports, err := ExtractReports(data)
		if err == nil && len(reports) == 0 {
			t.Fatal("ExtractReports: no reports and no error")
		}
	})
}

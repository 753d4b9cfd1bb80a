package tlsrpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that its errors are one-line
// *FieldErrors wrapping ErrInvalid, and that every report it returns keeps
// the bounds and marshals to JSON. The seed corpus is every sample in
// testdata/tlsrpt (run by plain go test) plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	err := filepath.WalkDir(sampleDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f.Add(b)
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"policies":[]}`,
		`{"organization-name":"o","date-range":{"start-datetime":"2026-01-01T00:00:00","end-datetime":"2026-01-02T00:00:00"},"contact-info":"","report-id":"r","policies":[{"policy":{"policy-type":"no-policy-found"},"summary":{"total-successful-session-count":0,"total-failure-session-count":0}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %T %v", err, err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || len(msg) > 1024 {
				t.Fatalf("error message not one short line: %q", msg)
			}
			return
		}
		checkBounds(t, r)
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	})
}

// FuzzDecode checks that Decode never panics, never returns more than its
// decompressed cap, and refuses only with its typed errors.
func FuzzDecode(f *testing.F) {
	types := []string{MediaTypeJSON, MediaTypeGzip, MediaTypePlain, "text/plain", ""}
	encs := []string{"", "gzip", "identity", "br"}
	for _, name := range []string{"google.json", "google.json.gz", "microsoft.json"} {
		b, err := os.ReadFile(filepath.Join(sampleDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0), uint8(0))
		f.Add(b, uint8(1), uint8(1))
		f.Add(append(b, "trailing"...), uint8(1), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, ti, ei uint8) {
		const maxC, maxD = 4096, 8192
		ctype, cenc := types[int(ti)%len(types)], encs[int(ei)%len(encs)]
		out, err := Decode(bytes.NewReader(data), ctype, cenc, maxC, maxD)
		if err != nil {
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupportedType) && !errors.Is(err, ErrBadGzip) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(out) > maxD {
			t.Fatalf("%d bytes out, cap %d", len(out), maxD)
		}
		// Plain JSON is read to the end; after a gzip member the rest is
		// ignored unread, so only plain input must be within the cap.
		if !bytes.HasPrefix(data, gzipMagic) && len(data) > maxC {
			t.Fatalf("accepted %d bytes of plain input, cap %d", len(data), maxC)
		}
	})
}

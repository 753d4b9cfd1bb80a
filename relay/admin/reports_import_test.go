package admin

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
)

// TestRPT08_ImportEndpoint: POST /v1/reports/import stores the reports of
// a file with source import and the file name as sender; a report stored
// before (here by HTTPS) is a duplicate; a file without a report is 422.
func TestRPT08_ImportEndpoint(t *testing.T) {
	e := newReportEnv(t) // holds the HTTPS samples, google.json among them
	ctx := context.Background()
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join("../../testdata", p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var gzBuf bytes.Buffer
	zw := gzip.NewWriter(&gzBuf)
	zw.Write(read("tlsrpt/unknown-result-type.json"))
	zw.Close()

	tests := []struct {
		name      string
		body      []byte
		wantOrg   string
		wantDup   bool
		wantError string // of a report in the result
		wantCode  int    // of the call, 0 for success
	}{
		{"google.eml", read("reportmail/google-gzip-base64.eml"), "Google Inc.", true, "", 0},
		{"nested.eml", read("reportmail/nested-alternative-mixed.eml"), "Nested Mail GmbH", false, "", 0},
		{"future.json.gz", gzBuf.Bytes(), "Future Sender", false, "", 0},
		{"invalid.eml", read("reportmail/invalid-report.eml"), "", false, "invalid TLS report: policies: required member is missing", 0},
		{"dmarc.eml", read("reportmail/dmarc-aggregate.eml"), "", false, "", http.StatusUnprocessableEntity},
		{"notes.txt", []byte("just some notes\n"), "", false, "", http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.c.ImportReports(ctx, tt.name, bytes.NewReader(tt.body))
			if tt.wantCode != 0 {
				var ae *APIError
				if !errors.As(err, &ae) || ae.StatusCode != tt.wantCode {
					t.Fatalf("err = %v, want status %d", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Reports) != 1 {
				t.Fatalf("result %+v", res)
			}
			got := res.Reports[0]
			if tt.wantError != "" {
				if !strings.Contains(got.Error, tt.wantError) || got.ID != "" {
					t.Errorf("report %+v, want error %q", got, tt.wantError)
				}
				return
			}
			if got.Organization != tt.wantOrg || got.Duplicate != tt.wantDup || got.ID == "" || got.Error != "" {
				t.Fatalf("report %+v", got)
			}
			st, err := e.c.Report(ctx, got.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantSource, wantSender := tlsrpt.SourceImport, tt.name
			if tt.wantDup {
				wantSource, wantSender = tlsrpt.SourceHTTPS, "127.0.0.1"
			}
			if st.Source != wantSource || st.Sender != wantSender {
				t.Errorf("stored with source %q, sender %q", st.Source, st.Sender)
			}
		})
	}
	list, err := e.c.Reports(ctx, tlsrpt.Filter{})
	if err != nil || len(list) != 6 {
		t.Errorf("%d reports, %v; want the 4 samples and 2 imported", len(list), err)
	}
}

func TestImportEndpointDisabled(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	socket := filepath.Join(t.TempDir(), "relay.sock")
	serve(t, socket, Handler(q, nil, Options{}))
	c := NewClient(socket)
	defer c.Close()
	if _, err := c.ImportReports(context.Background(), "x.json", strings.NewReader("{}")); !errors.Is(err, ErrReportsDisabled) {
		t.Errorf("err = %v, want ErrReportsDisabled", err)
	}
}

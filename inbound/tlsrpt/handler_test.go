package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRPT01_ContentTypes POSTs reports with each accepted media type and
// content encoding, and with refused ones.
func TestRPT01_ContentTypes(t *testing.T) {
	srv, store := newTestServer(t, HandlerOptions{})
	tests := []struct {
		name, ctype, cenc string
		body              func(id string) []byte
		code              int
		errWant           string
	}{
		{"tlsrpt+json", "application/tlsrpt+json", "", plainBody(t), http.StatusCreated, ""},
		{"tlsrpt+json with charset", "application/tlsrpt+json; charset=utf-8", "", plainBody(t), http.StatusCreated, ""},
		{"upper-case type", "Application/TLSRPT+JSON", "", plainBody(t), http.StatusCreated, ""},
		{"tlsrpt+gzip", "application/tlsrpt+gzip", "", gzBody(t, 1), http.StatusCreated, ""},
		{"json", "application/json", "", plainBody(t), http.StatusCreated, ""},
		{"json with Content-Encoding gzip", "application/json", "gzip", gzBody(t, 1), http.StatusCreated, ""},
		{"tlsrpt+json with Content-Encoding gzip", "application/tlsrpt+json", "gzip", gzBody(t, 1), http.StatusCreated, ""},
		{"x-gzip encoding", "application/json", "x-gzip", gzBody(t, 1), http.StatusCreated, ""},
		{"identity encoding", "application/json", "identity", plainBody(t), http.StatusCreated, ""},
		{"tlsrpt+gzip and Content-Encoding gzip, two layers", "application/tlsrpt+gzip", "gzip", gzBody(t, 2), http.StatusCreated, ""},
		{"tlsrpt+gzip and Content-Encoding gzip, one layer", "application/tlsrpt+gzip", "gzip", gzBody(t, 1), http.StatusCreated, ""},
		{"gzip sniffed under a JSON type", "application/tlsrpt+json", "", gzBody(t, 1), http.StatusCreated, ""},
		{"trailing bytes after gzip", "application/tlsrpt+gzip", "", func(id string) []byte {
			return append(gzBody(t, 1)(id), "\r\ntrailing garbage"...)
		}, http.StatusCreated, ""},
		{"no type", "", "", plainBody(t), http.StatusUnsupportedMediaType, "no Content-Type"},
		{"text/plain", "text/plain", "", plainBody(t), http.StatusUnsupportedMediaType, `"text/plain"`},
		{"xml", "application/xml", "", plainBody(t), http.StatusUnsupportedMediaType, "unsupported media type"},
		{"multipart", "multipart/form-data; boundary=x", "", plainBody(t), http.StatusUnsupportedMediaType, "unsupported media type"},
		{"bad type syntax", "application/", "", plainBody(t), http.StatusUnsupportedMediaType, "unsupported media type"},
		{"brotli", "application/json", "br", plainBody(t), http.StatusUnsupportedMediaType, `Content-Encoding "br"`},
		{"tlsrpt+gzip that is plain JSON", "application/tlsrpt+gzip", "", plainBody(t), http.StatusBadRequest, "bad gzip data"},
		{"truncated gzip", "application/tlsrpt+gzip", "", func(id string) []byte {
			b := gzBody(t, 1)(id)
			return b[:len(b)-12]
		}, http.StatusBadRequest, "bad gzip data"},
		{"corrupt gzip", "application/tlsrpt+gzip", "", func(id string) []byte {
			b := gzBody(t, 1)(id)
			for i := 12; i < len(b)-8; i++ {
				b[i] ^= 0x5a
			}
			return b
		}, http.StatusBadRequest, "bad gzip data"},
		{"bad JSON", "application/tlsrpt+json", "", func(string) []byte { return []byte(`{"organization-name": "x",`) }, http.StatusBadRequest, "invalid JSON"},
		{"empty body", "application/tlsrpt+json", "", func(string) []byte { return nil }, http.StatusBadRequest, "empty report"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("rpt01-%d", i)
			a := post(t, srv.URL+"/report/tlsrpt", tt.ctype, tt.cenc, tt.body(id))
			if a.code != tt.code {
				t.Fatalf("status %d, want %d: %s", a.code, tt.code, a.body)
			}
			if tt.code != http.StatusCreated {
				if !strings.Contains(a.err, tt.errWant) {
					t.Errorf("error %q, want %q", a.err, tt.errWant)
				}
				return
			}
			if ct := a.hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			st, err := store.Get(a.resp.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st.ReportID != id || st.Source != SourceHTTPS || st.Sender != "127.0.0.1" || !st.Received.Equal(fixedNow) {
				t.Errorf("stored %+v", st.Summary)
			}
		})
	}
}

func plainBody(t *testing.T) func(id string) []byte {
	return func(id string) []byte { return withReportID(t, id) }
}

func gzBody(t *testing.T, layers int) func(id string) []byte {
	return func(id string) []byte {
		b := withReportID(t, id)
		for range layers {
			b = gz(t, b)
		}
		return b
	}
}

func TestMethodNotAllowed(t *testing.T) {
	srv, _ := newTestServer(t, HandlerOptions{})
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead} {
		req, _ := http.NewRequest(m, srv.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
			t.Errorf("%s: status %d, Allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

// bombReader streams gzip data of size zero bytes, compressing on the fly
// as it is read, and counts the zeros it compressed.
type bombReader struct {
	pr      *io.PipeReader
	zeros   atomic.Int64
	stop    chan struct{}
	stopped chan struct{}
}

func newBomb(size int64) *bombReader {
	pr, pw := io.Pipe()
	b := &bombReader{pr: pr, stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(b.stopped)
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestCompression)
		chunk := make([]byte, 64<<10)
		for n := int64(0); n < size; n += int64(len(chunk)) {
			if _, err := zw.Write(chunk); err != nil {
				return // the reader is gone
			}
			b.zeros.Add(int64(len(chunk)))
		}
		zw.Close()
		pw.Close()
	}()
	return b
}

func (b *bombReader) Read(p []byte) (int, error) { return b.pr.Read(p) }

// Close stops the generator.
func (b *bombReader) Close() error {
	b.pr.CloseWithError(errors.New("reader closed"))
	<-b.stopped
	return nil
}

// TestRPT04_GzipBombAndOversize: a gzip bomb inflating to 1 GiB is refused
// with 413 after inflating little more than the cap and with little
// memory; so are over-long bodies, declared or not.
func TestRPT04_GzipBombAndOversize(t *testing.T) {
	s, _ := newTestStore(t)
	opts := HandlerOptions{Now: func() time.Time { return fixedNow }, RatePerIP: Rate{N: -1}} // default caps
	h := Handler(s, opts)

	t.Run("1 GiB gzip bomb", func(t *testing.T) {
		bomb := newBomb(1 << 30)
		defer bomb.Close()
		req := httptest.NewRequest(http.MethodPost, "/report/tlsrpt", bomb)
		req.RemoteAddr = "127.0.0.1:40000"
		req.ContentLength = -1 // chunked: only the streaming caps apply
		req.Header.Set("Content-Type", MediaTypeGzip)

		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)

		if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "report too large") {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("allocated %d MiB; %d MiB of zeros compressed", alloc>>20, bomb.zeros.Load()>>20)
		if alloc > 64<<20 {
			t.Errorf("allocated %d MiB refusing a gzip bomb, want < 64 MiB", alloc>>20)
		}
		// The generator runs ahead of the inflater by the compressed data
		// in buffers (a few KiB, each worth a MiB of zeros).
		if z := bomb.zeros.Load(); z > 2*DefaultMaxDecompressed {
			t.Errorf("%d MiB compressed, want about %d MiB", z>>20, DefaultMaxDecompressed>>20)
		}
	})

	t.Run("Content-Length over the cap is refused unread", func(t *testing.T) {
		body := &countingReader{r: strings.NewReader(strings.Repeat("x", 100))}
		req := httptest.NewRequest(http.MethodPost, "/", body)
		req.RemoteAddr = "127.0.0.1:40000"
		req.ContentLength = DefaultMaxBody + 1
		req.Header.Set("Content-Type", MediaTypeJSON)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if body.n.Load() != 0 {
			t.Errorf("read %d bytes of a body declared too long", body.n.Load())
		}
	})

	t.Run("chunked body over the cap", func(t *testing.T) {
		body := &countingReader{r: io.MultiReader(strings.NewReader(`{"organization-name":"`), zeroReader{})}
		req := httptest.NewRequest(http.MethodPost, "/", body)
		req.RemoteAddr = "127.0.0.1:40000"
		req.ContentLength = -1
		req.Header.Set("Content-Type", MediaTypeJSON)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if n := body.n.Load(); n > DefaultMaxBody+64<<10 {
			t.Errorf("read %d bytes, cap %d", n, DefaultMaxBody)
		}
	})

	t.Run("over the cap by one byte, over a real connection", func(t *testing.T) {
		srv, _ := newTestServer(t, HandlerOptions{MaxBody: 1000})
		a := post(t, srv.URL, MediaTypeJSON, "", bytes.Repeat([]byte(" "), 1001))
		if a.code != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d: %s", a.code, a.body)
		}
		// Exactly at the cap is not too large (it is bad JSON).
		a = post(t, srv.URL, MediaTypeJSON, "", bytes.Repeat([]byte(" "), 1000))
		if a.code != http.StatusBadRequest {
			t.Errorf("status %d: %s", a.code, a.body)
		}
	})

	t.Run("decompressed cap", func(t *testing.T) {
		srv, _ := newTestServer(t, HandlerOptions{MaxDecompressed: 1000})
		report := withReportID(t, "cap") // about 1.3 KiB
		a := post(t, srv.URL, MediaTypeGzip, "", gz(t, report))
		if a.code != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d: %s", a.code, a.body)
		}
		a = post(t, srv.URL, MediaTypeJSON, "", report)
		if a.code != http.StatusRequestEntityTooLarge {
			t.Errorf("plain JSON over the decompressed cap: status %d: %s", a.code, a.body)
		}
	})

	t.Run("deep nesting", func(t *testing.T) {
		srv, _ := newTestServer(t, HandlerOptions{})
		a := post(t, srv.URL, MediaTypeJSON, "", readSample(t, "bad/deep-nesting.json"))
		if a.code != http.StatusBadRequest || !strings.Contains(a.err, "nested deeper than 32 levels") {
			t.Errorf("status %d: %s", a.code, a.body)
		}
	})
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestDecodeCaps checks Decode's caps directly, at the byte.
func TestDecodeCaps(t *testing.T) {
	data := []byte(`{"a":"` + strings.Repeat("b", 92) + `"}`) // 100 bytes
	if _, err := Decode(bytes.NewReader(data), MediaTypeJSON, "", 100, 100); err != nil {
		t.Errorf("at both caps: %v", err)
	}
	if _, err := Decode(bytes.NewReader(data), MediaTypeJSON, "", 99, 1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over compressed cap: %v", err)
	}
	if _, err := Decode(bytes.NewReader(data), MediaTypeJSON, "", 1000, 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over decompressed cap: %v", err)
	}
	z := gz(t, data)
	if _, err := Decode(bytes.NewReader(z), MediaTypeGzip, "", int64(len(z)), 100); err != nil {
		t.Errorf("gzip at both caps: %v", err)
	}
	if _, err := Decode(bytes.NewReader(z), MediaTypeGzip, "", int64(len(z)-1), 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("gzip over compressed cap: %v", err)
	}
	if _, err := Decode(bytes.NewReader(z), MediaTypeGzip, "", 1000, 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("gzip over decompressed cap: %v", err)
	}
	if _, err := Decode(bytes.NewReader(data), "text/html", "", 1000, 1000); !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("text/html: %v", err)
	}
	if _, err := Decode(bytes.NewReader([]byte{0x1f, 0x8b, 0, 0}), MediaTypeGzip, "", 1000, 1000); !errors.Is(err, ErrBadGzip) {
		t.Errorf("bad gzip header: %v", err)
	}
}

// TestRateLimit: beyond the burst, a client gets 429 with Retry-After;
// others are not affected, and the bucket refills with time.
func TestRateLimit(t *testing.T) {
	s, _ := newTestStore(t)
	var now atomic.Int64
	now.Store(fixedNow.UnixNano())
	h := Handler(s, HandlerOptions{
		RatePerIP: Rate{N: 60, Per: time.Minute, Burst: 3},
		Now:       func() time.Time { return time.Unix(0, now.Load()) },
		Logger:    slog.New(slog.DiscardHandler),
	})
	send := func(remote, id string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(withReportID(t, id)))
		req.RemoteAddr = remote
		req.Header.Set("Content-Type", MediaTypeJSON)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := range 3 {
		if rec := send("127.0.0.1:1000", fmt.Sprint("burst-", i)); rec.Code != http.StatusCreated {
			t.Fatalf("request %d: status %d", i, rec.Code)
		}
	}
	rec := send("127.0.0.1:1001", "over")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if _, err := s.List(Filter{}); err != nil {
		t.Fatal(err)
	}
	if rec := send("127.0.0.2:1000", "other-client"); rec.Code != http.StatusCreated {
		t.Errorf("another client: status %d", rec.Code)
	}
	// IPv6 clients are limited per /64.
	for i := range 3 {
		send(fmt.Sprintf("[::1:0:0:%d]:25", i+1), fmt.Sprint("v6-", i))
	}
	if rec := send("[::1:0:0:99]:25", "v6-over"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("same /64: status %d", rec.Code)
	}
	now.Add(int64(time.Second)) // one token back at 1/s
	if rec := send("127.0.0.1:1002", "after-a-second"); rec.Code != http.StatusCreated {
		t.Errorf("after refill: status %d", rec.Code)
	}
	if rec := send("127.0.0.1:1002", "again"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("second after refill: status %d", rec.Code)
	}
}

// TestLimiterBounded: the limiter forgets clients beyond its bound.
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(Rate{N: 1, Per: time.Hour, Burst: 1}, 64)
	for i := range 10000 {
		if ok, _ := l.allow(fmt.Sprintf("127.%d.%d.1", i/256, i%256), fixedNow); !ok {
			t.Fatalf("new client %d refused", i)
		}
		if n := len(l.buckets); n > 64 {
			t.Fatalf("%d buckets", n)
		}
	}
}

// TestConcurrencyLimit: with every slot taken, requests get 503.
func TestConcurrencyLimit(t *testing.T) {
	s, _ := newTestStore(t)
	h := Handler(s, HandlerOptions{MaxConcurrent: 1, RatePerIP: Rate{N: -1}}).(*handler)
	h.sem <- struct{}{} // a report in progress
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(withReportID(t, "busy")))
	req.RemoteAddr = "127.0.0.1:1"
	req.Header.Set("Content-Type", MediaTypeJSON)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("status %d", rec.Code)
	}
	<-h.sem
}

// TestStoreFailureIs500: a report that cannot be stored is not
// acknowledged.
func TestStoreFailureIs500(t *testing.T) {
	s, _ := newTestStore(t)
	h := Handler(s, HandlerOptions{RatePerIP: Rate{N: -1}})
	s.Close()
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(withReportID(t, "closed")))
	req.RemoteAddr = "127.0.0.1:1"
	req.Header.Set("Content-Type", MediaTypeJSON)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status %d: %s", rec.Code, rec.Body)
	}
}

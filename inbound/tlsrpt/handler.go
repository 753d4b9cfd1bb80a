package tlsrpt

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// Defaults of HandlerOptions.
const (
	// DefaultMaxBody is the default cap on a request body as sent
	// (compressed or not): the default of [inbound.tls_rpt] max_body.
	DefaultMaxBody = 5 << 20
	// DefaultMaxDecompressed is the default cap on the JSON text after
	// decompression.
	DefaultMaxDecompressed = 16 << 20
	// DefaultMaxConcurrent is the default number of reports processed at
	// once; more get 503.
	DefaultMaxConcurrent = 8
)

// Rate is a token bucket rate: N requests per Per, with bursts of Burst.
// The zero Rate means DefaultRate; a negative N disables rate limiting.
type Rate struct {
	N     int
	Per   time.Duration
	Burst int
}

// DefaultRate is the per-IP rate of the report endpoint: 60 reports a
// minute with bursts of 10 (large senders post one report per domain and
// day).
var DefaultRate = Rate{N: 60, Per: time.Minute, Burst: 10}

// HandlerOptions configure Handler. The zero value is usable.
type HandlerOptions struct {
	// MaxBody caps the request body as sent: a Content-Length over it is
	// refused with 413 before reading, a longer chunked body after
	// MaxBody+1 bytes. Zero means DefaultMaxBody.
	MaxBody int64
	// MaxDecompressed caps the JSON text after gzip decompression; a
	// report inflating beyond it gets 413. Zero means
	// DefaultMaxDecompressed.
	MaxDecompressed int64
	// MaxConcurrent bounds the reports being decoded and stored at once;
	// zero means DefaultMaxConcurrent.
	MaxConcurrent int
	// Served reports whether the relay serves a policy domain; reports for
	// others are stored flagged Foreign (RPT06). Nil means all are served.
	Served func(domain string) bool
	// RatePerIP limits requests per client address (per /64 for IPv6).
	// The zero value means DefaultRate.
	RatePerIP Rate
	// MaxClients bounds the client addresses the rate limiter remembers;
	// zero means 10000.
	MaxClients int
	// Logger receives a line per stored or refused report; nil discards.
	Logger *slog.Logger
	// Now returns the current time (for tests); nil means time.Now.
	Now func() time.Time
	// Observe, if set, is called once per request with its outcome:
	// OutcomeStored, OutcomeDuplicate, OutcomeRejected, OutcomeRateLimited,
	// OutcomeBusy or OutcomeError (metrics count with it). It must be
	// cheap.
	Observe func(outcome string)
}

// Outcomes of a request as reported to HandlerOptions.Observe.
const (
	OutcomeStored      = "stored"       // 201: a new report was stored
	OutcomeDuplicate   = "duplicate"    // 200: the report was stored before
	OutcomeRejected    = "rejected"     // 4xx: not a valid report, too large, wrong method or type
	OutcomeRateLimited = "rate_limited" // 429: too many requests from the client
	OutcomeBusy        = "busy"         // 503: too many reports in progress
	OutcomeError       = "error"        // 500: the store failed
)

// Handler returns the HTTP handler of the TLS report endpoint (RFC 8460
// §5.3.2); the caller mounts it at [inbound.tls_rpt] path. It answers:
//
//	201 {"id": ID, "duplicate": false}  the report is stored (durably, RPT05)
//	200 {"id": ID, "duplicate": true}   the report was stored before
//	400  bad JSON, a report that fails validation, bad gzip data
//	405  a method other than POST (with Allow: POST)
//	413  a body or decompressed report over its cap (RPT04)
//	415  a media type or content encoding that is not a TLS report (RPT01)
//	429  too many requests from the client's address (with Retry-After)
//	503  too many reports being processed at once (with Retry-After)
//	500  the store failed
//
// Error bodies are {"error": "one-line reason"}. The client address is
// taken from the connection (Request.RemoteAddr), never from headers. The
// handler does not look at the path: mount it where it belongs. store
// must not be nil.
func Handler(store *Store, opts HandlerOptions) http.Handler {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxDecompressed <= 0 {
		opts.MaxDecompressed = DefaultMaxDecompressed
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.RatePerIP == (Rate{}) {
		opts.RatePerIP = DefaultRate
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Observe == nil {
		opts.Observe = func(string) {}
	}
	h := &handler{
		store: store,
		opts:  opts,
		log:   opts.Logger,
		sem:   make(chan struct{}, opts.MaxConcurrent),
	}
	if opts.RatePerIP.N >= 0 {
		h.limiter = newLimiter(opts.RatePerIP, opts.MaxClients)
	}
	return h
}

type handler struct {
	store   *Store
	opts    HandlerOptions
	log     *slog.Logger
	limiter *limiter // nil: no rate limit
	sem     chan struct{}
}

// response is the body of a successful answer.
type response struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r.RemoteAddr)
	log := h.log.With("remote", ip)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, log, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed: TLS reports are POSTed", r.Method))
		return
	}
	if h.limiter != nil {
		if ok, wait := h.limiter.allow(limitKey(ip), h.opts.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			log.Debug("tlsrpt: rate limited")
			h.opts.Observe(OutcomeRateLimited)
			writeJSON(w, http.StatusTooManyRequests, errorBody{Error: "too many requests from " + ip + ": try again later"})
			return
		}
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		w.Header().Set("Retry-After", "10")
		h.opts.Observe(OutcomeBusy)
		h.fail(w, log, http.StatusServiceUnavailable, "too many reports being processed: try again later")
		return
	}
	ctype, cenc := r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding")
	// RPT01: check the type before reading anything.
	if _, err := checkMediaType(ctype); err != nil {
		h.fail(w, log, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	if _, err := checkEncoding(cenc); err != nil {
		h.fail(w, log, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	// RPT04: a declared length over the cap is refused unread.
	if r.ContentLength > h.opts.MaxBody {
		w.Header().Set("Connection", "close")
		h.fail(w, log, http.StatusRequestEntityTooLarge, fmt.Sprintf("%v: Content-Length %d is over %d bytes", ErrTooLarge, r.ContentLength, h.opts.MaxBody))
		return
	}
	data, err := Decode(r.Body, ctype, cenc, h.opts.MaxBody, h.opts.MaxDecompressed)
	if err != nil {
		code := http.StatusBadRequest
		switch {
		case errors.Is(err, ErrTooLarge):
			code = http.StatusRequestEntityTooLarge
			w.Header().Set("Connection", "close")
		case errors.Is(err, ErrUnsupportedType):
			code = http.StatusUnsupportedMediaType
		}
		h.fail(w, log, code, oneLine(err.Error()))
		return
	}
	rep, err := Parse(data)
	if err != nil {
		h.fail(w, log, http.StatusBadRequest, "invalid TLS report: "+oneLine(err.Error()))
		return
	}
	id, dup, err := h.store.Add(r.Context(), rep, data, Meta{
		Received: h.opts.Now(),
		Source:   SourceHTTPS,
		Sender:   ip,
		Served:   h.opts.Served,
	})
	if err != nil {
		log.Error("tlsrpt: storing report failed", "organization", rep.OrganizationName, "report_id", rep.ReportID, "err", err)
		h.opts.Observe(OutcomeError)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "the report could not be stored: try again later"})
		return
	}
	log.Info("tlsrpt: report received", "id", id, "duplicate", dup,
		"organization", rep.OrganizationName, "report_id", rep.ReportID,
		"policy_domains", rep.PolicyDomains(), "warnings", len(rep.Warnings))
	code, outcome := http.StatusCreated, OutcomeStored
	if dup {
		code, outcome = http.StatusOK, OutcomeDuplicate
	}
	h.opts.Observe(outcome)
	writeJSON(w, code, response{ID: id, Duplicate: dup})
}

type errorBody struct {
	Error string `json:"error"`
}

// fail answers with an error and logs the refusal; a client error counts
// as a rejected report.
func (h *handler) fail(w http.ResponseWriter, log *slog.Logger, code int, msg string) {
	if code >= 400 && code < 500 {
		h.opts.Observe(OutcomeRejected)
	}
	log.Info("tlsrpt: report refused", "status", code, "reason", msg)
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v) // plain structs of strings and bools
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// clientIP returns the IP address of a RemoteAddr ("ip:port"), or
// RemoteAddr itself if it has no port.
func clientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// limitKey is the rate-limited unit of an address: the IPv4 address, or
// the /64 of an IPv6 address (one host usually has a whole /64).
func limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

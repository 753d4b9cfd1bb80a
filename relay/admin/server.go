package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/tlsstats"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// Options describe the daemon to the status endpoint.
type Options struct {
	// Version is reported by GET /v1/status.
	Version string
	// Started is when the daemon started; zero means when Handler was
	// called.
	Started time.Time
	// Policy answers GET /v1/policy/{domain}; nil disables it.
	Policy PolicyExplainer
	// MTASTS is the MTA-STS policy cache behind /v1/policy-cache; nil
	// (mta_sts = false) disables it.
	MTASTS *mtasts.Manager
	// TLSStats are the outbound TLS session counts behind /v1/tls-stats.
	TLSStats *tlsstats.Recorder
	// Reports is the TLS report store served under /v1/reports; nil
	// (no [inbound]) makes those endpoints answer 404.
	Reports *tlsrpt.Store
	// ReportServed tells imported reports about served policy domains
	// from foreign ones (checklist RPT06); nil counts every domain served.
	ReportServed func(domain string) bool
	// Reload serves POST /v1/reload; nil makes it answer 404.
	Reload ReloadFunc
	// Bounce serves POST /v1/queue/messages/{id}/bounce: it returns the
	// message to its sender and reports how many recipients failed; nil
	// makes it answer 404.
	Bounce func(id string) (int, error)
}

// server holds what the handlers share; one per Handler call.
type server struct {
	q    *queue.Queue
	log  *slog.Logger
	opts Options
	mux  *http.ServeMux
}

// Handler returns the admin API for q. log receives a line per change made
// through the API and per internal error; nil discards them. Serve it on a
// listener from Listen with an http.Server that sets ReadHeaderTimeout.
func Handler(q *queue.Queue, log *slog.Logger, opts Options) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	s := &server{q: q, log: log, opts: opts, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/queue/stats", s.stats)
	s.mux.HandleFunc("GET /v1/queue/messages", s.list)
	s.mux.HandleFunc("GET /v1/queue/messages/{id}", s.show)
	s.mux.HandleFunc("GET /v1/queue/messages/{id}/body", s.body)
	s.mux.HandleFunc("POST /v1/queue/messages/{id}/hold", s.change("hold", q.Hold))
	s.mux.HandleFunc("POST /v1/queue/messages/{id}/release", s.change("release", q.Release))
	s.mux.HandleFunc("POST /v1/queue/messages/{id}/retry", s.change("retry", q.Retry))
	s.mux.HandleFunc("DELETE /v1/queue/messages/{id}", s.delete)
	if opts.Bounce != nil {
		s.mux.HandleFunc("POST /v1/queue/messages/{id}/bounce", s.change("bounce", opts.Bounce))
	}
	s.mux.HandleFunc("POST /v1/queue/retry", s.retryWhere)
	s.mux.HandleFunc("GET /v1/policy/{domain}", s.policyLookup)
	s.mux.HandleFunc("GET /v1/policy-cache", s.policyCacheList)
	s.mux.HandleFunc("DELETE /v1/policy-cache", s.policyCacheFlush)
	s.mux.HandleFunc("GET /v1/tls-stats", s.tlsStats)
	s.mux.HandleFunc("POST /v1/reload", s.reload)
	s.registerReports()
	return s
}

// ServeHTTP dispatches to the endpoints. Requests no endpoint matches get
// the mux's status (404, 405, or a redirect for an unclean path) with a
// JSON error body like every other error.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonStatusWriter{ResponseWriter: w, r: r}
	}
	s.mux.ServeHTTP(w, r) // sets the path values that Handler does not

}

// jsonStatusWriter replaces the plain-text body of the mux's own error
// responses with a JSON error.
type jsonStatusWriter struct {
	http.ResponseWriter
	r           *http.Request
	wroteHeader bool
}

func (w *jsonStatusWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	msg := http.StatusText(code)
	switch code {
	case http.StatusNotFound:
		msg = fmt.Sprintf("no endpoint %s %s", w.r.Method, w.r.URL.Path)
	case http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("method %s not allowed for %s", w.r.Method, w.r.URL.Path)
	}
	w.Header().Set("Content-Type", "application/json")
	w.ResponseWriter.WriteHeader(code)
	json.NewEncoder(w.ResponseWriter).Encode(errorResponse{Error: msg})
}

// Write discards the mux's plain-text body.
func (w *jsonStatusWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return len(p), nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Status{
		Version: s.opts.Version,
		Started: s.opts.Started,
		Uptime:  time.Since(s.opts.Started).Round(time.Second).String(),
		PID:     os.Getpid(),
	})
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	st, err := s.q.Stats()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	f := queue.Filter{
		State:  queue.State(query.Get("state")),
		Domain: query.Get("domain"),
		Limit:  DefaultListLimit,
	}
	if f.State != "" && !validState(f.State) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown state %q: want queued, deferred, held, delivered or failed", f.State))
		return
	}
	if v := query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad limit %q: want a number from 1 to %d", v, MaxListLimit))
			return
		}
		f.Limit = n
	}
	msgs, err := s.q.List(f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]MessageSummary, len(msgs))
	for i, m := range msgs {
		out[i] = Summarize(m)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) show(w http.ResponseWriter, r *http.Request) {
	m, err := s.q.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *server) body(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f, err := s.q.Body(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "message/rfc822")
	w.Header().Set("Content-Length", strconv.FormatInt(f.Size(), 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, f); err != nil {
		// The status is already sent; the client sees a short body.
		s.log.Warn("admin: sending message body", "queue_id", id, "err", err)
	}
}

// change returns the handler of a per-message action that reports how many
// recipients it changed.
func (s *server) change(action string, fn func(id string) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		n, err := fn(id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.log.Info("admin: "+action, "queue_id", id, "recipients_changed", n)
		writeJSON(w, http.StatusOK, changedResponse{Changed: n})
	}
}

func (s *server) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.q.Delete(id); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("admin: delete", "queue_id", id)
	writeJSON(w, http.StatusOK, deletedResponse{Deleted: true})
}

func (s *server) retryWhere(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	domain := query.Get("domain")
	all := false
	if v := query.Get("all"); v != "" {
		var err error
		if all, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad value %q for all: want 1 or 0", v))
			return
		}
	}
	switch {
	case all && domain != "":
		writeError(w, http.StatusBadRequest, "give either domain or all=1, not both")
		return
	case !all && domain == "":
		writeError(w, http.StatusBadRequest, "give domain=D to retry one destination or all=1 to retry the whole queue")
		return
	}
	if query.Get("progress") == "1" {
		s.retryWhereStream(w, domain, all)
		return
	}
	n, err := s.q.RetryWhere(domain)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("admin: retry", "domain", domain, "all", all, "messages_changed", n)
	writeJSON(w, http.StatusOK, retriedResponse{Messages: n})
}

// fail answers with the error of a queue operation: 404 for a message the
// queue does not hold, 500 otherwise.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, queue.ErrNotFound) {
		id := r.PathValue("id")
		writeError(w, http.StatusNotFound, fmt.Sprintf("message %q not found in the queue", id))
		return
	}
	if errors.Is(err, queue.ErrLeased) {
		writeError(w, http.StatusConflict, fmt.Sprintf("message %q is being delivered right now; try again in a moment", r.PathValue("id")))
		return
	}
	s.log.Error("admin: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorResponse{Error: fmt.Sprintf("encode response: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

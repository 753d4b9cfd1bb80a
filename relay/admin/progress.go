package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Progress is one line of a streamed bulk operation (POST
// /v1/queue/retry?progress=1): progress lines carry Done and Total, the
// last line carries Messages (the result) or Error.
type Progress struct {
	Done     int    `json:"done"`
	Total    int    `json:"total"`
	Messages *int   `json:"messages,omitempty"`
	Error    string `json:"error,omitempty"`
}

// progressInterval is how often a streamed operation reports progress.
const progressInterval = 250 * time.Millisecond

// retryWhereStream runs a retry of many messages and streams its progress
// as JSON lines (application/x-ndjson): {"done","total"} at most every
// progressInterval, then {"messages": n} or {"error": "..."}.
func (s *server) retryWhereStream(w http.ResponseWriter, domain string, all bool) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func(p Progress) {
		enc.Encode(p) // a client that went away is noticed by the queue loop's end
		rc.Flush()
	}
	send(Progress{})
	last := time.Now()
	n, err := s.q.RetryWhereProgress(domain, func(done, total int) {
		if now := time.Now(); now.Sub(last) >= progressInterval || done == total {
			last = now
			send(Progress{Done: done, Total: total})
		}
	})
	if err != nil {
		s.log.Error("admin: retry", "domain", domain, "all", all, "err", err)
		send(Progress{Error: err.Error()})
		return
	}
	s.log.Info("admin: retry", "domain", domain, "all", all, "messages_changed", n)
	send(Progress{Messages: &n})
}

// RetryProgress is RetryDomain (domain set) or RetryAll (domain empty)
// with progress: fn, if not nil, is called as the daemon works through the
// queue with the messages done and the total. It returns how many messages
// changed.
func (c *Client) RetryProgress(ctx context.Context, domain string, fn func(done, total int)) (int, error) {
	query := url.Values{"all": {"1"}, "progress": {"1"}}
	if domain != "" {
		query = url.Values{"domain": {domain}, "progress": {"1"}}
	}
	resp, err := c.send(ctx, http.MethodPost, "/v1/queue/retry", query)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var p Progress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return 0, fmt.Errorf("admin API retry: decode progress: %w", err)
		}
		switch {
		case p.Error != "":
			return 0, &APIError{StatusCode: http.StatusInternalServerError, Message: p.Error}
		case p.Messages != nil:
			return *p.Messages, nil
		case fn != nil && p.Total > 0:
			fn(p.Done, p.Total)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("admin API retry: %w", err)
	}
	return 0, fmt.Errorf("admin API retry: the daemon's answer ended without a result")
}

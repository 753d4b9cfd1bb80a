package admin

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/tlsstats"
)

// PolicyExplainer reports the security policy the relay would apply to a
// recipient domain; *deliver.Engine implements it.
type PolicyExplainer interface {
	Explain(ctx context.Context, domain string, probe bool) (*deliver.Explanation, error)
}

// policyLookup answers GET /v1/policy/{domain}[?probe=1].
func (s *server) policyLookup(w http.ResponseWriter, r *http.Request) {
	if s.opts.Policy == nil {
		writeError(w, http.StatusNotFound, "policy lookup is not available in this daemon")
		return
	}
	probe := r.URL.Query().Get("probe") == "1"
	ex, err := s.opts.Policy.Explain(r.Context(), r.PathValue("domain"), probe)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ex)
}

// PolicyLookup asks the daemon which policy it would apply to domain's MX
// hosts; with probe it also connects to each host and verifies its
// certificate without sending mail.
func (c *Client) PolicyLookup(ctx context.Context, domain string, probe bool) (*deliver.Explanation, error) {
	q := url.Values{}
	if probe {
		q.Set("probe", "1")
	}
	var ex deliver.Explanation
	if err := c.getJSON(ctx, "/v1/policy/"+escapeSegment(domain), q, &ex); err != nil {
		return nil, err
	}
	return &ex, nil
}

// CachedPolicy is one entry of the MTA-STS policy cache.
type CachedPolicy struct {
	Domain   string    `json:"domain"`
	ID       string    `json:"id"`
	Mode     string    `json:"mode"`
	MX       []string  `json:"mx"`
	MaxAge   int64     `json:"max_age"`
	Fetched  time.Time `json:"fetched"`
	Expires  time.Time `json:"expires"`
	LastUsed time.Time `json:"last_used,omitzero"`
	Expired  bool      `json:"expired"`
}

func (s *server) policyCacheList(w http.ResponseWriter, r *http.Request) {
	if s.opts.MTASTS == nil {
		writeError(w, http.StatusNotFound, "MTA-STS is turned off in this daemon ([delivery] mta_sts = false)")
		return
	}
	entries, err := s.opts.MTASTS.List()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := time.Now()
	out := make([]CachedPolicy, 0, len(entries))
	for _, e := range entries {
		cp := CachedPolicy{Domain: e.Domain, ID: e.ID, Fetched: e.Fetched, Expires: e.Expires, LastUsed: e.LastUsed, Expired: e.Expired(now)}
		if e.Policy != nil {
			cp.Mode, cp.MX, cp.MaxAge = string(e.Policy.Mode), e.Policy.MX, int64(e.Policy.MaxAge/time.Second)
		}
		out = append(out, cp)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) policyCacheFlush(w http.ResponseWriter, r *http.Request) {
	if s.opts.MTASTS == nil {
		writeError(w, http.StatusNotFound, "MTA-STS is turned off in this daemon ([delivery] mta_sts = false)")
		return
	}
	domain := r.URL.Query().Get("domain")
	if err := s.opts.MTASTS.Flush(domain); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("MTA-STS policy cache flushed", "domain", domain)
	writeJSON(w, http.StatusOK, map[string]string{"flushed": domain})
}

// PolicyCache lists the cached MTA-STS policies.
func (c *Client) PolicyCache(ctx context.Context) ([]CachedPolicy, error) {
	var out []CachedPolicy
	if err := c.getJSON(ctx, "/v1/policy-cache", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// FlushPolicyCache drops the cached MTA-STS policy of domain, or every
// cached policy when domain is "".
func (c *Client) FlushPolicyCache(ctx context.Context, domain string) error {
	q := url.Values{}
	if domain != "" {
		q.Set("domain", domain)
	}
	var out map[string]string
	return c.doJSON(ctx, http.MethodDelete, "/v1/policy-cache", q, &out)
}

// tlsStats answers GET /v1/tls-stats?since=DAY&until=DAY&domain=D with the
// outbound TLS session counts per policy domain and day (RFC 8460 §4).
func (s *server) tlsStats(w http.ResponseWriter, r *http.Request) {
	if s.opts.TLSStats == nil {
		writeError(w, http.StatusNotFound, "TLS statistics are not available in this daemon")
		return
	}
	q := r.URL.Query()
	since := q.Get("since")
	if since == "" {
		since = time.Now().UTC().AddDate(0, 0, -7).Format(time.DateOnly)
	}
	out, err := s.opts.TLSStats.Query(since, q.Get("until"), q.Get("domain"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if out == nil {
		out = []tlsstats.Counts{}
	}
	writeJSON(w, http.StatusOK, out)
}

// TLSStats returns the outbound TLS session counts from day since
// ("YYYY-MM-DD"; "" means a week ago), optionally for one domain.
func (c *Client) TLSStats(ctx context.Context, since, domain string) ([]tlsstats.Counts, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if domain != "" {
		q.Set("domain", domain)
	}
	var out []tlsstats.Counts
	if err := c.getJSON(ctx, "/v1/tls-stats", q, &out); err != nil {
		return nil, err
	}
	return out, nil
}

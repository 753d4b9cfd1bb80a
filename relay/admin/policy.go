package admin

import (
	"context"
	"net/http"
	"net/url"

	"github.com/relaysec/relay/relay/deliver"
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

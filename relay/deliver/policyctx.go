package deliver

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/textproto"
	"strings"
	"time"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/secpolicy"
)

// policyContext is what one delivery round to a domain knows before it
// picks hosts: the domain's MTA-STS policy and whether the message allows
// delivery despite policy failures.
type policyContext struct {
	sts *secpolicy.STSPolicy
	// tlsOptional: the message carries "TLS-Required: No" (RFC 8689 §5)
	// and no REQUIRETLS.
	tlsOptional bool
}

func (pc policyContext) enforce() bool {
	return pc.sts != nil && pc.sts.Mode == secpolicy.STSModeEnforce
}

// policyContext looks up the domain's MTA-STS policy. On the message's
// last attempt (its queue lifetime is over) the policy is re-checked
// first, so that a bounce caused by an enforce policy never rests on a
// policy the domain has replaced (checklist STS13).
func (e *Engine) policyContext(ctx context.Context, log *slog.Logger, m *queue.Message, domain string, route Route, now time.Time) policyContext {
	pc := policyContext{tlsOptional: !m.RequireTLS && e.tlsRequiredNo(m)}
	if e.opts.MTASTS == nil || (route.NextHop != "" && route.Security != secpolicy.SecurityMTASTSOrDANE) {
		return pc
	}
	get := e.opts.MTASTS.Get
	if !now.Before(m.ReceivedAt.Add(e.opts.QueueLifetime)) {
		get = e.opts.MTASTS.Recheck
	}
	res, err := get(ctx, domain)
	if err != nil {
		log.Warn("MTA-STS lookup failed; delivering as without a policy", "domain", domain, "err", err)
		return pc
	}
	if res.FetchError != nil {
		log.Warn("MTA-STS policy fetch failed", "domain", domain, "err", res.FetchError, "cached_policy_used", res.Policy != nil)
	}
	if res.Policy == nil {
		return pc // STS10: deliver as if the domain had no MTA-STS
	}
	p := res.Policy
	pc.sts = &secpolicy.STSPolicy{Mode: string(p.Mode), ID: res.ID, Match: p.MatchMX}
	return pc
}

// tlsRequiredNo reports whether the message's header has
// "TLS-Required: No" (RFC 8689 §5).
func (e *Engine) tlsRequiredNo(m *queue.Message) bool {
	f, err := e.q.Body(m.ID)
	if err != nil {
		return false
	}
	defer f.Close()
	return headerTLSRequiredNo(f)
}

func headerTLSRequiredNo(r io.Reader) bool {
	tr := textproto.NewReader(bufio.NewReader(io.LimitReader(r, 1<<20)))
	h, err := tr.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return false
	}
	for _, v := range h.Values("Tls-Required") {
		if strings.EqualFold(strings.TrimSpace(v), "no") {
			return true
		}
	}
	return false
}

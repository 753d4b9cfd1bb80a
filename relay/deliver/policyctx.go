package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/textproto"
	"strings"
	"sync"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/secpolicy"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// policyContext is what one delivery round to a domain knows before it
// picks hosts: the domain's MTA-STS policy and whether the message allows
// delivery despite policy failures.
type policyContext struct {
	sts *secpolicy.STSPolicy
	// tlsOptional reports whether the message carries "TLS-Required: No"
	// (RFC 8689 §5) and no REQUIRETLS. It reads the header when first
	// asked: only a host whose policy demands TLS needs the answer.
	tlsOptional func() bool
}

// policyContext looks up the domain's MTA-STS policy. On the message's
// last round (its queue lifetime is over, so failures will bounce) the
// policy is re-checked first, so that a bounce caused by an enforce
// policy never rests on a policy the domain has replaced (checklist
// STS13). An error means the policy cannot be known: the domain is
// deferred rather than delivered with less than a cached policy demands.
func (e *Engine) policyContext(ctx context.Context, log *slog.Logger, m *queue.Message, domain string, route Route, lastRound bool) (policyContext, error) {
	pc := policyContext{tlsOptional: sync.OnceValue(func() bool { return !m.RequireTLS && e.tlsRequiredNo(m) })}
	if e.opts.MTASTS == nil || (route.NextHop != "" && route.Security != secpolicy.SecurityMTASTSOrDANE) {
		return pc, nil
	}
	get := e.opts.MTASTS.Get
	if lastRound {
		get = e.opts.MTASTS.Recheck
	}
	res, err := get(ctx, domain)
	switch {
	case errors.Is(err, mtasts.ErrInvalidDomain):
		log.Info("domain cannot have an MTA-STS policy", "domain", domain, "err", err)
		return pc, nil
	case err != nil:
		return pc, fmt.Errorf("MTA-STS policy of %s unavailable: %w", domain, err)
	}
	if res.FetchError != nil {
		log.Warn("MTA-STS policy fetch failed", "domain", domain, "err", res.FetchError, "cached_policy_used", res.Policy != nil)
	}
	if res.Policy == nil {
		return pc, nil // STS10: deliver as if the domain had no MTA-STS
	}
	p := res.Policy
	pc.sts = &secpolicy.STSPolicy{Mode: string(p.Mode), ID: res.ID, Match: p.MatchMX}
	return pc, nil
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

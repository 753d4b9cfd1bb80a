package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/smtpclient"
	"github.com/relaysec/relay/relay/tlsstats"
	"github.com/relaysec/relay/secpolicy"
)

// outcome is what one delivery attempt round decided for one recipient.
type outcome struct {
	rcpt        int // index into Message.Recipients
	state       queue.State
	nextAttempt time.Time
	status      string // RFC 3463 code
	remoteMTA   string // host that gave reply
	reply       string // remote SMTP reply, if any
	reason      string // the relay's own explanation (DNS, TLS policy, connection)
	expired     bool   // failed because the queue lifetime ended
	remoteDSN   bool   // delivered to a server that took our DSN parameters
	lastAttempt time.Time
	// notifyNeeded marks a final outcome that calls for a DSN.
	notifyNeeded bool
	// policy is the secpolicy.Kind of the host that decided the outcome;
	// "" when no host was reached (for metrics).
	policy string
}

func (o outcome) errorText() string {
	switch {
	case o.state == queue.StateDelivered:
		return ""
	case o.reply != "" && o.reason != "":
		return o.reason + ": " + o.reply
	case o.reply != "":
		return o.reply
	}
	return o.reason
}

// hostFailure is why one host (or address) could not take the message.
type hostFailure struct {
	reason    string
	reply     string
	status    string
	permanent bool // all recipients fail permanently (5xx to MAIL, DATA)
	// requireTLS marks a host refused only because it cannot carry a
	// REQUIRETLS message (RFC 8689): when every host fails so, the
	// message bounces with 5.7.30 instead of waiting out its lifetime.
	requireTLS bool
}

// deliverDomain delivers the recipients rcpts of m that share one domain.
// It returns one outcome per recipient and the attempts it made.
func (e *Engine) deliverDomain(ctx context.Context, log *slog.Logger, m *queue.Message, domain string, rcpts []int, lastRound bool) ([]outcome, []queue.Attempt) {
	now := e.opts.Now()
	pending := map[int]bool{}
	for _, i := range rcpts {
		pending[i] = true
	}
	var outs []outcome
	var attempts []queue.Attempt
	// settle gives the recipients in which the outcome o, once each.
	settle := func(o outcome, which []int) {
		for _, i := range which {
			if !pending[i] {
				continue
			}
			delete(pending, i)
			o.rcpt, o.lastAttempt = i, e.opts.Now()
			outs = append(outs, o)
		}
	}
	all := func() []int {
		var l []int
		for _, i := range rcpts {
			if pending[i] {
				l = append(l, i)
			}
		}
		return l
	}

	route, _ := e.route(domain)
	hosts, port, mxSecure, fail := e.resolveHosts(ctx, domain, route)
	if fail != nil {
		state := queue.StateDeferred
		if fail.permanent {
			state = queue.StateFailed
		}
		attempts = append(attempts, queue.Attempt{Time: now, Recipients: addrs(m, rcpts), Result: string(state), Error: fail.reason})
		settle(outcome{state: state, status: fail.status, reason: fail.reason}, rcpts)
		return outs, attempts
	}

	pc, err := e.policyContext(ctx, log, m, domain, route, lastRound)
	if err != nil {
		attempts = append(attempts, queue.Attempt{Time: now, Recipients: addrs(m, rcpts), Result: "deferred", Error: err.Error(), PolicyDomain: domain})
		settle(outcome{state: queue.StateDeferred, status: "4.7.5", reason: err.Error()}, rcpts)
		return outs, attempts
	}
	last := &hostFailure{reason: "no mail exchanger could be tried", status: "4.4.1"}
	lastPolicy := "" // kind of the last host policy connected with
	onlyRequireTLS := m.RequireTLS
	for _, host := range hosts {
		if len(pending) == 0 || ctx.Err() != nil {
			break
		}
		ha, err := e.opts.Resolver.LookupHost(ctx, host)
		if err != nil || len(ha.Addrs) == 0 {
			// MX05: skip the host for this attempt.
			reason := fmt.Sprintf("no address for MX host %s", host)
			if err != nil {
				reason = fmt.Sprintf("address lookup for MX host %s failed: %v", host, err)
			}
			attempts = append(attempts, queue.Attempt{Time: e.opts.Now(), Recipients: addrs(m, all()), Host: trimDot(host), Result: "deferred", Error: reason})
			last = &hostFailure{reason: reason, status: "4.4.3"}
			onlyRequireTLS = false
			continue
		}
		hp, err := e.opts.Policy.ForHost(ctx, secpolicy.Destination{
			Domain: domain, Host: host, Port: e.tlsaPort(route, port), Security: route.Security,
			MXSecure: mxSecure, HostSecure: ha.Security == secpolicy.Secure, STS: pc.sts,
		})
		if route.Security == secpolicy.SecurityAuto && (err != nil || hp.RequireTLS) && pc.tlsOptional() {
			// TLS06 / RFC 8689 §5: "TLS-Required: No" lets the message
			// through DANE and MTA-STS failures; STARTTLS is still used.
			hp, err = e.opts.Policy.Opportunistic(host, "TLS-Required: No header: DANE and MTA-STS are not enforced for this message (RFC 8689 §5)"), nil
		}
		if err != nil {
			reason := fmt.Sprintf("security policy for %s: %v", trimDot(host), err)
			attempts = append(attempts, queue.Attempt{Time: e.opts.Now(), Recipients: addrs(m, all()), Host: trimDot(host),
				Result: "deferred", Error: reason, PolicyDomain: domain, PolicyType: skippedPolicyType(err, pc),
				ResultType: secpolicy.ResultType(err)})
			last = &hostFailure{reason: reason, status: "4.7.5"}
			onlyRequireTLS = false
			continue
		}
		if m.RequireTLS && !hp.Authenticated {
			// RFC 8689 §4.2.1: REQUIRETLS mail goes only over a DANE- or
			// MTA-STS-authenticated connection.
			reason := fmt.Sprintf("REQUIRETLS: %s is not authenticated by DANE or MTA-STS (%s)", host, hp.Kind)
			attempts = append(attempts, queue.Attempt{Time: e.opts.Now(), Recipients: addrs(m, all()), Host: trimDot(host), Policy: string(hp.Kind), Result: "deferred", Error: reason})
			last = &hostFailure{reason: reason, status: "5.7.30", requireTLS: true}
			continue
		}
		for _, ip := range limitAddrs(ha.Addrs, 3) {
			if len(pending) == 0 || ctx.Err() != nil {
				break
			}
			att, res := e.attempt(ctx, m, host, ip, port, hp, all())
			attempts = append(attempts, att...)
			lastPolicy = att[len(att)-1].Policy
			for _, r := range res.rcpt {
				settle(outcome{state: r.state, status: r.status, remoteMTA: host, reply: r.reply, remoteDSN: r.remoteDSN, policy: lastPolicy}, []int{r.idx})
			}
			if res.fail == nil {
				continue
			}
			last = res.fail
			if !res.fail.requireTLS {
				onlyRequireTLS = false
			}
			if res.fail.permanent {
				settle(outcome{state: queue.StateFailed, status: res.fail.status, remoteMTA: host, reply: res.fail.reply, reason: res.fail.reason, policy: lastPolicy}, all())
			}
		}
	}
	left := all()
	if len(left) == 0 {
		return outs, attempts
	}
	if onlyRequireTLS {
		// Every host failed only for want of an authenticated path: RFC
		// 8689 §5 bounces such a message with 5.7.30.
		settle(outcome{state: queue.StateFailed, status: "5.7.30", reason: last.reason, policy: lastPolicy}, left)
		return outs, attempts
	}
	remote := ""
	if last.reply != "" && len(attempts) > 0 {
		remote = attempts[len(attempts)-1].Host
	}
	settle(outcome{state: queue.StateDeferred, status: tempStatus(last.status), remoteMTA: remote, reply: last.reply, reason: last.reason, policy: lastPolicy}, left)
	return outs, attempts
}

// tempStatus makes a status code temporary (4.x.x) for a deferral.
func tempStatus(s string) string {
	if strings.HasPrefix(s, "5.") {
		return "4." + s[2:]
	}
	if s == "" {
		return "4.0.0"
	}
	return s
}

func limitAddrs(a []netip.Addr, n int) []netip.Addr {
	if len(a) > n {
		return a[:n]
	}
	return a
}

func addrs(m *queue.Message, idx []int) []string {
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = m.Recipients[j].Addr
	}
	return out
}

// resolveHosts returns the hosts to try for domain in order, the port,
// and whether the MX RRset is DNSSEC-secure (a configured next hop counts
// as secure: it comes from the operator, not from DNS). A non-nil
// hostFailure settles every recipient (MX02–MX04).
func (e *Engine) resolveHosts(ctx context.Context, domain string, route Route) ([]string, int, bool, *hostFailure) {
	if route.NextHop != "" {
		h, p := e.hostPort(route.NextHop)
		return []string{h}, p, true, nil
	}
	mx, err := e.opts.Resolver.LookupMX(ctx, domain)
	switch {
	case err != nil:
		// MX04: a failed MX lookup defers the domain; never fall back
		// to address records.
		return nil, 0, false, &hostFailure{reason: fmt.Sprintf("MX lookup for %s failed: %v", domain, err), status: "4.4.3"}
	case mx.NoDomain:
		return nil, 0, false, &hostFailure{reason: fmt.Sprintf("domain %s does not exist (NXDOMAIN)", domain), status: "5.1.2", permanent: true}
	case mx.NullMX:
		// RFC 7505 §3: a null MX means the domain accepts no mail.
		return nil, 0, false, &hostFailure{reason: fmt.Sprintf("domain %s accepts no mail (null MX, RFC 7505)", domain), status: "5.1.10", permanent: true}
	case len(mx.Hosts) == 0:
		return nil, 0, false, &hostFailure{reason: fmt.Sprintf("domain %s has no usable MX host", domain), status: "4.4.4"}
	}
	hosts := make([]string, 0, len(mx.Hosts))
	for _, h := range mx.Hosts {
		if strings.EqualFold(strings.TrimSuffix(h.Name, "."), e.opts.Hostname) {
			continue // mail would loop back to this relay
		}
		hosts = append(hosts, h.Name)
	}
	if len(hosts) == 0 {
		return nil, 0, false, &hostFailure{reason: fmt.Sprintf("MX of %s points back to this relay (%s)", domain, e.opts.Hostname), status: "5.4.6", permanent: true}
	}
	return hosts, e.opts.Port, mx.Security == secpolicy.Secure, nil
}

// rcptResult is the settled outcome of one recipient at one host.
type rcptResult struct {
	idx       int
	state     queue.State
	status    string
	reply     string
	remoteDSN bool // the server took our DSN parameters (RFC 3461 §5.2)
}

// attemptResult is what one connection attempt achieved. fail is set when
// recipients remain for the next address or host.
type attemptResult struct {
	rcpt []rcptResult
	fail *hostFailure
}

// attempt delivers to one address of one host, following the host policy:
// STARTTLS when offered (or required), and for opportunistic TLS a
// cleartext retry after a failed handshake (checklist TLS01).
func (e *Engine) attempt(ctx context.Context, m *queue.Message, host string, ip netip.Addr, port int, hp secpolicy.HostPolicy, rcpts []int) ([]queue.Attempt, attemptResult) {
	att, res, retry := e.attemptOnce(ctx, m, host, ip, port, hp, rcpts, true)
	atts := []queue.Attempt{att}
	switch retry {
	case retryFresh:
		// A pooled connection the server had already dropped says
		// nothing about the host: try once more on a new connection.
		att, res, retry = e.attemptOnce(ctx, m, host, ip, port, hp, rcpts, false)
		atts = append(atts, att)
	}
	if retry == retryPlain && hp.PlainFallback && !hp.RequireTLS {
		plain := hp
		plain.Kind = secpolicy.KindPlain
		plain.TLSConfig = nil
		plain.Reason = "cleartext retry after a failed opportunistic TLS handshake"
		att, res, _ = e.attemptOnce(ctx, m, host, ip, port, plain, rcpts, false)
		atts = append(atts, att)
	}
	return atts, res
}

// retryHint tells attempt how an attemptOnce may be repeated.
type retryHint int

const (
	retryNone  retryHint = iota
	retryFresh           // a reused connection failed before MAIL was answered
	retryPlain           // the opportunistic TLS handshake failed
)

func (e *Engine) attemptOnce(ctx context.Context, m *queue.Message, host string, ip netip.Addr, port int, hp secpolicy.HostPolicy, rcpts []int, mayReuse bool) (att queue.Attempt, res attemptResult, retry retryHint) {
	start := e.opts.Now()
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	att = queue.Attempt{Time: start, Recipients: addrs(m, rcpts), Host: strings.TrimSuffix(host, "."), IP: ip.String(), Policy: string(hp.Kind)}
	att.PolicyDomain = strings.TrimSuffix(m.Recipients[rcpts[0]].Domain(), ".")
	att.PolicyType = policyType(hp.Kind)
	defer func() {
		att.Duration = e.opts.Now().Sub(start)
		if res.fail != nil {
			att.Error = res.fail.reason
			if att.Reply == "" {
				att.Reply = res.fail.reply
			}
		}
		att.Result = summarize(res)
	}()
	fail := func(f hostFailure) { res.fail = &f }

	key := addr + "|" + hp.ReuseKey()
	c, err := e.pool.get(ctx, ip.String(), key, mayReuse)
	if err != nil {
		fail(hostFailure{reason: "shutting down", status: "4.3.2"})
		return
	}
	reused := c != nil
	if !reused {
		c, err = e.connect(ctx, addr, hp)
		if err != nil {
			e.pool.done(ip.String())
			var tlsErr *smtpclient.TLSError
			handshakeFailed := errors.As(err, &tlsErr)
			if handshakeFailed {
				retry = retryPlain
			}
			var reply *smtpclient.Reply
			f := hostFailure{reason: err.Error(), status: "4.4.1"}
			if errors.As(err, &reply) {
				f.reply, f.status = reply.Error(), enhanced(reply, "4.4.1")
			}
			if handshakeFailed {
				if hp.STS != nil && hp.Kind == secpolicy.KindMTASTS {
					// DSN04: say which policy made the certificate matter.
					f.reason = hp.Reason + ": " + f.reason
				}
				f.status = "4.7.5"
				att.Verification = "failed: " + tlsErr.Err.Error()
				att.ResultType = secpolicy.ResultType(tlsErr.Err)
				if att.ResultType == "" && hp.RequireTLS {
					att.ResultType = "validation-failure"
				}
			}
			if errors.Is(err, errNoSTARTTLS) {
				f.status = "4.7.5"
				att.ResultType = "starttls-not-supported"
			}
			fail(f)
			return
		}
	}
	if st, ok := c.TLSState(); ok {
		att.TLSVersion = tls.VersionName(st.Version)
		att.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
		switch {
		case hp.Authenticated && reused:
			att.Verification = "ok: verified when the connection was opened (" + hp.Reason + ")"
		case reused && hp.Kind == secpolicy.KindMTASTSTesting:
			att.Verification = "MTA-STS testing: checked when the connection was opened"
		case hp.TestingFailure() != "":
			// STS14: testing mode delivers; the failure is on record.
			att.Verification = "MTA-STS testing, enforce would fail: " + hp.TestingFailure()
			att.ResultType = stsTestingResultType(hp.TestingFailure())
		case hp.Kind == secpolicy.KindMTASTSTesting:
			att.Verification = "ok: MTA-STS testing policy would be satisfied"
		case hp.Verified() != "":
			att.Verification = "ok: " + hp.Verified()
		case hp.Authenticated:
			att.Verification = "ok: " + hp.Reason
		default:
			att.Verification = "not checked (" + string(hp.Kind) + ")"
		}
	} else {
		att.Verification = "no TLS"
		if hp.Kind == secpolicy.KindOpportunistic {
			// RFC 8460 §4.3.2.1: a session without TLS to a domain
			// with no policy (policy type no-policy-found) is a failure
			// of type starttls-not-supported.
			att.ResultType = "starttls-not-supported"
		}
		if hp.Kind == secpolicy.KindMTASTSTesting {
			// STS14: enforce would have required STARTTLS.
			att.Verification = "MTA-STS testing, enforce would fail: no TLS"
			att.ResultType = "starttls-not-supported"
			if hp.TestingFailure() != "" {
				att.ResultType = stsTestingResultType(hp.TestingFailure())
			}
		}
	}

	body, err := e.q.Body(m.ID)
	if err != nil {
		e.pool.put(ip.String(), key, c)
		fail(hostFailure{reason: "open spooled message: " + err.Error(), status: "4.3.0"})
		return
	}
	defer body.Close()
	params := smtpclient.MailParams{Size: m.Size, Body: m.Body, SMTPUTF8: m.SMTPUTF8, RequireTLS: m.RequireTLS, Ret: m.DSNRet, EnvID: m.DSNEnvID}
	list := make([]smtpclient.Rcpt, len(rcpts))
	for i, j := range rcpts {
		r := m.Recipients[j]
		list[i] = smtpclient.Rcpt{Addr: r.Addr, Notify: r.Notify, ORcpt: r.ORcpt}
	}
	result, err := c.Send(ctx, m.From, params, list, io.Reader(body))
	_, remoteDSN := c.Extension("DSN")
	if result != nil {
		var replies []string
		for i, r := range result.Rcpts {
			if r == nil || r.Positive() {
				continue
			}
			replies = append(replies, "RCPT "+m.Recipients[rcpts[i]].Addr+": "+r.Error())
			if r.Permanent() {
				res.rcpt = append(res.rcpt, rcptResult{idx: rcpts[i], state: queue.StateFailed, status: enhanced(r, "5.0.0"), reply: r.Error()})
			}
			// SMTP02: a 4xx defers this recipient only; it is tried at
			// the next host too, then retried later.
		}
		// The reply to the message first, then the recipients' refusals.
		switch {
		case result.Data != nil:
			replies = append([]string{result.Data.Error()}, replies...)
		case result.Mail != nil && (len(replies) == 0 || !result.Mail.Positive()):
			replies = append([]string{result.Mail.Error()}, replies...)
		}
		att.Reply = strings.Join(replies, "; ")
	}
	switch {
	case err == nil:
		// Accepted recipients are delivered.
		for i, r := range result.Rcpts {
			if r != nil && r.Positive() {
				res.rcpt = append(res.rcpt, rcptResult{idx: rcpts[i], state: queue.StateDelivered, status: "2.0.0", reply: result.Data.Error(), remoteDSN: remoteDSN})
			}
		}
		if len(res.rcpt) < len(rcpts) {
			// Some recipients got 4xx: they go on to the next host.
			var tmp *smtpclient.Reply
			for _, r := range result.Rcpts {
				if r != nil && r.Temporary() {
					tmp = r
				}
			}
			if tmp != nil {
				fail(hostFailure{reason: "recipient deferred by " + att.Host, reply: tmp.Error(), status: enhanced(tmp, "4.0.0")})
			}
		}
		e.release(ctx, ip.String(), key, c)
	default:
		var reply *smtpclient.Reply
		switch {
		case errors.As(err, &reply) && reply.Permanent():
			// 5xx to MAIL or DATA: the message is refused for everyone left.
			fail(hostFailure{reason: "message refused by " + att.Host, reply: reply.Error(), status: enhanced(reply, "5.0.0"), permanent: true})
			e.release(ctx, ip.String(), key, c)
		case errors.As(err, &reply):
			fail(hostFailure{reason: "message deferred by " + att.Host, reply: reply.Error(), status: enhanced(reply, "4.0.0")})
			e.release(ctx, ip.String(), key, c)
		case errors.Is(err, smtpclient.ErrNeedsSMTPUTF8):
			// RFC 6531 §3.4: no downgrade; the message cannot go there.
			fail(hostFailure{reason: att.Host + " does not support SMTPUTF8, which this message needs", status: "5.6.7", permanent: true})
			e.release(ctx, ip.String(), key, c)
		case errors.Is(err, smtpclient.ErrTooBig):
			fail(hostFailure{reason: fmt.Sprintf("message too big for %s: %v", att.Host, err), status: "5.3.4", permanent: true})
			e.release(ctx, ip.String(), key, c)
		case errors.Is(err, smtpclient.ErrLineTooLong), errors.Is(err, smtpclient.ErrInvalidArgument):
			// An address or parameter that SMTP cannot carry will not get
			// better with time.
			fail(hostFailure{reason: fmt.Sprintf("message cannot be sent: %v", err), status: "5.5.2", permanent: true})
			e.release(ctx, ip.String(), key, c)
		case errors.Is(err, smtpclient.ErrNeedsREQUIRETLS):
			fail(hostFailure{reason: att.Host + " does not offer REQUIRETLS, which this message requires", status: "5.7.30", requireTLS: true})
			e.release(ctx, ip.String(), key, c)
		default:
			// Connection trouble. If the final dot may have been sent,
			// the message may have arrived; it is retried (a duplicate at
			// worst, never a loss).
			fail(hostFailure{reason: fmt.Sprintf("connection to %s [%s] failed: %v", att.Host, ip, err), status: "4.4.2"})
			c.Close()
			e.pool.done(ip.String())
			if reused && (result == nil || result.Mail == nil) {
				// The server may simply have closed an idle connection;
				// nothing was delivered on it.
				res.fail.reason += " (reused connection)"
				retry = retryFresh
			}
		}
	}
	return
}

// release resets a connection after a transaction and keeps it for reuse,
// or closes it when it is no longer in a usable state.
func (e *Engine) release(ctx context.Context, ip, key string, c *smtpclient.Client) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Reset(rctx); err != nil {
		c.Close()
		e.pool.done(ip)
		return
	}
	e.pool.put(ip, key, c)
}

// connect dials addr, reads the greeting, sends EHLO and applies the TLS
// part of the host policy.
func (e *Engine) connect(ctx context.Context, addr string, hp secpolicy.HostPolicy) (*smtpclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, e.opts.ConnectTimeout)
	conn, err := e.opts.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	c, err := smtpclient.New(ctx, conn, e.opts.Hostname, e.opts.Timeouts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if hp.TLSConfig == nil {
		return c, nil
	}
	if _, ok := c.Extension("STARTTLS"); !ok {
		if hp.RequireTLS {
			c.Quit()
			if hp.TLSA != nil {
				// DANE08 / RFC 7672 §2.2: never a cleartext fallback.
				return nil, fmt.Errorf("%w by %s but DANE TLSA records are published at %s", errNoSTARTTLS, addr, strings.TrimSuffix(hp.TLSA.Name, "."))
			}
			return nil, fmt.Errorf("%w by %s, but policy %s requires TLS (%s)", errNoSTARTTLS, addr, hp.Kind, hp.Reason)
		}
		return c, nil // TLS03: never send STARTTLS when not offered
	}
	if err := c.StartTLS(ctx, hp.TLSConfig); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// policyType is the RFC 8460 §4.3 policy type of a policy kind.
func policyType(k secpolicy.Kind) string {
	switch k {
	case secpolicy.KindDANE, secpolicy.KindDANEUnauth:
		return tlsstats.PolicyTLSA
	case secpolicy.KindMTASTS, secpolicy.KindMTASTSTesting:
		return tlsstats.PolicySTS
	}
	return tlsstats.PolicyNoPolicy
}

// skippedPolicyType is the policy type behind a host the policy ruled out.
func skippedPolicyType(err error, pc policyContext) string {
	var pe *secpolicy.PolicyError
	switch {
	case errors.As(err, &pe) && pc.sts != nil:
		return tlsstats.PolicySTS
	case strings.Contains(err.Error(), "TLSA"):
		return tlsstats.PolicyTLSA
	case pc.sts != nil:
		return tlsstats.PolicySTS
	}
	return tlsstats.PolicyNoPolicy
}

// errNoSTARTTLS is a host that does not offer STARTTLS although the
// policy requires TLS.
var errNoSTARTTLS = errors.New("STARTTLS not offered")

// stsTestingResultType classifies what a testing policy would refuse.
func stsTestingResultType(failure string) string {
	switch {
	case strings.Contains(failure, "not an MX host allowed"):
		return "validation-failure"
	case strings.Contains(failure, "expired"):
		return "certificate-expired"
	case strings.Contains(failure, "valid for") || strings.Contains(failure, "not valid for"):
		return "certificate-host-mismatch"
	case strings.Contains(failure, "unknown authority"):
		return "certificate-not-trusted"
	}
	return "validation-failure"
}

// enhanced returns the reply's enhanced status code or def.
func enhanced(r *smtpclient.Reply, def string) string {
	if r.Enhanced != "" {
		return r.Enhanced
	}
	return def
}

// summarize names an attempt's result: delivered, failed or deferred
// when every recipient it carried ended alike, partial otherwise.
func summarize(res attemptResult) string {
	delivered, failed := 0, 0
	for _, r := range res.rcpt {
		switch r.state {
		case queue.StateDelivered:
			delivered++
		case queue.StateFailed:
			failed++
		}
	}
	switch {
	case res.fail != nil && res.fail.permanent && delivered == 0:
		return "failed"
	case res.fail != nil && delivered+failed > 0:
		return "partial" // some recipients settled, the others go on
	case res.fail != nil:
		return "deferred"
	case failed == 0 && delivered > 0:
		return "delivered"
	case delivered == 0 && failed > 0:
		return "failed"
	case delivered > 0:
		return "partial"
	}
	return "deferred"
}

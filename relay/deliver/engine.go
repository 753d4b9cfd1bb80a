// Package deliver is the relay's delivery engine: a scheduler that leases
// due recipients from the queue, groups them by destination domain, and
// workers that resolve the domain's MX hosts, connect with the TLS policy
// that secpolicy decides for each host, and record every attempt. Failed
// recipients are bounced with RFC 3464 delivery status notifications that
// go through the queue like any other message.
package deliver

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/smtpclient"
	"github.com/relaysec/relay/relay/tlsstats"
	"github.com/relaysec/relay/secpolicy"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// Route sends one recipient domain to a fixed next hop and/or with a fixed
// security level instead of what DNS says.
type Route struct {
	Domain   string
	NextHop  string // host or host:port; "" means the domain's MX hosts
	Security string // secpolicy.Security* value; "" means automatic
}

// Options configure an Engine.
type Options struct {
	Hostname string // EHLO name and DSN Reporting-MTA
	Queue    *queue.Queue
	Resolver *secpolicy.Resolver
	Policy   *secpolicy.Policy
	// MTASTS looks up recipient domains' MTA-STS policies; nil disables
	// MTA-STS.
	MTASTS *mtasts.Manager
	// TLSStats counts TLS sessions per policy domain for TLS reporting;
	// nil disables counting.
	TLSStats *tlsstats.Recorder
	// Routes override delivery per domain; SetRoutes replaces them.
	Routes []Route
	// HoldDSNs queues the delivery status notifications the relay makes
	// on hold, like the messages it accepts under delivery.hold;
	// SetHoldDSNs changes it.
	HoldDSNs bool
	// Metrics, if set, is told about every attempt and every recipient
	// outcome; nil means none.
	Metrics Metrics

	Workers            int // concurrent domain deliveries; default 64
	PerHostConnections int // connections per destination IP; default 8

	FirstRetry       time.Duration // default 5m
	MaxRetryInterval time.Duration // default 4h
	QueueLifetime    time.Duration // default 120h (RFC 5321 §4.5.4.1)
	DelayWarning     time.Duration // 0 disables delay DSNs
	ConnectTimeout   time.Duration // default 30s
	// Port is the SMTP port of MX hosts; default 25. Tests change it.
	Port int
	// IdleTimeout is how long an unused connection is kept for reuse;
	// default 5s.
	IdleTimeout time.Duration
	// PollInterval is how often the scheduler looks for due work when
	// nothing wakes it; default 1s.
	PollInterval time.Duration
	// Timeouts are the SMTP client's command timeouts (RFC defaults).
	Timeouts smtpclient.Timeouts
	// Dial opens TCP connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	Logger *slog.Logger
	Now    func() time.Time
}

// Metrics receives the events of an Engine. Its methods are called from
// concurrent deliveries and must be cheap.
type Metrics interface {
	// Attempt is called for each connection attempt recorded in a
	// message's history, after the round it belongs to is recorded.
	Attempt(a queue.Attempt)
	// Outcome is called once per recipient and delivery round with what
	// the round decided (queue.StateDelivered, StateFailed or
	// StateDeferred) and the policy kind of the host that decided it
	// (a secpolicy.Kind such as "dane" or "opportunistic"; "" when no
	// host was reached, as after a failed MX lookup).
	Outcome(state queue.State, policy string)
}

// noMetrics is the Metrics of an engine without Options.Metrics.
type noMetrics struct{}

func (noMetrics) Attempt(queue.Attempt)       {}
func (noMetrics) Outcome(queue.State, string) {}

// Engine delivers queued mail.
type Engine struct {
	opts    Options
	q       *queue.Queue
	log     *slog.Logger
	metrics Metrics
	routes  atomic.Pointer[map[string]Route] // by lower-case domain; never nil
	holdDSN atomic.Bool
	pool    *connPool
	sem     chan struct{} // bounds concurrent domain deliveries

	mu       sync.Mutex
	inflight int // leased messages not finished yet
	finished chan struct{}
}

// New returns an engine; call Run to start it.
func New(opts Options) *Engine {
	if opts.Workers <= 0 {
		opts.Workers = 64
	}
	if opts.PerHostConnections <= 0 {
		opts.PerHostConnections = 8
	}
	if opts.FirstRetry <= 0 {
		opts.FirstRetry = 5 * time.Minute
	}
	if opts.MaxRetryInterval < opts.FirstRetry {
		opts.MaxRetryInterval = max(4*time.Hour, opts.FirstRetry)
	}
	if opts.QueueLifetime <= 0 {
		opts.QueueLifetime = 120 * time.Hour
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 30 * time.Second
	}
	if opts.Port == 0 {
		opts.Port = 25
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: opts.ConnectTimeout}
		opts.Dial = d.DialContext
	}
	if opts.Metrics == nil {
		opts.Metrics = noMetrics{}
	}
	e := &Engine{
		opts:     opts,
		q:        opts.Queue,
		log:      opts.Logger,
		metrics:  opts.Metrics,
		pool:     newConnPool(opts.PerHostConnections, opts.IdleTimeout),
		sem:      make(chan struct{}, opts.Workers),
		finished: make(chan struct{}, 1),
	}
	e.SetRoutes(opts.Routes)
	e.holdDSN.Store(opts.HoldDSNs)
	return e
}

// SetHoldDSNs changes whether DSNs queued from now on are held (see
// Options.HoldDSNs).
func (e *Engine) SetHoldDSNs(hold bool) { e.holdDSN.Store(hold) }

// SetRoutes replaces the routes. Deliveries to a domain that start
// afterwards use the new ones; those in progress finish with the route
// they started with.
func (e *Engine) SetRoutes(routes []Route) {
	m := make(map[string]Route, len(routes))
	for _, r := range routes {
		m[strings.ToLower(strings.TrimSuffix(r.Domain, "."))] = r
	}
	e.routes.Store(&m)
}

// route returns the route of a lower-case domain, if there is one.
func (e *Engine) route(domain string) (Route, bool) {
	r, ok := (*e.routes.Load())[domain]
	return r, ok
}

// Run schedules deliveries until ctx is cancelled, then waits for the
// deliveries in progress to end (they are cut short by ctx; their
// recipients stay due and are delivered after a restart).
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		e.pool.close()
	}()
	ticker := time.NewTicker(e.opts.PollInterval)
	defer ticker.Stop()
	for {
		e.mu.Lock()
		free := 2*e.opts.Workers - e.inflight
		e.mu.Unlock()
		if free > 0 && ctx.Err() == nil {
			leases, err := e.q.Lease(free)
			if err != nil {
				e.log.Error("lease due messages", "err", err)
			}
			for _, l := range leases {
				e.mu.Lock()
				e.inflight++
				e.mu.Unlock()
				wg.Go(func() {
					e.deliverMessage(ctx, l)
					e.mu.Lock()
					e.inflight--
					e.mu.Unlock()
					select {
					case e.finished <- struct{}{}:
					default:
					}
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.q.Notify():
		case <-e.finished:
		case <-ticker.C:
		}
	}
}

// deliverMessage delivers the due recipients of one leased message, one
// domain at a time in parallel, then records all outcomes in one commit
// and queues the DSNs they call for.
func (e *Engine) deliverMessage(ctx context.Context, l queue.Lease) {
	m := l.Message
	defer e.q.Unlease(m.ID)
	log := e.log.With("queue_id", m.ID)
	// The last round is decided once, when it starts: its temporary
	// failures become bounces, and policies are re-checked first (STS13).
	lastRound := !e.opts.Now().Before(m.ReceivedAt.Add(e.opts.QueueLifetime))

	byDomain := map[string][]int{}
	var domains []string
	for _, i := range l.Rcpts {
		d := m.Recipients[i].Domain()
		if _, ok := byDomain[d]; !ok {
			domains = append(domains, d)
		}
		byDomain[d] = append(byDomain[d], i)
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		attempts []queue.Attempt
		wg       sync.WaitGroup
	)
	for _, d := range domains {
		wg.Go(func() {
			select {
			case e.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-e.sem }()
			out, att := e.deliverDomain(ctx, log, m, d, byDomain[d], lastRound)
			mu.Lock()
			outcomes = append(outcomes, out...)
			attempts = append(attempts, att...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Shutting down: whatever was cut short is still due. Outcomes
		// that are known are still worth recording.
		outcomes = slicesDeleteFunc(outcomes, func(o outcome) bool { return o.state == queue.StateDeferred })
	}
	if len(outcomes) == 0 && len(attempts) == 0 {
		return
	}
	e.countSessions(attempts)
	now := e.opts.Now()
	e.finalize(m, outcomes, now, lastRound)
	delayWarn := e.delayWarningDue(m, outcomes, now)

	// DSNs first, then the record: a crash in between sends a DSN twice at
	// worst, never loses one.
	if err := e.queueDSNs(m, outcomes, delayWarn, now); err != nil {
		log.Error("queue delivery status notification; will retry the recipients", "err", err)
		for i := range outcomes {
			if outcomes[i].state == queue.StateFailed && outcomes[i].notifyNeeded {
				outcomes[i].state = queue.StateDeferred
				outcomes[i].nextAttempt = now.Add(e.opts.FirstRetry)
			}
		}
		delayWarn = false
	}
	for _, o := range outcomes {
		log.Info("recipient "+string(o.state), "rcpt", m.Recipients[o.rcpt].Addr, "status", o.status, "mx", o.remoteMTA, "detail", o.errorText())
	}
	if err := e.recordOutcomes(m, outcomes, attempts, delayWarn); err != nil {
		log.Error("record delivery outcome", "err", err)
	}
}

// recordOutcomes commits the outcomes and attempts on one message in one
// transaction, then counts them in the metrics.
func (e *Engine) recordOutcomes(m *queue.Message, outcomes []outcome, attempts []queue.Attempt, delayWarned bool) error {
	upd := queue.Update{Attempts: attempts, DelayWarned: delayWarned}
	for _, o := range outcomes {
		upd.Results = append(upd.Results, queue.Result{Rcpt: o.rcpt, State: o.state, NextAttempt: o.nextAttempt, Error: o.errorText()})
	}
	if _, err := e.q.Record(m.ID, upd); err != nil {
		return err
	}
	for _, a := range attempts {
		e.metrics.Attempt(a)
	}
	for _, o := range outcomes {
		e.metrics.Outcome(o.state, o.policy)
	}
	return nil
}

// countSessions records the TLS sessions of attempts for TLS reporting
// (RFC 8460): a session that negotiated TLS and met its policy is a
// success; one that failed a policy counts under its result type.
// Attempts that never reached a TLS decision (connection refused, say)
// are not sessions.
func (e *Engine) countSessions(attempts []queue.Attempt) {
	if e.opts.TLSStats == nil {
		return
	}
	for _, a := range attempts {
		if a.ResultType == "" && a.TLSVersion == "" {
			continue
		}
		e.opts.TLSStats.Record(tlsstats.Session{
			Time: a.Time, PolicyDomain: a.PolicyDomain, PolicyType: a.PolicyType,
			ResultType: a.ResultType, ReceivingMX: a.Host, ReceivingIP: a.IP,
		})
	}
}

func slicesDeleteFunc(s []outcome, del func(outcome) bool) []outcome {
	out := s[:0]
	for _, o := range s {
		if !del(o) {
			out = append(out, o)
		}
	}
	return out
}

// finalize turns temporary failures into retry times, and into permanent
// failures in the last round, the one that started after the queue
// lifetime was over (checklist SMTP01).
func (e *Engine) finalize(m *queue.Message, outs []outcome, now time.Time, lastRound bool) {
	expiry := m.ReceivedAt.Add(e.opts.QueueLifetime)
	for i := range outs {
		o := &outs[i]
		if o.state != queue.StateDeferred {
			continue
		}
		if lastRound {
			o.state = queue.StateFailed
			o.expired = true
			o.status = "5.4.7" // RFC 3463: delivery time expired
			continue
		}
		next := now.Add(e.backoff(m.Recipients[o.rcpt].Attempts + 1))
		if next.After(expiry) {
			// One last round when the lifetime ends (at once, if it ended
			// while this round was running).
			next = expiry
			if next.Before(now) {
				next = now
			}
		}
		o.nextAttempt = next
	}
}

// backoff is the wait after the n-th failed attempt: first_retry doubled
// per attempt, capped, with ±20% jitter so retries of many messages spread
// out.
func (e *Engine) backoff(n int) time.Duration {
	d := e.opts.FirstRetry
	for i := 1; i < n && d < e.opts.MaxRetryInterval; i++ {
		d *= 2
	}
	d = min(d, e.opts.MaxRetryInterval)
	jitter := time.Duration(rand.Int64N(int64(d)/5*2+1)) - d/5
	return d + jitter
}

// tlsaPort is the port whose TLSA records apply to a host: 25 for MX hosts
// (RFC 7672 §2.2; Options.Port only moves where tests connect), and a
// route's own port for a next hop that names one.
func (e *Engine) tlsaPort(route Route, port int) int {
	if route.NextHop != "" {
		return port
	}
	return 25
}

// hostPort splits a route's next hop into host and port.
func (e *Engine) hostPort(nextHop string) (string, int) {
	if h, p, err := net.SplitHostPort(nextHop); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			return h, n
		}
	}
	return strings.Trim(nextHop, "[]"), e.opts.Port
}

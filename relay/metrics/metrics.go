// Package metrics holds the relay's Prometheus metrics: the counters that
// the intake, the delivery engine, the DNS resolver, the MTA-STS manager
// and the inbound HTTPS server feed through their optional hooks, and the
// queue gauges computed when Prometheus scrapes.
//
// Every metric lives in the registry of one Metrics value (never in the
// global default registry), so that tests and several daemons in one
// process do not share counters. Names follow the Prometheus conventions:
// a relay_ prefix, base units (seconds, bytes), counters ending in _total.
//
// This is the only package of the relay that imports the Prometheus client;
// the components it observes only know their own small hook interfaces.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaysec/relay/inbound/tlsrpt"
	"github.com/relaysec/relay/queue"
	"github.com/relaysec/relay/relay/deliver"
	"github.com/relaysec/relay/relay/intake"
	"github.com/relaysec/relay/secpolicy"
	"github.com/relaysec/relay/secpolicy/mtasts"
)

// Options configure New.
type Options struct {
	// Version is exported as the version label of relay_build_info.
	Version string
	// QueueStats returns the queue's counters for the queue gauges; nil
	// leaves the gauges out.
	QueueStats func() (queue.Stats, error)
	// QueueStatsTTL is how long one QueueStats result serves scrapes, so
	// that frequent scrapes of a large queue stay cheap; 0 means
	// DefaultQueueStatsTTL.
	QueueStatsTTL time.Duration
	// Logger receives errors of the metrics handler; nil discards them.
	Logger *slog.Logger
	// Now returns the current time (for tests); nil means time.Now.
	Now func() time.Time
}

// DefaultQueueStatsTTL is the default of Options.QueueStatsTTL.
const DefaultQueueStatsTTL = 5 * time.Second

// Label value for a delivery outcome that no host policy decided (the MX
// lookup failed, say).
const policyNone = "none"

// Metrics is the relay's set of Prometheus metrics. Its hook methods are
// safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger
	now func() time.Time

	intakeSessions   prometheus.Counter
	intakeRejections *prometheus.CounterVec
	intakeMessages   prometheus.Counter
	intakeRecipients prometheus.Counter
	intakeBytes      prometheus.Counter

	deliveries      *prometheus.CounterVec
	attempts        *prometheus.CounterVec
	attemptDuration prometheus.Histogram
	tlsFailures     *prometheus.CounterVec

	dnsLookups      *prometheus.CounterVec
	mtastsFetches   *prometheus.CounterVec
	mtastsCacheHits prometheus.Counter

	tlsrptReports  *prometheus.CounterVec
	policyRequests *prometheus.CounterVec

	reloads           *prometheus.CounterVec
	reloadSuccessful  prometheus.Gauge
	reloadSuccessTime prometheus.Gauge
}

// New returns the metrics of one daemon in a registry of their own, with
// the Go runtime and process collectors.
func New(opts Options) *Metrics {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.QueueStatsTTL <= 0 {
		opts.QueueStatsTTL = DefaultQueueStatsTTL
	}
	m := &Metrics{reg: prometheus.NewRegistry(), log: opts.Logger, now: opts.Now}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		m.reg.MustRegister(g)
		return g
	}

	m.intakeSessions = counter("relay_intake_sessions_total",
		"SMTP sessions accepted by the intake listeners.")
	m.intakeRejections = counterVec("relay_intake_rejections_total",
		"Connections, commands and messages refused by the intake, by reason.", "reason")
	m.intakeMessages = counter("relay_intake_messages_total",
		"Messages accepted by the intake: stored durably and acknowledged with 250.")
	m.intakeRecipients = counter("relay_intake_recipients_total",
		"Recipients of the messages accepted by the intake.")
	m.intakeBytes = counter("relay_intake_bytes_total",
		"Bytes of the messages accepted by the intake, as spooled (trace header included).")

	m.deliveries = counterVec("relay_deliveries_total",
		"Recipient outcomes of delivery rounds: delivered and failed are final, deferred counts each round that ends in a retry; "+
			"policy is the kind of the host that decided (dane, dane-unauth, mta-sts, mta-sts-testing, opportunistic, plain, or none when no host was reached).",
		"outcome", "policy")
	m.attempts = counterVec("relay_delivery_attempts_total",
		"Connection attempts to MX hosts and next hops, by result (delivered, partial, deferred, failed) and host policy kind.",
		"result", "policy")
	m.attemptDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "relay_delivery_attempt_duration_seconds",
		Help:    "Duration of connection attempts to MX hosts and next hops, connection set-up included.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	})
	m.reg.MustRegister(m.attemptDuration)
	m.tlsFailures = counterVec("relay_tls_failures_total",
		"Delivery attempts with a TLS policy failure, by RFC 8460 result type (MTA-STS testing failures included).",
		"result_type")

	m.dnsLookups = counterVec("relay_dns_lookups_total",
		"DNS lookups by query type and outcome (secure, insecure, nxdomain, error), answers from the cache included.",
		"type", "outcome")
	m.mtastsFetches = counterVec("relay_mtasts_fetches_total",
		"MTA-STS policy fetches by outcome: ok or the RFC 8460 result type of the failure.", "outcome")
	m.mtastsCacheHits = counter("relay_mtasts_cache_hits_total",
		"MTA-STS policy look-ups answered by a cached policy without a fetch.")

	m.tlsrptReports = counterVec("relay_tlsrpt_reports_total",
		"TLS reports POSTed to the inbound endpoint, by outcome (stored, duplicate, rejected, rate_limited, busy, error).",
		"outcome")
	m.policyRequests = counterVec("relay_mtasts_policy_requests_total",
		"Requests for the MTA-STS policy file served by the inbound HTTPS server, by HTTP status code.", "code")

	m.reloads = counterVec("relay_config_reloads_total",
		"Configuration reloads (SIGHUP or relayctl reload), by result (success, failure).", "result")
	m.reloadSuccessful = gauge("relay_config_last_reload_successful",
		"Whether the last configuration reload succeeded (1) or was refused (0); 1 before any reload.")
	m.reloadSuccessful.Set(1)
	m.reloadSuccessTime = gauge("relay_config_last_reload_success_timestamp_seconds",
		"Unix time of the last successful configuration load (start-up or reload).")
	m.reloadSuccessTime.Set(float64(opts.Now().Unix()))

	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_build_info",
		Help: "Always 1; the labels name the relay's version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(opts.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(info)

	m.initSeries()
	if opts.QueueStats != nil {
		m.reg.MustRegister(newQueueCollector(opts.QueueStats, opts.QueueStatsTTL, opts.Now))
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// initSeries creates the common label combinations at zero, so that
// dashboards and rate() see them from the first scrape on instead of from
// the first event.
func (m *Metrics) initSeries() {
	for _, r := range []string{intake.RejectConnectionLimit, intake.RejectRelayDenied, intake.RejectAuthRequired,
		intake.RejectAuthFailed, intake.RejectBadAddress, intake.RejectBadParameter, intake.RejectMessage,
		intake.RejectLineTooLong, intake.RejectTimeout, intake.RejectStoreFailed} {
		m.intakeRejections.WithLabelValues(r)
	}
	kinds := []secpolicy.Kind{secpolicy.KindDANE, secpolicy.KindDANEUnauth, secpolicy.KindMTASTS, secpolicy.KindMTASTSTesting,
		secpolicy.KindOpportunistic, secpolicy.KindPlain, secpolicy.KindTLS, secpolicy.KindTLSVerify}
	for _, state := range []queue.State{queue.StateDelivered, queue.StateDeferred, queue.StateFailed} {
		for _, k := range kinds {
			m.deliveries.WithLabelValues(string(state), string(k))
		}
		m.deliveries.WithLabelValues(string(state), policyNone)
	}
	for _, t := range []string{"MX", "A", "AAAA", "TLSA", "TXT"} {
		for _, o := range []string{secpolicy.OutcomeSecure, secpolicy.OutcomeInsecure, secpolicy.OutcomeNXDomain, secpolicy.OutcomeError} {
			m.dnsLookups.WithLabelValues(t, o)
		}
	}
	for _, o := range []string{mtasts.FetchOK, mtasts.KindFetchError, mtasts.KindPolicyInvalid, mtasts.KindWebPKIInvalid} {
		m.mtastsFetches.WithLabelValues(o)
	}
	for _, o := range []string{tlsrpt.OutcomeStored, tlsrpt.OutcomeDuplicate, tlsrpt.OutcomeRejected,
		tlsrpt.OutcomeRateLimited, tlsrpt.OutcomeBusy, tlsrpt.OutcomeError} {
		m.tlsrptReports.WithLabelValues(o)
	}
	for _, code := range []string{"200", "404", "405"} {
		m.policyRequests.WithLabelValues(code)
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
}

// Gatherer returns the registry, for tests and custom handlers.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler returns the HTTP handler of /metrics. A collector that fails
// (the queue cannot be read) is left out of the scrape and logged; the
// other metrics are still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slogPrintln{m.log},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})
}

// slogPrintln adapts slog to promhttp's Logger.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	l.log.Error("metrics: serving a scrape", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

// Intake returns the hook for intake.Options.Metrics.
func (m *Metrics) Intake() intake.Metrics { return intakeHook{m} }

// Delivery returns the hook for deliver.Options.Metrics.
func (m *Metrics) Delivery() deliver.Metrics { return deliveryHook{m} }

// MTASTS returns the hook for mtasts.ManagerOptions.Observer.
func (m *Metrics) MTASTS() mtasts.Observer { return mtastsHook{m} }

// ObserveDNS counts a DNS lookup; it is the hook of
// secpolicy.ResolverConfig.Observe.
func (m *Metrics) ObserveDNS(qtype uint16, outcome string) {
	t, ok := dns.TypeToString[qtype]
	if !ok {
		t = "TYPE" + strconv.Itoa(int(qtype))
	}
	m.dnsLookups.WithLabelValues(t, outcome).Inc()
}

// ObserveTLSReport counts a TLS report request; it is the hook of
// tlsrpt.HandlerOptions.Observe.
func (m *Metrics) ObserveTLSReport(outcome string) {
	m.tlsrptReports.WithLabelValues(outcome).Inc()
}

// ObservePolicyRequest counts a request for the MTA-STS policy file; it is
// the hook of inbound.Options.ObservePolicyRequest.
func (m *Metrics) ObservePolicyRequest(status int) {
	m.policyRequests.WithLabelValues(strconv.Itoa(status)).Inc()
}

// ObserveReload records the result of a configuration reload.
func (m *Metrics) ObserveReload(ok bool) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		m.reloadSuccessful.Set(0)
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.reloadSuccessful.Set(1)
	m.reloadSuccessTime.Set(float64(m.now().Unix()))
}

type intakeHook struct{ m *Metrics }

func (h intakeHook) Session() { h.m.intakeSessions.Inc() }

func (h intakeHook) Rejected(reason string) { h.m.intakeRejections.WithLabelValues(reason).Inc() }

func (h intakeHook) Queued(recipients int, size int64) {
	h.m.intakeMessages.Inc()
	h.m.intakeRecipients.Add(float64(recipients))
	h.m.intakeBytes.Add(float64(size))
}

type deliveryHook struct{ m *Metrics }

func (h deliveryHook) Attempt(a queue.Attempt) {
	h.m.attempts.WithLabelValues(a.Result, policyLabel(a.Policy)).Inc()
	if a.Duration > 0 {
		h.m.attemptDuration.Observe(a.Duration.Seconds())
	}
	if a.ResultType != "" {
		h.m.tlsFailures.WithLabelValues(a.ResultType).Inc()
	}
}

func (h deliveryHook) Outcome(state queue.State, policy string) {
	h.m.deliveries.WithLabelValues(string(state), policyLabel(policy)).Inc()
}

func policyLabel(p string) string {
	if p == "" {
		return policyNone
	}
	return p
}

type mtastsHook struct{ m *Metrics }

func (h mtastsHook) Fetch(outcome string) { h.m.mtastsFetches.WithLabelValues(outcome).Inc() }

func (h mtastsHook) CacheHit() { h.m.mtastsCacheHits.Inc() }

// ReportMailCounts are the running totals of the TLS report mailbox.
type ReportMailCounts struct {
	Messages, Stored, Duplicates, Invalid int64
}

// RegisterReportMail exports the totals of the TLS report mailbox, read
// from counts at every scrape: relay_tlsrpt_mail_messages_total and
// relay_tlsrpt_mail_reports_total{outcome="stored|duplicate|invalid"},
// beside relay_tlsrpt_reports_total of the HTTPS endpoint.
func (m *Metrics) RegisterReportMail(counts func() ReportMailCounts) {
	m.reg.MustRegister(&reportMailCollector{
		counts:   counts,
		messages: prometheus.NewDesc("relay_tlsrpt_mail_messages_total", "Messages the TLS report mailbox received.", nil, nil),
		reports: prometheus.NewDesc("relay_tlsrpt_mail_reports_total",
			"TLS reports received by email, by outcome (stored, duplicate; invalid: a message without a valid report).", []string{"outcome"}, nil),
	})
}

type reportMailCollector struct {
	counts            func() ReportMailCounts
	messages, reports *prometheus.Desc
}

func (c *reportMailCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.reports
}

func (c *reportMailCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.CounterValue, float64(n.Messages))
	for outcome, v := range map[string]int64{"stored": n.Stored, "duplicate": n.Duplicates, "invalid": n.Invalid} {
		ch <- prometheus.MustNewConstMetric(c.reports, prometheus.CounterValue, float64(v), outcome)
	}
}

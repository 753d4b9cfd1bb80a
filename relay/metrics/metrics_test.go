package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"

	"github.com/relaysec/relay/queue"
)

// TestHooksCount feeds every hook once and checks the counters they move.
func TestHooksCount(t *testing.T) {
	m := New(Options{Version: "test"})
	in := m.Intake()
	in.Session()
	in.Rejected("relay_denied")
	in.Queued(3, 1000)
	d := m.Delivery()
	d.Attempt(queue.Attempt{Result: "delivered", Policy: "dane", Duration: time.Second})
	d.Attempt(queue.Attempt{Result: "deferred", Policy: "mta-sts", ResultType: "certificate-expired"})
	d.Outcome(queue.StateDelivered, "dane")
	d.Outcome(queue.StateDeferred, "")
	m.ObserveDNS(dns.TypeMX, "secure")
	m.ObserveDNS(dns.TypeTLSA, "error")
	s := m.MTASTS()
	s.Fetch("ok")
	s.Fetch("sts-webpki-invalid")
	s.CacheHit()
	m.ObserveTLSReport("stored")
	m.ObservePolicyRequest(200)
	m.ObserveReload(false)

	checkValues(t, m, []valueCheck{
		{"relay_intake_sessions_total", nil, 1},
		{"relay_intake_rejections_total", map[string]string{"reason": "relay_denied"}, 1},
		{"relay_intake_messages_total", nil, 1},
		{"relay_intake_recipients_total", nil, 3},
		{"relay_intake_bytes_total", nil, 1000},
		{"relay_delivery_attempts_total", map[string]string{"result": "delivered", "policy": "dane"}, 1},
		{"relay_delivery_attempt_duration_seconds", nil, 1}, // sample count
		{"relay_tls_failures_total", map[string]string{"result_type": "certificate-expired"}, 1},
		{"relay_deliveries_total", map[string]string{"outcome": "delivered", "policy": "dane"}, 1},
		{"relay_deliveries_total", map[string]string{"outcome": "deferred", "policy": "none"}, 1},
		{"relay_dns_lookups_total", map[string]string{"type": "MX", "outcome": "secure"}, 1},
		{"relay_dns_lookups_total", map[string]string{"type": "TLSA", "outcome": "error"}, 1},
		{"relay_mtasts_fetches_total", map[string]string{"outcome": "sts-webpki-invalid"}, 1},
		{"relay_mtasts_cache_hits_total", nil, 1},
		{"relay_tlsrpt_reports_total", map[string]string{"outcome": "stored"}, 1},
		{"relay_mtasts_policy_requests_total", map[string]string{"code": "200"}, 1},
		{"relay_config_reloads_total", map[string]string{"result": "failure"}, 1},
		{"relay_config_last_reload_successful", nil, 0},
		{"relay_build_info", map[string]string{"version": "test"}, 1},
	})
	if _, ok := value(t, m, "go_goroutines", nil); !ok {
		t.Error("no Go runtime metrics")
	}
}

// valueCheck is a metric's expected value: see value.
type valueCheck struct {
	name   string
	labels map[string]string
	want   float64
}

// checkValues reports every metric whose value is not the one wanted.
func checkValues(t *testing.T, m *Metrics, checks []valueCheck) {
	t.Helper()
	for _, c := range checks {
		if got, ok := value(t, m, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

// value returns the value of the metric name whose labels include labels:
// a counter's or gauge's value, a histogram's sample count.
func value(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			have := map[string]string{}
			for _, lp := range mt.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return metricValue(mt), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

// TestQueueGauges scrapes the queue gauges twice within the cache time
// and once after it: the queue is read twice.
func TestQueueGauges(t *testing.T) {
	var calls atomic.Int32
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	oldest := now.Add(-90 * time.Second)
	clock := func() time.Time { return now }
	m := New(Options{
		Now: clock,
		QueueStats: func() (queue.Stats, error) {
			calls.Add(1)
			return queue.Stats{
				Messages:   2,
				Bytes:      4096,
				Oldest:     oldest,
				Recipients: map[queue.State]int{queue.StateDeferred: 3, queue.StateHeld: 1},
				Domains:    map[string]int{"a.example": 2, "b.example": 1},
			}, nil
		},
		QueueStatsTTL: time.Minute,
	})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Result().Body)
		return string(b)
	}
	body := scrape()
	for _, want := range []string{
		"relay_queue_messages 2\n",
		`relay_queue_recipients{state="deferred"} 3` + "\n",
		`relay_queue_recipients{state="queued"} 0` + "\n",
		`relay_queue_recipients{state="held"} 1` + "\n",
		"relay_queue_bytes 4096\n",
		"relay_queue_destination_domains 2\n",
		"relay_queue_oldest_message_age_seconds 90\n",
		"# TYPE relay_deliveries_total counter",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	scrape()
	if n := calls.Load(); n != 1 {
		t.Errorf("queue read %d times for two scrapes within the cache time", n)
	}
	now = now.Add(2 * time.Minute)
	if body := scrape(); !strings.Contains(body, "relay_queue_oldest_message_age_seconds 210\n") {
		t.Errorf("age after the cache time:\n%s", body)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("queue read %d times, want 2 after the cache time", n)
	}
}

// The report mailbox's totals are read at every scrape.
func TestReportMailCounts(t *testing.T) {
	m := New(Options{Version: "test"})
	n := ReportMailCounts{Messages: 5, Stored: 3, Duplicates: 1, Invalid: 1}
	m.RegisterReportMail(func() ReportMailCounts { return n })
	checkValues(t, m, []valueCheck{
		{"relay_tlsrpt_mail_messages_total", nil, 5},
		{"relay_tlsrpt_mail_reports_total", map[string]string{"outcome": "stored"}, 3},
		{"relay_tlsrpt_mail_reports_total", map[string]string{"outcome": "duplicate"}, 1},
		{"relay_tlsrpt_mail_reports_total", map[string]string{"outcome": "invalid"}, 1},
	})
	n.Stored = 4
	if got, _ := value(t, m, "relay_tlsrpt_mail_reports_total", map[string]string{"outcome": "stored"}); got != 4 {
		t.Errorf("stored after a new report = %v, want 4", got)
	}
}

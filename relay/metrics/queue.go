package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaysec/relay/queue"
)

// queueStates are the recipient states exported by relay_queue_recipients,
// each always present (0 when no recipient is in it).
var queueStates = [...]queue.State{queue.StateQueued, queue.StateDeferred, queue.StateHeld, queue.StateDelivered, queue.StateFailed}

// queueCollector exports the queue gauges, computed from queue.Stats when
// Prometheus scrapes. One Stats result serves the scrapes of ttl, and
// concurrent scrapes wait for one computation, so that scraping a large
// queue often stays cheap.
type queueCollector struct {
	stats func() (queue.Stats, error)
	ttl   time.Duration
	now   func() time.Time

	messages, bytes, domains, oldestAge *prometheus.Desc
	recipients                          *prometheus.Desc

	mu     sync.Mutex
	cached queue.Stats
	err    error
	at     time.Time // when cached was computed; zero: never
}

func newQueueCollector(stats func() (queue.Stats, error), ttl time.Duration, now func() time.Time) *queueCollector {
	return &queueCollector{
		stats: stats, ttl: ttl, now: now,
		messages: prometheus.NewDesc("relay_queue_messages",
			"Messages in the queue (any recipient not yet delivered or failed, or kept for inspection).", nil, nil),
		recipients: prometheus.NewDesc("relay_queue_recipients",
			"Recipients of the messages in the queue, by state (queued, deferred, held, delivered, failed).", []string{"state"}, nil),
		bytes: prometheus.NewDesc("relay_queue_bytes",
			"Total size of the messages in the queue, in bytes.", nil, nil),
		domains: prometheus.NewDesc("relay_queue_destination_domains",
			"Recipient domains with recipients waiting for delivery.", nil, nil),
		oldestAge: prometheus.NewDesc("relay_queue_oldest_message_age_seconds",
			"Age of the oldest message in the queue; 0 when the queue is empty.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.recipients
	ch <- c.bytes
	ch <- c.domains
	ch <- c.oldestAge
}

// Collect implements prometheus.Collector.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.current()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.messages, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(st.Messages))
	for _, s := range queueStates {
		ch <- prometheus.MustNewConstMetric(c.recipients, prometheus.GaugeValue, float64(st.Recipients[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(c.domains, prometheus.GaugeValue, float64(len(st.Domains)))
	age := 0.0
	if !st.Oldest.IsZero() {
		age = max(c.now().Sub(st.Oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.oldestAge, prometheus.GaugeValue, age)
}

// current returns the cached statistics, computing them when they are
// older than ttl.
func (c *queueCollector) current() (queue.Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= c.ttl || now.Before(c.at) {
		c.cached, c.err = c.stats()
		c.at = c.now()
	}
	return c.cached, c.err
}

// Package tlsstats keeps, per recipient policy domain and UTC day, the
// counts of successful and failed TLS sessions that a TLS-RPT report (RFC
// 8460 §4) about that domain needs: the policy type, the totals, and the
// failures by result type and receiving MX host and address. Counts are
// gathered in memory and merged into a bbolt file at an interval, so that
// recording costs no disk write per delivery; a crash loses at most one
// interval of statistics, never mail.
package tlsstats

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Policy types of RFC 8460 §4.3.
const (
	PolicySTS      = "sts"
	PolicyTLSA     = "tlsa"
	PolicyNoPolicy = "no-policy-found"
)

var bucketDays = []byte("days")

// Key names one counter set: a day, a policy domain and its policy type.
type Key struct {
	Day          string `json:"day"` // YYYY-MM-DD, UTC
	PolicyDomain string `json:"policy_domain"`
	PolicyType   string `json:"policy_type"`
}

// Failure groups failed sessions as RFC 8460 §4.4 failure-details do.
type Failure struct {
	ResultType  string `json:"result_type"`
	ReceivingMX string `json:"receiving_mx_hostname,omitempty"`
	ReceivingIP string `json:"receiving_ip,omitempty"`
	Count       int64  `json:"failed_session_count"`
}

// Counts are the totals of one Key.
type Counts struct {
	Key
	Success  int64     `json:"total_successful_session_count"`
	Failure  int64     `json:"total_failure_session_count"`
	Failures []Failure `json:"failure_details,omitempty"`
}

// Session is one TLS session attempt to record.
type Session struct {
	Time         time.Time
	PolicyDomain string
	PolicyType   string
	ResultType   string // "" for a success
	ReceivingMX  string
	ReceivingIP  string
}

type failureKey struct{ resultType, mx, ip string }

type pending struct {
	success, failure int64
	failures         map[failureKey]int64
}

// Recorder counts sessions. It is safe for concurrent use.
type Recorder struct {
	db *bolt.DB

	mu      sync.Mutex
	pending map[Key]*pending
}

// Open opens (creating if needed) the statistics file at path.
func Open(path string) (*Recorder, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open TLS statistics %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketDays)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open TLS statistics %s: %w", path, err)
	}
	return &Recorder{db: db, pending: map[Key]*pending{}}, nil
}

// Record counts one session.
func (r *Recorder) Record(s Session) {
	k := Key{Day: s.Time.UTC().Format(time.DateOnly), PolicyDomain: s.PolicyDomain, PolicyType: s.PolicyType}
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[k]
	if p == nil {
		p = &pending{failures: map[failureKey]int64{}}
		r.pending[k] = p
	}
	if s.ResultType == "" {
		p.success++
		return
	}
	p.failure++
	p.failures[failureKey{s.ResultType, s.ReceivingMX, s.ReceivingIP}]++
}

func dbKey(k Key) []byte { return []byte(k.Day + "|" + k.PolicyDomain + "|" + k.PolicyType) }

// Flush merges the counts gathered since the last flush into the file.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	batch := r.pending
	r.pending = map[Key]*pending{}
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDays)
		for k, p := range batch {
			c := Counts{Key: k}
			if v := b.Get(dbKey(k)); v != nil {
				if err := json.Unmarshal(v, &c); err != nil {
					return fmt.Errorf("decode %s: %w", dbKey(k), err)
				}
			}
			c.Success += p.success
			c.Failure += p.failure
			for fk, n := range p.failures {
				merged := false
				for i := range c.Failures {
					f := &c.Failures[i]
					if f.ResultType == fk.resultType && f.ReceivingMX == fk.mx && f.ReceivingIP == fk.ip {
						f.Count += n
						merged = true
					}
				}
				if !merged {
					c.Failures = append(c.Failures, Failure{ResultType: fk.resultType, ReceivingMX: fk.mx, ReceivingIP: fk.ip, Count: n})
				}
			}
			v, err := json.Marshal(c)
			if err != nil {
				return err
			}
			if err := b.Put(dbKey(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Put the counts back so that the next flush tries again.
		r.mu.Lock()
		for k, p := range batch {
			q := r.pending[k]
			if q == nil {
				r.pending[k] = p
				continue
			}
			q.success += p.success
			q.failure += p.failure
			for fk, n := range p.failures {
				q.failures[fk] += n
			}
		}
		r.mu.Unlock()
		return fmt.Errorf("flush TLS statistics: %w", err)
	}
	return nil
}

// Run flushes every interval until ctx ends, then once more.
func (r *Recorder) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(); err != nil && onError != nil {
				onError(err)
			}
			return
		case <-t.C:
			if err := r.Flush(); err != nil && onError != nil {
				onError(err)
			}
		}
	}
}

// Query returns the stored counts from day since to day until (inclusive,
// "YYYY-MM-DD"), optionally for one policy domain, in day and domain
// order. Counts not yet flushed are included.
func (r *Recorder) Query(since, until, domain string) ([]Counts, error) {
	if err := r.Flush(); err != nil {
		return nil, err
	}
	var out []Counts
	err := r.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDays).Cursor()
		for k, v := c.Seek([]byte(since)); k != nil; k, v = c.Next() {
			var cnt Counts
			if err := json.Unmarshal(v, &cnt); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			if until != "" && cnt.Day > until {
				break
			}
			if domain == "" || cnt.PolicyDomain == domain {
				out = append(out, cnt)
			}
		}
		return nil
	})
	for i := range out {
		sort.Slice(out[i].Failures, func(a, b int) bool { return out[i].Failures[a].Count > out[i].Failures[b].Count })
	}
	return out, err
}

// Close flushes and closes the file.
func (r *Recorder) Close() error {
	ferr := r.Flush()
	if err := r.db.Close(); err != nil {
		return err
	}
	return ferr
}

package tlsrpt

import (
	"sync"
	"time"
)

// limiter is a token bucket per client key, with a bounded number of keys.
type limiter struct {
	mu      sync.Mutex
	perSec  float64 // tokens added per second
	burst   float64 // bucket size
	max     int     // most keys remembered
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(r Rate, maxKeys int) *limiter {
	if r.Per <= 0 {
		r.Per = time.Minute
	}
	if r.Burst <= 0 {
		r.Burst = 1
	}
	return &limiter{
		perSec:  float64(r.N) / r.Per.Seconds(),
		burst:   float64(r.Burst),
		max:     maxKeys,
		buckets: map[string]*bucket{},
	}
}

// allow takes a token from key's bucket. When there is none it returns
// false and how long until there is one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.perSec <= 0 {
		return false, time.Hour
	}
	return false, time.Duration((1 - b.tokens) / l.perSec * float64(time.Second))
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.perSec)
		b.last = now
	}
}

// evict makes room: it forgets the buckets that are full again (their
// clients are treated as new anyway), and if that frees less than an
// eighth of the map, arbitrary others, so that the cost of a sweep is
// shared by many insertions.
func (l *limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	target := l.max - l.max/8 - 1
	for k := range l.buckets {
		if len(l.buckets) <= target {
			break
		}
		delete(l.buckets, k)
	}
}

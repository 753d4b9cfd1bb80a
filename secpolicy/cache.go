package secpolicy

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	key     cacheKey
	answer  Answer
	expires time.Time
}

// cache is a bounded answer cache. Entries never outlive their TTL (DNS04);
// when the cache is full, expired entries are dropped first, then the
// oldest ones.
type cache struct {
	max int

	mu        sync.Mutex
	entries   map[cacheKey]*list.Element // values are *cacheEntry
	order     *list.List                 // insertion order, oldest first
	lastSweep time.Time
}

func newCache(maxEntries int) *cache {
	return &cache{
		max:     maxEntries,
		entries: make(map[cacheKey]*list.Element),
		order:   list.New(),
	}
}

// get returns a copy of the cached answer for (name, qtype) with its TTL
// and record TTLs reduced to the remaining lifetime.
func (c *cache) get(name string, qtype uint16, now time.Time) (Answer, bool) {
	if c.max <= 0 {
		return Answer{}, false
	}
	k := cacheKey{name, qtype}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return Answer{}, false
	}
	e := el.Value.(*cacheEntry)
	remaining := e.expires.Sub(now)
	if remaining <= 0 {
		c.order.Remove(el)
		delete(c.entries, k)
		return Answer{}, false
	}
	return copyAnswer(e.answer, remaining), true
}

// put stores a copy of a until expires.
func (c *cache) put(name string, qtype uint16, a Answer, expires, now time.Time) {
	if c.max <= 0 || !expires.After(now) {
		return
	}
	k := cacheKey{name, qtype}
	e := &cacheEntry{key: k, answer: copyAnswer(a, a.TTL), expires: expires}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.order.Remove(el)
		delete(c.entries, k)
	}
	if len(c.entries) >= c.max {
		c.evict(now)
	}
	c.entries[k] = c.order.PushBack(e)
}

// evict makes room for one entry. Called with c.mu held.
func (c *cache) evict(now time.Time) {
	// A full sweep costs O(n); do it at most once a second.
	if now.Sub(c.lastSweep) >= time.Second || now.Before(c.lastSweep) {
		c.lastSweep = now
		for el := c.order.Front(); el != nil; {
			next := el.Next()
			if e := el.Value.(*cacheEntry); !e.expires.After(now) {
				c.order.Remove(el)
				delete(c.entries, e.key)
			}
			el = next
		}
	}
	for len(c.entries) >= c.max {
		el := c.order.Front()
		c.order.Remove(el)
		delete(c.entries, el.Value.(*cacheEntry).key)
	}
}

// len returns the number of entries, expired or not.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// copyAnswer deep-copies a so that callers cannot alter cached data, and
// sets its TTL (and the records' TTLs) to at most ttl.
func copyAnswer(a Answer, ttl time.Duration) Answer {
	out := a
	out.TTL = min(a.TTL, ttl)
	secs := uint32(out.TTL / time.Second)
	if a.Records != nil {
		out.Records = make([]dns.RR, len(a.Records))
		for i, rr := range a.Records {
			cp := dns.Copy(rr)
			if h := cp.Header(); h.Ttl > secs {
				h.Ttl = secs
			}
			out.Records[i] = cp
		}
	}
	if a.CNAMEs != nil {
		out.CNAMEs = append([]string(nil), a.CNAMEs...)
	}
	return out
}

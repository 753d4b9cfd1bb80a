package mtasts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/relaysec/relay/secpolicy"
)

// Defaults of ManagerOptions and RefreshLoop.
const (
	DefaultRefreshBefore   = 24 * time.Hour
	DefaultPruneAfter      = 30 * 24 * time.Hour
	DefaultRefreshInterval = time.Hour
	DefaultFetchBackoff    = 5 * time.Minute
)

// lastUsedGranularity limits how often a cache hit writes the LastUsed time
// to the database.
const lastUsedGranularity = time.Hour

// resolveTimeout bounds a shared Get or Recheck (TXT lookup, fetch, cache
// write) beyond the fetch timeout; it runs detached from the callers'
// contexts so that one caller giving up does not fail the others.
const resolveTimeout = time.Minute

// ManagerOptions configures a Manager. Resolver, Fetcher and Cache are
// required.
type ManagerOptions struct {
	// Resolver answers the _mta-sts TXT lookups.
	Resolver *secpolicy.Resolver
	// Fetcher fetches policies.
	Fetcher *Fetcher
	// Cache stores policies across restarts.
	Cache *Cache
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives policy changes and failures; nil means slog.Default().
	Logger *slog.Logger
	// RefreshBefore: RefreshLoop refetches a recently used policy when it
	// expires within this (or within half its max_age, when that is
	// shorter). 0 means DefaultRefreshBefore (24h).
	RefreshBefore time.Duration
	// PruneAfter: a policy counts as recently used when a delivery asked
	// for it within this. RefreshLoop refreshes only recently used
	// policies, and removes a policy only when it has expired and has not
	// been used within this; an unexpired policy is never removed (RFC 8461
	// §5.1: a policy is in force until max_age runs out). 0 means
	// DefaultPruneAfter (30 days).
	PruneAfter time.Duration
	// FetchBackoff: after a failed fetch, Get does not fetch the same
	// domain and id again within this and reports the same failure
	// (RFC 8461 §3.3 lets senders rate-limit fetches). Recheck and a
	// changed TXT id ignore it. 0 means DefaultFetchBackoff (5 minutes); a
	// negative value disables it.
	FetchBackoff time.Duration
	// Observer, if set, is told about every policy fetch and every use of
	// a cached policy (metrics count with it); nil means none.
	Observer Observer
}

// Observer receives the events of a Manager. Its methods are called from
// concurrent deliveries and must be cheap.
type Observer interface {
	// Fetch is called after each policy fetch (by Get, Recheck or the
	// refresh loop) with FetchOK or the failure's RFC 8460 result type
	// (KindFetchError, KindPolicyInvalid, KindWebPKIInvalid).
	Fetch(outcome string)
	// CacheHit is called when Get or Recheck uses a cached policy without
	// fetching it.
	CacheHit()
}

// FetchOK is the outcome reported to Observer.Fetch for a fetched policy.
const FetchOK = "ok"

// Result is the MTA-STS policy that applies to a domain now.
type Result struct {
	// Policy is the policy in force, or nil when the domain is to be
	// treated as having no MTA-STS (checklist STS10). A policy in mode
	// none imposes no restrictions either (STS15).
	Policy *Policy
	// ID is the id of the policy in force.
	ID string
	// Expires is when the policy in force runs out.
	Expires time.Time
	// FromCache is true when Policy is a cached policy, false when it was
	// fetched by this call.
	FromCache bool
	// Refreshed is true when Policy was fetched by this call.
	Refreshed bool
	// FetchError is set when a fetch was attempted and failed, even when a
	// cached policy is used instead (STS08); it is a *FetchError whose
	// Kind is the RFC 8460 result type to report.
	FetchError error
	// DNSError is set when the TXT lookup failed (a temporary failure; a
	// cached policy stays in force, STS09).
	DNSError error
}

// Manager decides which MTA-STS policy applies to a domain, combining TXT
// discovery, fetching and the cache with the rules of RFC 8461 §3.3 and
// §5.1 (checklist STS07–STS11, STS13, STS15, STS17). It is safe for
// concurrent use.
type Manager struct {
	resolver      *secpolicy.Resolver
	fetcher       *Fetcher
	cache         *Cache
	now           func() time.Time
	log           *slog.Logger
	refreshBefore time.Duration
	pruneAfter    time.Duration
	fetchBackoff  time.Duration
	observer      Observer // nil: none
	flight        flight[Result]

	mu       sync.Mutex
	failures map[string]fetchFailure // by domain
}

// fetchFailure is a recent failed fetch of a domain.
type fetchFailure struct {
	id    string // the TXT id it was fetched for
	until time.Time
	err   error
}

// NewManager returns a Manager for opts.
func NewManager(opts ManagerOptions) (*Manager, error) {
	switch {
	case opts.Resolver == nil:
		return nil, errors.New("MTA-STS manager: no resolver")
	case opts.Fetcher == nil:
		return nil, errors.New("MTA-STS manager: no fetcher")
	case opts.Cache == nil:
		return nil, errors.New("MTA-STS manager: no cache")
	}
	m := &Manager{
		resolver:      opts.Resolver,
		fetcher:       opts.Fetcher,
		cache:         opts.Cache,
		now:           opts.Now,
		log:           opts.Logger,
		refreshBefore: opts.RefreshBefore,
		pruneAfter:    opts.PruneAfter,
		fetchBackoff:  opts.FetchBackoff,
		observer:      opts.Observer,
		failures:      make(map[string]fetchFailure),
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.refreshBefore <= 0 {
		m.refreshBefore = DefaultRefreshBefore
	}
	if m.pruneAfter <= 0 {
		m.pruneAfter = DefaultPruneAfter
	}
	if m.fetchBackoff == 0 {
		m.fetchBackoff = DefaultFetchBackoff
	}
	return m, nil
}

// Get returns the policy that applies to domain:
//
//   - The TXT record is looked up. When its id is the id of the unexpired
//     cached policy, that policy is used without a fetch.
//   - When the id differs or nothing unexpired is cached, the policy is
//     fetched; a fetched policy is stored (a mode none policy replaces the
//     older one, STS15) and used. When the fetch fails the unexpired cached
//     policy stays in force (STS08), else there is no policy (STS10);
//     Result.FetchError says why. A failed fetch is not repeated for the
//     same id within FetchBackoff.
//   - When the TXT record is missing or its lookup fails, the unexpired
//     cached policy stays in force (STS09), else there is no policy (STS10).
//     Nothing is ever removed because of the TXT record.
//
// Expired cached policies are never used (RFC 8461 §5.1). Concurrent calls
// for one domain share one lookup and fetch (STS17).
//
// The error is nil for every outcome above; it reports an invalid domain
// name, a failure of the cache database, or ctx ending before the answer.
func (m *Manager) Get(ctx context.Context, domain string) (Result, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return Result{}, fmt.Errorf("MTA-STS policy: %w", err)
	}
	return m.shared(ctx, d, d, false)
}

// Recheck checks domain's policy again before a message is bounced because
// of an enforce policy (checklist STS13, RFC 8461 §5.1): a fresh TXT lookup
// (through the resolver's TTL-bounded cache) and a refetch when the id
// changed, as in Get, even within FetchBackoff of a failed fetch. It does
// not join a Get that is already under way, so the check starts after the
// call.
func (m *Manager) Recheck(ctx context.Context, domain string) (Result, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return Result{}, fmt.Errorf("MTA-STS policy recheck: %w", err)
	}
	return m.shared(ctx, "recheck\x00"+d, d, true)
}

// shared runs resolve for d once for all concurrent callers with key.
func (m *Manager) shared(ctx context.Context, key, d string, force bool) (Result, error) {
	detached := context.WithoutCancel(ctx)
	return m.flight.do(ctx, key, func() (Result, error) {
		ctx, cancel := context.WithTimeout(detached, m.fetcher.timeout+resolveTimeout)
		defer cancel()
		return m.resolve(ctx, d, force)
	})
}

// resolve implements Get (and with force, Recheck) for the normalized
// domain d.
func (m *Manager) resolve(ctx context.Context, d string, force bool) (Result, error) {
	now := m.now()
	entry, cached, err := m.cache.Get(d)
	if err != nil {
		if !errors.Is(err, ErrCorruptEntry) {
			return Result{}, fmt.Errorf("MTA-STS policy for %s: %w", d, err)
		}
		m.log.Warn("MTA-STS: ignoring a corrupt cache record", "domain", d, "error", err)
		cached = false
	}
	valid := cached && !entry.Expired(now)

	id, why, lerr := lookupID(ctx, m.resolver, d)
	if lerr != nil || why != "" {
		// STS09/STS10: a missing record or a failed lookup never removes
		// or overrides a cached policy.
		res := Result{DNSError: lerr}
		if valid {
			res = m.useCached(d, entry, now)
			res.DNSError = lerr
		}
		if lerr != nil {
			m.log.Warn("MTA-STS: TXT lookup failed", "domain", d, "error", lerr, "cached_policy", valid)
		} else {
			m.log.Debug("MTA-STS: no policy announced", "domain", d, "reason", why, "cached_policy", valid)
		}
		return res, nil
	}
	if valid && id == entry.ID {
		return m.useCached(d, entry, now), nil
	}

	// New or changed id, or nothing usable cached: fetch (STS08).
	p, ferr := m.fetch(ctx, d, id, force)
	if ferr != nil {
		res := Result{FetchError: ferr}
		if valid {
			res = m.useCached(d, entry, now)
			res.FetchError = ferr
		}
		return res, nil
	}
	fetched := m.now()
	e := CacheEntry{Domain: d, ID: id, Policy: p, Fetched: fetched, Expires: fetched.Add(p.MaxAge), LastUsed: fetched}
	if err := m.cache.replace(e); err != nil {
		// The policy is valid: use it for now even though it could not be
		// stored.
		m.log.Error("MTA-STS: could not cache policy", "domain", d, "error", err)
	}
	m.log.Info("MTA-STS: policy fetched", "domain", d, "id", id, "mode", string(p.Mode),
		"max_age", int64(p.MaxAge/time.Second), "mx", p.MX, "previous_id", entry.ID)
	return Result{Policy: p, ID: id, Expires: e.Expires, Refreshed: true}, nil
}

// fetch fetches d's policy for TXT id, unless a fetch for the same id
// failed within FetchBackoff and force is false: then it returns that
// failure again.
func (m *Manager) fetch(ctx context.Context, d, id string, force bool) (*Policy, error) {
	if !force && m.fetchBackoff > 0 {
		m.mu.Lock()
		f, ok := m.failures[d]
		m.mu.Unlock()
		if ok && f.id == id && m.now().Before(f.until) {
			return nil, f.err
		}
	}
	p, err := m.fetcher.Fetch(ctx, d)
	m.observeFetch(err)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.log.Warn("MTA-STS: policy fetch failed", "domain", d, "id", id, "error", err)
		if m.fetchBackoff > 0 {
			m.failures[d] = fetchFailure{id: id, until: m.now().Add(m.fetchBackoff), err: err}
		}
		return nil, err
	}
	delete(m.failures, d)
	return p, nil
}

// observeFetch reports a fetch's outcome to the Observer.
func (m *Manager) observeFetch(err error) {
	if m.observer == nil {
		return
	}
	outcome := FetchOK
	if err != nil {
		outcome = KindFetchError
		var fe *FetchError
		if errors.As(err, &fe) {
			outcome = fe.Kind
		}
	}
	m.observer.Fetch(outcome)
}

// useCached returns the Result for a cached entry and records its use.
func (m *Manager) useCached(d string, e CacheEntry, now time.Time) Result {
	if m.observer != nil {
		m.observer.CacheHit()
	}
	if now.Sub(e.LastUsed) >= lastUsedGranularity {
		if err := m.cache.touch(d, e.ID, now); err != nil {
			m.log.Warn("MTA-STS: could not record policy use", "domain", d, "error", err)
		}
	}
	return Result{Policy: e.Policy, ID: e.ID, Expires: e.Expires, FromCache: true}
}

// RefreshLoop maintains the cache until ctx ends: at once and then every
// interval (0 means DefaultRefreshInterval) it refetches the recently used
// policies that expire soon, so that they never lapse while in use
// (checklist STS11, RFC 8461 §3.3), and removes expired policies that have
// not been used for PruneAfter.
func (m *Manager) RefreshLoop(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.maintain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintain is one pass of RefreshLoop.
func (m *Manager) maintain(ctx context.Context) {
	m.mu.Lock()
	for d, f := range m.failures {
		if !m.now().Before(f.until) {
			delete(m.failures, d)
		}
	}
	m.mu.Unlock()

	domains, err := m.cache.listDomains()
	if err != nil {
		m.log.Error("MTA-STS: cache maintenance", "error", err)
		return
	}
	for _, d := range domains {
		if ctx.Err() != nil {
			return
		}
		now := m.now()
		e, ok, err := m.cache.Get(d)
		switch {
		case err != nil && errors.Is(err, ErrCorruptEntry):
			m.log.Warn("MTA-STS: removing a corrupt cache record", "domain", d, "error", err)
			if _, err := m.cache.deleteIf(d, func(CacheEntry) bool { return false }); err != nil {
				m.log.Error("MTA-STS: cache maintenance", "domain", d, "error", err)
			}
			continue
		case err != nil:
			m.log.Error("MTA-STS: cache maintenance", "domain", d, "error", err)
			continue
		case !ok:
			continue
		}
		if m.prunable(e, now) {
			removed, err := m.cache.deleteIf(d, func(cur CacheEntry) bool { return m.prunable(cur, now) })
			if err != nil {
				m.log.Error("MTA-STS: cache maintenance", "domain", d, "error", err)
			} else if removed {
				m.log.Info("MTA-STS: expired policy removed from the cache", "domain", d, "id", e.ID,
					"expired", e.Expires, "last_used", e.LastUsed)
			}
			continue
		}
		if m.needsRefresh(e, now) {
			m.refresh(ctx, d, e)
		}
	}
}

// prunable: expired and not used within PruneAfter. An unexpired policy is
// in force and is never pruned.
func (m *Manager) prunable(e CacheEntry, now time.Time) bool {
	return e.Expired(now) && now.Sub(e.LastUsed) >= m.pruneAfter
}

// needsRefresh: unexpired, used within PruneAfter, and expiring within
// RefreshBefore or within half its max_age, whichever is shorter (so that a
// short max_age does not cause a fetch on every pass).
func (m *Manager) needsRefresh(e CacheEntry, now time.Time) bool {
	if e.Expired(now) || now.Sub(e.LastUsed) >= m.pruneAfter {
		return false
	}
	window := min(m.refreshBefore, e.Policy.MaxAge/2)
	return e.Expires.Sub(now) <= window
}

// refresh refetches d's policy ahead of its expiry, whatever the TXT id,
// to extend its lifetime. It needs a valid TXT record: a domain that
// removed its record lets the cached policy run out. A failure keeps the
// cached policy.
func (m *Manager) refresh(ctx context.Context, d string, old CacheEntry) {
	id, why, err := lookupID(ctx, m.resolver, d)
	if err != nil {
		m.log.Warn("MTA-STS: refresh: TXT lookup failed; cached policy kept", "domain", d, "error", err, "expires", old.Expires)
		return
	}
	if why != "" {
		m.log.Info("MTA-STS: refresh: no policy announced; cached policy kept until it expires", "domain", d, "reason", why, "expires", old.Expires)
		return
	}
	p, err := m.fetcher.Fetch(ctx, d)
	m.observeFetch(err)
	if err != nil {
		m.log.Warn("MTA-STS: refresh: fetch failed; cached policy kept", "domain", d, "id", id, "error", err, "expires", old.Expires)
		return
	}
	now := m.now()
	e := CacheEntry{Domain: d, ID: id, Policy: p, Fetched: now, Expires: now.Add(p.MaxAge), LastUsed: old.LastUsed}
	if err := m.cache.replace(e); err != nil {
		m.log.Error("MTA-STS: refresh: could not cache policy", "domain", d, "error", err)
		return
	}
	m.log.Info("MTA-STS: policy refreshed", "domain", d, "id", id, "mode", string(p.Mode),
		"expires", e.Expires, "previous_id", old.ID)
}

// List returns the cached policies, expired ones included, ordered by
// domain (for relayctl policy cache list).
func (m *Manager) List() ([]CacheEntry, error) { return m.cache.List() }

// Flush removes domain's cached policy, or every cached policy when domain
// is "" (for relayctl policy cache flush). The next Get fetches again.
func (m *Manager) Flush(domain string) error { return m.cache.Delete(domain) }

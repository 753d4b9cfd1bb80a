package mtasts

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	bolt "go.etcd.io/bbolt"
)

const (
	host      = "mta-sts.example.test"
	otherHost = "mta-sts.other.test"
)

// wantPolicy checks that res carries a policy of mode with id.
func wantPolicy(t *testing.T, res Result, mode Mode, id string) {
	t.Helper()
	if res.Policy == nil {
		t.Fatalf("no policy (FetchError %v, DNSError %v), want %s id %s", res.FetchError, res.DNSError, mode, id)
	}
	if res.Policy.Mode != mode || res.ID != id {
		t.Fatalf("policy %s id %s, want %s id %s", res.Policy.Mode, res.ID, mode, id)
	}
}

func wantNoPolicy(t *testing.T, res Result) {
	t.Helper()
	if res.Policy != nil {
		t.Fatalf("policy %s id %s in force, want none", res.Policy.Mode, res.ID)
	}
}

func wantKind(t *testing.T, err error, kind string) {
	t.Helper()
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Kind != kind {
		t.Fatalf("FetchError %v, want kind %s", err, kind)
	}
}

func TestSTS07_ManagerCachesPolicy(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)

	res := e.get("example.test")
	wantPolicy(t, res, ModeEnforce, "one")
	if !res.Refreshed || res.FromCache || !res.Expires.Equal(e.clock.Now().Add(24*time.Hour)) {
		t.Errorf("first Get: %+v", res)
	}
	if !res.Policy.MatchMX("mx.example.test") || res.Policy.MatchMX("evil.test") {
		t.Error("policy does not match as expected")
	}

	e.clock.Advance(time.Hour)
	res = e.get("Example.Test.")
	wantPolicy(t, res, ModeEnforce, "one")
	if !res.FromCache || res.Refreshed {
		t.Errorf("second Get: %+v", res)
	}
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches, want 1 (unchanged id uses the cache)", n)
	}

	// The cache survives a restart.
	e.restart()
	res = e.get("example.test")
	wantPolicy(t, res, ModeEnforce, "one")
	if !res.FromCache {
		t.Errorf("Get after restart: %+v", res)
	}
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches after restart, want 1", n)
	}
	// Even with the policy server and the TXT record gone.
	e.handler.setStatus(http.StatusInternalServerError)
	e.setTXT("example.test")
	e.restart()
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
}

func TestSTS07_ExpiredPolicyNotUsed(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 3600, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")

	// Just before expiry the policy is in force without a TXT record.
	e.setTXT("example.test")
	e.clock.Advance(3599 * time.Second)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	// At max_age it is not.
	e.clock.Advance(time.Second)
	wantNoPolicy(t, e.get("example.test"))
	// Nor when the TXT lookup fails.
	e.zone.Fail("_mta-sts.example.test.", dns.TypeTXT, dns.RcodeServerFailure)
	res := e.get("example.test")
	wantNoPolicy(t, res)
	if res.DNSError == nil {
		t.Error("DNSError not set")
	}
	e.zone.Restore("_mta-sts.example.test.", dns.TypeTXT)

	// The same id again: the expired policy is refetched and revived.
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	res = e.get("example.test")
	wantPolicy(t, res, ModeEnforce, "one")
	if !res.Refreshed {
		t.Errorf("expired policy not refetched: %+v", res)
	}
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}

	// Expired and the refetch fails: no policy, with the failure.
	e.clock.Advance(2 * time.Hour)
	e.handler.setStatus(http.StatusNotFound)
	res = e.get("example.test")
	wantNoPolicy(t, res)
	wantKind(t, res.FetchError, KindFetchError)
}

func TestSTS07_MaxAgeZero(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 0, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches, want 2: a max_age 0 policy is not reused", n)
	}
}

func TestSTS08_IDChangeRefetch(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")

	// New id: refetch, the new policy replaces the old one.
	e.setTXT("example.test", `"v=STSv1; id=two"`)
	e.handler.set(host, policyWith(ModeTesting, 86400, "mx2.example.test"))
	e.clock.Advance(time.Minute)
	res := e.get("example.test")
	wantPolicy(t, res, ModeTesting, "two")
	if !res.Refreshed || !res.Policy.MatchMX("mx2.example.test") {
		t.Errorf("Get after id change: %+v", res)
	}
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	list, err := e.mgr.List()
	if err != nil || len(list) != 1 || list[0].ID != "two" || list[0].Policy.Mode != ModeTesting {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestSTS08_RefetchFailureKeepsCachedPolicy(t *testing.T) {
	failures := []struct {
		name  string
		setup func(e *env)
		kind  string
	}{
		{"HTTP 500", func(e *env) { e.handler.setStatus(http.StatusInternalServerError) }, KindFetchError},
		{"HTTP 404", func(e *env) { e.handler.setStatus(http.StatusNotFound) }, KindFetchError},
		{"redirect", func(e *env) { e.handler.setStatus(http.StatusFound) }, KindFetchError},
		{"wrong media type", func(e *env) { e.handler.setContentType("text/html") }, KindFetchError},
		{"invalid policy", func(e *env) { e.handler.set(host, "version: STSv1\nmode: enforce\nmax_age: 1\n") }, KindPolicyInvalid},
		{"mode typo", func(e *env) { e.handler.set(host, "version: STSv1\nmode: enforcing\nmx: a.test\nmax_age: 1\n") }, KindPolicyInvalid},
		{"untrusted certificate", func(e *env) {
			e.fetcher = NewFetcher(FetcherOptions{Timeout: time.Second, DialContext: dialTo(e.server.Listener.Addr().String(), host)})
			e.restart()
		}, KindWebPKIInvalid},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.setTXT("example.test", `"v=STSv1; id=one"`)
			e.handler.set(host, testPolicy)
			wantPolicy(t, e.get("example.test"), ModeEnforce, "one")

			e.setTXT("example.test", `"v=STSv1; id=two"`)
			tt.setup(e)
			res := e.get("example.test")
			wantPolicy(t, res, ModeEnforce, "one")
			if !res.FromCache || res.Refreshed {
				t.Errorf("Result %+v", res)
			}
			wantKind(t, res.FetchError, tt.kind)
			// The cached policy is still the old one.
			ce, ok, err := e.cache.Get("example.test")
			if err != nil || !ok || ce.ID != "one" {
				t.Errorf("cache entry %+v, %v, %v", ce, ok, err)
			}
		})
	}
}

func TestSTS08_FetchBackoff(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.setStatus(http.StatusServiceUnavailable)
	e.handler.set(host, testPolicy)

	for range 3 {
		res := e.get("example.test")
		wantNoPolicy(t, res)
		wantKind(t, res.FetchError, KindFetchError)
	}
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches within the backoff, want 1", n)
	}
	// A new id is fetched at once.
	e.setTXT("example.test", `"v=STSv1; id=two"`)
	wantNoPolicy(t, e.get("example.test"))
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches after an id change, want 2", n)
	}
	// After the backoff, fetched again.
	e.handler.setStatus(0)
	e.clock.Advance(DefaultFetchBackoff)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "two")
	if n := e.handler.count(host); n != 3 {
		t.Errorf("%d fetches after the backoff, want 3", n)
	}
}

func TestSTS09_TXTGoneKeepsCachedPolicy(t *testing.T) {
	tests := []struct {
		name    string
		change  func(e *env)
		dnsFail bool
	}{
		{"TXT record removed", func(e *env) { e.setTXT("example.test") }, false},
		{"NXDOMAIN", func(e *env) { e.zone.Remove("_mta-sts.example.test.", dns.TypeANY) }, false},
		{"only a non-STS TXT record", func(e *env) { e.setTXT("example.test", `"v=spf1 -all"`) }, false},
		{"two v=STSv1 records", func(e *env) { e.setTXT("example.test", `"v=STSv1; id=one"`, `"v=STSv1; id=two"`) }, false},
		{"invalid TXT record", func(e *env) { e.setTXT("example.test", `"v=STSv1; id=not-valid"`) }, false},
		{"SERVFAIL", func(e *env) { e.zone.Fail("_mta-sts.example.test.", dns.TypeTXT, dns.RcodeServerFailure) }, true},
		{"REFUSED", func(e *env) { e.zone.Fail("_mta-sts.example.test.", dns.TypeTXT, dns.RcodeRefused) }, true},
		{"timeout", func(e *env) { e.zone.Drop("_mta-sts.example.test.", dns.TypeTXT) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.setTXT("example.test", `"v=STSv1; id=one"`)
			e.handler.set(host, testPolicy)
			wantPolicy(t, e.get("example.test"), ModeEnforce, "one")

			tt.change(e)
			e.clock.Advance(23 * time.Hour)
			res := e.get("example.test")
			wantPolicy(t, res, ModeEnforce, "one")
			if !res.FromCache || res.FetchError != nil || (res.DNSError != nil) != tt.dnsFail {
				t.Errorf("Result %+v", res)
			}
			if n := e.handler.count(host); n != 1 {
				t.Errorf("%d fetches, want 1", n)
			}
			// Still there after a restart and after maintenance.
			e.restart()
			e.mgr.maintain(context.Background())
			wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
			if list, _ := e.mgr.List(); len(list) != 1 {
				t.Errorf("List = %+v", list)
			}
		})
	}
}

func TestSTS10_NoPolicy(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(e *env)
		kind    string // FetchError kind, "" = none
		dnsFail bool
	}{
		{"no TXT record", func(e *env) {}, "", false},
		{"TXT lookup fails", func(e *env) {
			e.setTXT("example.test", `"v=STSv1; id=one"`)
			e.zone.Fail("_mta-sts.example.test.", dns.TypeTXT, dns.RcodeServerFailure)
		}, "", true},
		{"policy 404", func(e *env) { e.setTXT("example.test", `"v=STSv1; id=one"`) }, KindFetchError, false},
		{"invalid policy", func(e *env) {
			e.setTXT("example.test", `"v=STSv1; id=one"`)
			e.handler.set(host, "version: STSv1\nmode: enforce\n")
		}, KindPolicyInvalid, false},
		{"policy server unreachable", func(e *env) {
			e.setTXT("example.test", `"v=STSv1; id=one"`)
			e.server.Close()
		}, KindFetchError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.setup(e)
			res := e.get("example.test")
			wantNoPolicy(t, res)
			if tt.kind == "" && res.FetchError != nil {
				t.Errorf("FetchError %v", res.FetchError)
			}
			if tt.kind != "" {
				wantKind(t, res.FetchError, tt.kind)
			}
			if (res.DNSError != nil) != tt.dnsFail {
				t.Errorf("DNSError %v", res.DNSError)
			}
			if list, _ := e.mgr.List(); len(list) != 0 {
				t.Errorf("List = %+v", list)
			}
		})
	}
}

func TestSTS11_ProactiveRefresh(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 7*86400, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	start := e.clock.Now()

	// 5 days in: 2 days left, more than RefreshBefore (24h): no refresh.
	e.clock.Advance(5 * 24 * time.Hour)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one") // in use
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// 6 days and 1 hour in: refreshed although the id is unchanged.
	e.clock.Advance(25 * time.Hour)
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 2 {
		t.Fatalf("%d fetches, want 2 (proactive refresh)", n)
	}
	ce, ok, err := e.cache.Get("example.test")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	now := e.clock.Now()
	if !ce.Fetched.Equal(now) || !ce.Expires.Equal(now.Add(7*24*time.Hour)) || ce.ID != "one" {
		t.Errorf("refreshed entry %+v", ce)
	}
	if !ce.LastUsed.Equal(start.Add(5 * 24 * time.Hour)) {
		t.Errorf("LastUsed %v changed by the refresh", ce.LastUsed)
	}

	// A refresh picks up a changed policy and id.
	e.setTXT("example.test", `"v=STSv1; id=two"`)
	e.handler.set(host, policyWith(ModeTesting, 7*86400, "mx.example.test"))
	e.clock.Advance(6*24*time.Hour + time.Hour)
	e.mgr.maintain(context.Background())
	ce, _, _ = e.cache.Get("example.test")
	if ce.ID != "two" || ce.Policy.Mode != ModeTesting {
		t.Errorf("entry after refresh %+v", ce)
	}

	// A failed refresh keeps the policy.
	before := ce
	e.handler.setStatus(http.StatusInternalServerError)
	e.clock.Advance(6*24*time.Hour + time.Hour)
	e.mgr.maintain(context.Background())
	ce, _, _ = e.cache.Get("example.test")
	if ce.ID != "two" || !ce.Expires.Equal(before.Expires) {
		t.Errorf("entry after failed refresh %+v", ce)
	}
	wantPolicy(t, e.get("example.test"), ModeTesting, "two")
}

func TestSTS11_RefreshNeedsTXT(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 86400, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	e.setTXT("example.test")
	e.clock.Advance(23 * time.Hour)
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches, want 1: no refresh without a TXT record", n)
	}
	e.zone.Fail("_mta-sts.example.test.", dns.TypeTXT, dns.RcodeServerFailure)
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches, want 1: no refresh when the TXT lookup fails", n)
	}
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
}

func TestSTS11_ShortMaxAgeRefreshedAtHalfLife(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 7200, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	e.clock.Advance(59 * time.Minute)
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches before half-life, want 1", n)
	}
	e.clock.Advance(2 * time.Minute)
	e.mgr.maintain(context.Background())
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches after half-life, want 2", n)
	}
}

func TestSTS11_Prune(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.setTXT("other.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 86400, "mx.example.test"))
	e.handler.set(otherHost, policyWith(ModeEnforce, 31557600, "mx.other.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	wantPolicy(t, e.get("other.test"), ModeEnforce, "one")

	// 29 days later: example.test expired but used recently enough.
	e.clock.Advance(29 * 24 * time.Hour)
	e.mgr.maintain(context.Background())
	if list, _ := e.mgr.List(); len(list) != 2 {
		t.Fatalf("List = %+v", list)
	}
	// 31 days: example.test expired and unused for 30 days: pruned.
	// other.test unused as long but unexpired: kept, and not refreshed.
	e.clock.Advance(2 * 24 * time.Hour)
	e.mgr.maintain(context.Background())
	list, err := e.mgr.List()
	if err != nil || len(list) != 1 || list[0].Domain != "other.test" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if n := e.handler.count(otherHost); n != 1 {
		t.Errorf("unused policy refreshed: %d fetches", n)
	}
	// Still in force when asked for.
	e.setTXT("other.test")
	wantPolicy(t, e.get("other.test"), ModeEnforce, "one")
}

func TestSTS11_RefreshLoop(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, policyWith(ModeEnforce, 86400, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	e.clock.Advance(20 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.mgr.RefreshLoop(ctx, 10*time.Millisecond)
		close(done)
	}()
	waitFor(t, func() bool { return e.handler.count(host) >= 2 })
	cancel()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("RefreshLoop did not return after cancel")
	}
	if n := e.handler.count(host); n != 2 {
		t.Errorf("%d fetches, want 2 (refreshed once, then fresh)", n)
	}
}

func TestSTS13_Recheck(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	ctx := context.Background()

	// Unchanged id: the cached policy, no fetch.
	res, err := e.mgr.Recheck(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	wantPolicy(t, res, ModeEnforce, "one")
	if !res.FromCache || e.handler.count(host) != 1 {
		t.Errorf("Recheck with unchanged id: %+v, %d fetches", res, e.handler.count(host))
	}

	// The domain moved to testing; a first fetch failed, so Get keeps
	// the enforce policy within the backoff. Before bouncing, Recheck
	// fetches anyway and finds the testing policy.
	e.setTXT("example.test", `"v=STSv1; id=two"`)
	e.handler.setStatus(http.StatusServiceUnavailable)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	e.handler.setStatus(0)
	e.handler.set(host, policyWith(ModeTesting, 86400, "mx.example.test"))
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one") // backoff
	res, err = e.mgr.Recheck(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	wantPolicy(t, res, ModeTesting, "two")
	if !res.Refreshed {
		t.Errorf("Recheck: %+v", res)
	}
	wantPolicy(t, e.get("example.test"), ModeTesting, "two")
	if _, err := e.mgr.Recheck(ctx, "-bad-"); err == nil {
		t.Error("Recheck accepted an invalid domain")
	}
}

func TestSTS15_ModeNoneReplacesPolicy(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")

	e.setTXT("example.test", `"v=STSv1; id=two"`)
	e.handler.set(host, policyWith(ModeNone, 86400, ""))
	res := e.get("example.test")
	wantPolicy(t, res, ModeNone, "two")
	if res.Policy.MatchMX("mx.example.test") {
		t.Error("mode none policy matches an MX")
	}
	// The none policy is what is cached, across restarts, even when the
	// TXT record then disappears.
	e.setTXT("example.test")
	e.restart()
	wantPolicy(t, e.get("example.test"), ModeNone, "two")
	list, err := e.mgr.List()
	if err != nil || len(list) != 1 || list[0].Policy.Mode != ModeNone {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestSTS17_GetCoalesced(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	release := e.handler.setBlock()
	e.dns.ResetQueries()

	const n = 10
	var wg sync.WaitGroup
	results := make(chan Result, n)
	for range n {
		wg.Go(func() {
			res, err := e.mgr.Get(context.Background(), "example.test")
			if err != nil {
				t.Error(err)
			}
			results <- res
		})
	}
	waitFor(t, func() bool { return e.mgr.flight.waiting("example.test") == n })
	close(release)
	wg.Wait()
	close(results)
	for res := range results {
		wantPolicy(t, res, ModeEnforce, "one")
	}
	if hits := e.handler.count(host); hits != 1 {
		t.Errorf("%d concurrent Gets made %d fetches, want 1", n, hits)
	}
	if q := e.dns.QueryCount("_mta-sts.example.test.", dns.TypeTXT); q != 1 {
		t.Errorf("%d concurrent Gets made %d TXT queries, want 1", n, q)
	}
}

func TestManagerFlush(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.setTXT("other.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	e.handler.set(otherHost, policyWith(ModeTesting, 600, "mx.other.test"))
	e.get("example.test")
	e.get("other.test")

	if err := e.mgr.Flush("EXAMPLE.test."); err != nil {
		t.Fatal(err)
	}
	list, _ := e.mgr.List()
	if len(list) != 1 || list[0].Domain != "other.test" {
		t.Fatalf("List after Flush(example.test) = %+v", list)
	}
	res := e.get("example.test")
	if !res.Refreshed || e.handler.count(host) != 2 {
		t.Errorf("Get after Flush did not refetch: %+v", res)
	}
	if err := e.mgr.Flush(""); err != nil {
		t.Fatal(err)
	}
	if list, _ := e.mgr.List(); len(list) != 0 {
		t.Fatalf("List after Flush(\"\") = %+v", list)
	}
	if err := e.mgr.Flush("bad domain"); err == nil {
		t.Error("Flush accepted an invalid domain")
	}
}

func TestManagerCorruptCacheRecord(t *testing.T) {
	e := newEnv(t)
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	err := e.cache.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).Put([]byte("example.test"), []byte(`{"v":1,"mode":"bogus"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	wantPolicy(t, e.get("example.test"), ModeEnforce, "one")
	if n := e.handler.count(host); n != 1 {
		t.Errorf("%d fetches, want 1 (the corrupt record replaced)", n)
	}
	// Maintenance removes corrupt records.
	err = e.cache.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).Put([]byte("broken.test"), []byte(`garbage`))
	})
	if err != nil {
		t.Fatal(err)
	}
	e.mgr.maintain(context.Background())
	if ds, _ := e.cache.listDomains(); len(ds) != 1 || ds[0] != "example.test" {
		t.Errorf("domains after maintenance: %q", ds)
	}
}

func TestManagerErrors(t *testing.T) {
	e := newEnv(t)
	if _, err := e.mgr.Get(context.Background(), "not a domain"); err == nil {
		t.Error("Get accepted an invalid domain")
	}
	if _, err := NewManager(ManagerOptions{}); err == nil {
		t.Error("NewManager without dependencies succeeded")
	}
	// A caller whose context ends returns; the shared work goes on.
	e.setTXT("example.test", `"v=STSv1; id=one"`)
	e.handler.set(host, testPolicy)
	release := e.handler.setBlock()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.mgr.Get(ctx, "example.test")
		errc <- err
	}()
	// Give up only once the fetch is under way (the server has the request).
	waitFor(t, func() bool { return e.handler.count(host) > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Get with an ended context: %v", err)
	}
	close(release)
	// The flight stores the policy and then ends; a Get before it ends
	// would join it and see its result rather than the cache's.
	waitFor(t, func() bool { return e.mgr.flight.waiting("example.test") == 0 })
	if _, ok, _ := e.cache.Get("example.test"); !ok {
		t.Fatal("policy fetched for the abandoned caller not stored")
	}
	if res := e.get("example.test"); !res.FromCache {
		t.Errorf("policy fetched for the abandoned caller not cached: %+v", res)
	}
}

package mtasts

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustParse(t *testing.T, body string) *Policy {
	t.Helper()
	p, err := Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSTS07_CacheSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mta-sts.db")
	c, err := OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	fetched := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := mustParse(t, testPolicy)
	in := CacheEntry{Domain: "Example.Test.", ID: "abc", Policy: p, Fetched: fetched, Expires: fetched.Add(p.MaxAge), LastUsed: fetched}
	if err := c.Put(in); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, ok, err := c.Get("example.test")
	if err != nil || !ok {
		t.Fatalf("Get after restart: %v, %v", ok, err)
	}
	if got.Domain != "example.test" || got.ID != "abc" || !got.Fetched.Equal(fetched) ||
		!got.Expires.Equal(fetched.Add(24*time.Hour)) || !got.LastUsed.Equal(fetched) {
		t.Errorf("entry %+v", got)
	}
	if got.Policy.Mode != p.Mode || got.Policy.MaxAge != p.MaxAge || !slices.Equal(got.Policy.MX, p.MX) ||
		string(got.Policy.Raw) != testPolicy {
		t.Errorf("policy %+v", got.Policy)
	}
	if !got.Policy.MatchMX("a.mx.example.test") {
		t.Error("restored policy does not match")
	}
	if got.Expired(fetched.Add(24*time.Hour-time.Second)) || !got.Expired(fetched.Add(24*time.Hour)) {
		t.Error("Expired is wrong around Expires")
	}
}

func TestCacheListDelete(t *testing.T) {
	c, err := OpenCache(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	for _, d := range []string{"b.test", "a.test", "c.test"} {
		p := mustParse(t, testPolicy)
		if err := c.Put(CacheEntry{Domain: d, ID: "x", Policy: p, Fetched: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	domains := func() []string {
		l, err := c.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range l {
			out = append(out, e.Domain)
		}
		return out
	}
	if got := domains(); !slices.Equal(got, []string{"a.test", "b.test", "c.test"}) {
		t.Errorf("List = %q", got)
	}
	if err := c.Delete("B.test."); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("missing.test"); err != nil {
		t.Errorf("Delete of a missing domain: %v", err)
	}
	if got := domains(); !slices.Equal(got, []string{"a.test", "c.test"}) {
		t.Errorf("List after Delete = %q", got)
	}
	if err := c.Delete(""); err != nil {
		t.Fatal(err)
	}
	if got := domains(); len(got) != 0 {
		t.Errorf("List after Delete(\"\") = %q", got)
	}
	if err := c.Put(CacheEntry{Domain: "a.test", ID: "x", Policy: &Policy{Mode: "bogus"}}); err == nil {
		t.Error("Put accepted an invalid policy")
	}
	if err := c.Put(CacheEntry{Domain: "a.test", ID: "x"}); err == nil {
		t.Error("Put accepted an entry without a policy")
	}
}

func TestCacheCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	c, err := OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).Put([]byte("example.test"), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get("example.test"); err == nil {
		t.Error("corrupt record decoded")
	}
	if l, err := c.List(); err != nil || len(l) != 0 {
		t.Errorf("List = %v, %v", l, err)
	}
	c.Close()
}

func TestCacheLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	c, err := OpenCache(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// bbolt's file lock is per open file description, so a second open
	// in the same process times out like another process would.
	if c2, err := OpenCache(path); err == nil {
		c2.Close()
		t.Fatal("second OpenCache of a locked file succeeded")
	}
}

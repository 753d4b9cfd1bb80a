package mtasts

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CacheEntry is a cached policy of one domain.
type CacheEntry struct {
	// Domain is the policy domain, lowercase without a trailing dot.
	Domain string
	// ID is the TXT record id the policy was fetched under.
	ID string
	// Policy is the policy, with Raw holding the file as fetched.
	Policy *Policy
	// Fetched is when the policy was fetched.
	Fetched time.Time
	// Expires is Fetched + Policy.MaxAge: from then on the policy is no
	// longer in force (RFC 8461 §5.1).
	Expires time.Time
	// LastUsed is when a delivery last asked for the policy, kept with a
	// granularity of about an hour.
	LastUsed time.Time
}

// Expired reports whether the entry's max_age has run out at now.
func (e CacheEntry) Expired(now time.Time) bool { return !now.Before(e.Expires) }

// ErrCorruptEntry is wrapped by Cache.Get for a stored record that cannot
// be decoded; the Manager treats such a record as absent.
var ErrCorruptEntry = errors.New("corrupt MTA-STS cache record")

var bucketPolicies = []byte("mta-sts-policies")

// storedVersion is the format version of stored records.
const storedVersion = 1

// storedEntry is the JSON form of a CacheEntry in the database.
type storedEntry struct {
	Version  int       `json:"v"`
	Domain   string    `json:"domain"`
	ID       string    `json:"id"`
	Mode     string    `json:"mode"`
	MaxAge   int64     `json:"max_age"` // seconds
	MX       []string  `json:"mx,omitempty"`
	Raw      []byte    `json:"raw"`
	Fetched  time.Time `json:"fetched"`
	Expires  time.Time `json:"expires"`
	LastUsed time.Time `json:"last_used"`
}

// Cache is the persistent MTA-STS policy cache (checklist STS07), a bbolt
// database of its own. It is safe for concurrent use; only one process can
// open the file at a time.
type Cache struct {
	db *bolt.DB
}

// OpenCache opens or creates the cache database at path (mode 0600). It
// fails after a second when another process holds the file.
func OpenCache(path string) (*Cache, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open MTA-STS policy cache %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketPolicies)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open MTA-STS policy cache %s: %w", path, err)
	}
	return &Cache{db: db}, nil
}

// Close closes the database.
func (c *Cache) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close MTA-STS policy cache: %w", err)
	}
	return nil
}

// Get returns the entry of domain, expired or not; ok is false when there is
// none.
func (c *Cache) Get(domain string) (e CacheEntry, ok bool, err error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return CacheEntry{}, false, fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	err = c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPolicies).Get([]byte(d))
		if v == nil {
			return nil
		}
		e, err = decodeEntry(v)
		if err != nil {
			return fmt.Errorf("MTA-STS policy cache record of %s: %w", d, err)
		}
		ok = true
		return nil
	})
	return e, ok, err
}

// Put stores e, replacing the domain's previous entry.
func (c *Cache) Put(e CacheEntry) error {
	d, err := normalizeDomain(e.Domain)
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	e.Domain = d
	v, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: store %s: %w", d, err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).Put([]byte(d), v)
	})
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: store %s: %w", d, err)
	}
	return nil
}

// replace stores e like Put, but keeps the stored LastUsed when it is later
// than e's (a concurrent delivery may have used the policy meanwhile).
func (c *Cache) replace(e CacheEntry) error {
	v, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: store %s: %w", e.Domain, err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPolicies)
		if old := b.Get([]byte(e.Domain)); old != nil {
			if oe, err := decodeEntry(old); err == nil && oe.LastUsed.After(e.LastUsed) {
				e.LastUsed = oe.LastUsed
				if v, err = encodeEntry(e); err != nil {
					return err
				}
			}
		}
		return b.Put([]byte(e.Domain), v)
	})
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: store %s: %w", e.Domain, err)
	}
	return nil
}

// touch sets the LastUsed time of domain's entry to t when that is later
// than the stored one and the entry still has the given id.
func (c *Cache) touch(domain, id string, t time.Time) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPolicies)
		v := b.Get([]byte(domain))
		if v == nil {
			return nil
		}
		e, err := decodeEntry(v)
		if err != nil || e.ID != id || !t.After(e.LastUsed) {
			return nil
		}
		e.LastUsed = t
		nv, err := encodeEntry(e)
		if err != nil {
			return err
		}
		return b.Put([]byte(domain), nv)
	})
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: mark %s used: %w", domain, err)
	}
	return nil
}

// Delete removes domain's entry; a domain without one is not an error.
// An empty domain removes every entry.
func (c *Cache) Delete(domain string) error {
	if domain == "" {
		err := c.db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(bucketPolicies); err != nil {
				return err
			}
			_, err := tx.CreateBucket(bucketPolicies)
			return err
		})
		if err != nil {
			return fmt.Errorf("MTA-STS policy cache: delete all: %w", err)
		}
		return nil
	}
	d, err := normalizeDomain(domain)
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: %w", err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).Delete([]byte(d))
	})
	if err != nil {
		return fmt.Errorf("MTA-STS policy cache: delete %s: %w", d, err)
	}
	return nil
}

// deleteIf removes domain's entry when remove returns true for it, or when
// the record cannot be decoded. The check and the removal happen in one
// transaction, so that an entry replaced in between is not removed.
func (c *Cache) deleteIf(domain string, remove func(CacheEntry) bool) (bool, error) {
	removed := false
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPolicies)
		v := b.Get([]byte(domain))
		if v == nil {
			return nil
		}
		e, err := decodeEntry(v)
		if err == nil && !remove(e) {
			return nil
		}
		removed = true
		return b.Delete([]byte(domain))
	})
	if err != nil {
		return false, fmt.Errorf("MTA-STS policy cache: delete %s: %w", domain, err)
	}
	return removed, nil
}

// List returns every entry, ordered by domain. Records that cannot be
// decoded are left out.
func (c *Cache) List() ([]CacheEntry, error) {
	var out []CacheEntry
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).ForEach(func(_, v []byte) error {
			if e, err := decodeEntry(v); err == nil {
				out = append(out, e)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("MTA-STS policy cache: list: %w", err)
	}
	slices.SortFunc(out, func(a, b CacheEntry) int {
		switch {
		case a.Domain < b.Domain:
			return -1
		case a.Domain > b.Domain:
			return 1
		}
		return 0
	})
	return out, nil
}

// listDomains returns the keys of every record, decodable or not.
func (c *Cache) listDomains() ([]string, error) {
	var out []string
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("MTA-STS policy cache: list: %w", err)
	}
	return out, nil
}

func encodeEntry(e CacheEntry) ([]byte, error) {
	if e.Policy == nil {
		return nil, errors.New("entry without a policy")
	}
	if err := e.Policy.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(storedEntry{
		Version:  storedVersion,
		Domain:   e.Domain,
		ID:       e.ID,
		Mode:     string(e.Policy.Mode),
		MaxAge:   int64(e.Policy.MaxAge / time.Second),
		MX:       e.Policy.MX,
		Raw:      e.Policy.Raw,
		Fetched:  e.Fetched,
		Expires:  e.Expires,
		LastUsed: e.LastUsed,
	})
}

func decodeEntry(v []byte) (CacheEntry, error) {
	var s storedEntry
	if err := json.Unmarshal(v, &s); err != nil {
		return CacheEntry{}, fmt.Errorf("%w: %w", ErrCorruptEntry, err)
	}
	if s.Version != storedVersion {
		return CacheEntry{}, fmt.Errorf("%w: format version %d", ErrCorruptEntry, s.Version)
	}
	p := &Policy{
		Mode:   Mode(s.Mode),
		MaxAge: time.Duration(s.MaxAge) * time.Second,
		MX:     s.MX,
		Raw:    s.Raw,
	}
	if err := p.validate(); err != nil {
		return CacheEntry{}, fmt.Errorf("%w: %w", ErrCorruptEntry, err)
	}
	return CacheEntry{
		Domain:   s.Domain,
		ID:       s.ID,
		Policy:   p,
		Fetched:  s.Fetched,
		Expires:  s.Expires,
		LastUsed: s.LastUsed,
	}, nil
}

// validate checks the invariants Parse guarantees (checklist STS05).
func (p *Policy) validate() error {
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	default:
		return fmt.Errorf("mode %q", p.Mode)
	}
	if p.MaxAge < 0 || p.MaxAge > MaxMaxAge || p.MaxAge%time.Second != 0 {
		return fmt.Errorf("max_age %v", p.MaxAge)
	}
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return fmt.Errorf("mode %s without mx patterns", p.Mode)
	}
	for _, mx := range p.MX {
		if n, err := normalizePattern(mx); err != nil || n != mx {
			return fmt.Errorf("mx pattern %q", mx)
		}
	}
	return nil
}

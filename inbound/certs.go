package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CertPair names a PEM certificate chain and its private key.
type CertPair struct {
	// CertFile is the PEM certificate chain, leaf first.
	CertFile string
	// KeyFile is the PEM private key of the leaf.
	KeyFile string
}

// fileStamp identifies the version of a certificate pair's files on disk.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// loadedPair is one certificate pair as last loaded.
type loadedPair struct {
	files CertPair
	stamp fileStamp
	cert  *tls.Certificate // Leaf is set
}

// certIndex is an immutable snapshot of the loaded certificates, indexed by
// the DNS names of their leaves (wildcards as "*.example.org").
type certIndex struct {
	pairs  []loadedPair
	byName map[string]*tls.Certificate
}

func newCertIndex(pairs []loadedPair) *certIndex {
	idx := &certIndex{pairs: pairs, byName: make(map[string]*tls.Certificate)}
	for _, p := range pairs {
		for _, name := range leafNames(p.cert.Leaf) {
			if _, dup := idx.byName[name]; !dup { // the first pair wins
				idx.byName[name] = p.cert
			}
		}
	}
	return idx
}

// leafNames returns the lower-case DNS names a leaf certificate is valid
// for: its DNS SANs, or its common name when it has none.
func leafNames(leaf *x509.Certificate) []string {
	names := leaf.DNSNames
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, normalizeDomain(n))
	}
	return out
}

// match returns the certificate whose leaf is valid for the normalized
// server name: an exact name first, then a wildcard for its parent.
func (idx *certIndex) match(name string) (*tls.Certificate, bool) {
	if name == "" {
		return nil, false
	}
	if c, ok := idx.byName[name]; ok {
		return c, true
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := idx.byName["*"+name[i:]]; ok {
			return c, true
		}
	}
	return nil, false
}

// certStore serves certificates from PEM files chosen by SNI, and reloads
// the files when they change. Established connections keep the certificate
// they were made with; only new handshakes see a reloaded one.
type certStore struct {
	files    []CertPair
	log      *slog.Logger
	interval time.Duration // how often file changes are looked for

	mu        sync.Mutex // serializes reloads
	failed    map[CertPair]fileStamp
	cur       atomic.Pointer[certIndex]
	nextCheck atomic.Int64 // unix nanoseconds
}

// newCertStore loads every pair; any failure is an error.
func newCertStore(files []CertPair, interval time.Duration, log *slog.Logger) (*certStore, error) {
	s := &certStore{
		files:    files,
		log:      log,
		interval: interval,
		failed:   make(map[CertPair]fileStamp),
	}
	pairs := make([]loadedPair, len(files))
	for i, f := range files {
		lp, err := loadPair(f)
		if err != nil {
			return nil, err
		}
		pairs[i] = lp
		s.logLoaded(lp, "certificate loaded")
	}
	s.cur.Store(newCertIndex(pairs))
	s.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return s, nil
}

func stampOf(f CertPair) (fileStamp, error) {
	cs, err := os.Stat(f.CertFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("certificate file: %w", err)
	}
	ks, err := os.Stat(f.KeyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("key file: %w", err)
	}
	return fileStamp{certMod: cs.ModTime(), keyMod: ks.ModTime(), certSize: cs.Size(), keySize: ks.Size()}, nil
}

// loadPair reads and parses a pair. The stamp is taken before reading, so a
// change during the read is seen at the next check.
func loadPair(f CertPair) (loadedPair, error) {
	st, err := stampOf(f)
	if err != nil {
		return loadedPair{}, fmt.Errorf("certificate %s / key %s: %w", f.CertFile, f.KeyFile, err)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return loadedPair{}, fmt.Errorf("certificate %s / key %s: %w", f.CertFile, f.KeyFile, err)
	}
	if cert.Leaf == nil { // set by LoadX509KeyPair since Go 1.23
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return loadedPair{}, fmt.Errorf("certificate %s: %w", f.CertFile, err)
		}
	}
	return loadedPair{files: f, stamp: st, cert: &cert}, nil
}

func (s *certStore) logLoaded(lp loadedPair, msg string) {
	leaf := lp.cert.Leaf
	level := slog.LevelInfo
	if time.Now().After(leaf.NotAfter) {
		level, msg = slog.LevelWarn, msg+" but it has expired"
	}
	s.log.Log(context.Background(), level, msg, "cert_file", lp.files.CertFile,
		"names", strings.Join(leafNames(leaf), ","), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
}

// reload re-reads the pairs whose files changed (all of them when force is
// set). A pair that fails to load keeps its previous certificate; the
// failures are returned joined.
func (s *certStore) reload(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	pairs := append([]loadedPair(nil), old.pairs...)
	changed := false
	var errs []error
	for i, p := range pairs {
		if !force {
			st, err := stampOf(p.files)
			if err == nil && st == p.stamp {
				continue
			}
			if err == nil && s.failed[p.files] == st {
				continue // already reported; wait for the next change
			}
		}
		lp, err := loadPair(p.files)
		if err != nil {
			errs = append(errs, err)
			if st, serr := stampOf(p.files); serr == nil {
				s.failed[p.files] = st
			}
			s.log.Warn("certificate not reloaded; the previous one stays in use", "err", err)
			continue
		}
		delete(s.failed, p.files)
		if lp.stamp != p.stamp || !equalChains(lp.cert, p.cert) {
			s.logLoaded(lp, "certificate reloaded")
		}
		pairs[i] = lp
		changed = true
	}
	if changed {
		s.cur.Store(newCertIndex(pairs))
	}
	return errors.Join(errs...)
}

func equalChains(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if string(a.Certificate[i]) != string(b.Certificate[i]) {
			return false
		}
	}
	return true
}

// maybeReload looks for changed files when the check interval has passed.
// One handshake does the check; the others go on with the current index.
func (s *certStore) maybeReload() {
	now := time.Now().UnixNano()
	next := s.nextCheck.Load()
	if now < next || !s.nextCheck.CompareAndSwap(next, now+int64(s.interval)) {
		return
	}
	_ = s.reload(false) // failures are logged by reload
}

// lookup returns the certificate for a normalized server name: the pair
// valid for it, else the first pair. exact reports whether a pair matched.
func (s *certStore) lookup(name string) (cert *tls.Certificate, exact bool) {
	s.maybeReload()
	idx := s.cur.Load()
	if c, ok := idx.match(name); ok {
		return c, true
	}
	return idx.pairs[0].cert, false
}

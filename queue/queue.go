// Package queue is the relay's durable message queue.
//
// Message bodies live as files in a spool directory; envelopes,
// per-recipient state and the retry schedule live in a bbolt database. A
// message is durable (and may be acknowledged with 250) once its body file,
// the spool directory entry and its database record are all fsynced;
// concurrent writers share fsyncs of the directory and of the database
// (group commit through bbolt's Batch).
//
// The queue knows nothing about SMTP or DNS: the delivery engine leases due
// recipients, delivers them, and records the outcome.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned for a message ID the queue does not hold.
var ErrNotFound = errors.New("message not found")

var (
	bucketMessages = []byte("messages")
	bucketSchedule = []byte("schedule")
)

// Options tune a queue. The zero value is usable.
type Options struct {
	// Logger receives recovery and error reports; nil discards them.
	Logger *slog.Logger
	// MaxBatchDelay bounds how long a commit waits for others to share its
	// fsync. Zero means 1ms.
	MaxBatchDelay time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Queue is a durable message queue rooted at one directory. It is safe for
// concurrent use.
type Queue struct {
	dir      string
	spoolDir string
	db       *bolt.DB
	log      *slog.Logger
	now      func() time.Time
	spool    *dirSyncer

	mu     sync.Mutex
	leased map[string]bool // message IDs currently leased by a delivery worker

	notify chan struct{}
}

// Open opens (creating if needed) the queue in dir: dir/queue.db and
// dir/spool/. Only one process may have a queue open; a second Open fails
// after a short wait instead of blocking forever. Open removes spool files
// that have no record (left by a crash before their commit) and records
// whose body is missing.
func Open(dir string, opts Options) (*Queue, error) {
	spoolDir := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	dbPath := filepath.Join(dir, "queue.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: locked by another process (is the relay already running?)", dbPath)
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	db.MaxBatchDelay = opts.MaxBatchDelay
	if db.MaxBatchDelay <= 0 {
		db.MaxBatchDelay = time.Millisecond
	}
	d, err := os.Open(spoolDir)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool directory: %w", err)
	}
	q := &Queue{
		dir:      dir,
		spoolDir: spoolDir,
		db:       db,
		log:      opts.Logger,
		now:      opts.Now,
		spool:    newDirSyncer(d),
		leased:   map[string]bool{},
		notify:   make(chan struct{}, 1),
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	if err := q.recover(); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Close closes the database. Writers still open are not committed.
func (q *Queue) Close() error {
	err := q.db.Close()
	if cerr := q.spool.close(); err == nil {
		err = cerr
	}
	return err
}

// Notify returns a channel that receives a value whenever new work may have
// become due (a new message, a release, a retry). Sends never block; the
// scheduler should also poll at its own interval.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

func (q *Queue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// recover makes the database and spool consistent after a crash: spool
// files without a record are removed (the message was never acknowledged),
// records without a body are dropped with an error log, and the schedule
// index is rebuilt from the records.
func (q *Queue) recover() error {
	entries, err := os.ReadDir(q.spoolDir)
	if err != nil {
		return fmt.Errorf("read spool directory: %w", err)
	}
	files := make(map[string]bool, len(entries))
	for _, e := range entries {
		files[e.Name()] = true
	}
	var orphans, missing int
	err = q.db.Update(func(tx *bolt.Tx) error {
		msgs, err := tx.CreateBucketIfNotExists(bucketMessages)
		if err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketSchedule); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		sched, err := tx.CreateBucket(bucketSchedule)
		if err != nil {
			return err
		}
		var drop [][]byte
		err = msgs.ForEach(func(k, v []byte) error {
			id := string(k)
			if !files[id] {
				drop = append(drop, k)
				return nil
			}
			delete(files, id)
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode message %s: %w", id, err)
			}
			if due, ok := m.nextDue(); ok {
				return sched.Put(scheduleKey(due, id), nil)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			q.log.Error("queue record has no spool file; dropping it", "queue_id", string(k))
			missing++
			if err := msgs.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover queue: %w", err)
	}
	for name := range files {
		if err := os.Remove(filepath.Join(q.spoolDir, name)); err != nil {
			return fmt.Errorf("remove orphaned spool file: %w", err)
		}
		orphans++
	}
	if orphans > 0 || missing > 0 {
		q.log.Info("queue recovered", "orphaned_spool_files_removed", orphans, "records_without_body", missing)
	}
	return nil
}

// idEncoding is base32 with the "extended hex" alphabet, which sorts like
// the bytes it encodes, lower-cased for readability.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns a new message ID: 6 bytes of milliseconds since the epoch
// and 4 random bytes, so IDs sort by arrival time.
func newID(now time.Time) string {
	var b [10]byte
	ms := uint64(now.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	if _, err := rand.Read(b[6:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return idEncoding.EncodeToString(b[:])
}

// validID reports whether id has the shape of a message ID, so that IDs
// from the admin API can never name a path outside the spool.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

func scheduleKey(due time.Time, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(due.UnixNano()))
	copy(k[8:], id)
	return k
}

func (q *Queue) bodyPath(id string) string { return filepath.Join(q.spoolDir, id) }

// Writer receives the body of one new message. Call Commit to make it
// durable and queued, or Abort to discard it.
type Writer struct {
	q    *Queue
	id   string
	f    *os.File
	size int64
	done bool
}

// Create starts a new message. The body is written to the spool as it
// arrives.
func (q *Queue) Create() (*Writer, error) {
	id := newID(q.now())
	f, err := os.OpenFile(q.bodyPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create spool file: %w", err)
	}
	return &Writer{q: q, id: id, f: f}, nil
}

// ID returns the ID the message will have once committed.
func (w *Writer) ID() string { return w.id }

// Size returns the number of body bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Write appends to the body.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write spool file %s: %w", w.id, err)
	}
	return n, nil
}

// Abort discards the message. It is safe to call after Commit (it then
// does nothing), so callers may defer it.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.q.bodyPath(w.id))
}

// Commit makes the message durable: it fsyncs the body file, the spool
// directory entry and then the queue record (RFC 5321 §6.1: once the
// server has accepted responsibility, it must not lose the message). Only
// when Commit returns nil may the message be acknowledged. m's ID, Size,
// ReceivedAt (if zero) and recipient states are filled in: recipients
// given as StateHeld stay held, all others are queued, due now.
func (w *Writer) Commit(ctx context.Context, m *Message) error {
	if w.done {
		return errors.New("commit: writer already finished")
	}
	if len(m.Recipients) == 0 {
		w.Abort()
		return errors.New("commit: message has no recipients")
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync spool file %s: %w", w.id, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close spool file %s: %w", w.id, err)
	}
	if err := w.q.spool.sync(); err != nil {
		return fmt.Errorf("fsync spool directory: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := w.q.now()
	m.ID = w.id
	m.Size = w.size
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = now
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if r.State != StateHeld {
			r.State = StateQueued
		}
		r.NextAttempt = now
		r.UpdatedAt = now
	}
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode message %s: %w", w.id, err)
	}
	err = w.q.db.Batch(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMessages).Put([]byte(w.id), val); err != nil {
			return err
		}
		if due, ok := m.nextDue(); ok {
			return tx.Bucket(bucketSchedule).Put(scheduleKey(due, w.id), nil)
		}
		return nil // held: not scheduled until released
	})
	if err != nil {
		return fmt.Errorf("store queue record %s: %w", w.id, err)
	}
	ok = true
	w.done = true
	w.q.wake()
	return nil
}

// Enqueue stores a complete message read from body, for messages the relay
// makes itself (delivery status notifications).
func (q *Queue) Enqueue(ctx context.Context, m *Message, body io.Reader) error {
	w, err := q.Create()
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := io.Copy(w, body); err != nil {
		return err
	}
	return w.Commit(ctx, m)
}

// get reads one record inside a transaction.
func get(tx *bolt.Tx, id string) (*Message, error) {
	v := tx.Bucket(bucketMessages).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	var m Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("decode message %s: %w", id, err)
	}
	return &m, nil
}

// put writes a record and moves its schedule entry from the old due time
// to the new one; a message with no pending recipient left is not
// scheduled.
func put(tx *bolt.Tx, old, m *Message) error {
	sched := tx.Bucket(bucketSchedule)
	if old != nil {
		if due, ok := old.nextDue(); ok {
			if err := sched.Delete(scheduleKey(due, old.ID)); err != nil {
				return err
			}
		}
	}
	if due, ok := m.nextDue(); ok {
		if err := sched.Put(scheduleKey(due, m.ID), nil); err != nil {
			return err
		}
	}
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode message %s: %w", m.ID, err)
	}
	return tx.Bucket(bucketMessages).Put([]byte(m.ID), val)
}

// remove deletes a record and its schedule entry; the caller removes the
// body file after the transaction committed.
func remove(tx *bolt.Tx, m *Message) error {
	if due, ok := m.nextDue(); ok {
		if err := tx.Bucket(bucketSchedule).Delete(scheduleKey(due, m.ID)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMessages).Delete([]byte(m.ID))
}

// Get returns the record of one message.
func (q *Queue) Get(id string) (*Message, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	var m *Message
	err := q.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = get(tx, id)
		return err
	})
	return m, err
}

// Body opens the spooled body of a message for reading.
func (q *Queue) Body(id string) (*os.File, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	f, err := os.Open(q.bodyPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return f, err
}

// Lease is a message handed to a delivery worker together with the indexes
// of its recipients that are due. While leased, the message is not handed
// out again. Leases live in memory only: after a crash every interrupted
// attempt is simply due again, since the records still say so.
type Lease struct {
	Message *Message
	Rcpts   []int
}

// Lease hands out up to max messages with recipients due at or before now,
// earliest first.
func (q *Queue) Lease(max int) ([]Lease, error) {
	now := q.now()
	var out []Lease
	var stale [][]byte
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSchedule).Cursor()
		limit := uint64(now.UnixNano())
		for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
			if binary.BigEndian.Uint64(k[:8]) > limit {
				break
			}
			id := string(k[8:])
			if q.leased[id] {
				continue
			}
			m, err := get(tx, id)
			if errors.Is(err, ErrNotFound) {
				// An entry whose message is gone must not stop the
				// schedule; it is removed below.
				stale = append(stale, append([]byte(nil), k...))
				continue
			}
			if err != nil {
				return err
			}
			var due []int
			for i, r := range m.Recipients {
				if r.State.Pending() && !r.NextAttempt.After(now) {
					due = append(due, i)
				}
			}
			if len(due) == 0 {
				continue
			}
			q.leased[id] = true
			out = append(out, Lease{Message: m, Rcpts: due})
		}
		return nil
	})
	if err != nil {
		for _, l := range out {
			delete(q.leased, l.Message.ID)
		}
		return nil, fmt.Errorf("lease due messages: %w", err)
	}
	if len(stale) > 0 {
		q.log.Warn("removing schedule entries of messages no longer queued", "entries", len(stale))
		err := q.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketSchedule)
			for _, k := range stale {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			q.log.Error("remove stale schedule entries", "err", err)
		}
	}
	return out, nil
}

// Unlease ends a lease without changing the record.
func (q *Queue) Unlease(id string) {
	q.mu.Lock()
	delete(q.leased, id)
	q.mu.Unlock()
}

// Leased reports whether a message is currently leased.
func (q *Queue) Leased(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.leased[id]
}

// Result is the outcome of a delivery attempt for one recipient.
type Result struct {
	Rcpt        int   // index into Message.Recipients
	State       State // StateDelivered, StateFailed or StateDeferred
	NextAttempt time.Time
	Error       string
}

// Update is what a delivery worker records after attempts on a message.
type Update struct {
	Attempts []Attempt
	Results  []Result
	// DelayWarned marks that a delay warning was queued for the message.
	DelayWarned bool
}

// Record commits the outcome of attempts on a message durably and returns
// the updated record. A message whose recipients are all delivered or
// failed is removed from the queue together with its body. A held
// recipient stays held when the result only defers it. Record does not end
// the lease; call Unlease when done with the message.
func (q *Queue) Record(id string, u Update) (*Message, error) {
	now := q.now()
	var m *Message
	var finished bool
	err := q.db.Update(func(tx *bolt.Tx) error {
		old, err := get(tx, id)
		if err != nil {
			return err
		}
		cp := *old
		cp.Recipients = append([]Recipient(nil), old.Recipients...)
		m = &cp
		for _, res := range u.Results {
			if res.Rcpt < 0 || res.Rcpt >= len(m.Recipients) {
				return fmt.Errorf("record %s: recipient index %d out of range", id, res.Rcpt)
			}
			r := &m.Recipients[res.Rcpt]
			if r.State.Final() {
				continue
			}
			r.Attempts++
			r.LastError = res.Error
			r.UpdatedAt = now
			if r.State == StateHeld && res.State == StateDeferred {
				continue
			}
			r.State = res.State
			r.NextAttempt = res.NextAttempt
			if res.State.Final() {
				r.NextAttempt = time.Time{}
			}
		}
		m.Attempts = append(append([]Attempt(nil), old.Attempts...), u.Attempts...)
		if n := len(m.Attempts); n > maxAttempts {
			m.Attempts = m.Attempts[n-maxAttempts:]
		}
		if u.DelayWarned {
			m.DelayWarned = true
		}
		if !m.Pending() {
			finished = true
			return remove(tx, old)
		}
		return put(tx, old, m)
	})
	if err != nil {
		return nil, err
	}
	if finished {
		q.removeBody(id)
	}
	return m, nil
}

func (q *Queue) removeBody(id string) {
	if err := os.Remove(q.bodyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Error("remove spool file", "queue_id", id, "err", err)
	}
}

// Filter selects messages for List. Empty fields match everything.
type Filter struct {
	State  State  // at least one recipient in this state
	Domain string // at least one recipient in this domain
	Limit  int    // at most this many; 0 means no limit
}

func (f Filter) match(m *Message) bool {
	if f.State == "" && f.Domain == "" {
		return true
	}
	for _, r := range m.Recipients {
		if (f.State == "" || r.State == f.State) && (f.Domain == "" || r.Domain() == strings.ToLower(f.Domain)) {
			return true
		}
	}
	return false
}

// List returns messages in arrival order.
func (q *Queue) List(f Filter) ([]*Message, error) {
	var out []*Message
	err := q.forEach(func(m *Message) bool {
		if f.match(m) {
			out = append(out, m)
		}
		return f.Limit <= 0 || len(out) < f.Limit
	})
	return out, err
}

// forEach calls fn for every message in ID (arrival) order until fn
// returns false.
func (q *Queue) forEach(fn func(*Message) bool) error {
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode message %s: %w", k, err)
			}
			if !fn(&m) {
				return errStop
			}
			return nil
		})
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

var errStop = errors.New("stop")

// Stats summarises the queue for `relayctl queue inspect`.
type Stats struct {
	Messages   int            `json:"messages"`
	Recipients map[State]int  `json:"recipients"`
	Domains    map[string]int `json:"domains"` // pending recipients per domain
	Oldest     time.Time      `json:"oldest,omitzero"`
	OldestID   string         `json:"oldest_id,omitempty"`
	NextRetry  time.Time      `json:"next_retry,omitzero"`
	Bytes      int64          `json:"bytes"`
}

// Stats counts messages and recipients by state and destination domain.
func (q *Queue) Stats() (Stats, error) {
	s := Stats{Recipients: map[State]int{}, Domains: map[string]int{}}
	err := q.forEach(func(m *Message) bool {
		s.Messages++
		s.Bytes += m.Size
		if s.Oldest.IsZero() || m.ReceivedAt.Before(s.Oldest) {
			s.Oldest, s.OldestID = m.ReceivedAt, m.ID
		}
		for _, r := range m.Recipients {
			s.Recipients[r.State]++
			if !r.State.Final() {
				s.Domains[r.Domain()]++
			}
			if r.State.Pending() && (s.NextRetry.IsZero() || r.NextAttempt.Before(s.NextRetry)) {
				s.NextRetry = r.NextAttempt
			}
		}
		return true
	})
	if err != nil {
		return Stats{}, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

// modify applies fn to the pending recipients of one message and stores the
// result. It returns how many recipients fn changed.
func (q *Queue) modify(id string, fn func(r *Recipient, now time.Time) bool) (int, error) {
	if !validID(id) {
		return 0, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	now := q.now()
	changed := 0
	err := q.db.Update(func(tx *bolt.Tx) error {
		old, err := get(tx, id)
		if err != nil {
			return err
		}
		m := *old
		m.Recipients = append([]Recipient(nil), old.Recipients...)
		changed = 0
		for i := range m.Recipients {
			if fn(&m.Recipients[i], now) {
				m.Recipients[i].UpdatedAt = now
				changed++
			}
		}
		if changed == 0 {
			return nil
		}
		return put(tx, old, &m)
	})
	if err == nil && changed > 0 {
		q.wake()
	}
	return changed, err
}

// Hold stops delivery of a message's pending recipients until Release. An
// attempt already in progress finishes.
func (q *Queue) Hold(id string) (int, error) {
	return q.modify(id, func(r *Recipient, _ time.Time) bool {
		if !r.State.Pending() {
			return false
		}
		r.State = StateHeld
		return true
	})
}

// Release makes held recipients of a message due now.
func (q *Queue) Release(id string) (int, error) {
	return q.modify(id, func(r *Recipient, now time.Time) bool {
		if r.State != StateHeld {
			return false
		}
		r.State, r.NextAttempt = StateQueued, now
		return true
	})
}

// Retry makes a message's deferred and queued recipients due now.
func (q *Queue) Retry(id string) (int, error) {
	return q.modify(id, func(r *Recipient, now time.Time) bool {
		if !r.State.Pending() || !r.NextAttempt.After(now) {
			return false
		}
		r.NextAttempt = now
		return true
	})
}

// RetryWhere makes pending recipients due now in every message that has a
// pending recipient matching domain ("" for all). It returns the number of
// messages changed.
func (q *Queue) RetryWhere(domain string) (int, error) {
	return q.RetryWhereProgress(domain, nil)
}

// RetryWhereProgress is RetryWhere that calls progress, if not nil, after
// each message it looked at with the number done so far and the number
// of matching messages (for progress reports on a large queue).
func (q *Queue) RetryWhereProgress(domain string, progress func(done, total int)) (int, error) {
	var ids []string
	err := q.forEach(func(m *Message) bool {
		if (Filter{Domain: domain}).match(m) {
			ids = append(ids, m.ID)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for i, id := range ids {
		c, err := q.Retry(id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		if c > 0 {
			n++
		}
		if progress != nil {
			progress(i+1, len(ids))
		}
	}
	return n, nil
}

// Delete removes a message and its body without notice to anyone.
func (q *Queue) Delete(id string) error {
	if !validID(id) {
		return fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	err := q.db.Update(func(tx *bolt.Tx) error {
		m, err := get(tx, id)
		if err != nil {
			return err
		}
		return remove(tx, m)
	})
	if err != nil {
		return err
	}
	q.removeBody(id)
	return nil
}

// dirSyncer fsyncs one directory on behalf of many concurrent callers: a
// caller waits for a sync that started after its own request, so one
// fsync covers every file created before it began.
type dirSyncer struct {
	dir *os.File

	mu       sync.Mutex
	cond     *sync.Cond
	requests uint64 // number of sync requests so far
	synced   uint64 // all requests up to this one are covered
	running  bool
}

func newDirSyncer(dir *os.File) *dirSyncer {
	d := &dirSyncer{dir: dir}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *dirSyncer) sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	mine := d.requests
	for d.synced < mine {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		target := d.requests
		d.mu.Unlock()
		err := d.dir.Sync()
		d.mu.Lock()
		d.running = false
		d.cond.Broadcast()
		if err != nil {
			return err
		}
		if target > d.synced {
			d.synced = target
		}
	}
	return nil
}

func (d *dirSyncer) close() error { return d.dir.Close() }

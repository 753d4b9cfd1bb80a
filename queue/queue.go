// Package queue is the relay's durable message queue.
//
// Envelopes, per-recipient state, the retry schedule and running counters
// live in a bbolt database. A small body (up to Options.InlineMax) is
// stored in the same database, in the same transaction as its record, so
// that accepting it costs no file operations at all: it is durable once
// the group commit that carries it is fsynced.
//
// A larger body is written to a file in the incoming directory; the
// message is durable (and may be acknowledged with 250) once the body
// file, its directory entry and its database record are all fsynced.
// Concurrent writers share fsyncs of the directory and of the database
// (group commit through bbolt's Batch). After the commit the body is
// renamed into the spool directory, so that recovery after a crash looks
// only at the few files left in incoming, never at the whole queue.
//
// Nothing the queue keeps in memory grows with the number of messages it
// holds: leases are bounded by what is in flight, and the statistics come
// from counters kept in the same transactions as the records.
//
// The queue knows nothing about SMTP or DNS: the delivery engine leases due
// recipients, delivers them, and records the outcome.
package queue

import (
	"bufio"
	"bytes"
	"cmp"
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

// ErrLeased is returned by LeaseMessage for a message that a delivery
// worker holds at the moment.
var ErrLeased = errors.New("message is being delivered right now")

var (
	bucketMessages = []byte("messages")
	bucketSchedule = []byte("schedule") // due time + ID -> nil, pending messages only
	bucketCounts   = []byte("counts")   // counter name -> int64, see account
	bucketRemoved  = []byte("removed")  // ID -> nil: record gone, body file maybe not yet
	bucketBodies   = []byte("bodies")   // ID -> body, for bodies stored inline
)

// DefaultInlineMax is the default of Options.InlineMax. Memory for
// bodies in flight is bounded by it: each SMTP transaction and each
// delivery holds at most one inline body.
const DefaultInlineMax = 64 << 10

// dropAfterRead is the size from which an inline body's pages are
// unmapped as soon as it has been copied out, so that reading large
// bodies does not grow RSS until the next trim.
const dropAfterRead = 16 << 10

// Options tune a queue. The zero value is usable.
type Options struct {
	// Logger receives recovery and error reports; nil discards them.
	Logger *slog.Logger
	// MaxBatchDelay bounds how long a commit waits for others to share its
	// fsync. Zero means 1ms.
	MaxBatchDelay time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
	// InlineMax is the largest body stored in the database with its
	// record rather than in a file of its own. Zero means
	// DefaultInlineMax; negative stores every body in a file.
	InlineMax int
	// TrimInterval is how often the queue drops its memory mapping of the
	// database (see trimMapping), so that its resident memory follows what
	// is in use rather than the size of the queue. Zero means 100ms; negative
	// never.
	TrimInterval time.Duration
}

// Queue is a durable message queue rooted at one directory. It is safe for
// concurrent use.
type Queue struct {
	dir         string
	spoolDir    string
	incomingDir string
	db          *bolt.DB
	log         *slog.Logger
	now         func() time.Time
	incoming    *dirSyncer // fsyncs incomingDir for concurrent commits
	inlineMax   int
	bufs        sync.Pool // *[]byte: buffers of inline bodies, reused
	fileBufs    sync.Pool // *bufio.Writer: write buffers of body files, reused

	// unlinked are IDs in bucketRemoved whose body file is gone; the next
	// write transaction deletes their entries.
	unlinkedMu sync.Mutex
	unlinked   []string

	mu     sync.Mutex
	leased map[string]bool // message IDs currently leased by a delivery worker

	notify chan struct{}

	stopTrim chan struct{} // closed by Close; nil when not trimming
	trimDone chan struct{}
	// trimmedAt is the count of cursors and page writes of bbolt's closed
	// transactions at the last trim, -1 before the first; only trimMapping
	// uses it, from one goroutine.
	trimmedAt int64
}

// Open opens (creating if needed) the queue in dir: dir/queue.db,
// dir/spool/ and dir/incoming/. Only one process may have a queue open; a
// second Open fails after a short wait instead of blocking forever. Open
// removes bodies that were never committed (left by a crash during DATA)
// and finishes removals and renames a crash interrupted. Its work is
// bounded by what was in flight at the crash, not by the queue's size.
func Open(dir string, opts Options) (*Queue, error) {
	spoolDir := filepath.Join(dir, "spool")
	incomingDir := filepath.Join(dir, "incoming")
	for _, d := range []string{spoolDir, incomingDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create queue directory: %w", err)
		}
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
	d, err := os.Open(incomingDir)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open incoming directory: %w", err)
	}
	q := &Queue{
		dir:         dir,
		spoolDir:    spoolDir,
		incomingDir: incomingDir,
		db:          db,
		log:         opts.Logger,
		now:         opts.Now,
		incoming:    newDirSyncer(d),
		inlineMax:   cmp.Or(opts.InlineMax, DefaultInlineMax),
		trimmedAt:   -1,
		leased:      map[string]bool{},
		notify:      make(chan struct{}, 1),
	}
	q.fileBufs.New = func() any { return bufio.NewWriterSize(nil, 32*1024) }
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
	if opts.TrimInterval >= 0 {
		q.startTrimming(cmp.Or(opts.TrimInterval, 100*time.Millisecond))
	}
	return q, nil
}

// startTrimming calls trimMapping every interval until Close.
func (q *Queue) startTrimming(interval time.Duration) {
	q.stopTrim, q.trimDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(q.trimDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-q.stopTrim:
				return
			case <-t.C:
				if _, err := q.trimMapping(); err != nil {
					q.log.Warn("drop the queue database's memory mapping", "err", err)
				}
			}
		}
	}()
}

// trimMapping drops the process's mapping of the database pages; the
// kernel keeps them in its page cache. It runs inside a read transaction,
// which keeps bbolt from remapping the file meanwhile. When no read
// transaction is open and none has used a cursor or written a page since
// the last trim, nothing can have been mapped in and it does nothing
// (trimmed is false): an idle queue costs no transaction and no madvise
// ten times a second. A long read (a listing of the whole queue) is still
// trimmed while it runs.
func (q *Queue) trimMapping() (trimmed bool, err error) {
	st := q.db.Stats()
	activity := st.TxStats.GetCursorCount() + st.TxStats.GetWrite()
	if activity == q.trimmedAt && st.OpenTxN == 0 {
		return false, nil
	}
	err = q.db.View(func(tx *bolt.Tx) error {
		return dropMappedPages(q.db.Info().Data, tx.Size())
	})
	if err != nil {
		return false, err
	}
	// The trim's own transaction uses no cursor, so it does not count.
	q.trimmedAt = activity
	return true, nil
}

// Close closes the database. Writers still open are not committed.
func (q *Queue) Close() error {
	if q.stopTrim != nil {
		close(q.stopTrim)
		<-q.trimDone
		q.stopTrim = nil
	}
	err := q.db.Close()
	if cerr := q.incoming.close(); err == nil {
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

// recover makes the database and the spool consistent after a crash. It
// looks only at what a crash can leave half done, so that start-up time
// and memory do not grow with the queue:
//   - a body in incoming with a record was committed but not yet renamed:
//     the rename is finished; one without a record was never acknowledged
//     and is removed;
//   - IDs in the removed bucket had their record deleted, maybe not their
//     body: the body is removed.
//
// The schedule and the counters are written in the same transactions as
// the records, so they need no rebuild, except once for a queue written
// before the counters existed.
func (q *Queue) recover() error {
	var rebuild bool
	err := q.db.Update(func(tx *bolt.Tx) error {
		msgs, err := tx.CreateBucketIfNotExists(bucketMessages)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketSchedule, bucketRemoved, bucketBodies} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketCounts) == nil {
			if _, err := tx.CreateBucket(bucketCounts); err != nil {
				return err
			}
			k, _ := msgs.Cursor().First()
			rebuild = k != nil
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover queue: %w", err)
	}
	if rebuild {
		if err := q.rebuildIndexes(); err != nil {
			return fmt.Errorf("recover queue: %w", err)
		}
	}
	if err := q.finishRemovals(); err != nil {
		return fmt.Errorf("recover queue: %w", err)
	}
	return q.recoverIncoming()
}

// recoverIncoming finishes or discards the bodies left in incoming.
func (q *Queue) recoverIncoming() error {
	entries, err := os.ReadDir(q.incomingDir)
	if err != nil {
		return fmt.Errorf("read incoming directory: %w", err)
	}
	var orphans, moved int
	for _, e := range entries {
		id := e.Name()
		var committed bool
		if validID(id) {
			err := q.db.View(func(tx *bolt.Tx) error {
				committed = tx.Bucket(bucketMessages).Get([]byte(id)) != nil
				return nil
			})
			if err != nil {
				return fmt.Errorf("recover queue: %w", err)
			}
		}
		if committed {
			if err := os.Rename(filepath.Join(q.incomingDir, id), q.bodyPath(id)); err != nil {
				return fmt.Errorf("recover queue: move committed body into the spool: %w", err)
			}
			moved++
			continue
		}
		if err := os.Remove(filepath.Join(q.incomingDir, id)); err != nil {
			return fmt.Errorf("recover queue: remove uncommitted body: %w", err)
		}
		orphans++
	}
	if orphans > 0 || moved > 0 {
		q.log.Info("queue recovered", "uncommitted_bodies_removed", orphans, "committed_bodies_moved", moved)
	}
	return nil
}

// finishRemovals removes the bodies of records deleted before a crash and
// empties the removed bucket.
func (q *Queue) finishRemovals() error {
	var ids []string
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRemoved).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil || len(ids) == 0 {
		return err
	}
	for _, id := range ids {
		q.unlinkBody(id)
	}
	return q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRemoved)
		for _, id := range ids {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// rebuildIndexes recomputes the schedule and the counters from every
// record: needed once for a queue from a version without counters.
func (q *Queue) rebuildIndexes() error {
	q.log.Info("building the queue's schedule and counters from its records (once)")
	return q.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketSchedule); err != nil {
			return err
		}
		sched, err := tx.CreateBucket(bucketSchedule)
		if err != nil {
			return err
		}
		totals := counts{}
		err = tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode message %s: %w", k, err)
			}
			totals.add(&m, 1)
			if due, ok := m.nextDue(); ok {
				return sched.Put(scheduleKey(due, m.ID), nil)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return totals.apply(tx)
	})
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

func (q *Queue) incomingPath(id string) string { return filepath.Join(q.incomingDir, id) }

// Writer receives the body of one new message. Call Commit to make it
// durable and queued, or Abort to discard it.
type Writer struct {
	q    *Queue
	id   string
	buf  []byte        // the body while it fits inline
	f    *os.File      // the body file once it does not; nil before
	bw   *bufio.Writer // SMTP DATA arrives a line per Read; write in blocks
	size int64
	done bool
}

// Create starts a new message. The body is kept in memory while it fits
// inline, and written to a file in the incoming directory once it grows
// larger.
func (q *Queue) Create() (*Writer, error) {
	return &Writer{q: q, id: newID(q.now()), buf: q.getBuf()}, nil
}

// getBuf returns an empty buffer for an inline body.
func (q *Queue) getBuf() []byte {
	if p, ok := q.bufs.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, 4096)
}

// putBuf recycles a buffer nothing refers to any more.
func (q *Queue) putBuf(b []byte) {
	if cap(b) == 0 || cap(b) > 2*q.inlineMax {
		return
	}
	b = b[:0]
	q.bufs.Put(&b)
}

// spill moves the body from memory into a file of its own.
func (w *Writer) spill() error {
	f, err := os.OpenFile(w.q.incomingPath(w.id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create spool file: %w", err)
	}
	bw := w.q.fileBufs.Get().(*bufio.Writer)
	bw.Reset(f)
	w.f, w.bw = f, bw
	_, err = w.bw.Write(w.buf)
	w.q.putBuf(w.buf)
	w.buf = nil
	return err
}

// ID returns the ID the message will have once committed.
func (w *Writer) ID() string { return w.id }

// Size returns the number of body bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// Write appends to the body. Writes are buffered: an error of the disk may
// also surface only at Commit.
func (w *Writer) Write(p []byte) (int, error) {
	if w.f == nil {
		if len(w.buf)+len(p) <= w.q.inlineMax {
			w.buf = append(w.buf, p...)
			w.size += int64(len(p))
			return len(p), nil
		}
		if err := w.spill(); err != nil {
			return 0, fmt.Errorf("write spool file %s: %w", w.id, err)
		}
	}
	n, err := w.bw.Write(p)
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
	w.q.putBuf(w.buf)
	w.buf = nil
	if w.f != nil {
		w.releaseFileBuf()
		w.f.Close()
		os.Remove(w.q.incomingPath(w.id))
	}
}

// releaseFileBuf recycles the write buffer of the body file.
func (w *Writer) releaseFileBuf() {
	if w.bw != nil {
		w.bw.Reset(nil)
		w.q.fileBufs.Put(w.bw)
		w.bw = nil
	}
}

// Commit makes the message durable: it fsyncs the body file (if the body
// is not inline), its directory entry and then the queue record with
// the inline body (RFC 5321 §6.1: once the
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
	if err := w.syncFile(); err != nil {
		return err
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
		if w.f == nil {
			if err := bodiesBucket(tx).Put([]byte(w.id), w.buf); err != nil {
				return err
			}
		}
		return putEncoded(tx, nil, m, val) // held recipients are not scheduled
	})
	if err != nil {
		return fmt.Errorf("store queue record %s: %w", w.id, err)
	}
	ok = true
	w.done = true
	w.q.putBuf(w.buf) // the transaction that held it is committed
	w.buf = nil
	// Committed: from here the body may live in either directory (Body
	// looks in both), and recovery finishes a rename a crash interrupts.
	if w.f != nil {
		if err := os.Rename(w.q.incomingPath(w.id), w.q.bodyPath(w.id)); err != nil {
			w.q.log.Error("move committed body into the spool; it stays in incoming until restart", "queue_id", w.id, "err", err)
		}
	}
	w.q.wake()
	return nil
}

// syncFile makes a body file and its directory entry durable; an inline
// body needs nothing here.
func (w *Writer) syncFile() error {
	if w.f == nil {
		return nil
	}
	err := w.bw.Flush()
	w.releaseFileBuf()
	if err != nil {
		return fmt.Errorf("write spool file %s: %w", w.id, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync spool file %s: %w", w.id, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close spool file %s: %w", w.id, err)
	}
	if err := w.q.incoming.sync(); err != nil {
		return fmt.Errorf("fsync incoming directory: %w", err)
	}
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
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode message %s: %w", m.ID, err)
	}
	return putEncoded(tx, old, m, val)
}

// putEncoded is put with m already encoded as val. Commit encodes outside
// its group commit, whose functions all run in one goroutine.
func putEncoded(tx *bolt.Tx, old, m *Message, val []byte) error {
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
	delta := counts{}
	if old != nil {
		delta.add(old, -1)
	}
	delta.add(m, 1)
	if err := delta.apply(tx); err != nil {
		return err
	}
	return tx.Bucket(bucketMessages).Put([]byte(m.ID), val)
}

// bodiesFillPercent is how full bbolt packs the pages it splits in
// bucketBodies. Inline bodies are written once, under keys that sort by
// arrival, and never rewritten, so a split page never gets the inserts
// that bbolt's default of half full leaves room for. Measured at 50,000
// deferred messages of 512 B: bodies' leaf pages 42 % used with the
// default, 70 % with 0.9, and queue.db 20 % smaller. (The records and the
// schedule are rewritten at every attempt; there the default did as well
// or better.)
const bodiesFillPercent = 0.9

// bodiesBucket returns tx's bucketBodies set to pack its pages to
// bodiesFillPercent; the setting holds for the rest of tx.
func bodiesBucket(tx *bolt.Tx) *bolt.Bucket {
	b := tx.Bucket(bucketBodies)
	b.FillPercent = bodiesFillPercent
	return b
}

// remove deletes a record, its schedule entry and its inline body. For a
// body in a file it notes the ID in the removed bucket and reports
// hasFile: the caller removes the file after the transaction committed
// (removeBody), and recovery does it if a crash came first.
func remove(tx *bolt.Tx, m *Message) (hasFile bool, err error) {
	if err := removeRecord(tx, m); err != nil {
		return false, err
	}
	bodies := tx.Bucket(bucketBodies)
	if bodies.Get([]byte(m.ID)) != nil {
		return false, bodies.Delete([]byte(m.ID))
	}
	return true, tx.Bucket(bucketRemoved).Put([]byte(m.ID), nil)
}

// removeRecord deletes a record and its schedule entry and takes it out of
// the counters.
func removeRecord(tx *bolt.Tx, m *Message) error {
	if due, ok := m.nextDue(); ok {
		if err := tx.Bucket(bucketSchedule).Delete(scheduleKey(due, m.ID)); err != nil {
			return err
		}
	}
	delta := counts{}
	delta.add(m, -1)
	if err := delta.apply(tx); err != nil {
		return err
	}
	return tx.Bucket(bucketMessages).Delete([]byte(m.ID))
}

// forgetUnlinked deletes, inside a write transaction, the removed-bucket
// entries of bodies already unlinked. It is called from transactions that
// remove messages, so the bucket stays as small as what is in flight.
func (q *Queue) forgetUnlinked(tx *bolt.Tx) error {
	q.unlinkedMu.Lock()
	ids := q.unlinked
	q.unlinked = nil
	q.unlinkedMu.Unlock()
	b := tx.Bucket(bucketRemoved)
	for _, id := range ids {
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
	}
	return nil
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

// Body is the stored body of one message, open for reading.
type Body struct {
	r    io.Reader
	f    *os.File // nil for an inline body
	q    *Queue
	buf  []byte // the inline body, recycled by Close
	size int64
}

// Read reads the body.
func (b *Body) Read(p []byte) (int, error) { return b.r.Read(p) }

// Size returns the length of the body in bytes.
func (b *Body) Size() int64 { return b.size }

// Close releases the body's file, if it has one.
func (b *Body) Close() error {
	if b.f != nil {
		return b.f.Close()
	}
	if b.buf != nil {
		b.q.putBuf(b.buf)
		b.buf, b.r = nil, bytes.NewReader(nil)
	}
	return nil
}

// Body opens the stored body of a message for reading. An inline body is
// copied out of the database (it is at most InlineMax bytes), so no
// transaction stays open while it is read.
func (q *Queue) Body(id string) (*Body, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	var inline []byte
	err := q.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketBodies).Get([]byte(id)); v != nil {
			inline = append(q.getBuf(), v...)
			if len(v) >= dropAfterRead {
				return dropMappedBytes(v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read body of %s: %w", id, err)
	}
	if inline != nil {
		return &Body{r: bytes.NewReader(inline), q: q, buf: inline, size: int64(len(inline))}, nil
	}
	// A body just committed may still be in incoming; look in the spool
	// again after that in case the rename happened in between.
	for _, p := range []string{q.bodyPath(id), q.incomingPath(id), q.bodyPath(id)} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat body of %s: %w", id, err)
		}
		return &Body{r: f, f: f, size: fi.Size()}, nil
	}
	return nil, fmt.Errorf("body of %s: %w", id, ErrNotFound)
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

// LeaseMessage leases one message by ID, whatever its due time, with
// every recipient not yet delivered or failed (held ones too), for an
// operation on the whole message such as an administrator's bounce. It
// fails with ErrLeased while a delivery worker has the message.
func (q *Queue) LeaseMessage(id string) (Lease, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.leased[id] {
		return Lease{}, fmt.Errorf("%s: %w", id, ErrLeased)
	}
	// Read under the lock, as Lease does: no worker can take it meanwhile.
	m, err := q.Get(id)
	if err != nil {
		return Lease{}, err
	}
	l := Lease{Message: m}
	for i, r := range m.Recipients {
		if !r.State.Final() {
			l.Rcpts = append(l.Rcpts, i)
		}
	}
	q.leased[id] = true
	return l, nil
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
	var finished bool // and the body is in a file, to be removed
	// Batch: outcomes of many deliveries share one fsync. fn may run more
	// than once, so it sets m and finished afresh each time.
	err := q.db.Batch(func(tx *bolt.Tx) error {
		finished = false
		if err := q.forgetUnlinked(tx); err != nil {
			return err
		}
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
			finished, err = remove(tx, old)
			return err
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

// removeBody unlinks the body of a message whose record is gone, and
// notes it so the next write transaction forgets its removed entry.
func (q *Queue) removeBody(id string) {
	if q.unlinkBody(id) {
		q.unlinkedMu.Lock()
		q.unlinked = append(q.unlinked, id)
		q.unlinkedMu.Unlock()
	}
}

// unlinkBody removes a body from the spool or from incoming; it reports
// whether the body is gone.
func (q *Queue) unlinkBody(id string) bool {
	gone := true
	for _, p := range []string{q.bodyPath(id), q.incomingPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			q.log.Error("remove spool file", "queue_id", id, "err", err)
			gone = false
		}
	}
	return gone
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
	return q.forEachAfter("", fn)
}

// forEachAfter is forEach in one read transaction over the messages whose
// ID sorts after the ID after ("" for all), so that a long walk can go in
// several transactions.
func (q *Queue) forEachAfter(after string, fn func(*Message) bool) error {
	return q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMessages).Cursor()
		k, v := c.First()
		if after != "" {
			if k, v = c.Seek([]byte(after)); k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode message %s: %w", k, err)
			}
			if !fn(&m) {
				return nil
			}
		}
		return nil
	})
}

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
// It reads the counters kept with every change, the first record and the
// first schedule entries, so its cost does not grow with the queue.
func (q *Queue) Stats() (Stats, error) {
	s := Stats{Recipients: map[State]int{}, Domains: map[string]int{}}
	err := q.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("counter %q is corrupt", k)
			}
			n := int64(binary.BigEndian.Uint64(v))
			name := string(k)
			switch {
			case name == counterMessages:
				s.Messages = int(n)
			case name == counterBytes:
				s.Bytes = n
			case strings.HasPrefix(name, counterState):
				s.Recipients[State(strings.TrimPrefix(name, counterState))] = int(n)
			case strings.HasPrefix(name, counterDomain):
				s.Domains[strings.TrimPrefix(name, counterDomain)] = int(n)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// IDs sort by arrival, so the first record is the oldest.
		if k, v := tx.Bucket(bucketMessages).Cursor().First(); k != nil {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode message %s: %w", k, err)
			}
			s.Oldest, s.OldestID = m.ReceivedAt, m.ID
		}
		// The first schedule entry whose message still exists is the next
		// retry; stale entries (skipped by Lease too) are rare.
		msgs := tx.Bucket(bucketMessages)
		c := tx.Bucket(bucketSchedule).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if msgs.Get(k[8:]) != nil {
				s.NextRetry = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
				break
			}
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

// counts are changes to the counters in bucketCounts, by name:
// "messages", "bytes", "state:<state>" (recipients in that state) and
// "domain:<domain>" (recipients not final, per destination domain). They
// are applied in the transaction that changes the records.
type counts map[string]int64

// The names of the counters, or their prefixes.
const (
	counterMessages = "messages"
	counterBytes    = "bytes"
	counterState    = "state:"
	counterDomain   = "domain:"
)

// add adds sign times m's share of the counters.
func (c counts) add(m *Message, sign int64) {
	c[counterMessages] += sign
	c[counterBytes] += sign * m.Size
	for _, r := range m.Recipients {
		c[counterState+string(r.State)] += sign
		if !r.State.Final() {
			c[counterDomain+r.Domain()] += sign
		}
	}
}

// apply adds the changes to the stored counters; a counter that reaches
// zero is deleted, so the bucket holds only live domains.
func (c counts) apply(tx *bolt.Tx) error {
	b := tx.Bucket(bucketCounts)
	for name, d := range c {
		if d == 0 {
			continue
		}
		k := []byte(name)
		var v int64
		if old := b.Get(k); len(old) == 8 {
			v = int64(binary.BigEndian.Uint64(old))
		}
		v += d
		if v == 0 {
			if err := b.Delete(k); err != nil {
				return err
			}
			continue
		}
		val := make([]byte, 8) // bbolt keeps it until the commit
		binary.BigEndian.PutUint64(val, uint64(v))
		if err := b.Put(k, val); err != nil {
			return err
		}
	}
	return nil
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
		var err error
		changed, err = modifyIn(tx, id, fn, now)
		return err
	})
	if err == nil && changed > 0 {
		q.wake()
	}
	return changed, err
}

// modifyIn is modify inside a write transaction.
func modifyIn(tx *bolt.Tx, id string, fn func(r *Recipient, now time.Time) bool, now time.Time) (int, error) {
	old, err := get(tx, id)
	if err != nil {
		return 0, err
	}
	m := *old
	m.Recipients = append([]Recipient(nil), old.Recipients...)
	changed := 0
	for i := range m.Recipients {
		if fn(&m.Recipients[i], now) {
			m.Recipients[i].UpdatedAt = now
			changed++
		}
	}
	if changed == 0 {
		return 0, nil
	}
	return changed, put(tx, old, &m)
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
	return q.modify(id, retryNow)
}

// retryNow makes a pending recipient that waits for a later attempt due
// now.
func retryNow(r *Recipient, now time.Time) bool {
	if !r.State.Pending() || !r.NextAttempt.After(now) {
		return false
	}
	r.NextAttempt = now
	return true
}

// retryBatch is how many messages RetryWhere changes per transaction.
const retryBatch = 1000

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
	f := Filter{Domain: domain}
	total := 0
	switch {
	case progress != nil && domain == "":
		// Every message matches: the counters know how many there are.
		st, err := q.Stats()
		if err != nil {
			return 0, err
		}
		total = st.Messages
	case progress != nil:
		err := q.forEach(func(m *Message) bool {
			if f.match(m) {
				total++
			}
			return true
		})
		if err != nil {
			return 0, err
		}
	}
	// Walk the records in batches, changing each batch in one
	// transaction: one fsync per batch, and memory bounded by a batch
	// whatever the size of the queue.
	now := q.now()
	after := "" // ID of the last message looked at
	changed, done := 0, 0
	for {
		var ids []string
		end := true
		err := q.forEachAfter(after, func(m *Message) bool {
			after = m.ID
			if f.match(m) {
				ids = append(ids, m.ID)
			}
			if len(ids) == retryBatch {
				end = false
				return false
			}
			return true
		})
		if err != nil {
			return changed, err
		}
		if len(ids) > 0 {
			err = q.db.Update(func(tx *bolt.Tx) error {
				n := 0
				for _, id := range ids {
					c, err := modifyIn(tx, id, retryNow, now)
					if err != nil && !errors.Is(err, ErrNotFound) {
						return err
					}
					if c > 0 {
						n++
					}
				}
				changed += n
				return nil
			})
			if err != nil {
				return changed, err
			}
			done += len(ids)
			if progress != nil {
				progress(min(done, max(total, done)), max(total, done))
			}
		}
		if end {
			break
		}
	}
	if changed > 0 {
		q.wake()
	}
	return changed, nil
}

// Delete removes a message and its body without notice to anyone.
func (q *Queue) Delete(id string) error {
	if !validID(id) {
		return fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	var hasFile bool
	err := q.db.Update(func(tx *bolt.Tx) error {
		if err := q.forgetUnlinked(tx); err != nil {
			return err
		}
		m, err := get(tx, id)
		if err != nil {
			return err
		}
		hasFile, err = remove(tx, m)
		return err
	})
	if err != nil {
		return err
	}
	if hasFile {
		q.removeBody(id)
	}
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

// Package store is Repute's durable record, in one bbolt file: each image's current verdict, the
// history of every verdict change, every placement decision, every policy that was in force,
// and the runtime behavior seen, so that a restart forgets nothing that lowered trust.
//
// Writes never block their caller for I/O: they go through one writer goroutine that commits
// them in batches, each batch one fsync'd transaction. A caller that needs durability waits for
// the acknowledgement (Append); the scheduler does not.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/repute-dev/repute/reputation"
)

// SchemaVersion is the layout this code reads and writes. Open migrates older files forward
// and refuses newer ones.
const SchemaVersion = 1

// Buckets.
var (
	bucketMeta      = []byte("meta")
	bucketVerdicts  = []byte("verdicts")  // image → current verdict (JSON)
	bucketHistory   = []byte("history")   // image 0x00 time seq → verdict (JSON)
	bucketDecisions = []byte("decisions") // time seq → decision (JSON)
	bucketPolicies  = []byte("policies")  // time seq → policy record (JSON)
	bucketBehavior  = []byte("behavior")  // key 0x00 time seq → behavior event (JSON)
	keySchema       = []byte("schema")
	allBuckets      = [][]byte{bucketMeta, bucketVerdicts, bucketHistory, bucketDecisions, bucketPolicies, bucketBehavior}
)

// Decision is one placement: which pod went where, as what, and why.
type Decision struct {
	Time          time.Time       `json:"time"`
	Namespace     string          `json:"namespace"`
	Pod           string          `json:"pod"`
	UID           string          `json:"uid"`
	Owner         string          `json:"owner,omitempty"` // "Kind/name" of the controller
	Node          string          `json:"node"`
	Pool          string          `json:"pool"`
	Tier          reputation.Tier `json:"tier"`
	Score         int             `json:"score"`
	PolicyVersion string          `json:"policyVersion"`
	Reason        string          `json:"reason"`
	Images        []string        `json:"images,omitempty"`
	// Action is empty for a placement; for a running pod whose tier changed it is "evicted",
	// "reported" (left in place, and why) or "blocked" (a PodDisruptionBudget held it); a
	// placement whose own record was lost with a killed leader is filed as "recovered".
	Action string `json:"action,omitempty"`
}

// PolicyRecord is a policy that came into force.
type PolicyRecord struct {
	Time    time.Time       `json:"time"`
	Version string          `json:"version"`
	Source  string          `json:"source"` // e.g. "plugin args"
	Policy  json.RawMessage `json:"policy"`
}

// HistoryEntry is one verdict an image had, from the time it was recorded.
type HistoryEntry struct {
	Time    time.Time           `json:"time"`
	Verdict *reputation.Verdict `json:"verdict"`
}

// BehaviorRecord is one runtime event filed under the keys the ledger files it under.
type BehaviorRecord struct {
	Keys  []string                 `json:"keys"`
	Event reputation.BehaviorEvent `json:"event"`
}

// Options configure a store.
type Options struct {
	// ReadOnly opens the file for reading only (offline forensics); no writer runs.
	ReadOnly bool
	// MaxBatch bounds the records committed in one transaction; QueueSize bounds those waiting.
	MaxBatch, QueueSize int
	// OnError is told of every failed commit (besides the store reporting itself degraded).
	OnError func(error)
	// OnCommit is told of every commit, for metrics: its records, how long it took (fsync
	// included), the backlog left behind, and its error.
	OnCommit func(records int, elapsed time.Duration, backlog int64, err error)
	// OnDrop is told of each record refused because the queue was full: a record lost.
	OnDrop func()
	// Now is the clock for records that carry no time.
	Now func() time.Time
}

// Store is an open store file.
type Store struct {
	db   *bolt.DB
	opts Options

	queue chan op
	done  chan struct{}
	seq   atomic.Uint64 // orders records that share a timestamp

	// closing guards the queue: senders hold it shared, Close exclusively, so nothing is sent
	// on a closed queue by a late engine worker.
	closing sync.RWMutex
	closed  bool
	lastErr atomic.Pointer[error]
	dropped atomic.Int64
	backlog atomic.Int64
}

// op is one record waiting for the writer; ack, when set, hears the commit's outcome.
type op struct {
	apply func(tx *bolt.Tx, key []byte) error
	at    time.Time
	ack   chan error
}

// Open opens (or creates) the store at path, migrating its schema forward if needed, and starts
// the writer unless read-only.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1 << 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("store %s: %w", path, err)
		}
	}
	db, err := openVerified(path, opts.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts}
	if err := s.checkSchema(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if !opts.ReadOnly {
		s.queue = make(chan op, opts.QueueSize)
		s.done = make(chan struct{})
		go s.writer()
	}
	return s, nil
}

// openVerified opens the file and reads all of it once, then runs bbolt's consistency check: a
// corrupt file is an error here, never a panic on some later read. The way out is in the error.
func openVerified(path string, readOnly bool) (db *bolt.DB, err error) {
	corrupt := func(why any) error {
		return fmt.Errorf("the file is corrupt (%v): move it aside to start a new store, or restore a backup (reputectl store restore)", why)
	}
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, corrupt(r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return readAll(b) }); err != nil {
			return err
		}
		// Drained whole: the check reads the transaction until it closes the channel.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
	if err != nil {
		db.Close()
		return nil, corrupt(err)
	}
	return db, nil
}

// readAll reads every key and value of a bucket and its nested buckets.
func readAll(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nested := b.Bucket(k); nested != nil {
				return readAll(nested)
			}
		}
		return nil
	})
}

// migrations[v] brings a file at schema v to v+1.
var migrations = map[int]func(tx *bolt.Tx) error{
	// 0 → 1: a new file; the buckets are made below.
	0: func(*bolt.Tx) error { return nil },
}

func (s *Store) checkSchema() error {
	read := func(tx *bolt.Tx) int {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return 0
		}
		v := meta.Get(keySchema)
		if len(v) != 8 {
			return 0
		}
		return int(binary.BigEndian.Uint64(v))
	}
	if s.opts.ReadOnly {
		return s.db.View(func(tx *bolt.Tx) error {
			if v := read(tx); v != SchemaVersion {
				return fmt.Errorf("schema version %d, this reputectl reads %d", v, SchemaVersion)
			}
			return nil
		})
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		v := read(tx)
		if v > SchemaVersion {
			return fmt.Errorf("schema version %d is newer than this Repute (%d): upgrade Repute, or restore an older backup", v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrating schema %d → %d: %w", v, v+1, err)
			}
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion))
	})
}

// Close flushes what is queued and closes the file.
func (s *Store) Close() error {
	s.closing.Lock()
	if s.closed {
		s.closing.Unlock()
		return nil
	}
	s.closed = true
	if s.queue != nil {
		close(s.queue)
	}
	s.closing.Unlock()
	if s.done != nil {
		<-s.done
	}
	return s.db.Close()
}

// Err is the last write failure, or nil: a store that cannot write is degraded, and scheduling
// goes on from memory.
func (s *Store) Err() error {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Dropped is how many records were refused because the queue was full.
func (s *Store) Dropped() int64 { return s.dropped.Load() }

func (s *Store) drop() bool {
	s.dropped.Add(1)
	if s.opts.OnDrop != nil {
		s.opts.OnDrop()
	}
	return false
}

// writer commits queued records in batches: whatever is waiting, up to MaxBatch, per
// transaction. bbolt fsyncs each commit, so a record is durable once its batch commits.
func (s *Store) writer() {
	defer close(s.done)
	for first := range s.queue {
		batch := []op{first}
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		start := time.Now()
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, o := range batch {
				if err := o.apply(tx, s.timeKey(o.at)); err != nil {
					return err
				}
			}
			return nil
		})
		backlog := s.backlog.Add(-int64(len(batch)))
		if s.opts.OnCommit != nil {
			s.opts.OnCommit(len(batch), time.Since(start), backlog, err)
		}
		if err != nil {
			err = fmt.Errorf("store write of %d records failed (scheduling goes on from memory): %w", len(batch), err)
			s.lastErr.Store(&err)
			if s.opts.OnError != nil {
				s.opts.OnError(err)
			}
		} else {
			s.lastErr.Store(nil)
		}
		for _, o := range batch {
			if o.ack != nil {
				o.ack <- err
			}
		}
	}
}

// timeKey orders records by time, then by arrival.
func (s *Store) timeKey(t time.Time) []byte {
	k := binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
	return binary.BigEndian.AppendUint64(k, s.seq.Add(1))
}

// enqueue hands a record to the writer without waiting; a full queue drops it (and counts it),
// because the caller may be on the scheduler's path.
func (s *Store) enqueue(o op) bool {
	s.closing.RLock()
	defer s.closing.RUnlock()
	if s.queue == nil || s.closed {
		return s.drop()
	}
	select {
	case s.queue <- o:
		s.backlog.Add(1)
		return true
	default:
		return s.drop()
	}
}

// wait hands records to the writer and returns once they are durable (or failed).
func (s *Store) wait(ctx context.Context, ops []op) error {
	if s.queue == nil {
		return errors.New("store is read-only")
	}
	acks := make([]chan error, len(ops))
	s.closing.RLock()
	if s.closed {
		s.closing.RUnlock()
		return errors.New("store is closed")
	}
	for i := range ops {
		acks[i] = make(chan error, 1)
		ops[i].ack = acks[i]
		select {
		case s.queue <- ops[i]:
			s.backlog.Add(1)
		case <-ctx.Done():
			s.closing.RUnlock()
			return ctx.Err()
		}
	}
	s.closing.RUnlock()
	var errs []error
	for _, a := range acks {
		select {
		case err := <-a:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// verdictOp records an image's current verdict and appends it to the image's history.
func (s *Store) verdictOp(image string, v *reputation.Verdict) op {
	at := v.EvaluatedAt
	if at.IsZero() {
		at = s.opts.Now()
	}
	return op{at: at, apply: func(tx *bolt.Tx, key []byte) error {
		if err := putJSON(tx.Bucket(bucketVerdicts), []byte(image), v); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketHistory), historyKey(image, key), v)
	}}
}

func historyKey(image string, timeKey []byte) []byte {
	k := append([]byte(image), 0)
	return append(k, timeKey...)
}

func (s *Store) decisionOp(d Decision) op {
	if d.Time.IsZero() {
		d.Time = s.opts.Now()
	}
	return op{at: d.Time, apply: func(tx *bolt.Tx, key []byte) error { return putJSON(tx.Bucket(bucketDecisions), key, d) }}
}

func (s *Store) policyOp(p PolicyRecord) op {
	if p.Time.IsZero() {
		p.Time = s.opts.Now()
	}
	return op{at: p.Time, apply: func(tx *bolt.Tx, key []byte) error { return putJSON(tx.Bucket(bucketPolicies), key, p) }}
}

func (s *Store) behaviorOp(r BehaviorRecord) op {
	return op{at: r.Event.At, apply: func(tx *bolt.Tx, key []byte) error {
		return putJSON(tx.Bucket(bucketBehavior), key, r)
	}}
}

// RecordVerdict queues an image's new verdict. It never waits.
func (s *Store) RecordVerdict(image string, v *reputation.Verdict) bool {
	if len(image) > reputation.MaxImageRefLen {
		return s.drop() // as a key it would fail the whole batch it rides in
	}
	return s.enqueue(s.verdictOp(image, v))
}

// ForgetVerdict queues the removal of an image's current verdict, for an image no pod uses any
// more, so that a restart does not warm it again. Its history stays until retention prunes it.
// It never waits.
func (s *Store) ForgetVerdict(image string) bool {
	if len(image) > reputation.MaxImageRefLen {
		return true // never stored
	}
	return s.enqueue(op{at: s.opts.Now(), apply: func(tx *bolt.Tx, _ []byte) error {
		return tx.Bucket(bucketVerdicts).Delete([]byte(image))
	}})
}

// RecordDecision queues a placement decision. It never waits.
func (s *Store) RecordDecision(d Decision) bool { return s.enqueue(s.decisionOp(d)) }

// RecordBehavior queues a runtime event. It never waits.
func (s *Store) RecordBehavior(r BehaviorRecord) bool { return s.enqueue(s.behaviorOp(r)) }

// AppendDecisions records decisions and returns once they are durable.
func (s *Store) AppendDecisions(ctx context.Context, ds ...Decision) error {
	ops := make([]op, len(ds))
	for i, d := range ds {
		ops[i] = s.decisionOp(d)
	}
	return s.wait(ctx, ops)
}

// AppendPolicy records a policy that came into force and returns once it is durable.
func (s *Store) AppendPolicy(ctx context.Context, p PolicyRecord) error {
	return s.wait(ctx, []op{s.policyOp(p)})
}

// AppendVerdict records a verdict and returns once it is durable.
func (s *Store) AppendVerdict(ctx context.Context, image string, v *reputation.Verdict) error {
	if len(image) > reputation.MaxImageRefLen {
		return fmt.Errorf("image reference of %d bytes, longer than %d: not stored", len(image), reputation.MaxImageRefLen)
	}
	return s.wait(ctx, []op{s.verdictOp(image, v)})
}

// Flush returns once everything queued before it is durable.
func (s *Store) Flush(ctx context.Context) error {
	return s.wait(ctx, []op{{apply: func(*bolt.Tx, []byte) error { return nil }, at: s.opts.Now()}})
}

// Verdicts returns every image's current verdict: what the cache warms from at start.
func (s *Store) Verdicts() (map[string]*reputation.Verdict, error) {
	out := map[string]*reputation.Verdict{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVerdicts).ForEach(func(k, v []byte) error {
			var verdict reputation.Verdict
			if err := json.Unmarshal(v, &verdict); err != nil {
				return fmt.Errorf("verdict of %s: %w", k, err)
			}
			out[string(k)] = &verdict
			return nil
		})
	})
	return out, err
}

// Verdict returns one image's current verdict, or nil.
func (s *Store) Verdict(image string) (*reputation.Verdict, error) {
	var out *reputation.Verdict
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketVerdicts).Get([]byte(image))
		if data == nil {
			return nil
		}
		out = &reputation.Verdict{}
		return json.Unmarshal(data, out)
	})
	return out, err
}

// Page bounds one read of a time-ordered record list.
type Page struct {
	// From and To bound the records' times to [From, To); zero values leave that side open.
	From, To time.Time
	// Limit is the most records returned (0: all); After is the cursor a previous page returned.
	Limit int
	After string
	// MaxScanned, when set, bounds the records one call reads, matching or not: a filter that
	// matches little returns a short page and the cursor to go on from, as the Kubernetes API
	// may, instead of reading the whole store in one request.
	MaxScanned int
}

// History returns the verdicts an image had, oldest first, one page at a time; next is the
// cursor of the following page, or "" when there is none.
func (s *Store) History(image string, page Page) (out []HistoryEntry, next string, err error) {
	prefix := append([]byte(image), 0)
	next, err = s.scan(bucketHistory, prefix, page, func(k, v []byte) (bool, error) {
		var verdict reputation.Verdict
		if err := json.Unmarshal(v, &verdict); err != nil {
			return false, fmt.Errorf("history of %s at %s: %w", image, timeOfKey(k), err)
		}
		out = append(out, HistoryEntry{Time: timeOfKey(k), Verdict: &verdict})
		return true, nil
	})
	return out, next, err
}

func timeOfKey(k []byte) time.Time {
	if len(k) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
}

// Decisions returns the placement decisions that match (nil matches all), oldest first, one
// page at a time; next is the cursor of the following page, or "" when there is none.
func (s *Store) Decisions(page Page, match func(*Decision) bool) (out []Decision, next string, err error) {
	next, err = s.scan(bucketDecisions, nil, page, func(k, v []byte) (bool, error) {
		var d Decision
		if err := json.Unmarshal(v, &d); err != nil {
			return false, fmt.Errorf("decision %x: %w", k, err)
		}
		if match != nil && !match(&d) {
			return false, nil
		}
		out = append(out, d)
		return true, nil
	})
	return out, next, err
}

// scan visits the records under prefix whose time keys fall in the page, in time order, until
// visit has kept page.Limit of them; it returns the cursor of the last one kept when it stopped
// early. Cursors are the time key (time and sequence), so they stay valid while records are
// added.
func (s *Store) scan(bucket, prefix []byte, page Page, visit func(timeKey, v []byte) (kept bool, err error)) (next string, err error) {
	start := append(bytes.Clone(prefix), binary.BigEndian.AppendUint64(nil, uint64(max(page.From.UnixNano(), 0)))...)
	var after []byte
	if page.After != "" {
		cursor, err := decodeCursor(page.After)
		if err != nil {
			return "", err
		}
		after = append(bytes.Clone(prefix), cursor...)
		if bytes.Compare(after, start) > 0 {
			start = after
		}
	}
	kept, scanned := 0, 0
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			timeKey := k[len(prefix):]
			if !page.To.IsZero() && !timeOfKey(timeKey).Before(page.To) {
				break
			}
			ok, err := visit(timeKey, v)
			if err != nil {
				return err
			}
			if ok {
				kept++
			}
			scanned++
			if page.Limit > 0 && kept >= page.Limit || page.MaxScanned > 0 && scanned >= page.MaxScanned {
				if k2, _ := c.Next(); k2 != nil && bytes.HasPrefix(k2, prefix) &&
					(page.To.IsZero() || timeOfKey(k2[len(prefix):]).Before(page.To)) {
					next = encodeCursor(timeKey)
				}
				break
			}
		}
		return nil
	})
	return next, err
}

// Policies returns every policy that was in force, oldest first.
func (s *Store) Policies() ([]PolicyRecord, error) {
	var out []PolicyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicies).ForEach(func(_, v []byte) error {
			var p PolicyRecord
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// Behavior returns every runtime event recorded since the given time, oldest first, so the
// ledger can be refilled at start: what lowered trust before a restart still does after it.
func (s *Store) Behavior(since time.Time) ([]BehaviorRecord, error) {
	var out []BehaviorRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketBehavior).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, uint64(max(since.UnixNano(), 0)))); k != nil; k, v = c.Next() {
			var r BehaviorRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Retention bounds what the store keeps. Current verdicts are always kept.
type Retention struct {
	// MaxAge drops history, decisions and behavior older than this (0: no limit).
	MaxAge time.Duration
	// MaxHistoryPerImage keeps at most this many history entries per image, the newest (0: no limit).
	MaxHistoryPerImage int
	// MaxDecisions keeps at most this many decisions, the newest (0: no limit).
	MaxDecisions int
}

// Prune applies the retention and returns how many records it removed. It runs in bounded
// transactions, so the writer is never held up for long.
func (s *Store) Prune(r Retention) (int, error) {
	now := s.opts.Now()
	total := 0
	cutoff := uint64(0)
	if r.MaxAge > 0 {
		cutoff = uint64(now.Add(-r.MaxAge).UnixNano())
	}
	// Time-keyed buckets: drop by age, then (decisions) by count.
	for _, b := range [][]byte{bucketDecisions, bucketBehavior, bucketPolicies} {
		if cutoff == 0 || bytes.Equal(b, bucketPolicies) {
			continue // every policy version is kept: decisions name them
		}
		n, err := s.deleteWhile(b, func(k []byte) bool { return binary.BigEndian.Uint64(k[:8]) < cutoff })
		total += n
		if err != nil {
			return total, err
		}
	}
	if r.MaxDecisions > 0 {
		var excess int
		if err := s.db.View(func(tx *bolt.Tx) error {
			excess = tx.Bucket(bucketDecisions).Stats().KeyN - r.MaxDecisions
			return nil
		}); err != nil {
			return total, err
		}
		if excess > 0 {
			n, err := s.deleteWhile(bucketDecisions, func([]byte) bool { excess--; return excess >= 0 })
			total += n
			if err != nil {
				return total, err
			}
		}
	}
	// History: per image, by age and count.
	n, err := s.pruneHistory(cutoff, r.MaxHistoryPerImage)
	return total + n, err
}

// deleteWhile deletes keys from the start of a time-keyed bucket for as long as del says so,
// 10,000 per transaction.
func (s *Store) deleteWhile(bucket []byte, del func(k []byte) bool) (int, error) {
	total := 0
	for {
		var doomed [][]byte
		done := false
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			c := b.Cursor()
			k, _ := c.First()
			for ; k != nil && len(doomed) < 10000; k, _ = c.Next() {
				if len(k) < 8 || !del(k) {
					break
				}
				doomed = append(doomed, bytes.Clone(k))
			}
			done = k == nil || len(doomed) < 10000
			// Deleting behind a cursor can make it skip keys, so delete once the scan is over.
			for _, d := range doomed {
				if err := b.Delete(d); err != nil {
					return err
				}
			}
			return nil
		})
		total += len(doomed)
		if err != nil || done {
			return total, err
		}
	}
}

func (s *Store) pruneHistory(cutoff uint64, maxPerImage int) (int, error) {
	if cutoff == 0 && maxPerImage <= 0 {
		return 0, nil
	}
	var doomed [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		var image []byte
		var keys [][]byte
		flush := func() {
			// keys are oldest first; the newest maxPerImage survive the count limit.
			for i, k := range keys {
				tooMany := maxPerImage > 0 && len(keys)-i > maxPerImage
				tooOld := cutoff > 0 && binary.BigEndian.Uint64(k[len(image)+1:]) < cutoff
				if tooMany || tooOld {
					doomed = append(doomed, k)
				}
			}
			keys = keys[:0]
		}
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			sep := bytes.IndexByte(k, 0)
			if sep < 0 || len(k) < sep+17 {
				continue
			}
			if !bytes.Equal(k[:sep], image) {
				flush()
				image = bytes.Clone(k[:sep])
			}
			keys = append(keys, bytes.Clone(k))
		}
		flush()
		return nil
	})
	if err != nil {
		return 0, err
	}
	for start := 0; start < len(doomed); start += 10000 {
		chunk := doomed[start:min(start+10000, len(doomed))]
		if err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketHistory)
			for _, k := range chunk {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return start, err
		}
	}
	return len(doomed), nil
}

// Backup writes a consistent copy of the store while it stays in use.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Restore replaces the file at path with a backup, after checking that the backup opens and
// has a schema this code reads. The store at path must be closed.
func Restore(r io.Reader, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".restore-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	tmp.Close()
	check, err := Open(tmp.Name(), Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("backup is not a usable store: %w", err)
	}
	check.Close()
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename lives in the directory: until the directory is synced, power lost now could
	// bring back the old file after Restore said it was done.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Compact copies the store into a fresh file at dst, leaving the free pages behind.
func (s *Store) Compact(dst string) error {
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer out.Close()
	return bolt.Compact(out, s.db, 64<<20)
}

func encodeCursor(k []byte) string { return fmt.Sprintf("%x", k) }

func decodeCursor(s string) ([]byte, error) {
	var b []byte
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil || len(b) != 16 {
		return nil, fmt.Errorf("bad page cursor %q", s)
	}
	return b, nil
}

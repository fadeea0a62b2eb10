// Package buffer is edgegate's durable store: named logs with sequence numbers, a committed
// position per consumer, a dedup index with TTL and a small state KV, all in one Badger DB,
// inside a disk budget. Every write goes through one writer goroutine that groups
// concurrent requests into one Badger transaction and one fsync (group commit), so
// ack-after-durable stays fast.
package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgegate/edgegate/internal/clock"
)

// Errors returned by the store.
var (
	ErrClosed   = errors.New("buffer: store closed")
	ErrTooLarge = errors.New("buffer: request larger than one transaction")
	// ErrFull is returned by Append when the disk budget (max_bytes, or the file system's
	// free space less reserve_free) has no room and the policy is to reject, or nothing is
	// left to drop. The entries were not stored.
	ErrFull = errors.New("buffer: full")
	// ErrNeedsRecovery is returned by a read-only Open of a store that was not closed
	// cleanly: its write-ahead log has a tail to cut, which only a read-write Open does.
	ErrNeedsRecovery = errors.New("buffer: the store was not closed cleanly and needs recovery")
	// ErrReadOnly is returned by writes to a store opened read-only.
	ErrReadOnly = errors.New("buffer: opened read-only")
	// ErrInUse is returned by Open when another process (a running daemon) holds the store.
	ErrInUse = errors.New("buffer: the store is in use by another process")
)

// OnFull is what the store does when an append does not fit in the budget.
type OnFull string

const (
	// DropOldest deletes the oldest entries, of ordinary logs first and of precious logs
	// (aggregates) only when nothing else is left, and counts them.
	DropOldest OnFull = "drop_oldest"
	// Reject refuses the append with ErrFull and counts it.
	Reject OnFull = "reject"
)

// MaxValueSize is the largest value an entry may have with the default options (about
// 550 KiB): Badger keeps values up to its ValueThreshold inside the LSM tree, and a larger
// one would land in the value log, which then needs garbage collection, which this store
// never runs. Larger values fail with ErrTooLarge.
var MaxValueSize = newTuning(defaultMemTableSize).maxValue

// DefaultLazyDelay bounds how long a QoS 0 reading waits for company before its group is
// committed (Options.LazyDelay): at 2k readings/s, 20 share a commit and an fsync instead
// of each having its own, and a local subscriber sees them at most this much later.
const DefaultLazyDelay = 10 * time.Millisecond

// Options configure a Store.
type Options struct {
	// Dir is the Badger directory; it is created if missing (unless ReadOnly).
	Dir string
	// ReadOnly opens an existing store for inspection (edgegate buffer stats/tail): no
	// writer, no maintenance, a shared lock that fails while a daemon holds the store.
	ReadOnly bool
	// SyncInterval 0 means every group of writes is fsynced before its waiters are released
	// (sync: always). A positive interval releases waiters once the write is in the
	// write-ahead log and fsyncs on that period: a process crash loses nothing, a power cut
	// may lose what was acknowledged during the last interval.
	SyncInterval time.Duration
	// LazyDelay is how long a lazy append (Arrival.Lazy: a QoS 0 publish, which nobody
	// waits for) may wait for other writes to share its commit and fsync. Any other append
	// ends the wait at once, the lazy ones riding its commit; so does a full group. Updates
	// (Tx) that come meanwhile join the group and wait with it. 0: DefaultLazyDelay;
	// negative: no wait (every group commits as soon as it is taken).
	LazyDelay time.Duration
	// DedupTTL is how long a record id is remembered; 0 disables dedup.
	DedupTTL time.Duration
	// DedupCacheSize bounds the in-memory cache of recent ids in front of the durable index.
	DedupCacheSize int

	// MaxBytes bounds the disk space of Dir (allocated blocks); 0 means no byte budget.
	MaxBytes int64
	// ReserveFree is free space left on the file system for everyone else; the store treats
	// "free space − ReserveFree" as a budget too. 0 disables the check.
	ReserveFree int64
	// OnFull is the policy when an append does not fit (default DropOldest).
	OnFull OnFull
	// BulkLog is the log nearly every entry goes to: its entries are keyed apart, below
	// every other key (keys.go), so compactions leave its backlog alone. Default logs.Bulk
	// (the gateway's raw readings); a store must be opened with the same one each time.
	BulkLog string
	// Precious lists logs whose entries are dropped only when no other log has any left
	// (the gateway passes "agg": aggregates are worth more than raw readings).
	Precious []string
	// Expendable lists logs whose entries are dropped first, before any other log's, in
	// this order.
	Expendable []string
	// Reserved sets room aside within the budget, per log: that log's entries, up to its
	// bytes here, never compete with other logs' (drop_oldest does not delete them to make
	// room, and a full buffer under reject still takes them), and other logs fit in the
	// rest. Such a log must bound itself (the broker trims the refused log to
	// refused_log.max_bytes).
	Reserved map[string]int64
	// Retention deletes entries appended longer ago than this, delivered or not (counted);
	// 0 keeps them until consumed or dropped for room. Applied with one-minute granularity.
	Retention time.Duration
	// Consumers names, per log, the consumers whose committed positions bound trimming:
	// entries below every one's position are deleted by Maintain. A log without consumers
	// is never trimmed by consumption (retention and the budget still apply).
	Consumers map[string][]string
	// MaintainEvery is the period of Maintain (default 10 s).
	MaintainEvery time.Duration
	// StatFS reports free space (default SysStatFS).
	StatFS StatFS

	Logger *slog.Logger
	Clock  clock.Clock
	// Progress, if set, hears from an Open that takes long (converting a store written with
	// the previous key layout): at its start, then at most once a second. A daemon under
	// systemd extends its start timeout with it.
	Progress func(status string)

	// memTableSize overrides Badger's memtable size (tests of the budget use small ones
	// so that a small budget is meaningful).
	memTableSize int64
	// arrivalLimit overrides maxArrivals (tests of the bound).
	arrivalLimit int
	// scanSteps is how many keys scanInSteps reads per read transaction (tests make it
	// small); 0: 10 000.
	scanSteps int
}

// Entry is one value to append to a log. A non-empty ID is checked against the dedup index:
// an id seen within the TTL is not stored again.
type Entry struct {
	ID    string
	Value []byte
}

// Result says what happened to one Entry.
type Result struct {
	Seq uint64 // sequence number assigned; 0 when Dup
	Dup bool   // the id was seen before; nothing was stored
}

// Loss is a range of sequence numbers that the witness says were committed but that were
// not in the log at open: Badger cut a torn or corrupt write-ahead-log tail.
type Loss struct {
	Log      string
	From, To uint64 // inclusive
}

// Store is the durable buffer. Its methods are safe for concurrent use.
type Store struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger

	reqs     chan *request
	queued   queueBytes // what the appends waiting for the writer hold
	quit     chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	closeMu  sync.RWMutex // held for reading while a request is being queued; Close takes it for writing
	closeErr error
	once     sync.Once

	mu   sync.Mutex // guards logs and consumers
	logs map[string]*logState
	// consumers per log (Options.Consumers, then SetConsumers)
	consumers map[string][]string
	precious  map[string]bool

	// Owned by the writer goroutine.
	dedup      *idCache
	group      uint64        // the number of the write group being applied (dedup cache)
	filter     *idFilter     // nil without dedup
	filterDone chan struct{} // closed when loadFilter returns
	witness    *witness
	highs      map[string]uint64 // what the witness last recorded; the syncer's, if any
	synced     chan []*request   // committed groups waiting for their fsync (sync: always)
	broken     atomic.Pointer[error]
	wal        *walSyncer
	syncFn     func() error // wal.Sync; a test may replace it
	usage      usage
	tuning     tuning
	dirty      bool // written since the last fsync (interval mode)
	dropMax    int  // deletes per transaction

	bulkKind   byte    // key kind of the bulk log's entries (keys.go)
	dedupWidth int64   // ms: the width of the dedup index's expiry buckets
	dedupEnds  []int64 // the ends of the live buckets, newest first; the writer's after Open

	dedupKeys atomic.Int64 // estimated dedup ids on disk (see boundDedup)
	dedupCap  atomic.Int64 // ids the index may hold, set with the capacity; 0 no cap

	arrivals     *arrivalTable // arrivals.go
	arrivalCount atomic.Int64  // records in arrivals, for the budget

	lost        []Loss
	stats       Stats
	lastDropLog map[string]time.Time // guarded by mu
}

type logState struct {
	name   string
	last   atomic.Uint64 // last committed sequence number
	notify chan struct{} // closed and replaced when last moves; guarded by Store.mu

	// Written by the writer goroutine only; atomics so that inspection may read them.
	first atomic.Uint64 // a lower bound: entries below are deleted
	count atomic.Int64
	bytes atomic.Int64

	// Owned by the writer goroutine.
	next      uint64 // next number to assign
	indexedAt int64  // unix minute of the last time-index key written this run; 0 none
}

func (ls *logState) meta() logMeta {
	return logMeta{high: ls.next - 1, first: ls.first.Load(), count: ls.count.Load(), bytes: ls.bytes.Load()}
}

// Lost lists what recovery at open found missing (see Loss).
func (s *Store) Lost() []Loss { return append([]Loss(nil), s.lost...) }

// Stats returns the store's counters.
func (s *Store) Stats() *Stats { return &s.stats }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.opts.Dir }

// Close waits for queued writes, stops the writer and closes Badger. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.once.Do(func() {
		if s.opts.ReadOnly {
			s.closeErr = s.db.Close()
			return
		}
		s.closeMu.Lock()
		s.closed.Store(true)
		close(s.quit)
		s.closeMu.Unlock()
		<-s.done
		if s.filterDone != nil {
			<-s.filterDone
		}
		if err := s.syncFn(); err != nil {
			s.closeErr = err
		}
		s.wal.Close()
		if err := s.db.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
		if err := s.witness.close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Append stores entries at the end of the named log and returns once they are durable
// (per the sync policy). Entries whose id was seen within the dedup TTL are reported as Dup
// and not stored. When the budget has no room it makes room (DropOldest) or fails with
// ErrFull (Reject). On error nothing of this call may be assumed stored; a retry is safe
// when the entries carry ids.
func (s *Store) Append(ctx context.Context, log string, entries []Entry) ([]Result, error) {
	return s.AppendAsync(ctx, log, entries).Wait()
}

// AppendAsync queues an append and returns without waiting for it to be durable: it blocks
// only while the writer's queue is full (or until ctx ends). The Pending's Wait then gives
// what Append would have returned. Appends queued one after another, from one goroutine,
// are applied in that order, so a caller can pipeline several and still acknowledge them
// in order. Once queued, an append completes even if ctx ends.
func (s *Store) AppendAsync(ctx context.Context, log string, entries []Entry) *Pending {
	return s.appendAsync(ctx, log, entries, nil, arrivalRef{}, false)
}

// appendAsync is AppendAsync with writes to make in the same transaction as the entries
// (an arrival's record, arrivals.go).
func (s *Store) appendAsync(ctx context.Context, log string, entries []Entry, extra []write, arrival arrivalRef, lazy bool) *Pending {
	fail := func(err error) *Pending {
		s.arrived(arrival, false)
		return &Pending{err: err}
	}
	if err := checkName(log); err != nil {
		return fail(err)
	}
	for _, e := range entries {
		if len(e.Value) > s.tuning.maxValue {
			return fail(fmt.Errorf("%w: a value of %d bytes (at most %d)", ErrTooLarge, len(e.Value), s.tuning.maxValue))
		}
	}
	r := &request{kind: reqAppend, log: log, entries: entries, extra: extra, arrival: arrival, lazy: lazy, done: make(chan struct{})}
	r.cost = appendCost(entries, extra)
	if err := s.queued.acquire(ctx, r.cost); err != nil {
		return fail(err)
	}
	if err := s.enqueue(ctx, r); err != nil {
		s.queued.release(r.cost)
		return fail(err)
	}
	return &Pending{r: r}
}

// Pending is an append queued by AppendAsync.
type Pending struct {
	r   *request // nil when refused before queueing
	err error
}

// Ready reports whether Wait would return at once.
func (p *Pending) Ready() bool {
	if p.r == nil {
		return true
	}
	select {
	case <-p.r.done:
		return true
	default:
		return false
	}
}

// Wait blocks until the append is durable or failed and returns its results, as Append.
func (p *Pending) Wait() ([]Result, error) {
	if p.r == nil {
		return nil, p.err
	}
	<-p.r.done
	if p.r.err != nil {
		return nil, p.r.err
	}
	return p.r.results, nil
}

// Update applies the writes build makes in one atomic, durable transaction (DESIGN
// invariant 3: a pipeline step commits its state, its panes and its cursor together).
// build runs before the call returns, on the caller's goroutine. Updates are not refused
// for lack of room (they carry pipelines' and uplinks' progress, and are small): under
// DropOldest they make room like appends; under Reject they use the headroom kept below
// max_bytes.
func (s *Store) Update(ctx context.Context, build func(tx *Tx)) error {
	r := &request{kind: reqUpdate, tx: &Tx{}, done: make(chan struct{})}
	build(r.tx)
	if r.tx.err != nil {
		return r.tx.err
	}
	for _, o := range r.tx.ops {
		if len(o.value) > s.tuning.maxValue {
			return fmt.Errorf("%w: a value of %d bytes (at most %d)", ErrTooLarge, len(o.value), s.tuning.maxValue)
		}
	}
	return s.submit(ctx, r)
}

// Commit records next as the position of consumer in log: entries below next are done
// for that consumer.
func (s *Store) Commit(ctx context.Context, log, consumer string, next uint64) error {
	return s.Update(ctx, func(tx *Tx) { tx.SetCursor(log, consumer, next) })
}

func (s *Store) submit(ctx context.Context, r *request) error {
	if err := s.enqueue(ctx, r); err != nil {
		return err
	}
	// Once queued, the request completes even if ctx ends: the writer drains its queue
	// before exiting. Waiting for it keeps "returned nil" equal to "durable".
	<-r.done
	return r.err
}

// enqueue hands r to the writer, which then always completes it (closes r.done).
func (s *Store) enqueue(ctx context.Context, r *request) error {
	if s.opts.ReadOnly {
		return ErrReadOnly
	}
	s.closeMu.RLock()
	if s.closed.Load() {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case s.reqs <- r:
		s.closeMu.RUnlock()
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	return nil
}

// Cursor returns the committed position of consumer in log: the next sequence number it
// has to process (0 when it never committed).
func (s *Store) Cursor(log, consumer string) (uint64, error) {
	v, ok, err := s.getRaw(cursorKey(log, consumer))
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("buffer: cursor %s/%s: corrupt value", log, consumer)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Get reads a key of the state KV (written with Tx.Put).
func (s *Store) Get(key string) ([]byte, bool, error) {
	return s.getRaw(stateKey(key))
}

func (s *Store) getRaw(key []byte) ([]byte, bool, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		if out == nil {
			out = []byte{}
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("buffer: get %q: %w", key, err)
	}
	return out, out != nil, nil
}

// Read calls fn for each entry of log with from ≤ seq ≤ LastSeq, in order (entries whose
// append has not returned are not read), at most limit entries (0:
// no limit), and returns the sequence number after the last one read. The value passed to fn
// is only valid during the call. fn may stop the scan by returning ErrStop. Entries dropped
// or trimmed leave gaps in the numbers.
func (s *Store) Read(log string, from uint64, limit int, fn func(seq uint64, value []byte) error) (uint64, error) {
	next := from
	end := uint64(math.MaxUint64)
	if ls, err := s.logState(log); err == nil {
		// Seeking past deleted entries skips their tombstones, which an LSM tree keeps for
		// a while: without this every read after a trim would wade through them.
		from = max(from, ls.first.Load())
		// Entries committed but not yet released (their fsync is running, or failed) are
		// not handed out: a reader sees what an Append has returned for.
		end = ls.last.Load()
	}
	prefix := s.logPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		n := 0
		// The first segment whose last entry is at or after from holds from, or follows it.
		for it.Seek(s.logKey(log, from)); it.Valid(); it.Next() {
			item := it.Item()
			g, ok := segmentOf(item, prefix)
			if !ok {
				continue
			}
			if g.first > end {
				return nil
			}
			err := item.Value(func(v []byte) error {
				return g.entries(v, from, end, func(seq uint64, value []byte) error {
					if err := fn(seq, value); err != nil {
						return err
					}
					next = seq + 1
					n++
					if limit > 0 && n >= limit {
						return errLimit
					}
					return nil
				})
			})
			if errors.Is(err, ErrStop) || errors.Is(err, errLimit) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return next, fmt.Errorf("buffer: read log %q from %d: %w", log, from, err)
	}
	return next, nil
}

// errLimit ends a Read at its limit.
var errLimit = errors.New("limit")

// ErrStop, returned by a Read callback, ends the scan without error.
var ErrStop = errors.New("stop")

// Count returns how many entries log holds: those appended, less those dropped, trimmed
// or aged out. Sequence numbers leave gaps (refused appends use some), so it is not
// LastSeq − first + 1.
func (s *Store) Count(log string) (int64, error) {
	ls, err := s.logState(log)
	if err != nil {
		return 0, err
	}
	return ls.count.Load(), nil
}

// FirstSeq returns the sequence number below which every entry of log is deleted
// (trimmed, dropped for room or by retention); entries at or above it that a reader has
// seen are still there. 0 or 1 when nothing was deleted yet.
func (s *Store) FirstSeq(log string) (uint64, error) {
	ls, err := s.logState(log)
	if err != nil {
		return 0, err
	}
	return ls.first.Load(), nil
}

// LastSeq returns the last committed sequence number of log (0 when empty).
func (s *Store) LastSeq(log string) (uint64, error) {
	ls, err := s.logState(log)
	if err != nil {
		return 0, err
	}
	return ls.last.Load(), nil
}

// Wait returns when log holds an entry with a sequence number > after, or ctx ends.
func (s *Store) Wait(ctx context.Context, log string, after uint64) error {
	for {
		ls, err := s.logState(log)
		if err != nil {
			return err
		}
		s.mu.Lock()
		ch := ls.notify
		s.mu.Unlock()
		if ls.last.Load() > after {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.quit:
			return ErrClosed
		}
	}
}

// MaxRequestBytes is the most one Append or Update may write, counted as keys plus values
// plus 16 bytes per write: one Badger transaction. Larger requests fail with ErrTooLarge;
// writers that batch (the pipelines) size their steps from it.
func (s *Store) MaxRequestBytes() int64 { return s.db.MaxBatchSize() * 9 / 10 }

// SetConsumers replaces the consumers of log whose positions bound its trimming (see
// Options.Consumers).
func (s *Store) SetConsumers(log string, consumers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.consumers[log] = append([]string(nil), consumers...)
}

// logState returns the state of a log, loading it on first use.
func (s *Store) logState(log string) (*logState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ls, ok := s.logs[log]; ok {
		return ls, nil
	}
	if err := checkName(log); err != nil {
		return nil, err
	}
	m, err := s.loadMeta(log)
	if err != nil {
		return nil, err
	}
	ls := &logState{name: log, next: m.high + 1, notify: make(chan struct{})}
	ls.last.Store(m.high)
	ls.first.Store(m.first)
	ls.count.Store(m.count)
	ls.bytes.Store(m.bytes)
	s.logs[log] = ls
	return ls, nil
}

// checkName keeps log names to what fits in keys and file names unambiguously.
func checkName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("buffer: bad log name %q", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("buffer: bad log name %q: use a-z, 0-9, '-', '_', '.'", name)
		}
	}
	return nil
}

// Package buffer is edgegate's durable store: named logs with sequence numbers, a committed
// position per consumer, a dedup index with TTL and a small state KV, all in one Badger DB.
// Every write goes through one writer goroutine that groups concurrent requests into one
// Badger transaction and one fsync (group commit), so ack-after-durable stays fast.
package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
)

// Options configure a Store.
type Options struct {
	// Dir is the Badger directory; it is created if missing.
	Dir string
	// SyncInterval 0 means every group of writes is fsynced before its waiters are released
	// (sync: always). A positive interval releases waiters once the write is in the WAL and
	// fsyncs on that period: a process crash loses nothing, a power cut may lose the last
	// interval.
	SyncInterval time.Duration
	// DedupTTL is how long a record id is remembered; 0 disables dedup.
	DedupTTL time.Duration
	// DedupCacheSize bounds the in-memory cache of recent ids in front of the durable index.
	DedupCacheSize int
	Logger         *slog.Logger
	Clock          clock.Clock
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

// Store is the durable buffer. Its methods are safe for concurrent use.
type Store struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger

	reqs     chan *request
	quit     chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	closeMu  sync.RWMutex // held for reading while a request is being queued; Close takes it for writing
	closeErr error
	once     sync.Once

	mu   sync.Mutex // guards logs
	logs map[string]*logState

	dedup *idCache // owned by the writer goroutine

	stats Stats
}

// Stats are counters read by metrics.
type Stats struct {
	Groups    atomic.Uint64 // write groups committed
	Syncs     atomic.Uint64 // fsyncs
	Appended  atomic.Uint64 // entries stored
	DedupHits atomic.Uint64 // entries dropped as duplicates
}

type logState struct {
	last   atomic.Uint64 // last committed sequence number
	next   uint64        // next number to assign; owned by the writer
	notify chan struct{} // closed and replaced when last moves; guarded by Store.mu
}

// Open opens (or creates) the store in opts.Dir. It starts the writer goroutine, which
// Close stops.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("buffer: no directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.DedupCacheSize <= 0 {
		opts.DedupCacheSize = 16384
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: create %s: %w", opts.Dir, err)
	}
	lg := opts.Logger.With("component", "buffer")
	db, err := badger.Open(badgerOptions(opts.Dir, lg))
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", opts.Dir, err)
	}
	s := &Store{
		db:    db,
		opts:  opts,
		log:   lg,
		reqs:  make(chan *request, 1024),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		logs:  make(map[string]*logState),
		dedup: newIDCache(opts.DedupCacheSize),
	}
	go s.writer()
	return s, nil
}

// Stats returns the store's counters.
func (s *Store) Stats() *Stats { return &s.stats }

// DB exposes the Badger handle to the store's own maintenance code and tests.
func (s *Store) DB() *badger.DB { return s.db }

// Close waits for queued writes, stops the writer and closes Badger. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closeMu.Lock()
		s.closed.Store(true)
		close(s.quit)
		s.closeMu.Unlock()
		<-s.done
		if err := s.db.Sync(); err != nil {
			s.closeErr = err
		}
		if err := s.db.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Append stores entries at the end of the named log and returns once they are durable
// (per the sync policy). Entries whose id was seen within the dedup TTL are reported as Dup
// and not stored. On error nothing of this call may be assumed stored; a retry is safe when
// the entries carry ids.
func (s *Store) Append(ctx context.Context, log string, entries []Entry) ([]Result, error) {
	if err := checkName(log); err != nil {
		return nil, err
	}
	r := &request{log: log, entries: entries, done: make(chan struct{})}
	if err := s.submit(ctx, r); err != nil {
		return nil, err
	}
	return r.results, nil
}

// Update applies the writes build makes in one atomic, durable transaction (DESIGN
// invariant 3: a pipeline step commits its state, its panes and its cursor together).
// build runs on the writer goroutine: it must be quick and must not call the store.
func (s *Store) Update(ctx context.Context, build func(tx *Tx)) error {
	r := &request{tx: &Tx{}, done: make(chan struct{})}
	build(r.tx)
	if r.tx.err != nil {
		return r.tx.err
	}
	return s.submit(ctx, r)
}

// Commit records next as the position of consumer in log: entries below next are done
// for that consumer.
func (s *Store) Commit(ctx context.Context, log, consumer string, next uint64) error {
	return s.Update(ctx, func(tx *Tx) { tx.SetCursor(log, consumer, next) })
}

func (s *Store) submit(ctx context.Context, r *request) error {
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
	// Once queued, the request completes even if ctx ends: the writer drains its queue
	// before exiting. Waiting for it keeps "returned nil" equal to "durable".
	<-r.done
	return r.err
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
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("buffer: get %q: %w", key, err)
	}
	return out, out != nil, nil
}

// Read calls fn for each entry of log with from ≤ seq, in order, at most max entries (0: no
// limit), and returns the sequence number after the last one read. The value passed to fn
// is only valid during the call. fn may stop the scan by returning ErrStop.
func (s *Store) Read(log string, from uint64, max int, fn func(seq uint64, value []byte) error) (uint64, error) {
	next := from
	prefix := logPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		n := 0
		for it.Seek(logKey(log, from)); it.Valid(); it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			err := item.Value(func(v []byte) error { return fn(seq, v) })
			if errors.Is(err, ErrStop) {
				return nil
			}
			if err != nil {
				return err
			}
			next = seq + 1
			n++
			if max > 0 && n >= max {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return next, fmt.Errorf("buffer: read log %q from %d: %w", log, from, err)
	}
	return next, nil
}

// ErrStop, returned by a Read callback, ends the scan without error.
var ErrStop = errors.New("stop")

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

// logState returns the state of a log, loading its last sequence number on first use.
func (s *Store) logState(log string) (*logState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ls, ok := s.logs[log]; ok {
		return ls, nil
	}
	last, err := s.findLast(log)
	if err != nil {
		return nil, err
	}
	ls := &logState{next: last + 1, notify: make(chan struct{})}
	ls.last.Store(last)
	s.logs[log] = ls
	return ls, nil
}

func (s *Store) findLast(log string) (uint64, error) {
	var last uint64
	prefix := logPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Reverse = true
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		it.Seek(logKey(log, ^uint64(0)))
		if it.Valid() {
			last = binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("buffer: find end of log %q: %w", log, err)
	}
	// The last entry may have been trimmed: the high-water mark keeps numbers unique.
	if v, ok, err := s.getRaw(highKey(log)); err == nil && ok && len(v) == 8 {
		if h := binary.BigEndian.Uint64(v); h > last {
			last = h
		}
	}
	return last, nil
}

func (s *Store) published(log string, last uint64) {
	s.mu.Lock()
	ls := s.logs[log]
	if ls != nil && last > ls.last.Load() {
		ls.last.Store(last)
		close(ls.notify)
		ls.notify = make(chan struct{})
	}
	s.mu.Unlock()
}

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

// Opening a store: its options' defaults, the database, what the store keeps (layout,
// logs, dedup, arrivals) and the recovery of what the witness says was acknowledged.

package buffer

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
)

// Open opens (or creates) the store in opts.Dir. Unless ReadOnly, it starts the writer
// goroutine, which Close stops. Entries that the witness shows were committed but that
// Badger dropped at recovery are logged, counted in Stats.Lost and listed by Lost.
func Open(opts Options) (s *Store, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	lg := opts.Logger.With("component", "buffer")
	if opts.ReadOnly {
		if _, err := os.Stat(opts.Dir); err != nil {
			return nil, fmt.Errorf("buffer: open %s: %w", opts.Dir, err)
		}
	} else if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: create %s: %w", opts.Dir, err)
	}
	s = newStore(opts, lg)
	if s.db, err = openDB(opts, lg); err != nil {
		return nil, err
	}
	st := s // s is nil once an error is returned
	defer func() {
		if err != nil {
			st.db.Close()
			if st.wal != nil {
				st.wal.Close()
			}
			st.witness.close()
		}
	}()
	if err := s.load(); err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		close(s.done)
		s.closed.Store(true)
		return s, nil
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// setDefaults fills the options left zero and checks OnFull.
func (opts *Options) setDefaults() error {
	if opts.Dir == "" {
		return errors.New("buffer: no directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.LazyDelay == 0 {
		opts.LazyDelay = DefaultLazyDelay
	}
	if opts.DedupCacheSize <= 0 {
		opts.DedupCacheSize = 16384
	}
	if opts.OnFull == "" {
		opts.OnFull = DropOldest
	}
	if opts.BulkLog == "" {
		opts.BulkLog = logs.Bulk
	}
	if opts.OnFull != DropOldest && opts.OnFull != Reject {
		return fmt.Errorf("buffer: unknown on_full policy %q", opts.OnFull)
	}
	if opts.MaintainEvery <= 0 {
		opts.MaintainEvery = 10 * time.Second
	}
	if opts.StatFS == nil {
		opts.StatFS = SysStatFS
	}
	if opts.memTableSize <= 0 {
		opts.memTableSize = defaultMemTableSize
	}
	if opts.scanSteps <= 0 {
		opts.scanSteps = 10_000
	}
	return nil
}

// newStore is the store of opts, before its database is open.
func newStore(opts Options, lg *slog.Logger) *Store {
	s := &Store{
		opts:      opts,
		log:       lg,
		reqs:      make(chan *request, 1024),
		queued:    newQueueBytes(maxQueuedBytes),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		logs:      make(map[string]*logState),
		consumers: make(map[string][]string),
		precious:  make(map[string]bool),
		dedup:     newIDCache(opts.DedupCacheSize),
		arrivals:  newArrivalTable(cmp.Or(opts.arrivalLimit, maxArrivals)),
		highs:     make(map[string]uint64),
		tuning:    newTuning(opts.memTableSize),
		bulkKind:  'a',
	}
	for log, cs := range opts.Consumers {
		s.consumers[log] = append([]string(nil), cs...)
	}
	for _, p := range opts.Precious {
		s.precious[p] = true
	}
	return s
}

// openDB opens the Badger database of opts, with its errors made clear: another process
// holds it, or a read-only open needs a writable one first.
func openDB(opts Options, lg *slog.Logger) (*badger.DB, error) {
	if opts.ReadOnly {
		if err := checkEmptyLogs(opts.Dir); err != nil {
			return nil, err
		}
	} else if err := removeEmptyLogs(opts.Dir, lg); err != nil {
		return nil, err
	}
	bo := badgerOptions(opts.Dir, opts.memTableSize, lg).WithReadOnly(opts.ReadOnly)
	db, err := badger.Open(bo)
	if err != nil {
		// Badger's wrapping loses the sentinel (and it has none for a held lock); its message
		// survives.
		if opts.ReadOnly && strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error()) {
			return nil, fmt.Errorf("buffer: open %s: %w", opts.Dir, ErrNeedsRecovery)
		}
		if strings.Contains(err.Error(), "Another process is using this Badger database") {
			return nil, fmt.Errorf("buffer: open %s: %w (%v)", opts.Dir, ErrInUse, err)
		}
		return nil, fmt.Errorf("buffer: open %s: %w", opts.Dir, err)
	}
	return db, nil
}

// load reads what the store keeps: the key layout (converting an older one when
// writable), the dedup buckets, the logs and the count of dedup keys.
func (s *Store) load() error {
	if s.opts.ReadOnly {
		if err := s.detectLayout(); err != nil {
			return err
		}
	} else {
		if err := s.loadDedupBuckets(); err != nil {
			return err
		}
		if err := s.pickDedupWidth(); err != nil {
			return err
		}
		if err := s.convertLayout(); err != nil {
			return err
		}
	}
	if err := s.loadLogs(); err != nil {
		return err
	}
	// Deletes per transaction: within Badger's batch limits (small memtables have small
	// ones), with room for the time-index deletes and the meta key.
	s.dropMax = int(min(dropChunk, s.db.MaxBatchCount()/2, s.db.MaxBatchSize()/2/(int64(len(seqKey('l', "x", 0)))+80)))
	if v, ok, err := s.getRaw(dedupCountKey); err != nil {
		return err
	} else if ok && len(v) == 8 {
		s.dedupKeys.Store(int64(binary.BigEndian.Uint64(v)))
	}
	return nil
}

// start readies a writable store: the arrivals, the WAL syncer, the witness and the
// recovery from it, the dedup filter's load, and the writer.
func (s *Store) start() (err error) {
	if err := s.loadArrivals(); err != nil {
		return err
	}
	if s.wal, err = newWALSyncer(s.opts.Dir); err != nil {
		return err
	}
	s.syncFn = s.wal.Sync
	var prev map[string]uint64
	s.witness, prev, err = openWitness(s.opts.Dir)
	if err != nil {
		return err
	}
	if err := s.recover(prev); err != nil {
		return err
	}
	s.usage.sample(s)
	if s.opts.DedupTTL > 0 {
		s.filter = newIDFilter(s.opts.DedupTTL.Milliseconds(), s.dedupCap.Load, &s.stats.DedupFilterBytes)
		s.filterDone = make(chan struct{})
		go s.loadFilter(s.filter, s.filterDone)
	}
	go s.writer()
	return nil
}

// loadLogs reads every log's meta key (or rebuilds it from the entries of a store written
// before it existed).
func (s *Store) loadLogs() error {
	names, err := s.logNames()
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := s.logState(n); err != nil {
			return err
		}
	}
	return nil
}

// recover compares the logs with the witness of the last run. A log that ends before
// what was committed lost its tail: the loss is reported and the numbers are skipped, and
// the new high marks are written at once so that the loss is reported only once.
func (s *Store) recover(prev map[string]uint64) error {
	fix := map[string]uint64{}
	for log, high := range prev {
		if checkName(log) != nil {
			continue
		}
		ls, err := s.logState(log)
		if err != nil {
			return err
		}
		have := ls.next - 1
		if high <= have {
			continue
		}
		s.lost = append(s.lost, Loss{Log: log, From: have + 1, To: high})
		s.stats.Lost.Add(high - have)
		s.log.Error("the write-ahead log had a torn or corrupt tail: committed entries were lost at recovery",
			"log", log, "first_lost", have+1, "last_lost", high, "count", high-have)
		ls.next = high + 1
		ls.last.Store(high) // as the meta written below will say at the next open
		fix[log] = high
	}
	for log := range s.logs {
		s.highs[log] = s.logs[log].next - 1
	}
	if len(fix) == 0 {
		return s.witness.write(s.highs)
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		for log := range fix {
			if err := txn.Set(metaKey(log), s.logs[log].meta().encode()); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = s.syncFn()
	}
	if err != nil {
		return fmt.Errorf("buffer: record recovered high marks: %w", err)
	}
	return s.witness.write(s.highs)
}

// loadMeta reads m/<log>, or rebuilds it by scanning the log.
func (s *Store) loadMeta(log string) (logMeta, error) {
	v, ok, err := s.getRaw(metaKey(log))
	if err != nil {
		return logMeta{}, err
	}
	if ok {
		if m, good := decodeMeta(v); good {
			return m, nil
		}
		s.log.Warn("meta key of log is corrupt; rebuilding it from the entries", "log", log)
	}
	var m logMeta
	prefix := s.logPrefix(log)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			g, ok := segmentOf(it.Item(), prefix)
			if !ok {
				continue
			}
			if m.count == 0 {
				m.first = g.first
			}
			m.high = g.last
			m.count += g.count()
			m.bytes += g.logicalBytes(log)
		}
		return nil
	})
	if err != nil {
		return logMeta{}, fmt.Errorf("buffer: scan log %q: %w", log, err)
	}
	// The last entries may have been trimmed: the old high-water key keeps numbers unique.
	if v, ok, err := s.getRaw(legacyHighKey(log)); err == nil && ok && len(v) == 8 {
		m.high = max(m.high, binary.BigEndian.Uint64(v))
	}
	if m.count == 0 {
		m.first = m.high + 1
	}
	return m, nil
}

// logNames lists the logs that have a meta key, or entries or a high mark in a store
// written before meta keys existed.
func (s *Store) logNames() ([]string, error) {
	seen := map[string]bool{}
	var names []string
	add := func(name string) {
		if !seen[name] && checkName(name) == nil {
			seen[name] = true
			names = append(names, name)
		}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for _, p := range []string{metaPrefix, "h/"} {
			for it.Seek([]byte(p)); it.ValidForPrefix([]byte(p)); it.Next() {
				add(string(it.Item().Key()[len(p):]))
			}
		}
		bulk := s.logPrefix(s.opts.BulkLog)
		if it.Seek(bulk); it.ValidForPrefix(bulk) {
			add(s.opts.BulkLog)
		}
		// Entries: one seek per log, past the end of the log found.
		for it.Seek([]byte("l/")); it.ValidForPrefix([]byte("l/")); {
			k := it.Item().Key()[2:]
			i := bytes.IndexByte(k, '/')
			if i < 0 {
				it.Next()
				continue
			}
			name := string(k[:i])
			add(name)
			it.Seek(append([]byte("l/"+name+"/"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: list logs: %w", err)
	}
	return names, nil
}

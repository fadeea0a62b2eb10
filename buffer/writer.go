package buffer

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// maxGroup bounds how many queued requests one group commit takes.
const maxGroup = 4096

// dropChunk bounds the deletes of one transaction when dropping or trimming.
const dropChunk = 2000

type reqKind uint8

const (
	reqAppend reqKind = iota // the ingest path: subject to the budget policy
	reqUpdate                // an atomic Tx: never refused for room
	reqDrop                  // delete entries of a log below a sequence number
)

// dropReason says why entries were deleted; each has its own counter.
type dropReason uint8

const (
	dropTrim      dropReason = iota // every consumer committed past them
	dropRetention                   // older than the retention
	dropRoom                        // the budget needed room (drop_oldest)
)

type write struct {
	key, value []byte
	del        bool
	ttl        time.Duration
}

type request struct {
	kind reqKind
	// reqAppend: entries to append to log.
	log     string
	entries []Entry
	results []Result
	// reqUpdate
	tx *Tx
	// reqDrop: delete entries of log below `below`, at most dropChunk of them; dropped
	// and more are the outcome.
	below   uint64
	reason  dropReason
	dropped int
	more    bool

	err  error
	done chan struct{}

	// filled in by prepare
	writes []write
	size   int64                   // bytes staged: what it adds to the directory, roughly
	stored int                     // entries appended (for stats)
	ids    []string                // dedup hashes added to the cache, undone on failure
	deltas map[*logState]*logDelta // per log: what this request changes
	dedups int64                   // dedup keys written
}

// logDelta is what a request or a transaction changes in one log.
type logDelta struct {
	last    uint64 // last sequence number assigned; 0 none
	count   int64
	bytes   int64
	first   uint64 // new first live sequence number (drops); 0 unchanged
	indexed bool   // a time-index key was written
}

func (r *request) delta(ls *logState) *logDelta {
	if r.deltas == nil {
		r.deltas = map[*logState]*logDelta{}
	}
	d := r.deltas[ls]
	if d == nil {
		d = &logDelta{}
		r.deltas[ls] = d
	}
	return d
}

// writer is the only goroutine that writes to Badger. It takes every request that is
// queued and applies them in as few transactions as Badger's batch limits allow. With
// sync: always it hands the committed group to the syncer and goes on with the next one
// while the fsync runs, so a group fills up during the previous group's fsync (group
// commit, pipelined); with an interval it releases the waiters at once.
func (s *Store) writer() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.opts.SyncInterval > 0 {
		t := time.NewTicker(s.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	} else {
		s.synced = make(chan []*request, 2)
		syncerDone := make(chan struct{})
		go s.syncer(syncerDone)
		defer func() { close(s.synced); <-syncerDone }()
	}
	group := make([]*request, 0, 64)
	for {
		select {
		case r := <-s.reqs:
			group = append(group[:0], r)
		drain:
			for len(group) < maxGroup {
				select {
				case r := <-s.reqs:
					group = append(group, r)
				default:
					break drain
				}
			}
			s.apply(group)
		case <-tick:
			if s.dirty {
				if err := s.sync(); err != nil {
					s.breakOn(err) // what was acknowledged since the last fsync may be lost
				}
				s.dirty = false
			}
		case <-s.quit:
			for {
				select {
				case r := <-s.reqs:
					s.apply([]*request{r})
				default:
					return
				}
			}
		}
	}
}

// syncer fsyncs what the writer committed and releases its waiters, taking every group
// committed meanwhile under one fsync. It owns the witness while it runs.
func (s *Store) syncer(done chan struct{}) {
	defer close(done)
	for g := range s.synced {
		batch := g
	more:
		for {
			select {
			case g, ok := <-s.synced:
				if !ok {
					break more
				}
				batch = append(batch, g...)
			default:
				break more
			}
		}
		// Groups committed before an fsync failed are not released by a later fsync that
		// happens to succeed: the failed one may have dropped their pages.
		err := s.brokenErr()
		if err == nil {
			if err = s.sync(); err != nil {
				err = s.breakOn(err)
			}
		}
		if err != nil {
			for _, r := range batch {
				r.err = err
				r.results = nil
				close(r.done)
			}
			continue
		}
		s.release(batch)
	}
}

// breakOn records a failed fsync: the entries are in Badger but maybe not on disk, and
// Badger's state after a failed fsync is unknown, so the store refuses everything from
// now on (a restart recovers from what is on disk) rather than acknowledge what may be
// lost. It returns the error every refusal carries.
func (s *Store) breakOn(err error) error {
	err = fmt.Errorf("buffer: fsync: %w", err)
	s.broken.CompareAndSwap(nil, &err)
	return *s.broken.Load()
}

// Err says why the store takes no more writes: ErrClosed, or the error of the fsync that
// broke it; nil while it works.
func (s *Store) Err() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.brokenErr()
}

// brokenErr is the error of the fsync that broke the store, or nil.
func (s *Store) brokenErr() error {
	if e := s.broken.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *Store) sync() error {
	start := time.Now()
	err := s.syncFn()
	s.stats.SyncNanos.Add(uint64(time.Since(start)))
	s.stats.Syncs.Add(1)
	if err != nil {
		s.log.Error("fsync failed", "err", err)
		return err
	}
	return nil
}

// apply runs one group: drops first (each in its own transaction), then the budget
// decision, then appends and updates in shared transactions, one fsync, and the release
// of every waiter.
func (s *Store) apply(group []*request) {
	if err := s.brokenErr(); err != nil {
		for _, r := range group {
			s.fail(r, err)
		}
		return
	}
	var ok, work []*request
	rd := groupReader{db: s.db}
	for _, r := range group {
		if r.kind == reqDrop {
			if err := s.execDrop(r); err != nil {
				s.fail(r, err)
				continue
			}
			ok = append(ok, r)
			continue
		}
		if err := s.prepare(r, &rd); err != nil {
			s.fail(r, err)
			continue
		}
		work = append(work, r)
	}
	rd.done()
	work = s.admit(work)

	maxSize := s.MaxRequestBytes()
	maxCount := s.db.MaxBatchCount() * 9 / 10
	var (
		txn       *badger.Txn
		inTxn     []*request
		size, cnt int64
	)
	commit := func() {
		if txn == nil {
			return
		}
		err := s.commitTxn(txn, inTxn)
		if err != nil {
			for _, r := range inTxn {
				s.fail(r, err)
			}
		} else {
			ok = append(ok, inTxn...)
		}
		txn, inTxn, size, cnt = nil, inTxn[:0:0], 0, 0
	}
	for _, r := range work {
		n := int64(len(r.writes)) + int64(len(r.deltas)) + 1
		if r.size >= maxSize || n >= maxCount {
			s.fail(r, fmt.Errorf("%w: %d writes, %d bytes", ErrTooLarge, n, r.size))
			continue
		}
		if size+r.size >= maxSize || cnt+n >= maxCount {
			commit()
		}
		if txn == nil {
			txn = s.db.NewTransaction(true)
		}
		if err := stage(txn, r.writes); err != nil {
			// Cannot happen with the size accounting above; if it does, this txn may hold
			// part of r, so the whole txn is discarded rather than committed half-done.
			txn.Discard()
			err = fmt.Errorf("buffer: stage write: %w", err)
			for _, o := range append(inTxn, r) {
				s.fail(o, err)
			}
			txn, inTxn, size, cnt = nil, inTxn[:0:0], 0, 0
			continue
		}
		inTxn = append(inTxn, r)
		size += r.size
		cnt += n
	}
	commit()
	if len(ok) == 0 {
		return
	}
	if s.opts.SyncInterval == 0 {
		s.synced <- ok
		return
	}
	s.dirty = true
	s.release(ok)
}

// release makes a durable group visible and returns to its waiters: the log positions
// move, readers waiting on them wake, and the witness records the new high marks.
func (s *Store) release(ok []*request) {
	s.stats.Groups.Add(1)
	changed := false
	for _, r := range ok {
		for ls, d := range r.deltas {
			if d.last > s.highs[ls.name] {
				s.highs[ls.name] = d.last
				changed = true
			}
		}
	}
	if changed {
		if err := s.witness.write(s.highs); err != nil {
			s.log.Warn("cannot update the witness file; a later torn-tail loss may go unreported", "err", err)
		}
	}
	for _, r := range ok {
		s.stats.Appended.Add(uint64(r.stored))
		for ls, d := range r.deltas {
			if d.last > 0 {
				s.published(ls, d.last)
			}
		}
		close(r.done)
	}
}

func stage(txn *badger.Txn, ws []write) error {
	for _, w := range ws {
		var err error
		switch {
		case w.del:
			err = txn.Delete(w.key)
		case w.ttl > 0:
			err = txn.SetEntry(badger.NewEntry(w.key, w.value).WithTTL(w.ttl))
		default:
			err = txn.Set(w.key, w.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commitTxn writes the meta keys of the logs reqs change, commits, and on success applies
// their changes to the logs' state and the usage estimate.
func (s *Store) commitTxn(txn *badger.Txn, reqs []*request) error {
	total := map[*logState]*logDelta{}
	var dedups, written int64
	for _, r := range reqs {
		written += r.size
		dedups += r.dedups
		for ls, d := range r.deltas {
			t := total[ls]
			if t == nil {
				t = &logDelta{}
				total[ls] = t
			}
			t.count += d.count
			t.bytes += d.bytes
			if d.first > t.first {
				t.first = d.first
			}
		}
	}
	for ls, t := range total {
		m := ls.meta() // high is ls.next-1: numbers assigned so far, this txn's included
		m.count += t.count
		m.bytes += t.bytes
		if t.first > m.first {
			m.first = t.first
		}
		// Counted in prepare's size accounting (one write per log per request).
		if err := txn.Set(metaKey(ls.name), m.encode()); err != nil {
			txn.Discard()
			return fmt.Errorf("buffer: stage meta of log %q: %w", ls.name, err)
		}
	}
	if dedups > 0 {
		if err := txn.Set(dedupCountKey, u64(uint64(s.dedupKeys.Load()+dedups))); err != nil {
			txn.Discard()
			return fmt.Errorf("buffer: stage dedup count: %w", err)
		}
	}
	if err := txn.Commit(); err != nil {
		// The caller fails every request, which also forgets their time-index keys.
		return fmt.Errorf("buffer: commit: %w", err)
	}
	for ls, t := range total {
		ls.count.Add(t.count)
		ls.bytes.Add(t.bytes)
		if t.first > ls.first.Load() {
			ls.first.Store(t.first)
		}
	}
	s.dedupKeys.Add(dedups)
	s.usage.written += written
	return nil
}

func (s *Store) fail(r *request, err error) {
	for _, h := range r.ids {
		s.dedup.remove(h)
	}
	for ls, d := range r.deltas {
		if d.indexed {
			ls.indexedAt = 0 // write a time-index key again with the next append
		}
	}
	r.err = err
	r.results = nil
	close(r.done)
}

// prepare turns a request into Badger writes: it assigns sequence numbers and checks ids
// against the dedup index. It runs once per request.
func (s *Store) prepare(r *request, rd *groupReader) error {
	now := s.opts.Clock.Now()
	minute := now.Unix() / 60
	add := func(w write) {
		r.writes = append(r.writes, w)
		r.size += int64(len(w.key)+len(w.value)) + 16
	}
	appendTo := func(ls *logState, d *logDelta, value []byte) uint64 {
		seq := ls.next
		ls.next++
		d.last = seq
		d.count++
		d.bytes += entrySize(ls.name, len(value))
		r.stored++
		if minute != ls.indexedAt {
			ls.indexedAt = minute
			d.indexed = true
			add(write{key: timeKey(ls.name, seq), value: u64(uint64(now.UnixMilli()))})
		}
		add(write{key: s.logKey(ls.name, seq), value: value})
		return seq
	}
	defer func() { r.size += int64(len(r.deltas)) * 48 }() // the meta key written per log
	if r.tx != nil {
		for _, o := range r.tx.ops {
			switch o.kind {
			case opAppend:
				ls, err := s.logState(o.log)
				if err != nil {
					return err
				}
				appendTo(ls, r.delta(ls), o.value)
			case opSet:
				add(write{key: o.key, value: o.value})
			case opDelete:
				add(write{key: o.key, del: true})
			}
		}
		return nil
	}
	var ls *logState // looked up at the first entry stored: dups alone create no log
	var d *logDelta
	exp := now.Add(s.opts.DedupTTL).UnixMilli() // of the ids stored by this request
	r.results = make([]Result, len(r.entries))
	for i, e := range r.entries {
		if e.ID != "" && s.opts.DedupTTL > 0 {
			h := dedupHash(e.ID)
			dup, err := s.seen(rd, h, now)
			if err != nil {
				return err
			}
			if dup {
				r.results[i].Dup = true
				s.stats.DedupHits.Add(1)
				continue
			}
			s.dedup.add(h, exp)
			r.ids = append(r.ids, h)
			if c := s.dedupCap.Load(); c > 0 && s.dedupKeys.Load()+r.dedups >= c {
				// The index is at its share of the budget until Maintain evicts the
				// oldest ids: remember this one in memory only.
				s.stats.DedupSkipped.Add(1)
			} else {
				r.dedups++
				end := dedupBucketEnd(exp, s.dedupWidth)
				s.noteDedupEnd(end)
				add(write{key: dedupKey(end, h), value: u64(uint64(exp)), ttl: s.opts.DedupTTL})
				s.filter.add(h, exp, now.UnixMilli())
			}
		}
		if d == nil {
			var err error
			if ls, err = s.logState(r.log); err != nil {
				return err
			}
			d = r.delta(ls)
		}
		r.results[i].Seq = appendTo(ls, d, e.Value)
	}
	return nil
}

// logical is what r adds to the budget's logical bytes: its entries and dedup ids.
func (r *request) logical() int64 {
	n := r.dedups * dedupKeyCost
	for _, d := range r.deltas {
		n += d.bytes
	}
	return n
}

// seen reports whether the id hashed to h is in the dedup index and not expired on the
// store's clock: the in-memory cache first, then the filter of ids never stored, then
// Badger. (Badger's own TTL, on the system clock, only garbage-collects the keys.)
func (s *Store) seen(rd *groupReader, h string, now time.Time) (bool, error) {
	ms := now.UnixMilli()
	if exp, ok := s.dedup.get(h); ok {
		if ms < exp {
			return true, nil
		}
		s.dedup.remove(h)
	}
	lo, hi, maybe := s.filter.expiries(h, ms)
	if !maybe {
		return false, nil
	}
	s.stats.DedupLookups.Add(1)
	exp, found, err := s.lookupDedup(rd.txn(), h, ms, lo, hi)
	if err != nil {
		return false, fmt.Errorf("buffer: dedup lookup: %w", err)
	}
	return found && ms < exp, nil
}

// groupReader is one read transaction for a group's dedup lookups, begun at the first one.
// Each Badger transaction costs wake-ups of its watermark goroutine when it begins and
// ends; a group of fifty appends took fifty. It sees every group committed before this
// one; ids stored earlier in the same group are in the id cache.
type groupReader struct {
	db *badger.DB
	t  *badger.Txn
}

func (g *groupReader) txn() *badger.Txn {
	if g.t == nil {
		g.t = g.db.NewTransaction(false)
	}
	return g.t
}

// done ends the transaction, if one was begun.
func (g *groupReader) done() {
	if g.t != nil {
		g.t.Discard()
		g.t = nil
	}
}

func (s *Store) published(ls *logState, last uint64) {
	s.mu.Lock()
	if last > ls.last.Load() {
		ls.last.Store(last)
		close(ls.notify)
		ls.notify = make(chan struct{})
	}
	s.mu.Unlock()
}

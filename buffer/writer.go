package buffer

import (
	"errors"
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
	reqAppend  reqKind = iota // the ingest path: subject to the budget policy
	reqUpdate                 // an atomic Tx: never refused for room
	reqDrop                   // delete entries of a log below a sequence number
	reqDropIDs                // delete the oldest ids of a dedup bucket (boundDedup)
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
	extra   []write    // written with the entries (arrivals.go)
	arrival arrivalRef // the arrival's record in memory, told the outcome (arrivals.go)
	results []Result
	// reqUpdate
	tx *Tx
	// reqDrop: delete entries of log below `below`, at most dropChunk of them; dropped
	// and more are the outcome.
	below   uint64
	reason  dropReason
	dropped int
	more    bool
	// reqDropIDs: the bucket, the expiry below which its ids go (in below), and where the
	// next chunk starts (the key after the last one read; nil: the bucket's start).
	bucket int64
	from   []byte

	err  error
	done chan struct{}

	// filled in by prepare
	writes []write
	size   int64                   // bytes staged: what it adds to the directory, roughly
	stored int                     // entries appended (for stats)
	hits   int                     // entries not stored: duplicates (counted once released)
	ids    []string                // dedup hashes added to the cache, undone on failure
	deltas map[*logState]*logDelta // per log: what this request changes
	dedups int64                   // dedup keys written (deleted: negative)
	// after lists the requests of the group (by index) that added ids this one repeats:
	// they are not committed yet, so this request shares their fate (see prepare).
	after   []int32
	pending int // entries that repeat such ids
}

// logDelta is what a request or a transaction changes in one log.
type logDelta struct {
	last  uint64 // last sequence number assigned; 0 none
	count int64
	bytes int64
	first uint64 // new first live sequence number (drops); 0 unchanged
	// Appends: the first sequence number assigned, and when (unix ms, the store's clock):
	// the time-index key the writer may stage with them (stageIndex).
	from uint64
	at   int64
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
				s.arrived(r.arrival, false)
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
	s.group++
	var ok, work []*request
	rd := groupReader{db: s.db}
	for i, r := range group {
		if r.kind == reqDrop || r.kind == reqDropIDs {
			exec := s.execDrop
			if r.kind == reqDropIDs {
				exec = s.execDropIDs
			}
			if err := exec(r); err != nil {
				s.fail(r, err)
				continue
			}
			ok = append(ok, r)
			continue
		}
		if err := s.prepare(r, i, &rd); err != nil {
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
		index     txnIndex
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
			index.committed()
			ok = append(ok, inTxn...)
		}
		txn, inTxn, size, cnt = nil, inTxn[:0:0], 0, 0
		index.reset()
	}
	for _, r := range work {
		// The meta key and a time-index key per log besides the request's own writes.
		n := int64(len(r.writes)) + 2*int64(len(r.deltas)) + 1
		if r.size >= maxSize || n >= maxCount {
			s.fail(r, fmt.Errorf("%w: %d writes, %d bytes", ErrTooLarge, n, r.size))
			continue
		}
		if size+r.size >= maxSize || cnt+n >= maxCount {
			commit()
		}
		// Known now: the requests r repeats ids of were committed, failed, or are in this
		// transaction (r then shares its outcome).
		if err := r.failedBefore(group); err != nil {
			if errors.Is(err, ErrFull) {
				s.countRejected(r, uint64(r.stored+r.pending))
			}
			s.fail(r, err)
			continue
		}
		if txn == nil {
			txn = s.db.NewTransaction(true)
		}
		err := stage(txn, r.writes)
		if err == nil {
			err = index.stage(txn, r)
		}
		if err != nil {
			// Cannot happen with the size accounting above; if it does, this txn may hold
			// part of r, so the whole txn is discarded rather than committed half-done.
			txn.Discard()
			err = fmt.Errorf("buffer: stage write: %w", err)
			for _, o := range append(inTxn, r) {
				s.fail(o, err)
			}
			txn, inTxn, size, cnt = nil, inTxn[:0:0], 0, 0
			index.reset()
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
		if r.hits > 0 {
			s.stats.DedupHits.Add(uint64(r.hits))
		}
		for ls, d := range r.deltas {
			if d.last > 0 {
				s.published(ls, d.last)
			}
		}
		s.arrived(r.arrival, true)
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
	if dedups != 0 {
		if err := txn.Set(dedupCountKey, u64(uint64(max(0, s.dedupKeys.Load()+dedups)))); err != nil {
			txn.Discard()
			return fmt.Errorf("buffer: stage dedup count: %w", err)
		}
	}
	if err := txn.Commit(); err != nil {
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
	s.arrived(r.arrival, false)
	r.err = err
	r.results = nil
	close(r.done)
}

// failedBefore returns the error r fails with because a request it repeats ids of failed
// (nil if none did). A duplicate shares the fate of its original: reported as a duplicate
// it would be acknowledged though nothing was stored. It fails with the same error, so a
// full buffer refuses both; but not as ErrTooLarge, which says that sending it again cannot
// help: the original was too large, not this one, and sent again it is fresh (the original's
// ids left the cache when it failed).
func (r *request) failedBefore(group []*request) error {
	for _, i := range r.after {
		o := group[i]
		if o.err == nil {
			continue
		}
		if errors.Is(o.err, ErrTooLarge) {
			return fmt.Errorf("buffer: %d entries repeat ids of an append that failed (%v): send them again", r.pending, o.err)
		}
		return o.err
	}
	return nil
}

// txnIndex stages the time-index keys of one transaction: a key for the first entry a log
// gets in each minute. It is decided when the entries are staged, not when they are
// prepared, so that every committed entry is dated by a key of its own minute whichever
// requests of its group fail (a key prepared with a request that then failed left the
// entries after it dated by an older key, and the retention deleted them early).
type txnIndex struct {
	minutes map[*logState]int64 // per log: the minute of the last key staged in this txn
}

// stage adds the time-index keys r's appends need to txn.
func (x *txnIndex) stage(txn *badger.Txn, r *request) error {
	for ls, d := range r.deltas {
		if d.from == 0 {
			continue
		}
		minute := floorDiv(d.at, 60_000)
		last, ok := x.minutes[ls]
		if !ok {
			last = ls.indexedAt
		}
		if minute == last {
			continue
		}
		if err := txn.Set(timeKey(ls.name, d.from), u64(uint64(d.at))); err != nil {
			return err
		}
		if x.minutes == nil {
			x.minutes = map[*logState]int64{}
		}
		x.minutes[ls] = minute
	}
	return nil
}

// committed records the keys of a committed transaction as written.
func (x *txnIndex) committed() {
	for ls, m := range x.minutes {
		ls.indexedAt = m
	}
}

func (x *txnIndex) reset() { clear(x.minutes) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// prepare turns request i of the group into Badger writes: it assigns sequence numbers and
// checks ids against the dedup index. It runs once per request.
func (s *Store) prepare(r *request, i int, rd *groupReader) error {
	now := s.opts.Clock.Now()
	add := func(w write) {
		r.writes = append(r.writes, w)
		r.size += int64(len(w.key)+len(w.value)) + 16
	}
	appendTo := func(ls *logState, d *logDelta, value []byte) uint64 {
		seq := ls.next
		ls.next++
		if d.from == 0 {
			d.from, d.at = seq, now.UnixMilli()
			r.size += int64(len(ls.name)+11+8) + 16 // the time-index key the writer may stage
		}
		d.last = seq
		d.count++
		d.bytes += entrySize(ls.name, len(value))
		r.stored++
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
				add(write{key: o.key, value: o.value, ttl: o.ttl})
			case opDelete:
				add(write{key: o.key, del: true})
			}
		}
		return nil
	}
	for _, w := range r.extra {
		add(w)
	}
	var ls *logState // looked up at the first entry stored: dups alone create no log
	var d *logDelta
	exp := now.Add(s.opts.DedupTTL).UnixMilli() // of the ids stored by this request
	r.results = make([]Result, len(r.entries))
	for k, e := range r.entries {
		if e.ID != "" && s.opts.DedupTTL > 0 {
			h := dedupHash(e.ID)
			dup, by, err := s.seen(rd, h, now)
			if err != nil {
				return err
			}
			if dup {
				r.results[k].Dup = true
				r.hits++
				if by >= 0 && by != int32(i) {
					// Added by an earlier request of this group: committed with it or not
					// at all (apply).
					r.pending++
					if len(r.after) == 0 || r.after[len(r.after)-1] != by {
						r.after = append(r.after, by)
					}
				}
				continue
			}
			// Always written, the newest ids above all: at its cap the index forgets its
			// oldest (Maintain), never a resend's original.
			s.dedup.add(h, exp, s.group, i)
			r.ids = append(r.ids, h)
			r.dedups++
			end := dedupBucketEnd(exp, s.dedupWidth)
			s.noteDedupEnd(end)
			add(write{key: dedupKey(end, h), value: u64(uint64(exp)), ttl: s.opts.DedupTTL})
			s.filter.add(h, exp, now.UnixMilli())
		}
		if d == nil {
			var err error
			if ls, err = s.logState(r.log); err != nil {
				return err
			}
			d = r.delta(ls)
		}
		r.results[k].Seq = appendTo(ls, d, e.Value)
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
// Badger. (Badger's own TTL, on the system clock, only garbage-collects the keys.) by is
// the index in the group of the request that added the id when that was in this group
// (not committed yet), else -1.
func (s *Store) seen(rd *groupReader, h string, now time.Time) (dup bool, by int32, err error) {
	ms := now.UnixMilli()
	if c, ok := s.dedup.get(h); ok {
		if ms < c.exp {
			if c.group == s.group {
				return true, c.req, nil
			}
			return true, -1, nil
		}
		s.dedup.remove(h)
	}
	lo, hi, maybe := s.filter.expiries(h, ms)
	if !maybe {
		return false, -1, nil
	}
	s.stats.DedupLookups.Add(1)
	exp, found, err := s.lookupDedup(rd.txn(), h, ms, lo, hi)
	if err != nil {
		return false, -1, fmt.Errorf("buffer: dedup lookup: %w", err)
	}
	return found && ms < exp, -1, nil
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

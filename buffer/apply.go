package buffer

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

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
	ok, work := s.prepareGroup(group)
	work = s.admit(work)
	s.committed(s.commitGroup(group, work, ok))
}

// committed hands the requests of a committed group to the syncer (sync: always), or
// releases them now (sync: <interval>, the syncer's ticker fsyncs what is dirty).
func (s *Store) committed(ok []*request) {
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

// prepareGroup executes the group's drops (each in its own transaction) and prepares its
// appends and updates. It returns the drops done and the requests left to commit; the
// ones that failed are released with their error.
func (s *Store) prepareGroup(group []*request) (ok, work []*request) {
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
	return ok, work
}

// groupTxns packs the prepared requests of a group into as few transactions as Badger's
// batch limits allow.
type groupTxns struct {
	s         *Store
	ok        []*request // committed (and the group's drops before them)
	txn       *badger.Txn
	inTxn     []*request
	size, cnt int64
	index     txnIndex
	segs      txnSegments
	maxSize   int64 // a transaction's bounds (commitGroup)
	maxCount  int64
}

// commitGroup commits work in shared transactions and returns ok with the requests
// committed appended; the ones that failed are released with their error.
func (s *Store) commitGroup(group, work, ok []*request) []*request {
	maxSize := s.MaxRequestBytes()
	maxCount := s.db.MaxBatchCount() * 9 / 10
	g := groupTxns{s: s, ok: ok, maxSize: maxSize, maxCount: maxCount}
	for _, r := range work {
		// A segment, the meta key and a time-index key per log besides the request's own
		// writes.
		n := int64(len(r.writes)) + 3*int64(len(r.deltas)) + 1
		if r.size >= maxSize || n >= maxCount {
			s.fail(r, fmt.Errorf("%w: %d writes, %d bytes", ErrTooLarge, n, r.size))
			continue
		}
		if g.size+r.size >= maxSize || g.cnt+n >= maxCount {
			g.commit()
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
		g.add(r, n)
	}
	g.commit()
	return g.ok
}

// add stages r in the open transaction (beginning one if none is).
func (g *groupTxns) add(r *request, n int64) {
	var err error
	if g.txn == nil {
		g.txn = g.s.db.NewTransaction(true)
		err = g.stageMarks(r.size, n)
	}
	if err == nil {
		err = stage(g.txn, r.writes)
	}
	if err == nil {
		err = g.segs.stage(g.s, g.txn, r.recs)
	}
	if err == nil {
		err = g.index.stage(g.txn, r)
	}
	if err != nil {
		// Cannot happen with the size accounting of commitGroup; if it does, this txn may
		// hold part of r, so the whole txn is discarded rather than committed half-done.
		g.txn.Discard()
		err = fmt.Errorf("buffer: stage write: %w", err)
		for _, o := range append(g.inTxn, r) {
			g.s.fail(o, err)
		}
		g.txn, g.inTxn, g.size, g.cnt = nil, g.inTxn[:0:0], 0, 0
		g.index.reset()
		g.segs.reset()
		return
	}
	g.inTxn = append(g.inTxn, r)
	g.size += r.size
	g.cnt += n
}

// markBatch bounds the records of arrivals one transaction marks delivered, and markCost is
// what each rewrite is counted for (a key and value, as request.add counts a write).
const (
	markBatch = 512
	markCost  = int64(len(arrivalPrefix)+len(clientKey{})+2+arrivalValueLen) + 16
)

// stageMarks stages, first in the new transaction, the rewrites that mark the records of
// arrivals delivered since with the delivered flag (arrivalTable.takeMarks), as many as fit
// beside the request of size bytes and n writes that begins it. They ride in a commit the
// writer makes anyway.
func (g *groupTxns) stageMarks(size, n int64) error {
	room := min(markBatch, (g.maxSize-size)/markCost, g.maxCount-n-1)
	if room <= 0 {
		return nil
	}
	ws := g.s.arrivals.takeMarks(int(room), g.s.opts.Clock.Now().UnixMilli())
	if err := stage(g.txn, ws); err != nil {
		return err
	}
	g.size += int64(len(ws)) * markCost
	g.cnt += int64(len(ws))
	return nil
}

// writeMarks writes, at Close, the delivered flags of the records of arrivals delivered
// since the writer's last transaction. Without them, the records come back at Open as
// publishes that may be resent (arrivalTable.takeMarks); lost with a kill -9, they do.
func (s *Store) writeMarks() {
	for s.brokenErr() == nil {
		ws := s.arrivals.takeMarks(markBatch, s.opts.Clock.Now().UnixMilli())
		if len(ws) == 0 {
			return
		}
		txn := s.db.NewTransaction(true)
		if err := stage(txn, ws); err != nil {
			txn.Discard()
			s.log.Warn("cannot mark the records of delivered arrivals", "err", err)
			return
		}
		if err := s.commitTxn(txn, nil); err != nil {
			s.log.Warn("cannot mark the records of delivered arrivals", "err", err)
			return
		}
	}
}

// commit commits the open transaction, if any.
func (g *groupTxns) commit() {
	if g.txn == nil {
		return
	}
	err := g.segs.flush(g.s, g.txn)
	if err != nil {
		g.txn.Discard()
		err = fmt.Errorf("buffer: stage segments: %w", err)
	} else {
		err = g.s.commitTxn(g.txn, g.inTxn)
	}
	if err != nil {
		for _, r := range g.inTxn {
			g.s.fail(r, err)
		}
	} else {
		g.index.committed()
		g.ok = append(g.ok, g.inTxn...)
	}
	g.txn, g.inTxn, g.size, g.cnt = nil, g.inTxn[:0:0], 0, 0
	g.index.reset()
	g.segs.reset()
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

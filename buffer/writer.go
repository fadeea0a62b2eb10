package buffer

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// maxGroup bounds how many queued requests one group commit takes.
const maxGroup = 4096

type write struct {
	e   *badger.Entry
	del bool
}

type request struct {
	// An append of entries to log (the ingest path) ...
	log     string
	entries []Entry
	results []Result
	// ... or an atomic update.
	tx *Tx

	err  error
	done chan struct{}

	// filled in by prepare
	writes []write
	size   int64
	stored int               // entries appended (for stats)
	ids    []string          // ids added to the dedup cache, undone on failure
	lasts  map[string]uint64 // last seq assigned per log
}

// writer is the only goroutine that writes to Badger. It takes every request that is
// queued, applies them in as few transactions as Badger's batch limits allow, fsyncs once,
// then releases all their waiters.
func (s *Store) writer() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.opts.SyncInterval > 0 {
		t := time.NewTicker(s.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	dirty := false
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
			dirty = true
		case <-tick:
			if dirty {
				s.sync()
				dirty = false
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

func (s *Store) sync() error {
	s.stats.Syncs.Add(1)
	if err := s.db.Sync(); err != nil {
		s.log.Error("fsync failed", "err", err)
		return err
	}
	return nil
}

func (s *Store) apply(group []*request) {
	maxSize := s.db.MaxBatchSize() * 9 / 10
	maxCount := s.db.MaxBatchCount() * 9 / 10
	var (
		txn       *badger.Txn
		inTxn     []*request
		size, cnt int64
		ok        []*request
	)
	commit := func() {
		if txn == nil {
			return
		}
		s.writeHighMarks(txn, inTxn)
		err := txn.Commit()
		if err != nil {
			err = fmt.Errorf("buffer: commit: %w", err)
			for _, r := range inTxn {
				s.fail(r, err)
			}
		} else {
			ok = append(ok, inTxn...)
		}
		txn, inTxn, size, cnt = nil, inTxn[:0:0], 0, 0
	}
	for _, r := range group {
		if err := s.prepare(r); err != nil {
			s.fail(r, err)
			continue
		}
		n := int64(len(r.writes)) + int64(len(r.lasts))
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
		var err error
		for _, w := range r.writes {
			if w.del {
				err = txn.Delete(w.e.Key)
			} else {
				err = txn.SetEntry(w.e)
			}
			if err != nil {
				break
			}
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
			continue
		}
		inTxn = append(inTxn, r)
		size += r.size
		cnt += n
	}
	commit()
	if len(ok) > 0 && s.opts.SyncInterval == 0 {
		if err := s.sync(); err != nil {
			err = fmt.Errorf("buffer: fsync: %w", err)
			for _, r := range ok {
				s.fail(r, err)
			}
			ok = nil
		}
	}
	if len(ok) > 0 {
		s.stats.Groups.Add(1)
	}
	for _, r := range ok {
		s.stats.Appended.Add(uint64(r.stored))
		for log, last := range r.lasts {
			s.published(log, last)
		}
		close(r.done)
	}
}

// writeHighMarks records, per log, the highest sequence number assigned in this txn, so
// numbers are never reused even when trimming empties a log.
func (s *Store) writeHighMarks(txn *badger.Txn, reqs []*request) {
	high := map[string]uint64{}
	for _, r := range reqs {
		for log, last := range r.lasts {
			if last > high[log] {
				high[log] = last
			}
		}
	}
	for log, last := range high {
		// Counted in prepare's size accounting (one write per log per request).
		_ = txn.Set(highKey(log), u64(last))
	}
}

func (s *Store) fail(r *request, err error) {
	for _, id := range r.ids {
		s.dedup.remove(id)
	}
	r.err = err
	r.results = nil
	close(r.done)
}

// prepare turns a request into Badger entries: it assigns sequence numbers and checks ids
// against the dedup index.
func (s *Store) prepare(r *request) error {
	r.writes = r.writes[:0]
	r.size = 0
	r.lasts = map[string]uint64{}
	r.stored = 0
	add := func(e *badger.Entry) {
		r.writes = append(r.writes, write{e: e})
		r.size += int64(len(e.Key)+len(e.Value)) + 12
	}
	appendTo := func(log string, value []byte) (uint64, error) {
		ls, err := s.logState(log)
		if err != nil {
			return 0, err
		}
		seq := ls.next
		ls.next++
		r.lasts[log] = seq
		r.stored++
		add(badger.NewEntry(logKey(log, seq), value))
		return seq, nil
	}
	if r.tx != nil {
		for _, o := range r.tx.ops {
			switch o.kind {
			case opAppend:
				if _, err := appendTo(o.log, o.value); err != nil {
					return err
				}
			case opSet:
				add(badger.NewEntry(o.key, o.value))
			case opDelete:
				add(badger.NewEntry(o.key, nil))
				r.writes[len(r.writes)-1].del = true
			}
		}
		for range r.lasts {
			r.size += 32 // the high mark written per log
		}
		return nil
	}
	r.results = make([]Result, len(r.entries))
	now := s.opts.Clock.Now()
	for i, e := range r.entries {
		if e.ID != "" && s.opts.DedupTTL > 0 {
			dup, err := s.seen(e.ID, now)
			if err != nil {
				return err
			}
			if dup {
				r.results[i].Dup = true
				s.stats.DedupHits.Add(1)
				continue
			}
			s.dedup.add(e.ID, now.Add(s.opts.DedupTTL))
			r.ids = append(r.ids, e.ID)
			add(badger.NewEntry(dedupKey(e.ID), nil).WithTTL(s.opts.DedupTTL))
		}
		seq, err := appendTo(r.log, e.Value)
		if err != nil {
			return err
		}
		r.results[i].Seq = seq
	}
	for range r.lasts {
		r.size += 32
	}
	return nil
}

// seen reports whether id is in the dedup index: the in-memory cache first, then Badger.
func (s *Store) seen(id string, now time.Time) (bool, error) {
	if exp, ok := s.dedup.get(id); ok {
		if now.Before(exp) {
			return true, nil
		}
		s.dedup.remove(id)
	}
	var found bool
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(dedupKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	return found, err
}

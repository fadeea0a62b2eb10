package buffer

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// prepare turns request i of the group into Badger writes: it assigns sequence numbers and
// checks ids against the dedup index. It runs once per request.
func (s *Store) prepare(r *request, i int, rd *groupReader) error {
	now := s.opts.Clock.Now()
	defer func() { r.size += int64(len(r.deltas)) * 48 }() // the meta key written per log
	if r.tx != nil {
		return s.prepareTx(r, now)
	}
	return s.prepareAppend(r, i, rd, now)
}

// add stages w with r.
func (r *request) add(w write) {
	r.writes = append(r.writes, w)
	r.size += int64(len(w.key)+len(w.value)) + 16
}

// appendTo assigns value the next sequence number of ls and stages it with r.
func (s *Store) appendTo(r *request, ls *logState, d *logDelta, value []byte, now time.Time) uint64 {
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
	r.recs = append(r.recs, rec{ls: ls, seq: seq, value: value})
	// Counted as an entry alone (its key, its value and 16 bytes), as MaxRequestBytes
	// says: the segment it is staged in is smaller (a key per segment, 4 bytes per entry).
	r.size += entrySize(ls.name, len(value)) + 16
	return seq
}

// prepareTx stages the operations of an atomic Tx.
func (s *Store) prepareTx(r *request, now time.Time) error {
	for _, o := range r.tx.ops {
		switch o.kind {
		case opAppend:
			ls, err := s.logState(o.log)
			if err != nil {
				return err
			}
			s.appendTo(r, ls, r.delta(ls), o.value, now)
		case opSet:
			r.add(write{key: o.key, value: o.value, ttl: o.ttl})
		case opDelete:
			r.add(write{key: o.key, del: true})
		}
	}
	return nil
}

// prepareAppend stages the entries of an append (request i of the group) that are not
// duplicates, with their dedup ids and the request's extra writes.
func (s *Store) prepareAppend(r *request, i int, rd *groupReader, now time.Time) error {
	for _, w := range r.extra {
		r.add(w)
	}
	var ls *logState // looked up at the first entry stored: dups alone create no log
	var d *logDelta
	exp := now.Add(s.opts.DedupTTL).UnixMilli() // of the ids stored by this request
	r.results = make([]Result, len(r.entries))
	for k, e := range r.entries {
		if e.ID != "" && s.opts.DedupTTL > 0 {
			dup, err := s.prepareID(r, i, rd, k, e.ID, exp, now)
			if err != nil {
				return err
			}
			if dup {
				continue
			}
		}
		if d == nil {
			var err error
			if ls, err = s.logState(r.log); err != nil {
				return err
			}
			d = r.delta(ls)
		}
		r.results[k].Seq = s.appendTo(r, ls, d, e.Value, now)
	}
	return nil
}

// prepareID checks the id of entry k of r against the dedup index: a duplicate is marked
// in r's results, a new id is added to the index and staged with r.
func (s *Store) prepareID(r *request, i int, rd *groupReader, k int, id string, exp int64, now time.Time) (dup bool, err error) {
	h := dedupHash(id)
	dup, by, err := s.seen(rd, h, now)
	if err != nil {
		return false, err
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
		return true, nil
	}
	// Always written, the newest ids above all: at its cap the index forgets its
	// oldest (Maintain), never a resend's original.
	s.dedup.add(h, exp, s.group, i)
	r.ids = append(r.ids, h)
	r.dedups++
	end := dedupBucketEnd(exp, s.dedupWidth)
	s.noteDedupEnd(end)
	r.add(write{key: dedupKey(end, h), value: u64(uint64(exp)), ttl: s.opts.DedupTTL})
	s.filter.add(h, exp, now.UnixMilli())
	return false, nil
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
// store's clock: the filter of ids never stored first, then the in-memory cache, then
// Badger. (Badger's own TTL, on the system clock, only garbage-collects the keys.) by is
// the index in the group of the request that added the id when that was in this group
// (not committed yet), else -1.
//
// The filter comes first because most ids are fresh and it rules them out for less than
// a map lookup in the cache costs (two map operations per fresh id were a third of the
// dedup check's CPU at 100 publishers). It holds every id the cache holds unexpired:
// prepareID adds an id to both, and the filter drops a generation only once every id in
// it has expired, while the ids of failed requests, which leave the cache, stay in it
// (it answers maybe for them, as for any id it may hold).
func (s *Store) seen(rd *groupReader, h string, now time.Time) (dup bool, by int32, err error) {
	ms := now.UnixMilli()
	lo, hi, maybe := s.filter.expiries(h, ms)
	if !maybe {
		return false, -1, nil
	}
	if c, ok := s.dedup.get(h); ok {
		if ms < c.exp {
			if c.group == s.group {
				return true, c.req, nil
			}
			return true, -1, nil
		}
		s.dedup.remove(h)
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

package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// plausible is the earliest append time the retention trusts. A board without a real-time
// clock appends at "1970" until NTP syncs: such entries are never deleted for their age
// (trimming and the budget still apply), rather than all at once when the clock jumps.
var plausible = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// dedupShare is the part of the capacity the dedup index may use, and dedupKeyCost what
// one id is counted for: a 22-byte key and an 8-byte value, plus Badger's per-key overhead
// (an estimate with margin: no test here measures the on-disk cost per id). At 100
// readings/s a 24 h window needs 8.6 M ids, ~400 MiB at that cost: more than a quarter of
// a 512 MiB budget, so such a gateway forgets its oldest ids early rather than drop data
// for them (boundDedup).
const (
	dedupShare   = 4 // max_bytes / dedupShare
	dedupKeyCost = 48
)

// Maintain runs the store's background work until ctx ends, every MaintainEvery: it deletes
// what every consumer of a log has committed, what is older than the retention, and the
// oldest dedup ids beyond the index's share of the budget. Errors are logged and retried at
// the next round; it returns nil when ctx ends.
func (s *Store) Maintain(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.opts.Clock.After(s.opts.MaintainEvery):
		}
		if err := s.MaintainOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("maintenance round failed; retrying at the next", "err", err)
		}
	}
}

// MaintainOnce runs one round of Maintain.
func (s *Store) MaintainOnce(ctx context.Context) error {
	s.mu.Lock()
	logs := sortedKeys(s.logs)
	consumers := make(map[string][]string, len(s.consumers))
	for l, cs := range s.consumers {
		consumers[l] = cs
	}
	s.mu.Unlock()
	for _, log := range logs {
		if cs := consumers[log]; len(cs) > 0 {
			below, err := s.Consumed(log, cs)
			if err != nil {
				return err
			}
			if below > 0 {
				if _, err := s.deleteBelow(ctx, log, below, dropTrim); err != nil {
					return err
				}
			}
		}
		if s.opts.Retention > 0 {
			below, err := s.retentionBoundary(log, s.opts.Clock.Now().Add(-s.opts.Retention))
			if err != nil {
				return err
			}
			if below > 0 {
				if _, err := s.deleteBelow(ctx, log, below, dropRetention); err != nil {
					return err
				}
			}
		}
	}
	s.sweepArrivals()
	// The writer measures the directory while data comes in; when none does, compactions
	// still change it: measure here too, so DiskBytes is never older than a round.
	if du, err := DirBytes(s.opts.Dir); err == nil {
		s.stats.DiskBytes.Store(du)
	}
	return s.boundDedup(ctx)
}

// retentionBoundary returns the first sequence number of log appended at or after cutoff,
// by the time index: entries below it are older than the retention (to the minute).
func (s *Store) retentionBoundary(log string, cutoff time.Time) (uint64, error) {
	ls, err := s.logState(log)
	if err != nil {
		return 0, err
	}
	var below uint64
	found, any := false, false
	prefix := timePrefix(log)
	err = s.scan(prefix, func(k, v []byte) error {
		any = true
		var at time.Time
		if len(v) == 8 {
			at = time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
		}
		if !at.After(plausible) || !at.Before(cutoff) {
			below, found = binary.BigEndian.Uint64(k[len(prefix):]), true
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("buffer: read time index of log %q: %w", log, err)
	}
	switch {
	case found:
		return below, nil
	case any:
		return ls.last.Load() + 1, nil // every indexed minute is older than the cutoff
	default:
		return 0, nil
	}
}

// boundDedup keeps the dedup index within its cap (its share of the budget). The count of
// ids only grows as they are written (they expire silently), so once it reaches the cap one
// scan counts the live ids exactly, by expiry bucket. If they are more than the cap, the
// oldest buckets are deleted whole, oldest first, until the rest fits; the bucket new ids go
// to is never deleted whole, only its ids that expire first when it alone is over the cap.
// The newest ids are the ones a resend repeats: they are always written (prepare), and
// forgetting the oldest is what the cap costs (counted in DedupEvicted). Deleting keys
// writes tombstones, whose space comes back with later compactions: a bucket is deleted
// only once the cap is reached, which at a steady rate is once per bucket width.
func (s *Store) boundDedup(ctx context.Context) error {
	limit := s.dedupCap.Load()
	if limit <= 0 || s.opts.DedupTTL <= 0 {
		return nil
	}
	before := s.dedupKeys.Load()
	if before < limit {
		return nil
	}
	now := s.opts.Clock.Now().UnixMilli()
	width := s.dedupWidth
	type bucket struct {
		live  int64
		slots [dedupSlots]int64 // live ids by expiry, in dedupSlots parts of the bucket
	}
	buckets := map[int64]*bucket{}
	var live int64
	err := s.scanInSteps([]byte(dedupPrefix), func(k, v []byte) error {
		end, _, kok := parseDedupKey(k)
		exp, ok := dedupExpiry(v)
		if !ok || !kok || exp <= now {
			return nil
		}
		live++
		b := buckets[end]
		if b == nil {
			b = &bucket{}
			buckets[end] = b
		}
		b.live++
		b.slots[min(max((exp-(end-width))*dedupSlots/width, 0), dedupSlots-1)]++
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: scan dedup index: %w", err)
	}
	s.dedupKeys.Add(live - before) // the exact count, plus what was written meanwhile
	excess := live - limit
	if excess <= 0 {
		return nil
	}
	ends := slices.Sorted(maps.Keys(buckets)) // oldest first
	var forgot int64
	for i, end := range ends {
		if excess <= 0 {
			break
		}
		below := int64(math.MaxInt64) // the whole bucket
		if i == len(ends)-1 {
			// The newest bucket, where new ids go: its ids that expire first, by parts,
			// until enough, and never those of its newest part.
			b := buckets[end]
			newest := dedupSlots - 1
			for newest > 0 && b.slots[newest] == 0 {
				newest--
			}
			var n int64
			part := 0
			for ; part < newest && n < excess; part++ {
				n += b.slots[part]
			}
			if n == 0 {
				break
			}
			// The ids of parts [0, part): (exp-start)·dedupSlots < part·width.
			below = end - width + (int64(part)*width+dedupSlots-1)/dedupSlots
		}
		n, err := s.dropIDs(ctx, end, below)
		forgot += n
		excess -= n
		if err != nil {
			return err
		}
	}
	s.log.Warn("dedup index at its share of the buffer: forgot the oldest ids",
		"ids", live-forgot, "cap", limit, "forgotten", forgot, "forgotten_total", s.stats.DedupEvicted.Load())
	return nil
}

// dedupSlots is how finely boundDedup dates the ids of the newest bucket.
const dedupSlots = 64

// dropIDs deletes the ids of the dedup bucket ending at end that expire before below
// (math.MaxInt64: all), through the writer, and returns how many live ones it deleted.
func (s *Store) dropIDs(ctx context.Context, end, below int64) (int64, error) {
	var total int64
	var from []byte
	for {
		r := &request{kind: reqDropIDs, bucket: end, below: uint64(below), from: from, done: make(chan struct{})}
		if err := s.submit(ctx, r); err != nil {
			return total, fmt.Errorf("buffer: delete the oldest dedup ids: %w", err)
		}
		total += int64(r.dropped)
		if !r.more {
			return total, nil
		}
		from = r.from
	}
}

// execDropIDs runs a reqDropIDs request in its own transaction: at most dropMax keys of
// the bucket from r.from on.
func (s *Store) execDropIDs(r *request) error {
	now := s.opts.Clock.Now().UnixMilli()
	prefix := dedupBucketKey(r.bucket)
	below := int64(r.below)
	var keys [][]byte
	var live int64
	r.more = false
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		if r.from == nil {
			it.Rewind()
		} else {
			it.Seek(r.from)
		}
		for ; it.Valid(); it.Next() {
			item := it.Item()
			if len(keys) == s.dropMax {
				r.more, r.from = true, item.KeyCopy(nil)
				return nil
			}
			var exp int64
			var ok bool
			if err := item.Value(func(v []byte) error { exp, ok = dedupExpiry(v); return nil }); err != nil {
				return err
			}
			if ok && exp >= below {
				continue
			}
			keys = append(keys, item.KeyCopy(nil))
			if ok && exp > now {
				live++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: read dedup bucket: %w", err)
	}
	if len(keys) > 0 {
		d := &request{kind: reqDropIDs, dedups: -live}
		for _, k := range keys {
			d.writes = append(d.writes, write{key: k, del: true})
			d.size += int64(len(k)) + 16
		}
		txn := s.db.NewTransaction(true)
		if err := stage(txn, d.writes); err != nil {
			txn.Discard()
			return fmt.Errorf("buffer: stage deletes of dedup ids: %w", err)
		}
		if err := s.commitTxn(txn, []*request{d}); err != nil {
			return fmt.Errorf("buffer: delete dedup ids: %w", err)
		}
	}
	r.dropped = int(live)
	s.stats.DedupEvicted.Add(uint64(live))
	if !r.more && below == math.MaxInt64 {
		if i := slices.Index(s.dedupEnds, r.bucket); i >= 0 {
			s.dedupEnds = slices.Delete(s.dedupEnds, i, i+1)
		}
	}
	return nil
}

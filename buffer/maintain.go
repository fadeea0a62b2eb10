package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// plausible is the earliest append time the retention trusts. A board without a real-time
// clock appends at "1970" until NTP syncs: such entries are never deleted for their age
// (trimming and the budget still apply), rather than all at once when the clock jumps.
var plausible = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// dedupShare is the part of max_bytes the dedup index may use, and dedupKeyCost what one
// id costs on disk (see TestDedupKeyCost). At 100 readings/s a 24 h window needs
// 8.6 M ids, ~400 MiB: more than a quarter of a 512 MiB budget, so such a gateway keeps
// ids for a shorter window rather than dropping data for them.
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
	err = s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			any = true
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			var at time.Time
			if err := item.Value(func(v []byte) error {
				if len(v) == 8 {
					at = time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
				}
				return nil
			}); err != nil {
				return err
			}
			if !at.After(plausible) || !at.Before(cutoff) {
				below, found = seq, true
				return nil
			}
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

// boundDedup keeps the dedup index within max_bytes/dedupShare. The count of ids is an
// estimate that only grows (Badger expires ids silently); when it passes the cap, one scan
// counts them exactly and, if they really are too many, forgets the oldest quarter.
func (s *Store) boundDedup(ctx context.Context) error {
	if s.opts.MaxBytes <= 0 || s.opts.DedupTTL <= 0 {
		return nil
	}
	limit := s.opts.MaxBytes / dedupShare / dedupKeyCost
	before := s.dedupKeys.Load()
	if before <= limit {
		return nil
	}
	counts := map[int64]int64{} // expiry minute → ids
	var total int64
	err := s.scanDedup(func(_ []byte, exp int64) bool {
		counts[exp/60000]++
		total++
		return true
	})
	if err != nil {
		return err
	}
	s.dedupKeys.Add(total - before) // the exact count, plus what was written meanwhile
	if total <= limit {
		return nil
	}
	// Forget the ids that expire first, down to three quarters of the cap.
	excess := total - limit*3/4
	minutes := make([]int64, 0, len(counts))
	for m := range counts {
		minutes = append(minutes, m)
	}
	sort.Slice(minutes, func(i, j int) bool { return minutes[i] < minutes[j] })
	var upTo, n int64
	for _, m := range minutes {
		upTo = m
		n += counts[m]
		if n >= excess {
			break
		}
	}
	var batch [][]byte
	var evicted int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		keys := batch
		err := s.Update(ctx, func(tx *Tx) {
			for _, k := range keys {
				tx.ops = append(tx.ops, op{kind: opDelete, key: k})
			}
		})
		if err == nil {
			evicted += int64(len(keys))
		}
		batch = nil
		return err
	}
	var ferr error
	err = s.scanDedup(func(k []byte, exp int64) bool {
		if exp/60000 > upTo {
			return true
		}
		batch = append(batch, append([]byte(nil), k...))
		if len(batch) == dropChunk {
			ferr = flush()
		}
		return ferr == nil
	})
	if err == nil {
		err = ferr
	}
	if err == nil {
		err = flush()
	}
	s.dedupKeys.Add(-evicted)
	s.stats.DedupEvicted.Add(uint64(evicted))
	if evicted > 0 {
		window := time.UnixMilli((upTo+1)*60000).Sub(s.opts.Clock.Now()) + s.opts.DedupTTL
		s.log.Warn("dedup index reached its share of max_bytes: forgot the ids remembered longest",
			"count", evicted, "kept", total-evicted, "window_now", window.Round(time.Minute), "ttl", s.opts.DedupTTL)
	}
	return err
}

func (s *Store) scanDedup(fn func(key []byte, exp int64) bool) error {
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte(dedupPrefix)
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var exp int64
			if err := item.Value(func(v []byte) error {
				if len(v) == 8 {
					exp = int64(binary.BigEndian.Uint64(v))
				}
				return nil
			}); err != nil {
				return err
			}
			if !fn(item.Key(), exp) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: scan dedup index: %w", err)
	}
	return nil
}

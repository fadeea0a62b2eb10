package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// plausible is the earliest append time the retention trusts. A board without a real-time
// clock appends at "1970" until NTP syncs: such entries are never deleted for their age
// (trimming and the budget still apply), rather than all at once when the clock jumps.
var plausible = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// dedupShare is the part of the capacity the dedup index may use, and dedupKeyCost what
// one id is counted for: a 14-byte key and an 8-byte value, plus Badger's per-key overhead
// (an estimate with margin: no test here measures the on-disk cost per id). At 100
// readings/s a 24 h window needs 8.6 M ids, ~400 MiB at that cost: more than a quarter of
// a 512 MiB budget, so such a gateway keeps the newest ids in memory only rather than
// dropping data for them.
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
	// The writer measures the directory while data comes in; when none does, compactions
	// still change it: measure here too, so DiskBytes is never older than a round.
	if du, err := DirBytes(s.opts.Dir); err == nil {
		s.stats.DiskBytes.Store(du)
	}
	return s.boundDedup()
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

// boundDedup corrects the estimated number of dedup ids. The estimate only grows (ids
// expire silently); while it is at the cap, new ids are remembered in memory only, so once
// past the cap one scan counts the live ids exactly. Old ids are left to expire rather
// than deleted early: the space of deleted keys comes back only with later compactions.
func (s *Store) boundDedup() error {
	limit := s.dedupCap.Load()
	if limit <= 0 || s.opts.DedupTTL <= 0 {
		return nil
	}
	before := s.dedupKeys.Load()
	if before < limit {
		return nil
	}
	now := s.opts.Clock.Now().UnixMilli()
	var live int64
	err := s.scanInSteps([]byte(dedupPrefix), func(_, v []byte) error {
		if exp, ok := dedupExpiry(v); ok && exp > now {
			live++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: scan dedup index: %w", err)
	}
	s.dedupKeys.Add(live - before) // the exact count, plus what was written meanwhile
	if live >= limit {
		s.log.Warn("dedup index at its share of the buffer: ids of new records are remembered in memory only until older ids expire",
			"ids", live, "cap", limit, "in_memory_only", s.stats.DedupSkipped.Load())
	}
	return nil
}

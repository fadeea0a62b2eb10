package buffer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// exists reports whether any key starts with prefix.
func (s *Store) exists(prefix []byte) (bool, error) {
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found, err
}

// slotsOnDisk returns the slots of the arrival keys under prefix (one client's).
func (s *Store) slotsOnDisk(prefix []byte) ([]uint16, error) {
	var slots []uint16
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) == len(prefix)+2 {
				slots = append(slots, binary.BigEndian.Uint16(k[len(prefix):]))
			}
		}
		return nil
	})
	return slots, err
}

// detectLayout lets a read-only store read a store written with the previous key layout
// (keys.go), which only a writable open converts.
func (s *Store) detectLayout() error {
	legacy, err := s.exists([]byte(s.legacyBulkPrefix()))
	if err != nil || !legacy {
		return err
	}
	current, err := s.exists(s.logPrefix(s.opts.BulkLog))
	if err != nil {
		return err
	}
	if current {
		return fmt.Errorf("buffer: %s: the conversion of log %q to the current key layout was interrupted; start the daemon (or open the buffer writable) to finish it", s.opts.Dir, s.opts.BulkLog)
	}
	s.bulkKind = 'l'
	return nil
}

// convertLayout moves what the previous key layout kept elsewhere: the bulk log's entries
// from l/raw/ to a/raw/, and the dedup ids from d/<hash> to their expiry bucket (expired
// ids are deleted). A move writes the new key and deletes the old one in one transaction;
// a crash leaves each key in one place or the other, and the next open moves the rest. So
// the conversion needs no fsync of its own: the writer's first one covers it (walsync.go),
// and what a power cut takes before then is moved again.
func (s *Store) convertLayout() error {
	start := time.Now()
	now := s.opts.Clock.Now().UnixMilli()
	legacy := false
	for _, p := range []string{s.legacyBulkPrefix(), legacyDedupPrefix} {
		found, err := s.exists([]byte(p))
		if err != nil {
			return fmt.Errorf("buffer: look for keys of the previous layout: %w", err)
		}
		legacy = legacy || found
	}
	if !legacy {
		return nil
	}
	s.log.Info("converting the buffer to the current key layout (once, after an upgrade)")
	s.progress("converting the buffer to the current key layout")
	entries, err := s.moveKeys([]byte(s.legacyBulkPrefix()), func(k, v []byte) ([]byte, time.Duration) {
		return append(s.logPrefix(s.opts.BulkLog), k[len(s.legacyBulkPrefix()):]...), 0
	})
	if err != nil {
		return fmt.Errorf("buffer: convert log %q to the current key layout: %w", s.opts.BulkLog, err)
	}
	ids, err := s.moveKeys([]byte(legacyDedupPrefix), func(k, v []byte) ([]byte, time.Duration) {
		h := k[len(legacyDedupPrefix):]
		exp, ok := dedupExpiry(v)
		if !ok || exp <= now || len(h) != dedupHashLen {
			return nil, 0
		}
		end := dedupBucketEnd(exp, s.dedupWidth)
		s.noteDedupEnd(end)
		return dedupKey(end, string(h)), time.Duration(exp-now) * time.Millisecond
	})
	if err != nil {
		return fmt.Errorf("buffer: convert the dedup index to the current key layout: %w", err)
	}
	s.log.Info("converted the buffer to the current key layout", "entries", entries, "dedup_keys", ids,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// progress reports a long Open's progress to Options.Progress, if set.
func (s *Store) progress(status string) {
	if s.opts.Progress != nil {
		s.opts.Progress(status)
	}
}

// moveKeys rewrites every key under prefix as to says (nil: delete it; ttl > 0: a Badger
// TTL), in transactions of a quarter of Badger's batch limits, and returns how many keys
// it read.
func (s *Store) moveKeys(prefix []byte, to func(k, v []byte) ([]byte, time.Duration)) (int, error) {
	maxOps := max(s.db.MaxBatchCount()/4, 1)
	maxBytes := s.db.MaxBatchSize() / 4
	n := 0
	var txn *badger.Txn
	var ops, size int64
	told := time.Now()
	commit := func() error {
		if txn == nil {
			return nil
		}
		err := txn.Commit()
		txn, ops, size = nil, 0, 0
		if time.Since(told) >= time.Second {
			told = time.Now()
			s.progress(fmt.Sprintf("converting the buffer to the current key layout: %d keys under %q moved", n, prefix))
		}
		return err
	}
	err := s.scanInSteps(prefix, func(k, v []byte) error {
		n++
		nk, ttl := to(k, v)
		cost := int64(2*len(k)+len(v)) + 64
		if txn != nil && (ops+2 > maxOps || size+cost > maxBytes) {
			if err := commit(); err != nil {
				return err
			}
		}
		if txn == nil {
			txn = s.db.NewTransaction(true)
		}
		if nk != nil {
			e := badger.NewEntry(nk, slices.Clone(v))
			if ttl > 0 {
				e = e.WithTTL(ttl)
			}
			if err := txn.SetEntry(e); err != nil {
				return err
			}
		}
		if err := txn.Delete(slices.Clone(k)); err != nil {
			return err
		}
		ops += 2
		size += cost
		return nil
	})
	if err == nil {
		err = commit()
	} else if txn != nil {
		txn.Discard()
	}
	return n, err
}

// pickDedupWidth sets the width of the dedup index's buckets: the one its keys were
// written with while any are live (loadDedupBuckets found them), else a dedupBuckets-th of
// the TTL (of a day while dedup is off), and records it.
func (s *Store) pickDedupWidth() error {
	ttl := s.opts.DedupTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	want := max(ttl.Milliseconds()/dedupBuckets, 1000)
	v, ok, err := s.getRaw(dedupWidthKey)
	if err != nil {
		return err
	}
	if ok && len(v) == 8 {
		stored := int64(binary.BigEndian.Uint64(v))
		if stored == want || stored > 0 && len(s.dedupEnds) > 0 {
			s.dedupWidth = stored // live keys were written with it
			return nil
		}
	}
	s.dedupWidth = want
	err = s.db.Update(func(txn *badger.Txn) error { return txn.Set(dedupWidthKey, u64(uint64(want))) })
	if err != nil {
		return fmt.Errorf("buffer: record the dedup index's bucket width: %w", err)
	}
	return nil
}

// loadDedupBuckets finds the dedup index's live buckets: one seek per bucket.
func (s *Store) loadDedupBuckets() error {
	now := s.opts.Clock.Now().UnixMilli()
	s.dedupEnds = s.dedupEnds[:0]
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly([]byte(dedupPrefix)))
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			end, _, ok := parseDedupKey(it.Item().Key())
			if !ok {
				it.Next()
				continue
			}
			if end <= now {
				break // this bucket and every older one expired
			}
			s.dedupEnds = append(s.dedupEnds, end)
			it.Seek(dedupBucketKey(end - 1)) // the next (older) bucket
		}
		return nil
	})
}

// liveDedupEnds drops the buckets whose ids have all expired at now (unix ms) and returns
// the others, newest first.
func (s *Store) liveDedupEnds(now int64) []int64 {
	i := len(s.dedupEnds)
	for i > 0 && s.dedupEnds[i-1] <= now {
		i--
	}
	s.dedupEnds = s.dedupEnds[:i]
	return s.dedupEnds
}

// noteDedupEnd adds the bucket ending at end to the live ones, in order.
func (s *Store) noteDedupEnd(end int64) {
	if len(s.dedupEnds) > 0 && s.dedupEnds[0] == end {
		return // the usual case: the newest bucket
	}
	i, found := slices.BinarySearchFunc(s.dedupEnds, end, func(a, b int64) int { return cmp.Compare(b, a) })
	if !found {
		s.dedupEnds = slices.Insert(s.dedupEnds, i, end)
	}
}

// lookupDedup reads the expiry of the id hashed to h from the index: its key in each live
// bucket that may hold an expiry between lo and hi (the filter's bound), newest first (a
// resent id is most likely recent). ok is false when it is in none.
func (s *Store) lookupDedup(txn *badger.Txn, h string, now, lo, hi int64) (exp int64, ok bool, err error) {
	first, last := int64(math.MinInt64), int64(math.MaxInt64) // bucket ends to read
	if lo > math.MinInt64 {
		first = dedupBucketEnd(lo, s.dedupWidth)
	}
	if hi < math.MaxInt64-s.dedupWidth {
		last = dedupBucketEnd(hi, s.dedupWidth)
	}
	for _, end := range s.liveDedupEnds(now) {
		if end > last {
			continue
		}
		if end < first {
			break
		}
		item, err := txn.Get(dedupKey(end, h))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, false, err
		}
		err = item.Value(func(v []byte) error {
			exp, ok = dedupExpiry(v)
			return nil
		})
		if err != nil || ok {
			return exp, ok, err
		}
	}
	return 0, false, nil
}

package buffer

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Trim deletes the entries of log with a sequence number below `below`, in transactions of
// at most chunk deletes, and returns how many it deleted.
func (s *Store) Trim(ctx context.Context, log string, below uint64) (int, error) {
	const chunk = 2000
	total := 0
	for {
		var seqs []uint64
		_, err := s.Read(log, 0, chunk, func(seq uint64, _ []byte) error {
			if seq >= below {
				return ErrStop
			}
			seqs = append(seqs, seq)
			return nil
		})
		if err != nil || len(seqs) == 0 {
			return total, err
		}
		err = s.Update(ctx, func(tx *Tx) {
			for _, q := range seqs {
				tx.deleteEntry(log, q)
			}
		})
		if err != nil {
			return total, fmt.Errorf("buffer: trim log %q below %d: %w", log, below, err)
		}
		total += len(seqs)
		if len(seqs) < chunk {
			return total, nil
		}
	}
}

// Consumed returns the smallest committed position of consumers in log: every entry below
// it has been processed by all of them. With no consumers it returns 0 (nothing consumed).
func (s *Store) Consumed(log string, consumers []string) (uint64, error) {
	if len(consumers) == 0 {
		return 0, nil
	}
	min := ^uint64(0)
	for _, c := range consumers {
		n, err := s.Cursor(log, c)
		if err != nil {
			return 0, err
		}
		if n < min {
			min = n
		}
	}
	return min, nil
}

// Cursors lists every consumer that ever committed a position in log, with its position.
func (s *Store) Cursors(log string) (map[string]uint64, error) {
	out := map[string]uint64{}
	prefix := cursorPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error {
				if len(v) == 8 {
					out[string(item.Key()[len(prefix):])] = binary.BigEndian.Uint64(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

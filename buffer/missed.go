package buffer

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Missed counts the entries of a log that one of its consumers never had: deleted to make
// room (on_full: drop_oldest) or by the retention before the consumer committed past
// them. The counts are durable: they are written in the transaction that deletes the
// entries, so kill -9 and restarts lose none, and an uplink's losses can be told exactly.
type Missed struct {
	Room      uint64 // dropped for room
	Retention uint64 // expired by the retention
}

func (m Missed) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), m.Room)
	return binary.BigEndian.AppendUint64(b, m.Retention)
}

func decodeMissed(b []byte) (Missed, bool) {
	if len(b) != 16 {
		return Missed{}, false
	}
	return Missed{Room: binary.BigEndian.Uint64(b), Retention: binary.BigEndian.Uint64(b[8:])}, true
}

// missedWrites returns the writes that count, for each consumer of log, the entries of
// gone (ascending ranges) at or past its committed position: about to be deleted for why,
// they were never had by it. It runs on the writer goroutine, the only one that writes
// cursors and these counts, so what it reads is what is committed.
func (s *Store) missedWrites(log string, gone []seqRange, why dropReason) ([]write, error) {
	s.mu.Lock()
	consumers := append([]string(nil), s.consumers[log]...)
	s.mu.Unlock()
	var out []write
	for _, c := range consumers {
		pos, err := s.Cursor(log, c)
		if err != nil {
			return nil, err
		}
		var n uint64
		for _, g := range gone {
			if from := max(g.from, pos); from <= g.to {
				n += g.to - from + 1
			}
		}
		if n == 0 {
			continue
		}
		v, _, err := s.getRaw(missedKey(log, c))
		if err != nil {
			return nil, fmt.Errorf("buffer: read missed count of %s/%s: %w", log, c, err)
		}
		m, _ := decodeMissed(v)
		if why == dropRoom {
			m.Room += n
		} else {
			m.Retention += n
		}
		out = append(out, write{key: missedKey(log, c), value: m.encode()})
	}
	return out, nil
}

// MissedBy returns, per consumer of log, the entries it never had (see Missed). Consumers
// that missed nothing are absent.
func (s *Store) MissedBy(log string) (map[string]Missed, error) {
	if err := checkName(log); err != nil {
		return nil, err
	}
	out := map[string]Missed{}
	prefix := missedPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			consumer := string(it.Item().Key()[len(prefix):])
			err := it.Item().Value(func(v []byte) error {
				if m, ok := decodeMissed(v); ok {
					out[consumer] = m
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: read missed counts of log %q: %w", log, err)
	}
	return out, nil
}

package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Trim deletes the entries of log with a sequence number below `below` and returns how
// many it deleted. They count as trimmed (delivered); Maintain calls it with the position
// every consumer has passed.
func (s *Store) Trim(ctx context.Context, log string, below uint64) (int, error) {
	return s.deleteBelow(ctx, log, below, dropTrim)
}

// deleteBelow runs drop requests through the writer, a chunk at a time, so appends
// interleave with a long deletion.
func (s *Store) deleteBelow(ctx context.Context, log string, below uint64, why dropReason) (int, error) {
	if err := checkName(log); err != nil {
		return 0, err
	}
	total := 0
	for {
		r := &request{kind: reqDrop, log: log, below: below, reason: why, done: make(chan struct{})}
		if err := s.submit(ctx, r); err != nil {
			return total, fmt.Errorf("buffer: delete entries of log %q below %d: %w", log, below, err)
		}
		total += r.dropped
		if !r.more {
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
	low := ^uint64(0)
	for _, c := range consumers {
		n, err := s.Cursor(log, c)
		if err != nil {
			return 0, err
		}
		low = min(low, n)
	}
	return low, nil
}

// Cursors lists every consumer that ever committed a position in log, with its position.
func (s *Store) Cursors(log string) (map[string]uint64, error) {
	out := map[string]uint64{}
	prefix := cursorPrefix(log)
	err := s.scan(prefix, func(k, v []byte) error {
		if len(v) == 8 {
			out[string(k[len(prefix):])] = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: read cursors of log %q: %w", log, err)
	}
	return out, nil
}

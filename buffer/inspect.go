package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// LogInfo describes one log for `edgegate buffer stats`.
type LogInfo struct {
	Name string
	// First and Last are the oldest and newest entries present (both 0 when empty); High is
	// the highest number ever assigned (entries above Last were dropped or lost).
	First, Last, High uint64
	Count             int64 // entries present
	Bytes             int64 // their keys and values, before compression
	// Oldest and Newest are when First and Last were appended, to the minute (zero when
	// unknown).
	Oldest, Newest time.Time
	// Cursors are the committed positions of the log's consumers.
	Cursors map[string]uint64
	// Missed are, per consumer, the entries deleted before it had them (none: absent).
	Missed map[string]Missed
}

// Logs describes every log of the store, by name.
func (s *Store) Logs() ([]LogInfo, error) {
	s.mu.Lock()
	names := sortedKeys(s.logs)
	s.mu.Unlock()
	out := make([]LogInfo, 0, len(names))
	for _, n := range names {
		li, err := s.logInfo(n)
		if err != nil {
			return nil, err
		}
		out = append(out, li)
	}
	return out, nil
}

func (s *Store) logInfo(log string) (LogInfo, error) {
	ls, err := s.logState(log)
	if err != nil {
		return LogInfo{}, err
	}
	// The last number published, not ls.next, which only the writer may read.
	li := LogInfo{Name: log, High: ls.last.Load(), Count: ls.count.Load(), Bytes: ls.bytes.Load()}
	prefix := s.logPrefix(log)
	tprefix := timePrefix(log)
	err = s.db.View(func(txn *badger.Txn) error {
		o := keysOnly(prefix)
		it := txn.NewIterator(o)
		it.Seek(s.logKey(log, ls.first.Load()))
		if it.Valid() {
			if g, ok := segmentOf(it.Item(), prefix); ok {
				li.First = max(g.first, ls.first.Load())
			}
		}
		it.Close()
		o.Reverse = true
		it = txn.NewIterator(o)
		it.Seek(s.logKey(log, ^uint64(0)))
		if it.Valid() {
			if g, ok := segmentOf(it.Item(), prefix); ok {
				li.Last = g.last
			}
		}
		it.Close()
		if li.Count == 0 {
			return nil
		}
		at := func(seq uint64) (time.Time, error) {
			o := badger.DefaultIteratorOptions
			o.Prefix = tprefix
			o.Reverse = true
			it := txn.NewIterator(o)
			defer it.Close()
			it.Seek(timeKey(log, seq))
			if !it.Valid() {
				return time.Time{}, nil
			}
			var t time.Time
			err := it.Item().Value(func(v []byte) error {
				if len(v) == 8 {
					t = time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC().Truncate(time.Minute)
				}
				return nil
			})
			return t, err
		}
		if li.Oldest, err = at(li.First); err != nil {
			return err
		}
		li.Newest, err = at(li.Last)
		return err
	})
	if err != nil {
		return LogInfo{}, fmt.Errorf("buffer: describe log %q: %w", log, err)
	}
	if li.Cursors, err = s.Cursors(log); err != nil {
		return li, err
	}
	li.Missed, err = s.MissedBy(log)
	return li, err
}

// Tail calls fn for the last n entries of log, oldest first.
func (s *Store) Tail(log string, n int, fn func(seq uint64, value []byte) error) error {
	if err := checkName(log); err != nil {
		return err
	}
	first, err := s.firstLive(log) // entries below were deleted, though their segment may remain
	if err != nil {
		return fmt.Errorf("buffer: tail log %q: %w", log, err)
	}
	type kv struct {
		seq uint64
		v   []byte
	}
	var got []kv // newest first
	prefix := s.logPrefix(log)
	err = s.db.View(func(txn *badger.Txn) error {
		o := keysOnly(prefix)
		o.Reverse = true
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(s.logKey(log, ^uint64(0))); it.Valid() && len(got) < n; it.Next() {
			g, ok := segmentOf(it.Item(), prefix)
			if !ok || g.last < first {
				continue
			}
			var seg []kv
			err := it.Item().Value(func(v []byte) error {
				return g.entries(v, first, g.last, func(seq uint64, value []byte) error {
					seg = append(seg, kv{seq, bytes.Clone(value)})
					return nil
				})
			})
			if err != nil {
				return err
			}
			for i := len(seg) - 1; i >= 0 && len(got) < n; i-- {
				got = append(got, seg[i])
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: tail log %q: %w", log, err)
	}
	for i := len(got) - 1; i >= 0; i-- {
		if err := fn(got[i].seq, got[i].v); err != nil {
			return err
		}
	}
	return nil
}

// firstLive is the log's first live sequence number (logMeta.first), without making the
// log known to the store as logState does (a tail of a log that never had entries must not
// list it among the store's logs).
func (s *Store) firstLive(log string) (uint64, error) {
	s.mu.Lock()
	ls, ok := s.logs[log]
	s.mu.Unlock()
	if ok {
		return ls.first.Load(), nil
	}
	v, ok, err := s.getRaw(metaKey(log))
	if err != nil || !ok {
		return 0, err
	}
	m, _ := decodeMeta(v)
	return m.first, nil
}

// DiskUsage measures the store's directory and its file system now.
func (s *Store) DiskUsage() (dirBytes int64, avail int64, err error) {
	dirBytes, err = DirBytes(s.opts.Dir)
	if err != nil {
		return 0, 0, err
	}
	fi, err := s.opts.StatFS(s.opts.Dir)
	if err != nil {
		return dirBytes, -1, nil
	}
	return dirBytes, int64(fi.Avail), nil
}

// DedupIDs is the estimated number of ids in the dedup index.
func (s *Store) DedupIDs() int64 { return s.dedupKeys.Load() }

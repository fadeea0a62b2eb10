package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The disk budget (DESIGN invariant 5). Two limits apply to the store's directory, measured
// in allocated blocks: max_bytes, and what the file system can give while keeping
// reserve_free for everyone else (Badger on a full disk dies with SIGBUS on an mmap write).
// Each limit is lowered by a headroom for what Badger writes on its own between two
// measurements: a memtable flush and compactions, whose output exists next to their input
// until they finish.
//
// The writer keeps an estimate: the last measurement plus what it wrote since, minus what
// it deleted since. Deleting from an LSM tree frees space only once compaction drops the
// entries, so the estimate credits deletes early; the next measurement (every 100 ms, or
// after 1 MiB of writes) corrects it, and the headroom absorbs the difference.
type usage struct {
	at      time.Time // when measured (monotonic; pacing I/O, not processing time)
	du      int64     // allocated bytes of the directory
	avail   int64     // free space for us on the file system; -1 unknown
	written int64     // bytes staged since
	freed   int64     // logical bytes deleted since
}

const (
	sampleEvery = 100 * time.Millisecond
	sampleBytes = 1 << 20
)

func (u *usage) sample(s *Store) {
	u.at = time.Now()
	du, err := DirBytes(s.opts.Dir)
	if err == nil {
		u.du = du
	}
	u.avail = -1
	if fi, err := s.opts.StatFS(s.opts.Dir); err == nil {
		u.avail = int64(fi.Avail)
	} else if !errors.Is(err, errors.ErrUnsupported) && s.opts.ReserveFree > 0 {
		s.log.Warn("cannot read free space; only max_bytes is enforced", "err", err)
	}
	u.written, u.freed = 0, 0
	s.stats.DiskBytes.Store(u.du)
	s.stats.DiskAvail.Store(u.avail)
}

func (u *usage) due() bool {
	return time.Since(u.at) >= sampleEvery || u.written+u.freed >= sampleBytes
}

func (u *usage) estimate() int64 { return u.du + u.written - u.freed }

// limit is how many bytes the directory may hold now; ok is false when no budget applies.
func (s *Store) limit() (lim int64, ok bool) {
	head := s.tuning.headroom
	if s.opts.MaxBytes > 0 {
		lim, ok = s.opts.MaxBytes-head, true
	}
	if s.opts.ReserveFree > 0 && s.usage.avail >= 0 {
		fs := s.usage.du + s.usage.avail - s.opts.ReserveFree - head
		if !ok || fs < lim {
			lim, ok = fs, true
		}
	}
	return lim, ok
}

// admit applies the budget to a group of prepared requests and returns those to commit.
// Updates always pass. Appends pass while the estimate stays within the limit; beyond it,
// drop_oldest first deletes the oldest entries (never those the group itself appends), and
// whatever still does not fit is refused with ErrFull and counted.
func (s *Store) admit(work []*request) []*request {
	if s.usage.due() {
		s.usage.sample(s)
	}
	lim, ok := s.limit()
	if !ok {
		return work
	}
	s.stats.Limit.Store(lim)
	var need int64
	for _, r := range work {
		need += r.size
	}
	est := s.usage.estimate()
	if est+need <= lim {
		s.stats.Full.Store(false)
		return work
	}
	if s.opts.OnFull == DropOldest {
		// Drop a little more than needed, so that a full buffer drops in chunks rather
		// than a few entries before every group.
		want := est + need - lim + s.tuning.dropSlack
		s.dropForRoom(want)
		est = s.usage.estimate()
	}
	kept := work[:0]
	for _, r := range work {
		if r.kind == reqUpdate || est+r.size <= lim {
			est += r.size
			kept = append(kept, r)
			continue
		}
		s.stats.Full.Store(true)
		n := uint64(r.stored)
		s.stats.Rejected.Add(n)
		s.stats.RejectedAppends.Add(1)
		s.addLogCounter(&s.stats.rejectedBy, r.log, n)
		s.fail(r, fmt.Errorf("%w: the buffer holds %d bytes of its %d-byte limit (%s)", ErrFull, est, lim, s.limitName()))
	}
	return kept
}

func (s *Store) limitName() string {
	if s.opts.MaxBytes > 0 && (s.usage.avail < 0 || s.opts.ReserveFree == 0 ||
		s.opts.MaxBytes <= s.usage.du+s.usage.avail-s.opts.ReserveFree) {
		return "max_bytes less Badger's headroom"
	}
	return "free disk space less reserve_free and Badger's headroom"
}

// dropForRoom deletes the oldest entries, ordinary logs before precious ones, until want
// bytes are freed or nothing is left. It commits as it goes.
func (s *Store) dropForRoom(want int64) {
	var ordinary, precious []*logState
	s.mu.Lock()
	for name, ls := range s.logs {
		if s.precious[name] {
			precious = append(precious, ls)
		} else {
			ordinary = append(ordinary, ls)
		}
	}
	s.mu.Unlock()
	sort.Slice(ordinary, func(i, j int) bool { return ordinary[i].name < ordinary[j].name })
	sort.Slice(precious, func(i, j int) bool { return s.preciousRank(precious[i].name) < s.preciousRank(precious[j].name) })
	var freed int64
	for _, ls := range append(ordinary, precious...) {
		for freed < want && ls.count.Load() > 0 {
			n, b, _, err := s.dropOldest(ls, ^uint64(0), want-freed, dropRoom)
			if err != nil {
				s.log.Error("cannot drop entries to make room", "log", ls.name, "err", err)
				return
			}
			if n == 0 {
				break
			}
			freed += b
		}
	}
}

func (s *Store) preciousRank(name string) int {
	for i, p := range s.opts.Precious {
		if p == name {
			return i
		}
	}
	return len(s.opts.Precious)
}

// execDrop runs a drop request (trimming, retention) in its own transaction.
func (s *Store) execDrop(r *request) error {
	ls, err := s.logState(r.log)
	if err != nil {
		return err
	}
	n, _, more, err := s.dropOldest(ls, r.below, 1<<62, r.reason)
	r.dropped, r.more = n, more
	return err
}

// dropOldest deletes, in one committed transaction, the oldest entries of ls below `below`:
// at most dropChunk of them, stopping once maxBytes are freed. It returns how many entries
// and bytes it deleted, and whether entries below `below` remain.
func (s *Store) dropOldest(ls *logState, below uint64, maxBytes int64, why dropReason) (n int, freed int64, more bool, err error) {
	first := ls.first.Load()
	if first >= below || ls.count.Load() == 0 {
		return 0, 0, false, nil
	}
	prefix := logPrefix(ls.name)
	var keys [][]byte
	newFirst := first
	err = s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(logKey(ls.name, first)); it.Valid(); it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			if seq >= below {
				newFirst = below
				return nil
			}
			if len(keys) == dropChunk || freed >= maxBytes {
				newFirst = seq
				more = true
				return nil
			}
			keys = append(keys, item.KeyCopy(nil))
			freed += entrySize(ls.name, int(item.ValueSize()))
			newFirst = seq + 1
		}
		// The end of the log: every committed entry is gone. (Not ls.next: the group being
		// applied may hold appends with numbers already assigned and not yet committed.)
		newFirst = maxU64(newFirst, minU64(below, ls.last.Load()+1))
		return nil
	})
	if err != nil {
		return 0, 0, false, fmt.Errorf("buffer: find oldest entries of log %q: %w", ls.name, err)
	}
	idx, err := s.staleIndexKeys(ls.name, newFirst)
	if err != nil {
		return 0, 0, false, err
	}
	if len(keys) == 0 && len(idx) == 0 && newFirst == first {
		return 0, 0, false, nil
	}
	r := &request{kind: reqDrop, log: ls.name}
	d := r.delta(ls)
	d.count = -int64(len(keys))
	d.bytes = -freed
	d.first = newFirst
	for _, k := range append(keys, idx...) {
		r.writes = append(r.writes, write{key: k, del: true})
		r.size += int64(len(k)) + 16 // a tombstone, until compaction drops it
	}
	txn := s.db.NewTransaction(true)
	if err := stage(txn, r.writes); err != nil {
		txn.Discard()
		return 0, 0, false, fmt.Errorf("buffer: stage deletes in log %q: %w", ls.name, err)
	}
	if err := s.commitTxn(txn, []*request{r}); err != nil {
		return 0, 0, false, fmt.Errorf("buffer: delete oldest entries of log %q: %w", ls.name, err)
	}
	s.usage.freed += freed
	n = len(keys)
	switch why {
	case dropTrim:
		s.stats.Trimmed.Add(uint64(n))
	case dropRetention:
		s.stats.Expired.Add(uint64(n))
		s.addLogCounter(&s.stats.expiredBy, ls.name, uint64(n))
	case dropRoom:
		s.stats.Dropped.Add(uint64(n))
		s.addLogCounter(&s.stats.droppedBy, ls.name, uint64(n))
	}
	if why != dropTrim && n > 0 {
		s.logDrop(ls.name, why, n, newFirst)
	}
	return n, freed, more, nil
}

// staleIndexKeys returns the time-index keys of log that no longer describe a live entry:
// all those below first but the last one (which dates the entries from first on).
func (s *Store) staleIndexKeys(log string, first uint64) ([][]byte, error) {
	var keys [][]byte
	prefix := timePrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			seq := binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
			if seq > first {
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: read time index of log %q: %w", log, err)
	}
	if len(keys) > 0 {
		keys = keys[:len(keys)-1]
	}
	return keys, nil
}

// logDrop logs drops at most once a minute per log and reason: a full buffer drops often,
// and the counters carry the totals.
func (s *Store) logDrop(log string, why dropReason, n int, first uint64) {
	now := time.Now()
	k := fmt.Sprintf("%s/%d", log, why)
	s.mu.Lock()
	if s.lastDropLog == nil {
		s.lastDropLog = map[string]time.Time{}
	}
	last := s.lastDropLog[k]
	quiet := now.Sub(last) < time.Minute
	if !quiet {
		s.lastDropLog[k] = now
	}
	s.mu.Unlock()
	if quiet {
		return
	}
	switch why {
	case dropRetention:
		s.log.Warn("deleted entries older than the retention before every consumer had them",
			"log", log, "count", n, "first_kept", first, "retention", s.opts.Retention)
	case dropRoom:
		s.log.Warn("buffer full: dropped the oldest entries to make room (on_full: drop_oldest)",
			"log", log, "count", n, "first_kept", first, "total_dropped", s.stats.Dropped.Load())
	}
}

func minU64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

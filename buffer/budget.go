package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The disk budget (DESIGN invariant 5). The limit L is max_bytes, or what the file system
// can give while keeping reserve_free for everyone else (Badger on a full disk dies with
// SIGBUS on an mmap write), whichever is lower. Two rules keep the store within it:
//
//   - The policy works on logical bytes, which the store knows exactly: the keys and values
//     of every log plus dedupKeyCost per dedup id. When they would exceed the capacity
//     (L less Badger's floor and headroom), drop_oldest deletes the oldest entries and
//     reject refuses the append. This is deterministic: deleting from an LSM tree frees
//     space only once a compaction drops the entries, so a policy driven by the measured
//     size would keep deleting data whose space is already on its way back.
//   - A guard works on the measured size: the directory's allocated blocks, measured every
//     100 ms or MiB of writes, plus what was written since. An append that would take it
//     past L less the headroom is refused, whatever the policy. Records compress well in
//     Badger's tables (Snappy, see badgerOptions), so the guard only acts when compaction
//     falls far behind or the data does not compress.
type usage struct {
	at      time.Time // when measured (monotonic; pacing I/O, not processing time)
	du      int64     // allocated bytes of the directory
	avail   int64     // free space for us on the file system; -1 unknown
	written int64     // bytes staged since
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
	u.written = 0
	s.stats.DiskBytes.Store(u.du)
}

func (u *usage) due() bool {
	return time.Since(u.at) >= sampleEvery || u.written >= sampleBytes
}

// limits returns the capacity for logical bytes and the guard for the measured size; ok
// is false when no budget applies.
func (s *Store) limits() (capacity, guard int64, ok bool) {
	var lim int64
	if s.opts.MaxBytes > 0 {
		lim, ok = s.opts.MaxBytes, true
	}
	if s.opts.ReserveFree > 0 && s.usage.avail >= 0 {
		fs := s.usage.du + s.usage.avail - s.opts.ReserveFree
		if !ok || fs < lim {
			lim, ok = fs, true
		}
	}
	guard = max(0, lim-s.tuning.headroom)
	return max(0, guard-s.tuning.floor), guard, ok
}

// logical is what the policy counts against the shared capacity: every log's keys and
// values, less what the logs' reserved rooms hold (Options.Reserved, at capacity c), plus
// the dedup ids and the records of arrivals.
func (s *Store) logical(c int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for name, ls := range s.logs {
		b := ls.bytes.Load()
		n += b - min(b, s.room(name, c))
	}
	return n + s.dedupKeys.Load()*dedupKeyCost + s.arrivalCount.Load()*arrivalKeyCost
}

// maxRoomShare bounds the rooms set aside together: at most this share of the capacity.
const maxRoomShare = 8

// room returns the room set aside for log at capacity c: Options.Reserved, scaled down
// when the rooms together would take more than an eighth of c (a small budget).
func (s *Store) room(log string, c int64) int64 {
	r := s.opts.Reserved[log]
	if r == 0 {
		return 0
	}
	var all int64
	for _, n := range s.opts.Reserved {
		all += n
	}
	if limit := c / maxRoomShare; all > limit {
		return int64(float64(r) * float64(limit) / float64(all))
	}
	return r
}

// reserved returns the rooms set aside at capacity c, taken from the other logs'.
func (s *Store) reserved(c int64) int64 {
	var n int64
	for name := range s.opts.Reserved {
		n += s.room(name, c)
	}
	return n
}

// fitsReserved reports whether r fits in its log's room at capacity c, given what that room
// already holds and what the group admitted to it so far (inRoom).
func (s *Store) fitsReserved(r *request, c int64, inRoom map[string]int64) bool {
	room := s.room(r.log, c)
	if room == 0 || r.kind == reqUpdate {
		return false
	}
	held := inRoom[r.log]
	if _, seen := inRoom[r.log]; !seen {
		if ls, err := s.logState(r.log); err == nil {
			held = ls.bytes.Load()
		}
	}
	if held+r.logical() > room {
		return false
	}
	inRoom[r.log] = held + r.logical()
	return true
}

// admit applies the budget to a group of prepared requests and returns those to commit.
// Updates always pass (they carry pipelines' and uplinks' progress; the headroom covers
// them). Appends pass while both rules hold; drop_oldest first makes room by deleting the
// oldest entries; what still does not fit is refused with ErrFull and counted.
func (s *Store) admit(work []*request) []*request {
	if s.usage.due() {
		s.usage.sample(s)
	}
	capacity, guard, ok := s.limits()
	if !ok {
		return work
	}
	s.dedupCap.Store(max(1, capacity/dedupShare/dedupKeyCost))
	s.setArrivalBudget(capacity)
	full := capacity
	capacity = max(0, capacity-s.reserved(full))
	var need, needPhys int64
	for _, r := range work {
		need += r.logical()
		needPhys += r.size
	}
	used := s.logical(full)
	phys := s.usage.du + s.usage.written
	if used+need <= capacity && phys+needPhys <= guard {
		return work
	}
	if used+need > capacity && s.opts.OnFull == DropOldest {
		// Free a little more than needed, so that a full buffer drops in chunks rather
		// than a few entries before every group.
		s.dropForRoom(full, capacity-need-s.tuning.dropSlack)
		used = s.logical(full)
	}
	kept := work[:0]
	inRoom := map[string]int64{}
	for _, r := range work {
		if phys+r.size <= guard && s.fitsReserved(r, full, inRoom) {
			phys += r.size
			kept = append(kept, r)
			continue
		}
		logical := r.logical()
		fits := used+logical <= capacity && phys+r.size <= guard
		// An append that stores nothing (every entry a duplicate of one stored) passes as
		// an update does: refusing it would make its client publish the readings again,
		// and a reading stamped on arrival would then be stored under a new id.
		nothing := r.stored == 0 && r.pending == 0
		if r.kind == reqUpdate || fits || nothing {
			used += logical
			phys += r.size
			kept = append(kept, r)
			continue
		}
		n := uint64(r.stored + r.pending)
		s.countRejected(r, n)
		var why string
		if used+logical > capacity {
			why = fmt.Sprintf("buffered records and dedup ids take %d of %d bytes (%s, less Badger's working space)", used, capacity, s.limitName())
		} else {
			why = fmt.Sprintf("the store's files take %d bytes, at the guard of %d (%s, less Badger's headroom): compaction is behind", phys, guard, s.limitName())
			s.stats.Guarded.Add(n)
		}
		s.fail(r, fmt.Errorf("%w: %s", ErrFull, why))
	}
	return kept
}

// countRejected counts an append refused with ErrFull, n of whose entries would have been
// stored.
func (s *Store) countRejected(r *request, n uint64) {
	s.stats.Rejected.Add(n)
	s.stats.RejectedAppends.Add(1)
	s.addLogCounter(&s.stats.rejectedBy, r.log, n)
}

func (s *Store) limitName() string {
	if s.opts.MaxBytes > 0 && (s.usage.avail < 0 || s.opts.ReserveFree == 0 ||
		s.opts.MaxBytes <= s.usage.du+s.usage.avail-s.opts.ReserveFree) {
		return "max_bytes"
	}
	return "free disk space less reserve_free"
}

// dropForRoom deletes the oldest entries until the logical bytes (at capacity c) are at
// most target or nothing is left: of logs with a room, what overflows it (never what it
// holds); then of expendable logs, ordinary ones and precious ones. It commits as it goes.
func (s *Store) dropForRoom(c, target int64) {
	var roomed, expendable, ordinary, precious []*logState
	s.mu.Lock()
	for name, ls := range s.logs {
		switch {
		case s.opts.Reserved[name] > 0:
			roomed = append(roomed, ls)
		case s.precious[name]:
			precious = append(precious, ls)
		case slices.Contains(s.opts.Expendable, name):
			expendable = append(expendable, ls)
		default:
			ordinary = append(ordinary, ls)
		}
	}
	s.mu.Unlock()
	sort.Slice(expendable, func(i, j int) bool {
		return slices.Index(s.opts.Expendable, expendable[i].name) < slices.Index(s.opts.Expendable, expendable[j].name)
	})
	sort.Slice(ordinary, func(i, j int) bool { return ordinary[i].name < ordinary[j].name })
	sort.Slice(precious, func(i, j int) bool { return s.preciousRank(precious[i].name) < s.preciousRank(precious[j].name) })
	sort.Slice(roomed, func(i, j int) bool { return roomed[i].name < roomed[j].name })
	for _, ls := range slices.Concat(roomed, expendable, ordinary, precious) {
		for used := s.logical(c); used > target && ls.count.Load() > 0; used = s.logical(c) {
			over := used - target
			if room := s.room(ls.name, c); room > 0 {
				if over = min(over, ls.bytes.Load()-room); over <= 0 {
					break // what is left is in its room
				}
			}
			n, _, err := s.dropOldest(ls, ^uint64(0), over, dropRoom)
			if err != nil {
				s.log.Error("cannot drop entries to make room", "log", ls.name, "err", err)
				return
			}
			if n == 0 {
				break
			}
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
	n, more, err := s.dropOldest(ls, r.below, 1<<62, r.reason)
	r.dropped, r.more = n, more
	return err
}

// dropOldest deletes, in one committed transaction, the oldest entries of ls below `below`:
// at most dropMax of them, stopping once maxBytes are freed. It returns how many entries
// it deleted, and whether entries below `below` remain.
func (s *Store) dropOldest(ls *logState, below uint64, maxBytes int64, why dropReason) (n int, more bool, err error) {
	first := ls.first.Load()
	if first >= below || ls.count.Load() == 0 {
		return 0, false, nil
	}
	prefix := s.logPrefix(ls.name)
	var keys [][]byte
	var gone []seqRange // the live entries deleted, by segment
	var freed, count int64
	newFirst := first
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		for it.Seek(s.logKey(ls.name, first)); it.Valid(); it.Next() {
			item := it.Item()
			g, ok := segmentOf(item, prefix)
			if !ok {
				continue
			}
			from := max(g.first, first) // entries below first were deleted before
			if from >= below {
				newFirst = below
				return nil
			}
			if len(keys) == s.dropMax || freed >= maxBytes {
				newFirst = from
				more = true
				return nil
			}
			to := min(g.last, below-1)
			b := g.logicalBytes(ls.name)
			if from != g.first || to != g.last {
				// Part of a segment: its entries' sizes are in its value.
				var err error
				if b, err = partBytes(item, g, ls.name, from, to); err != nil {
					return err
				}
			}
			freed += b
			count += int64(to - from + 1)
			gone = append(gone, seqRange{from, to})
			newFirst = to + 1
			if to != g.last {
				// The segment straddles below: its entries from below on are live, so it
				// stays, and its entries below are deleted by newFirst alone.
				return nil
			}
			keys = append(keys, item.KeyCopy(nil))
		}
		// The end of the log: every committed entry is gone. (Not ls.next: the group being
		// applied may hold appends with numbers already assigned and not yet committed.)
		newFirst = max(newFirst, min(below, ls.last.Load()+1))
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("buffer: find oldest entries of log %q: %w", ls.name, err)
	}
	idx, err := s.staleIndexKeys(ls.name, newFirst)
	if err != nil {
		return 0, false, err
	}
	if count == 0 && len(keys) == 0 && len(idx) == 0 && newFirst == first {
		return 0, false, nil
	}
	r := &request{kind: reqDrop, log: ls.name}
	d := r.delta(ls)
	d.count = -count
	d.bytes = -freed
	d.first = newFirst
	for _, k := range append(keys, idx...) {
		r.writes = append(r.writes, write{key: k, del: true})
		r.size += int64(len(k)) + 16 // a tombstone, until compaction drops it
	}
	if why != dropTrim && count > 0 {
		// Counted in the same transaction as the deletes: exact after any crash.
		ws, err := s.missedWrites(ls.name, gone, why)
		if err != nil {
			return 0, false, err
		}
		r.writes = append(r.writes, ws...)
	}
	txn := s.db.NewTransaction(true)
	if err := stage(txn, r.writes); err != nil {
		txn.Discard()
		return 0, false, fmt.Errorf("buffer: stage deletes in log %q: %w", ls.name, err)
	}
	if err := s.commitTxn(txn, []*request{r}); err != nil {
		return 0, false, fmt.Errorf("buffer: delete oldest entries of log %q: %w", ls.name, err)
	}
	n = int(count)
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
	return n, more, nil
}

// seqRange is the sequence numbers from..to, both included.
type seqRange struct{ from, to uint64 }

// partBytes is what the entries from..to of segment g (the item's) count for in log's
// bytes.
func partBytes(item *badger.Item, g segment, log string, from, to uint64) (int64, error) {
	var b int64
	err := item.Value(func(v []byte) error {
		return g.entries(v, from, to, func(_ uint64, value []byte) error {
			b += entrySize(log, len(value))
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("segment %d..%d: %w", g.first, g.last, err)
	}
	return b, nil
}

// staleIndexKeys returns the time-index keys of log that no longer describe a live entry:
// all those below first but the last one (which dates the entries from first on).
func (s *Store) staleIndexKeys(log string, first uint64) ([][]byte, error) {
	var keys [][]byte
	prefix := timePrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		for it.Rewind(); it.Valid() && len(keys) <= s.dropMax/4; it.Next() {
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

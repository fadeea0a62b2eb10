package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

// Regression tests for issue 16, "Data lost or doubled", items 1, 2, 4 and 5: what happens
// to entries at the edges of a group commit (a request that fails beside others), and at
// the dedup index's bounds.

// smallMemTable scales Badger down 8× so that a small budget is meaningful (budget_test.go).
const smallMemTable = 512 << 10

// tinyBudget returns options for a store on a file system that leaves it capacity
// logical bytes (its entries and dedup ids): the file system's size is fixed (fakeDisk),
// so the budget does not move with what Badger writes.
func tinyBudget(dir string, onFull OnFull, capacity int64) (Options, *fakeDisk) {
	tn := newTuning(smallMemTable)
	const reserve = 1 << 20
	disk := &fakeDisk{dir: dir, size: reserve + tn.headroom + tn.floor + capacity}
	return Options{
		OnFull: onFull, ReserveFree: reserve, StatFS: disk.statfs,
		DedupTTL: time.Hour, memTableSize: smallMemTable,
	}, disk
}

// inOneGroup queues the appends so that the writer applies them in one group: the writer
// is held in the preparation of an earlier append (it looks its log up under s.mu) until
// every one is queued. The store must be idle.
func inOneGroup(t *testing.T, s *Store, appends ...func() *Pending) []*Pending {
	t.Helper()
	s.mu.Lock()
	held := s.AppendAsync(bg, "blocker", vals("hold the writer"))
	deadline := time.Now().Add(10 * time.Second)
	for len(s.reqs) > 0 {
		if time.Now().After(deadline) {
			s.mu.Unlock()
			t.Fatal("the writer did not take the blocking append")
		}
		time.Sleep(time.Millisecond)
	}
	// The writer took the blocker and drains whatever else is queued (nothing) before it
	// prepares; give that loop a moment, so that the appends below make the next group.
	// Were they to land in the blocker's group, or apart, the assertions still hold: only
	// the chance to catch the bug would be lost.
	time.Sleep(20 * time.Millisecond)
	out := make([]*Pending, len(appends))
	for i, a := range appends {
		out[i] = a()
	}
	s.mu.Unlock()
	if _, err := held.Wait(); err != nil && !errors.Is(err, ErrFull) {
		t.Fatalf("blocking append: %v", err)
	}
	return out
}

// Item 1: a resend of a message whose first copy is still queued lands in the same group
// with the same record id. When the budget refuses the first copy, the resend must not be
// reported as a duplicate (the broker would acknowledge a reading that was never stored):
// it shares the first copy's fate.
func TestDupOfRefusedAppendIsRefused(t *testing.T) {
	for _, onFull := range []OnFull{Reject, DropOldest} {
		t.Run(string(onFull), func(t *testing.T) {
			dir := t.TempDir()
			opts, disk := tinyBudget(dir, onFull, 1000)
			s := open(t, dir, opts)
			reading := Entry{ID: "dev-1:0001", Value: []byte(strings.Repeat("x", 2000))} // over the capacity
			send := func() *Pending { return s.AppendAsync(bg, "raw", []Entry{reading}) }
			ps := inOneGroup(t, s, send, send)
			for i, p := range ps {
				res, err := p.Wait()
				if !errors.Is(err, ErrFull) {
					t.Errorf("copy %d of the reading: results %+v, error %v; want ErrFull like the first copy", i+1, res, err)
				}
			}
			st := s.Stats()
			if st.DedupHits.Load() != 0 || st.Rejected.Load() != 2 || st.RejectedAppends.Load() != 2 {
				t.Errorf("dedup hits %d, rejected %d in %d appends; want 0, 2 entries in 2 appends",
					st.DedupHits.Load(), st.Rejected.Load(), st.RejectedAppends.Load())
			}
			if n, _ := s.Count("raw"); n != 0 {
				t.Fatalf("raw holds %d entries", n)
			}
			// With room, the reading is stored: its id was not remembered.
			disk.size += 1 << 20
			s.usage.at = time.Time{} // measure at the next append
			res, err := s.Append(bg, "raw", []Entry{reading})
			if err != nil || res[0].Dup {
				t.Fatalf("with room: %+v, %v; want the reading stored", res, err)
			}
		})
	}
}

// Item 1, the guard on the measured size, which refuses under either policy: the store's
// files take more room than its data says (here another file in its directory), and the
// first copy does not fit beside them.
func TestDupOfGuardedAppendIsRefused(t *testing.T) {
	for _, onFull := range []OnFull{Reject, DropOldest} {
		t.Run(string(onFull), func(t *testing.T) {
			dir := t.TempDir()
			opts, _ := tinyBudget(dir, onFull, 4<<20)
			s := open(t, dir, opts)
			_, guard, _ := s.limits()
			du, err := DirBytes(dir)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, guard-du-30_000)
			if err := os.WriteFile(filepath.Join(dir, "junk"), junk, 0o600); err != nil {
				t.Fatal(err)
			}
			s.usage.at = time.Time{} // measure at the next append
			reading := Entry{ID: "dev-1:0002", Value: []byte(strings.Repeat("x", 60_000))}
			send := func() *Pending { return s.AppendAsync(bg, "raw", []Entry{reading}) }
			ps := inOneGroup(t, s, send, send)
			for i, p := range ps {
				if res, err := p.Wait(); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "guard") {
					t.Errorf("copy %d of the reading: results %+v, error %v; want the guard's ErrFull like the first copy", i+1, res, err)
				}
			}
			if st := s.Stats(); st.Rejected.Load() != 2 || st.DedupHits.Load() != 0 {
				t.Errorf("rejected %d, dedup hits %d; want 2, 0", st.Rejected.Load(), st.DedupHits.Load())
			}
		})
	}
}

// Item 1, the other failures: an original that is too large for a transaction takes its
// duplicate down too, but not as "too large" (the broker would refuse that one for good).
func TestDupOfTooLargeAppendFailsTransiently(t *testing.T) {
	s := open(t, t.TempDir(), Options{DedupTTL: time.Hour, memTableSize: smallMemTable})
	big := strings.Repeat("x", 40_000) // two of them are over one transaction
	first := func() *Pending {
		return s.AppendAsync(bg, "raw", []Entry{{ID: "a", Value: []byte(big)}, {ID: "b", Value: []byte(big)}})
	}
	resend := func() *Pending { return s.AppendAsync(bg, "raw", []Entry{{ID: "b", Value: []byte(big)}}) }
	ps := inOneGroup(t, s, first, resend)
	if _, err := ps[0].Wait(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("first: %v, want ErrTooLarge", err)
	}
	res, err := ps[1].Wait()
	if err == nil || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrFull) {
		t.Fatalf("the duplicate of a failed append: %+v, %v; want a transient error", res, err)
	}
	if res, err := s.Append(bg, "raw", []Entry{{ID: "b", Value: []byte(big)}}); err != nil || res[0].Dup {
		t.Fatalf("sent again: %+v, %v; want it stored", res, err)
	}
}

// Item 2: an append that wrote a new minute's time-index key and then failed must not
// leave the entries appended after it in that minute dated by an older key: retention
// would delete them as old. A day-old entry must survive a 7-day retention.
func TestRetentionAfterAFailedAppendInTheGroup(t *testing.T) {
	for _, why := range []string{"too large", "buffer full"} {
		t.Run(why, func(t *testing.T) {
			dir := t.TempDir()
			clk := clock.NewFake(t0)
			opts := Options{memTableSize: smallMemTable}
			bad := []Entry{{Value: []byte(strings.Repeat("x", 40_000))}, {Value: []byte(strings.Repeat("y", 40_000))}}
			if why == "buffer full" {
				opts, _ = tinyBudget(dir, Reject, 10_000)
				bad = bad[:1] // fits one transaction, not the budget
			}
			opts.Clock, opts.Retention = clk, 7*24*time.Hour
			s := open(t, dir, opts)
			mustAppend(t, s, "raw", vals("week-old")...)
			clk.Set(t0.Add(6 * 24 * time.Hour))
			ps := inOneGroup(t, s,
				func() *Pending { return s.AppendAsync(bg, "raw", bad) },
				func() *Pending { return s.AppendAsync(bg, "raw", vals("day-old")) })
			if _, err := ps[0].Wait(); err == nil {
				t.Fatal("the bad append was stored")
			}
			if _, err := ps[1].Wait(); err != nil {
				t.Fatal(err)
			}
			clk.Set(t0.Add(7*24*time.Hour + time.Hour))
			if err := s.MaintainOnce(bg); err != nil {
				t.Fatal(err)
			}
			if _, got := readAll(t, s, "raw", 0); fmt.Sprint(got) != "[day-old]" {
				t.Fatalf("after 7 days and an hour the log holds %q; want the day-old entry only", got)
			}
			if n := s.Stats().Expired.Load(); n != 1 {
				t.Fatalf("%d entries counted as expired, want 1", n)
			}
		})
	}
}

// Item 4: at its cap the dedup index forgets its oldest ids, never the newest: after a
// restart the most common duplicate, a resend of a recent reading, is still recognised.
func TestDedupCapForgetsTheOldest(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	opts := Options{DedupTTL: time.Minute, Clock: clk, scanSteps: 7} // buckets of a second; the recount reads in steps
	s := open(t, dir, opts)
	s.dedupCap.Store(100)
	for sec := 0; sec < 15; sec++ { // 150 ids over 15 buckets
		appendIDs(t, s, "raw", "c", sec*10, 10)
		clk.Advance(time.Second)
	}
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	kept, evicted := s.DedupIDs(), st.DedupEvicted.Load()
	if kept > 100 || kept < 80 || kept+int64(evicted) != 150 {
		t.Fatalf("after the bound the index holds %d ids and %d were forgotten; want at most 100, the rest forgotten, 150 in all", kept, evicted)
	}
	if n := countDedupKeys(t, s); n != kept {
		t.Fatalf("the index holds %d keys, the store counts %d", n, kept)
	}
	s.Close()

	s = open(t, dir, opts)
	// The newest ids are durable; the forgotten ones are the oldest.
	if d := appendIDs(t, s, "raw", "c", 150-int(kept), int(kept)); d != int(kept) {
		t.Fatalf("after a restart %d of the newest %d ids were recognised", d, kept)
	}
	if d := appendIDs(t, s, "raw", "c", 0, int(evicted)); d != 0 {
		t.Fatalf("%d of the %d forgotten ids were still recognised", d, evicted)
	}
}

// Item 4, when the newest bucket alone is over the cap (a small budget, a high rate): its
// ids that expire first go, never those just written.
func TestDedupCapWithinTheNewestBucket(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	opts := Options{DedupTTL: 64 * time.Minute, Clock: clk} // buckets of a minute
	s := open(t, dir, opts)
	s.dedupCap.Store(100)
	for sec := 0; sec < 15; sec++ { // 150 ids over 15 s, in one bucket
		appendIDs(t, s, "raw", "c", sec*10, 10)
		clk.Advance(time.Second)
	}
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	kept, evicted := s.DedupIDs(), int(s.Stats().DedupEvicted.Load())
	if kept > 100 || kept < 80 || int(kept)+evicted != 150 {
		t.Fatalf("the index holds %d ids, %d were forgotten; want at most 100, 150 in all", kept, evicted)
	}
	if n := countDedupKeys(t, s); n != kept {
		t.Fatalf("the index holds %d keys, the store counts %d", n, kept)
	}
	s.Close()
	s = open(t, dir, opts)
	if d := appendIDs(t, s, "raw", "c", evicted, int(kept)); d != int(kept) {
		t.Fatalf("%d of the newest %d ids were recognised", d, kept)
	}
	if d := appendIDs(t, s, "raw", "c", 0, evicted); d != 0 {
		t.Fatalf("%d of the %d forgotten ids were recognised", d, evicted)
	}
}

func countDedupKeys(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	now := s.opts.Clock.Now().UnixMilli()
	err := s.scan([]byte(dedupPrefix), func(_, v []byte) error {
		if exp, ok := dedupExpiry(v); ok && exp > now {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Item 5: an id removed from the cache and added again must not lose its entry when the
// ring slot it had before is reused.
func TestIDCacheRemoveThenAdd(t *testing.T) {
	c := newIDCache(3)
	c.add("a", 1, 0, 0)
	c.remove("a")
	c.add("a", 2, 0, 0) // a new slot; the old one still names "a"
	c.add("b", 3, 0, 0)
	c.add("c", 4, 0, 0) // the ring is full: the oldest slot, a's stale one, is reused
	for _, h := range []string{"a", "b", "c"} {
		if _, ok := c.get(h); !ok {
			t.Errorf("%q was evicted though it is among the 3 newest", h)
		}
	}
	c.add("d", 5, 0, 0) // now a's live slot is the oldest
	if _, ok := c.get("a"); ok {
		t.Error("a is still cached after 3 newer ids")
	}
	if len(c.m) != 3 {
		t.Errorf("the cache holds %d ids, its size is 3", len(c.m))
	}
}

// Item 5 through the store: an id whose first append failed, stored later, is answered
// from the cache, not looked up on disk, while fewer newer ids than the cache holds came after it.
func TestIDCacheKeepsAnIDStoredAfterAFailure(t *testing.T) {
	dir := t.TempDir()
	opts, disk := tinyBudget(dir, Reject, 1000)
	opts.DedupCacheSize = 4
	s := open(t, dir, opts)
	if _, err := s.Append(bg, "raw", []Entry{{ID: "late", Value: []byte(strings.Repeat("x", 2000))}}); !errors.Is(err, ErrFull) {
		t.Fatalf("first append: %v, want ErrFull", err)
	}
	disk.size += 1 << 20
	s.usage.at = time.Time{}
	mustAppend(t, s, "raw", Entry{ID: "late", Value: []byte("v")})
	mustAppend(t, s, "raw", Entry{ID: "n1", Value: []byte("v")}, Entry{ID: "n2", Value: []byte("v")}, Entry{ID: "n3", Value: []byte("v")})
	<-s.filterDone // the filter then answers every fresh id; only misses of the cache look up
	before := s.Stats().DedupLookups.Load()
	if res := mustAppend(t, s, "raw", Entry{ID: "late", Value: []byte("v")}); !res[0].Dup {
		t.Fatal("the resend was stored again")
	}
	if n := s.Stats().DedupLookups.Load() - before; n != 0 {
		t.Fatalf("the resend of an id among the 4 newest cost %d disk lookups: the cache lost it", n)
	}
}

// A resend of a reading already stored stores nothing, so a full buffer must not refuse it:
// under reject, a full buffer may be over its capacity (updates, the refused log's room),
// and a resend refused there (0x97) made the device publish the reading anew, stored
// under a new id (the soak: an MQTT 5 device's resend after a kill -9).
func TestDupOfAStoredEntryAcceptedWhenFull(t *testing.T) {
	for _, onFull := range []OnFull{Reject, DropOldest} {
		t.Run(string(onFull), func(t *testing.T) {
			dir := t.TempDir()
			opts, disk := tinyBudget(dir, onFull, 64<<10)
			s := open(t, dir, opts)
			reading := Entry{ID: "dev-1:0003", Value: []byte(strings.Repeat("x", 1000))}
			if res, err := s.Append(bg, "raw", []Entry{reading}); err != nil || res[0].Dup {
				t.Fatalf("first copy: %+v, %v; want it stored", res, err)
			}
			// The disk fills with other users' files: the buffer is now over its capacity.
			disk.others.Store(disk.size)
			s.usage.at = time.Time{} // measure at the next append
			if _, err := s.Append(bg, "raw", []Entry{{ID: "dev-1:0004", Value: []byte("new")}}); !errors.Is(err, ErrFull) {
				t.Fatalf("a new reading on a full buffer: %v, want ErrFull", err)
			}
			res, err := s.Append(bg, "raw", []Entry{reading})
			if err != nil || len(res) != 1 || !res[0].Dup {
				t.Fatalf("resend of the stored reading on a full buffer: %+v, %v; want a duplicate, accepted", res, err)
			}
			if n, _ := s.Count("raw"); onFull == Reject && n != 1 {
				t.Fatalf("raw holds %d entries, want 1", n)
			}
		})
	}
}

package buffer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

// mayHold is expiries' answer alone.
func (f *idFilter) mayHold(h string, now int64) bool {
	_, _, ok := f.expiries(h, now)
	return ok
}

func hashOf(i int) string { return dedupHash(fmt.Sprintf("id-%d", i)) }

// TestBloomAnswers: every hash added is held, and the false-positive rate at capacity is
// the designed ~0.8%.
func TestBloomAnswers(t *testing.T) {
	const n = 50_000
	b := newBloom(n, 0)
	for i := 0; i < n; i++ {
		b.add(bloomHashes(hashOf(i)))
	}
	for i := 0; i < n; i++ {
		if !b.has(bloomHashes(hashOf(i))) {
			t.Fatalf("hash %d was added but is not held", i)
		}
	}
	fp := 0
	for i := n; i < 3*n; i++ {
		if b.has(bloomHashes(hashOf(i))) {
			fp++
		}
	}
	if rate := float64(fp) / (2 * n); rate > 0.015 {
		t.Errorf("false-positive rate %.4f at capacity, want about 0.008", rate)
	}
	// The []byte form (the loader's) probes the same bits as the string form (the writer's).
	h := hashOf(7)
	a1, a2 := bloomHashes(h)
	b1, b2 := bloomHashes([]byte(h))
	if a1 != b1 || a2 != b2 {
		t.Errorf("bloomHashes differs between string and []byte: %x/%x vs %x/%x", a1, a2, b1, b2)
	}
}

func readyFilter(ttl int64, maxIDs int64) *idFilter {
	f := newIDFilter(ttl, func() int64 { return maxIDs }, new(atomic.Int64))
	f.loaded <- nil // nothing in the index at open
	return f
}

// TestIDFilterGenerations: ids are held until they expire, generations rotate with time and
// size, expired ones are dropped, and memory stays within the bound however many ids come.
func TestIDFilterGenerations(t *testing.T) {
	const ttl = 60_000 // ms
	f := readyFilter(ttl, 0)
	if f.mayHold(hashOf(-1), 0) {
		t.Fatal("an empty filter holds an id")
	}
	// 1000 ids a second for two TTLs: each is held until its expiry.
	id := 0
	for now := int64(0); now < 2*ttl; now += 100 {
		for range 100 {
			f.add(hashOf(id), now+ttl, now)
			id++
		}
		if now%5000 == 0 {
			for back := id - 1; back >= 0 && back > id-60_000; back -= 997 {
				if !f.mayHold(hashOf(back), now) {
					t.Fatalf("at %d ms, id %d (expires at %d) is not held", now, back, int64(back/1000)*1000+ttl)
				}
			}
		}
	}
	if n := len(f.gens); n > 6 {
		t.Errorf("%d generations at a steady rate; a generation spans a quarter TTL, so at most 6 should be alive", n)
	}
	// At a steady rate: about 2 bytes per id stored within the TTL, and few false positives.
	if perID := float64(f.bytes()) / (ttl / 1000 * 1000); perID > 2.6 {
		t.Errorf("%.2f bytes per id stored within the TTL at a steady rate, want about 2", perID)
	}
	fresh := 0
	for i := 0; i < 10_000; i++ {
		if f.mayHold(hashOf(2_000_000+i), 2*ttl) {
			fresh++
		}
	}
	if fresh > 300 {
		t.Errorf("%d of 10000 fresh ids answered maybe at a steady rate", fresh)
	}
	t.Logf("steady rate: %d generations, %.2f bytes per id stored within the TTL, %.2f%% false positives",
		len(f.gens), float64(f.bytes())/(ttl/1000*1000), float64(fresh)/100)
	// Expired ids leave the filter: long after the last expiry, only the newest generation
	// (empty of live ids) stays, and fresh ids are answered "never stored".
	later := int64(10 * ttl)
	fp := 0
	for i := 0; i < 1000; i++ {
		if f.mayHold(hashOf(1_000_000+i), later) {
			fp++
		}
	}
	if len(f.gens) != 1 {
		t.Errorf("%d generations after every id expired, want only the newest", len(f.gens))
	}
	if n := f.size.Load(); n != int64(f.bytes()) {
		t.Errorf("size gauge %d after expiry, the filter takes %d", n, f.bytes())
	}
	if fp > 20 {
		t.Errorf("%d of 1000 fresh ids answered maybe", fp)
	}

	// A flood far beyond the index's cap: memory stays within 2 × cap × bits per id.
	const maxIDs = 20_000
	g := readyFilter(ttl, maxIDs)
	for i := 0; i < 1_000_000; i++ {
		g.add(hashOf(i), ttl, 0)
	}
	if bound := 2 * maxIDs * filterBitsPerID / 8; g.bytes() > bound+64 {
		t.Errorf("filter takes %d bytes after a flood, bound %d", g.bytes(), bound)
	}
	for i := 0; i < 1_000_000; i += 4999 {
		if !g.mayHold(hashOf(i), 1) {
			t.Fatalf("id %d of the flood is not held", i)
		}
	}
}

// TestIDFilterWaitsForLoad: until the scan of the index hands its generation over, every
// id may be held (looked up); after, the loaded ids are held until their expiry.
func TestIDFilterWaitsForLoad(t *testing.T) {
	f := newIDFilter(60_000, func() int64 { return 0 }, new(atomic.Int64))
	if !f.mayHold(hashOf(1), 0) {
		t.Fatal("an unloaded filter answered never stored")
	}
	base := newBloom(100, 0)
	base.add(bloomHashes(hashOf(1)))
	base.exp = 5000
	f.loaded <- base
	if !f.mayHold(hashOf(1), 4999) {
		t.Error("a loaded id is not held before its expiry")
	}
	if f.mayHold(hashOf(1), 5000) || f.base != nil {
		t.Error("the loaded generation outlived its ids")
	}
}

// TestDedupFilterSavesLookups: a fresh id costs no lookup in the index once the filter is
// loaded; a stored one is still found, in this run and after a reopen (the loaded
// generation), until it expires.
func TestDedupFilterSavesLookups(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	opts := Options{DedupTTL: time.Hour, DedupCacheSize: 1, Clock: clk} // the cache answers almost nothing
	batch := func(s *Store, from, n int) (dups int) {
		t.Helper()
		return appendIDs(t, s, "raw", "r", from, n)
	}
	loaded := func(s *Store) {
		t.Helper()
		<-s.filterDone
		batch(s, -1, 1) // the writer takes the loaded generation at its next id (r--1)
	}
	s := open(t, dir, opts)
	loaded(s)
	if n := s.Stats().DedupFilterBytes.Load(); n != int64(s.filter.bytes()) || n == 0 {
		t.Errorf("DedupFilterBytes %d, the filter takes %d", n, s.filter.bytes())
	}
	before, gets := s.Stats().DedupLookups.Load(), s.dedup.gets
	if d := batch(s, 0, 2000); d != 0 {
		t.Fatalf("%d fresh ids reported duplicate", d)
	}
	if n := s.Stats().DedupLookups.Load() - before; n > 60 {
		t.Errorf("2000 fresh ids cost %d lookups in the index, want about 1%%", n)
	}
	// Nor, mostly, a lookup in the cache: the filter rules them out first.
	if n := s.dedup.gets - gets; n > 60 {
		t.Errorf("2000 fresh ids cost %d lookups in the id cache, want about 1%%", n)
	}
	if d := batch(s, 0, 2000); d != 2000 {
		t.Fatalf("%d of 2000 resent ids reported duplicate", d)
	}
	s.Close()

	s = open(t, dir, opts)
	loaded(s)
	before = s.Stats().DedupLookups.Load()
	if d := batch(s, 0, 2000); d != 2000 {
		t.Fatalf("after a reopen, %d of 2000 resent ids reported duplicate", d)
	}
	if d := batch(s, 2000, 2000); d != 0 {
		t.Fatalf("after a reopen, %d fresh ids reported duplicate", d)
	}
	if n := s.Stats().DedupLookups.Load() - before; n < 2000 || n > 2000+60 {
		t.Errorf("2000 resent and 2000 fresh ids cost %d lookups, want the 2000 resent and about 1%% of the fresh", n)
	}
	s.Close()

	clk.Advance(time.Hour + time.Millisecond) // every id expired
	s = open(t, dir, opts)
	loaded(s)
	if s.filter.base != nil {
		t.Error("the loader kept expired ids")
	}
	if d := batch(s, 0, 4000); d != 0 {
		t.Errorf("%d expired ids reported duplicate", d)
	}
}

// TestDedupIndexCap: past its cap the index still takes every id (the newest are the ones
// a resend repeats); the recount is exact, and ids that all expire at once, in the part of
// the index new ids go to, are not forgotten early. Once they expire, the recount says so.
// (TestDedupCapForgetsTheOldest has ids spread over time, of which the oldest go.)
func TestDedupIndexCap(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s := open(t, t.TempDir(), Options{DedupTTL: time.Minute, Clock: clk, scanSteps: 7}) // the recount reads the index in steps
	s.dedupCap.Store(100)
	appendIDs(t, s, "raw", "c", 0, 150)
	if n := s.DedupIDs(); n != 150 {
		t.Fatalf("index holds %d ids, want all 150", n)
	}
	if err := s.boundDedup(bg); err != nil {
		t.Fatal(err)
	}
	if n, ev := s.DedupIDs(), s.Stats().DedupEvicted.Load(); n != 150 || ev != 0 {
		t.Fatalf("recount of 150 ids of one instant gave %d, %d forgotten; want 150, none", n, ev)
	}
	clk.Advance(time.Minute)
	if err := s.boundDedup(bg); err != nil {
		t.Fatal(err)
	}
	if n := s.DedupIDs(); n != 0 {
		t.Fatalf("recount after every id expired gave %d, want 0", n)
	}
	appendIDs(t, s, "raw", "c", 150, 10)
	if n := s.DedupIDs(); n != 10 {
		t.Fatalf("after the recount the index holds %d ids, want 10", n)
	}
}

// TestFilterLoadOutgrowsCount: when the index holds more ids than the store's count says,
// the load reads it again at the size it found instead of handing over a saturated filter.
func TestFilterLoadOutgrowsCount(t *testing.T) {
	s := open(t, t.TempDir(), Options{DedupTTL: time.Hour})
	const n = 25 * 500 // three times the smallest generation
	for start := 0; start < n; start += 500 {
		es := make([]Entry, 500)
		for i := range es {
			es[i] = Entry{ID: fmt.Sprintf("o-%d", start+i), Value: []byte("v")}
		}
		if _, err := s.Append(context.Background(), "raw", es); err != nil {
			t.Fatal(err)
		}
	}
	s.dedupKeys.Store(0) // a count that lost track
	f := newIDFilter(time.Hour.Milliseconds(), func() int64 { return 0 }, new(atomic.Int64))
	done := make(chan struct{})
	s.loadFilter(f, done)
	b := <-f.loaded
	if b == nil || b.n != n || b.capacity < n {
		t.Fatalf("loaded generation is nil or holds more ids than its capacity, want %d within it", n)
	}
	for i := 0; i < n; i += 97 {
		if !b.has(bloomHashes(dedupHash(fmt.Sprintf("o-%d", i)))) {
			t.Fatalf("id %d not in the loaded generation", i)
		}
	}
}

// TestIDFilterClockBack: a clock set back keeps every id held (expiry is on the store's
// clock, and an id stored "later" is still unexpired), and adds go on into the newest
// generation rather than rotating on a negative age.
func TestIDFilterClockBack(t *testing.T) {
	const ttl = 60_000
	f := readyFilter(ttl, 0)
	t0 := int64(1_800_000_000_000)
	for i := range 1000 {
		f.add(hashOf(i), t0+ttl, t0)
	}
	back := t0 - 3600_000 // an hour back, as NTP correcting a fast RTC would
	for i := range 1000 {
		f.add(hashOf(1000+i), back+ttl, back)
	}
	if len(f.gens) != 1 {
		t.Errorf("%d generations after the clock went back, want the one taking ids", len(f.gens))
	}
	for i := 0; i < 2000; i++ {
		if !f.mayHold(hashOf(i), back+1) {
			t.Fatalf("id %d not held after the clock went back", i)
		}
	}
}

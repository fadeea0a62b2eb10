package buffer

import (
	"errors"
	"math"
	"math/bits"
	"sync/atomic"
)

// idFilter answers "never stored" for most fresh ids without a Badger lookup, which costs
// ~5 µs per id on the writer goroutine (a skiplist walk per memtable, then a table per
// level). It is a Bloom filter over the hashes of the ids written to the dedup index: a
// hash it does not hold is not in the index; one it holds (every stored id, and ~1% of the
// others) is looked up as before, so it changes no answer.
//
// It is kept in generations so that expired ids leave it: the newest takes the ids written
// for a quarter of the TTL, or until it holds its capacity, and a generation is dropped
// once every id in it has expired on the store's clock. A new generation is sized from the
// ids its predecessor took, so memory follows the rate of stored ids (at a steady rate,
// ~2 bytes per id stored within the TTL: 12.5 bits per id for 1¼ TTL), and the whole filter
// stays under filterBitsPerID × 2 × maxIDs bits: past that the newest generation keeps
// filling and only answers "maybe" more often. The ids in the index when the store opened
// are read by a background scan (loadFilter); until it hands them over, every id is looked
// up. A clock set back keeps every generation; one set forward past a generation's last
// expiry drops it for good, so its ids are not duplicates even if the clock comes back
// (Badger's own TTL, on the system clock, may have dropped them from the index as well).
// Owned by the writer goroutine.
type idFilter struct {
	ttl    int64    // ms
	gens   []*bloom // oldest first; the last takes new ids
	base   *bloom   // the ids in the index at open, once loaded
	ready  bool     // base was received (or there was nothing to load)
	loaded chan *bloom
	maxIDs func() int64  // ids the index may hold (the store's dedup cap); ≤ 0 none
	size   *atomic.Int64 // bytes(), for metrics: see resized
}

const (
	filterBitsPerID = 10 // with 7 probes, ~0.8% false positives at capacity
	filterProbes    = 7
	filterMinIDs    = 1 << 12 // the smallest generation: 5 KiB
	filterMaxIDs    = 1 << 22 // the largest when the index has no cap: 5 MiB
	filterMaxGens   = 16
)

func newIDFilter(ttlMS int64, maxIDs func() int64, size *atomic.Int64) *idFilter {
	return &idFilter{ttl: ttlMS, loaded: make(chan *bloom, 1), maxIDs: maxIDs, size: size}
}

// capIDs is the most ids one generation is sized for.
func (f *idFilter) capIDs() int {
	if c := f.maxIDs(); c > 0 && c < filterMaxIDs {
		return int(max(c, filterMinIDs))
	}
	return filterMaxIDs
}

// expiries reports whether the id hashed to h may be in the index at now (unix ms) —
// ok false means it is not — and if so bounds its expiry: between the earliest and the
// latest expiry of the generations that may hold it (the whole range until the ids at
// open are loaded). A lookup reads the index's buckets in that range only.
func (f *idFilter) expiries(h string, now int64) (lo, hi int64, ok bool) {
	if !f.ready {
		select {
		case b := <-f.loaded:
			f.base, f.ready = b, true
			f.resized()
		default:
			return math.MinInt64, math.MaxInt64, true
		}
	}
	f.expire(now)
	h1, h2 := bloomHashes(h)
	lo, hi = math.MaxInt64, math.MinInt64
	for _, g := range f.gens {
		if g.has(h1, h2) {
			lo, hi, ok = min(lo, g.minExp), max(hi, g.exp), true
		}
	}
	if f.base != nil && f.base.has(h1, h2) {
		lo, hi, ok = min(lo, f.base.minExp), max(hi, f.base.exp), true
	}
	return lo, hi, ok
}

// add records that the id hashed to h was written to the index with expiry exp, at now.
func (f *idFilter) add(h string, exp, now int64) {
	f.expire(now)
	var cur *bloom
	if n := len(f.gens); n > 0 {
		cur = f.gens[n-1]
	}
	if cur == nil || ((now-cur.start >= f.span() || cur.n >= cur.capacity) && f.roomFor(cur)) {
		cur = newBloom(f.nextSize(cur), now)
		f.gens = append(f.gens, cur)
		f.resized()
	}
	cur.add(bloomHashes(h))
	cur.note(exp)
}

// span is how long a generation takes new ids: a quarter of the TTL, so that the filter
// holds ids for at most 1¼ TTL, but at least a second.
func (f *idFilter) span() int64 { return max(f.ttl/4, 1000) }

// roomFor reports whether a generation after cur fits the memory bound.
func (f *idFilter) roomFor(cur *bloom) bool {
	if len(f.gens) >= filterMaxGens {
		return false
	}
	return f.bytes()*8+f.nextSize(cur)*filterBitsPerID <= 2*f.capIDs()*filterBitsPerID
}

// nextSize is the capacity of the generation after cur: a quarter more than cur took at a
// steady rate, twice as much when cur filled up (the rate is growing).
func (f *idFilter) nextSize(cur *bloom) int {
	size := filterMinIDs
	switch {
	case cur == nil:
	case cur.n >= cur.capacity:
		size = cur.n * 2
	default:
		size = cur.n + cur.n/4
	}
	return min(max(size, filterMinIDs), f.capIDs())
}

// expire drops the generations whose ids have all expired: an id whose expiry is at or
// before now is not a duplicate any more (Store.seen).
func (f *idFilter) expire(now int64) {
	changed := false
	if f.base != nil && f.base.exp <= now {
		f.base, changed = nil, true
	}
	i := 0
	for i < len(f.gens)-1 && f.gens[i].exp <= now { // the newest stays: it takes new ids
		i++
	}
	if i > 0 {
		n := copy(f.gens, f.gens[i:])
		clear(f.gens[n:]) // let the dropped generations' bits go
		f.gens = f.gens[:n]
		changed = true
	}
	if changed {
		f.resized()
	}
}

// resized publishes the filter's memory after a generation came or went.
func (f *idFilter) resized() { f.size.Store(int64(f.bytes())) }

// bytes is the memory the filter's bit sets take.
func (f *idFilter) bytes() int {
	n := 0
	for _, g := range f.gens {
		n += len(g.words) * 8
	}
	if f.base != nil {
		n += len(f.base.words) * 8
	}
	return n
}

// bloom is one generation: a Bloom filter of filterBitsPerID bits per id of its capacity.
type bloom struct {
	words    []uint64
	m        uint64 // bits
	n        int    // ids added
	capacity int
	start    int64 // unix ms, store clock, when it began taking ids
	exp      int64 // the latest expiry of an id in it
	minExp   int64 // the earliest
}

func newBloom(capacity int, start int64) *bloom {
	words := (capacity*filterBitsPerID + 63) / 64
	return &bloom{words: make([]uint64, words), m: uint64(words) * 64, capacity: capacity, start: start, minExp: math.MaxInt64}
}

// note widens the generation's range of expiries to exp.
func (b *bloom) note(exp int64) {
	b.exp = max(b.exp, exp)
	b.minExp = min(b.minExp, exp)
}

// bloomHashes derives the probe sequence's start and step from a dedup hash (the first 12
// bytes of a SHA-256, uniform already): double hashing, h1 + i·h2.
func bloomHashes[H ~string | ~[]byte](h H) (h1, h2 uint64) {
	for i := 7; i >= 0; i-- {
		h1 = h1<<8 | uint64(h[i])
	}
	var x uint64
	for i := dedupHashLen - 1; i >= 8; i-- {
		x = x<<8 | uint64(h[i])
	}
	return h1, x*0x9E3779B97F4A7C15 | 1
}

func (b *bloom) add(h1, h2 uint64) {
	for range filterProbes {
		i, _ := bits.Mul64(h1, b.m) // h1 scaled to [0, m)
		b.words[i>>6] |= 1 << (i & 63)
		h1 += h2
	}
	b.n++
}

func (b *bloom) has(h1, h2 uint64) bool {
	for range filterProbes {
		i, _ := bits.Mul64(h1, b.m)
		if b.words[i>>6]&(1<<(i&63)) == 0 {
			return false
		}
		h1 += h2
	}
	return true
}

var errLoadStopped = errors.New("store closing")

// loadFilter reads the ids in the dedup index that have not expired into one generation
// and hands it to the writer's filter, which looks every id up until then. It runs once,
// beside the writer, from Open; a failed scan leaves the filter unready (every id is
// looked up, as without a filter). The generation is sized from the store's count of ids;
// when the index holds more than that (a count from before a crash), the scan runs again
// at the size it found rather than hand over a saturated filter.
func (s *Store) loadFilter(f *idFilter, done chan<- struct{}) {
	defer close(done)
	now := s.opts.Clock.Now().UnixMilli()
	size := min(max(int(s.dedupKeys.Load()), filterMinIDs), f.capIDs())
	for {
		b, err := s.readIDs(now, size)
		switch {
		case errors.Is(err, errLoadStopped):
			return
		case err != nil:
			s.log.Warn("cannot read the dedup index into its filter: every record id is looked up on disk", "err", err)
			return
		case b.n > b.capacity && size < f.capIDs():
			size = min(b.n+b.n/4, f.capIDs())
			continue
		case b.n == 0:
			b = nil
		}
		f.loaded <- b
		return
	}
}

// readIDs reads the ids of the index that expire after now into a generation for size ids.
func (s *Store) readIDs(now int64, size int) (*bloom, error) {
	b := newBloom(size, now)
	err := s.scanInSteps([]byte(dedupPrefix), func(k, v []byte) error {
		select {
		case <-s.quit:
			return errLoadStopped
		default:
		}
		_, h, kok := parseDedupKey(k)
		if exp, ok := dedupExpiry(v); ok && kok && exp > now {
			b.add(bloomHashes(h))
			b.note(exp)
		}
		return nil
	})
	return b, err
}

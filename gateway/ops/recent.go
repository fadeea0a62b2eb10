package ops

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of what the status page shows of the data itself: the last values of the
// RecentSeries series updated most recently, RecentPoints values each. Memory is bounded by
// RecentSeries × (RecentPoints × 16 bytes + the series' name and unit): about 100 KiB.
const (
	RecentSeries = 100
	RecentPoints = 60
)

// Recent keeps the last values of the series updated most recently, in memory, for the
// status page: not a store, nothing of it survives a restart. Observe runs on the ingest
// path of every publisher at once, so it takes no lock shared by all series: a series'
// ring has a mutex of its own (contended only by publishers of that same series and by a
// snapshot), and the table is a sync.Map. Only a series not seen yet takes the table's
// mutex, and once the table is full, at most one new series per evictEvery gets in (it
// evicts the series updated least recently), so a flood of new series costs each of its
// messages one failed lookup. Safe for concurrent use.
type Recent struct {
	maxSeries, points int

	table sync.Map // series name → *seriesRing
	count atomic.Int64

	mu        sync.Mutex   // serialises insertions and evictions
	lastEvict atomic.Int64 // unix nanoseconds of the last eviction
}

// evictEvery bounds how often a new series may evict another from a full table.
const evictEvery = 100 * time.Millisecond

// seriesRing is the last values of one series.
type seriesRing struct {
	mu      sync.Mutex // guards all below
	unit    string
	vals    []float64 // ring of cap points; next is the slot of the next value
	times   []int64   // event times, unix milliseconds, parallel to vals
	next, n int
	seen    int64 // processing time of the last value, unix nanoseconds
}

// NewRecent keeps up to maxSeries series of points values each.
func NewRecent(maxSeries, points int) *Recent {
	return &Recent{maxSeries: max(maxSeries, 1), points: max(points, 1)}
}

// Observe records value at event time ts for series, which arrived at now (processing
// time, which orders the series by recency). A series not kept may be left out when the
// table is full (see Recent).
func (r *Recent) Observe(series, unit string, value float64, ts, now time.Time) {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		return // JSON has no such numbers; ingest refuses them anyway
	}
	v, ok := r.table.Load(series)
	if !ok {
		if v = r.insert(series, now); v == nil {
			return
		}
	}
	s := v.(*seriesRing)
	s.mu.Lock()
	if s.vals == nil {
		s.vals, s.times = make([]float64, r.points), make([]int64, r.points)
	}
	s.vals[s.next], s.times[s.next] = value, ts.UnixMilli()
	s.next = (s.next + 1) % len(s.vals)
	s.n = min(s.n+1, len(s.vals))
	s.unit = unit
	s.seen = now.UnixNano()
	s.mu.Unlock()
}

// insert adds series to the table, evicting the series seen least recently when it is
// full; nil when the table is full and an eviction happened less than evictEvery ago.
func (r *Recent) insert(series string, now time.Time) any {
	if r.count.Load() >= int64(r.maxSeries) && now.UnixNano()-r.lastEvict.Load() < int64(evictEvery) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.table.Load(series); ok {
		return v // another publisher of this series got here first
	}
	if r.count.Load() >= int64(r.maxSeries) {
		if now.UnixNano()-r.lastEvict.Load() < int64(evictEvery) {
			return nil
		}
		var oldest any
		oldestSeen := int64(math.MaxInt64)
		r.table.Range(func(k, v any) bool {
			s := v.(*seriesRing)
			s.mu.Lock()
			seen := s.seen
			s.mu.Unlock()
			if seen < oldestSeen {
				oldest, oldestSeen = k, seen
			}
			return true
		})
		r.table.Delete(oldest)
		r.count.Add(-1)
		r.lastEvict.Store(now.UnixNano())
	}
	s := &seriesRing{seen: now.UnixNano()}
	r.table.Store(series, s)
	r.count.Add(1)
	return s
}

// Snapshot returns the series kept, updated most recently first, each with its values
// oldest first.
func (r *Recent) Snapshot() []SeriesStatus {
	type item struct {
		st   SeriesStatus
		seen int64
	}
	var items []item
	r.table.Range(func(k, v any) bool {
		s := v.(*seriesRing)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n == 0 {
			return true
		}
		st := SeriesStatus{Series: k.(string), Unit: s.unit, Values: make([]float64, 0, s.n)}
		first := (s.next - s.n + len(s.vals)) % len(s.vals)
		for i := 0; i < s.n; i++ {
			st.Values = append(st.Values, s.vals[(first+i)%len(s.vals)])
		}
		last := (s.next - 1 + len(s.vals)) % len(s.vals)
		st.Value = s.vals[last]
		st.Time = time.UnixMilli(s.times[last]).UTC()
		st.From = time.UnixMilli(s.times[first]).UTC()
		items = append(items, item{st, s.seen})
		return true
	})
	sort.Slice(items, func(i, j int) bool {
		if items[i].seen != items[j].seen {
			return items[i].seen > items[j].seen
		}
		return items[i].st.Series < items[j].st.Series
	})
	out := make([]SeriesStatus, len(items))
	for i := range items {
		out[i] = items[i].st
	}
	return out
}

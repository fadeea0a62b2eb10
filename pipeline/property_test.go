package pipeline

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// naiveWindow is the batch computation of one window over a set of records.
type naiveWindow struct {
	key        string
	start, end int64
	recs       []naiveRec
}

type naiveRec struct {
	ts  int64
	v   float64
	arr int
}

type naiveAgg struct {
	count                            int64
	sum, min, max, mean, first, last float64
	stddev                           float64
}

func (w *naiveWindow) agg() naiveAgg {
	a := naiveAgg{count: int64(len(w.recs)), min: math.Inf(1), max: math.Inf(-1)}
	fi, la := w.recs[0], w.recs[0]
	for _, r := range w.recs {
		a.sum += r.v
		a.min = math.Min(a.min, r.v)
		a.max = math.Max(a.max, r.v)
		if r.ts < fi.ts || r.ts == fi.ts && r.arr < fi.arr {
			fi = r
		}
		if r.ts > la.ts || r.ts == la.ts && r.arr > la.arr {
			la = r
		}
	}
	a.mean = a.sum / float64(a.count)
	var ss float64
	for _, r := range w.recs {
		ss += (r.v - a.mean) * (r.v - a.mean)
	}
	a.stddev = math.Sqrt(ss / float64(a.count))
	a.first, a.last = fi.v, la.v
	return a
}

func paneAgg(p *Pane) naiveAgg {
	return naiveAgg{count: p.agg.count, sum: p.agg.sum, min: p.agg.min, max: p.agg.max,
		mean: p.agg.meanValue(), first: p.agg.first, last: p.agg.last, stddev: p.agg.stddev()}
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func sameAgg(a, b naiveAgg, ties bool) bool {
	return a.count == b.count && a.min == b.min && a.max == b.max &&
		near(a.sum, b.sum) && near(a.mean, b.mean) && near(a.stddev, b.stddev) &&
		(!ties || a.first == b.first && a.last == b.last)
}

// batch computes every window of spec over recs (all of them on time).
func batch(spec Spec, recs []Input) map[string]naiveAgg {
	wins := map[string]*naiveWindow{}
	add := func(key string, s, e int64, r naiveRec) {
		id := fmt.Sprintf("%s [%d,%d)", key, s, e)
		w := wins[id]
		if w == nil {
			w = &naiveWindow{key: key, start: s, end: e}
			wins[id] = w
		}
		w.recs = append(w.recs, r)
	}
	switch spec.Kind {
	case Tumbling:
		for i, in := range recs {
			s := floorDiv(in.TS, spec.Size) * spec.Size
			add(in.Series, s, s+spec.Size, naiveRec{in.TS, in.Value, i})
		}
	case Sliding:
		for i, in := range recs {
			for s := floorDiv(in.TS, spec.Every)*spec.Every - spec.Size + spec.Every; s <= in.TS; s += spec.Every {
				add(in.Series, s, s+spec.Size, naiveRec{in.TS, in.Value, i})
			}
		}
	case Session:
		byKey := map[string][]naiveRec{}
		for i, in := range recs {
			byKey[in.Series] = append(byKey[in.Series], naiveRec{in.TS, in.Value, i})
		}
		for key, rs := range byKey {
			sort.SliceStable(rs, func(i, j int) bool { return rs[i].ts < rs[j].ts })
			var cur []naiveRec
			flush := func() {
				if len(cur) > 0 {
					w := &naiveWindow{key: key, start: cur[0].ts, end: cur[len(cur)-1].ts + spec.Gap, recs: cur}
					wins[fmt.Sprintf("%s [%d,%d)", key, w.start, w.end)] = w
				}
				cur = nil
			}
			for _, r := range rs {
				if len(cur) > 0 && r.ts-cur[len(cur)-1].ts >= spec.Gap {
					flush()
				}
				cur = append(cur, r)
			}
			flush()
		}
	}
	out := map[string]naiveAgg{}
	for id, w := range wins {
		out[id] = w.agg()
	}
	return out
}

func specs() []Spec {
	return []Spec{
		{Kind: Tumbling, Size: 10000, OutOfOrder: 3000},
		{Kind: Tumbling, Size: 7, OutOfOrder: 5},
		{Kind: Sliding, Size: 30000, Every: 10000, OutOfOrder: 4000},
		{Kind: Sliding, Size: 12, Every: 4, OutOfOrder: 9},
		{Kind: Session, Gap: 5000, OutOfOrder: 3000},
		{Kind: Session, Gap: 10, OutOfOrder: 25},
	}
}

// stream draws n records over keys whose disorder stays within out_of_order: every
// record's ts is ≥ the newest ts so far − out_of_order, so none is late.
func stream(r *rand.Rand, spec Spec, n, keys int) []Input {
	var out []Input
	maxTS := int64(1_700_000_000_000) + r.Int64N(1000)
	unit := max(spec.Size, spec.Gap) / 5
	for i := 0; i < n; i++ {
		ts := maxTS - r.Int64N(spec.OutOfOrder+1)
		if r.IntN(3) == 0 {
			ts = maxTS + r.Int64N(unit+1)
		}
		if r.IntN(50) == 0 { // a pause that closes sessions
			ts = maxTS + 3*max(spec.Gap, spec.Size)
		}
		maxTS = max(maxTS, ts)
		v := math.Round(r.NormFloat64()*1000) / 8
		out = append(out, Input{Topic: "t", Series: fmt.Sprintf("k%d", r.IntN(keys)), TS: ts, Value: v})
	}
	return out
}

// TestPropertyOnTimeEqualsBatch: with disorder within out_of_order and no idle, the
// ON_TIME panes are exactly the batch computation over the same records.
func TestPropertyOnTimeEqualsBatch(t *testing.T) {
	for si, spec := range specs() {
		for seed := uint64(0); seed < 30; seed++ {
			r := rand.New(rand.NewPCG(seed, uint64(si)))
			recs := stream(r, spec, 1+r.IntN(400), 1+r.IntN(6))
			c := newCore(t, spec)
			for i := range recs {
				if out := c.Step(&recs[i]); out != Aggregated {
					t.Fatalf("spec %d seed %d: record %d outcome %d", si, seed, i, out)
				}
				c.Fire(-1)
			}
			c.Finish()
			want := batch(spec, recs)
			got := map[string]naiveAgg{}
			for i := range c.Panes() {
				p := &c.Panes()[i]
				id := fmt.Sprintf("%s [%d,%d)", p.Key, p.Start, p.End)
				if p.Timing != OnTime || p.Index != 0 {
					t.Fatalf("spec %d seed %d: %s pane %s#%d", si, seed, id, p.Timing, p.Index)
				}
				if _, dup := got[id]; dup {
					t.Fatalf("spec %d seed %d: %s fired twice", si, seed, id)
				}
				got[id] = paneAgg(p)
			}
			if len(got) != len(want) {
				t.Fatalf("spec %d seed %d: %d windows, batch has %d", si, seed, len(got), len(want))
			}
			for id, w := range want {
				if g, ok := got[id]; !ok || !sameAgg(g, w, true) {
					t.Fatalf("spec %d seed %d: %s = %+v, batch %+v", si, seed, id, g, w)
				}
			}
			if c.OpenWindows() != 0 {
				t.Fatalf("windows left: %d", c.OpenWindows())
			}
		}
	}
}

// TestPropertyArrivalOrder: any arrival order in which every record is on time gives the
// same final aggregates. Timestamps are distinct per key, so first and last have no ties.
func TestPropertyArrivalOrder(t *testing.T) {
	for si, spec := range specs() {
		spec.OutOfOrder = 1 << 40 // every order is on time
		for seed := uint64(0); seed < 20; seed++ {
			r := rand.New(rand.NewPCG(seed, 99+uint64(si)))
			recs := stream(r, Spec{Kind: spec.Kind, Size: spec.Size, Gap: spec.Gap, OutOfOrder: 10}, 1+r.IntN(300), 1+r.IntN(4))
			seen := map[string]bool{}
			uniq := recs[:0]
			for _, in := range recs {
				k := fmt.Sprint(in.Series, in.TS)
				if !seen[k] {
					seen[k] = true
					uniq = append(uniq, in)
				}
			}
			var first map[string]naiveAgg
			for perm := 0; perm < 5; perm++ {
				r.Shuffle(len(uniq), func(i, j int) { uniq[i], uniq[j] = uniq[j], uniq[i] })
				c := newCore(t, spec)
				for i := range uniq {
					c.Step(&uniq[i])
				}
				c.Finish()
				got := map[string]naiveAgg{}
				for i := range c.Panes() {
					p := &c.Panes()[i]
					got[fmt.Sprintf("%s [%d,%d)", p.Key, p.Start, p.End)] = paneAgg(p)
				}
				if first == nil {
					first = got
					want := batch(spec, uniq)
					if len(want) != len(got) {
						t.Fatalf("spec %d seed %d: %d windows, batch %d", si, seed, len(got), len(want))
					}
					for id, w := range want {
						if g, ok := got[id]; !ok || !sameAgg(g, w, true) {
							t.Fatalf("spec %d seed %d: %s = %+v, batch %+v", si, seed, id, g, w)
						}
					}
					continue
				}
				if len(got) != len(first) {
					t.Fatalf("spec %d seed %d perm %d: %d windows, first order gave %d", si, seed, perm, len(got), len(first))
				}
				for id, a := range first {
					if !sameAgg(got[id], a, true) {
						t.Fatalf("spec %d seed %d perm %d: %s = %+v, first order %+v", si, seed, perm, id, got[id], a)
					}
				}
			}
		}
	}
}

// TestPropertyLateCorrections: with any disorder and an allowed lateness covering it, the
// last pane of each window (accumulating) is the batch result, and in discarding mode the
// panes of a window add up to it.
func TestPropertyLateCorrections(t *testing.T) {
	for si, spec := range specs() {
		spec.AllowedLateness = 1 << 40
		for seed := uint64(0); seed < 20; seed++ {
			r := rand.New(rand.NewPCG(seed, 7+uint64(si)))
			recs := stream(r, Spec{Kind: spec.Kind, Size: spec.Size, Gap: spec.Gap, OutOfOrder: 20 * spec.OutOfOrder}, 1+r.IntN(300), 1+r.IntN(4))
			for _, disc := range []bool{false, true} {
				spec.Discarding = disc
				c := newCore(t, spec)
				for i := range recs {
					c.Step(&recs[i])
					c.Fire(-1)
				}
				c.Finish()
				want := batch(spec, recs)
				bounds := batchBounds(want)
				last := map[string]naiveAgg{}
				sums := map[string]naiveAgg{}
				for i := range c.Panes() {
					p := &c.Panes()[i]
					id := fmt.Sprintf("%s [%d,%d)", p.Key, p.Start, p.End)
					last[id] = paneAgg(p)
					// In discarding mode each record is in exactly one pane; a session's
					// panes may have narrower bounds from before a merge.
					for _, w := range bounds[p.Key] {
						if w.start <= p.Start && p.End <= w.end {
							s := sums[w.id]
							s.count += p.agg.count
							s.sum += p.agg.sum
							sums[w.id] = s
						}
					}
				}
				// Session windows superseded by a merge keep their last pane; only the
				// batch's windows are compared.
				for id, w := range want {
					if disc {
						if s := sums[id]; s.count != w.count || !near(s.sum, w.sum) {
							t.Fatalf("spec %d seed %d discarding: %s panes add to %+v, batch %+v", si, seed, id, s, w)
						}
						continue
					}
					if g, ok := last[id]; !ok || !sameAgg(g, w, true) {
						t.Fatalf("spec %d seed %d: %s last pane %+v, batch %+v", si, seed, id, g, w)
					}
				}
				if c.Counters().TooLate != 0 {
					t.Fatalf("dropped %d", c.Counters().TooLate)
				}
			}
		}
	}
}

type bound struct {
	id         string
	start, end int64
}

// batchBounds indexes the windows of a batch result by key.
func batchBounds(res map[string]naiveAgg) map[string][]bound {
	out := map[string][]bound{}
	for id := range res {
		var k string
		var s, e int64
		if _, err := fmt.Sscanf(id, "%s [%d,%d)", &k, &s, &e); err == nil {
			out[k] = append(out[k], bound{id, s, e})
		}
	}
	return out
}

package agg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// batch computes the aggregates of rs directly: the definitions, not the running forms.
func batch(rs []Reading) (sum, min, max, mean, first, last, stddev float64) {
	min, max = math.Inf(1), math.Inf(-1)
	fi, li := 0, 0
	for i, r := range rs {
		sum += r.Value
		min, max = math.Min(min, r.Value), math.Max(max, r.Value)
		if r.TS < rs[fi].TS || r.TS == rs[fi].TS && r.Arrival < rs[fi].Arrival {
			fi = i
		}
		if r.TS > rs[li].TS || r.TS == rs[li].TS && r.Arrival > rs[li].Arrival {
			li = i
		}
	}
	mean = sum / float64(len(rs))
	var ss float64
	for _, r := range rs {
		ss += (r.Value - mean) * (r.Value - mean)
	}
	return sum, min, max, mean, rs[fi].Value, rs[li].Value, math.Sqrt(ss / float64(len(rs)))
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

// TestAccAnyOrder: adding readings in any order, or merging partial accumulators in any
// grouping, gives the batch figures, with first and last by event time, ties by arrival.
func TestAccAnyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := 1 + r.IntN(30)
		rs := make([]Reading, n)
		for i := range rs {
			rs[i] = Reading{TS: int64(r.IntN(5)), Arrival: int64(i), Value: float64(r.IntN(400)-100) / 4}
		}
		sum, mn, mx, mean, first, last, sd := batch(rs)
		perm := r.Perm(n)
		var added, merged Acc
		var part Acc
		for k, i := range perm {
			added = StatsFn{}.AddInput(added, rs[i])
			part.Add(rs[i])
			if r.IntN(3) == 0 || k == n-1 {
				merged = StatsFn{}.MergeAccumulators(part, merged) // later parts merged in front
				part = Acc{}
			}
		}
		for name, a := range map[string]Acc{"added": added, "merged": merged} {
			if a.Count != int64(n) || !near(a.Sum, sum) || a.Min != mn || a.Max != mx ||
				!near(a.MeanValue(), mean) || a.First != first || a.Last != last || !near(a.Stddev(), sd) {
				t.Fatalf("%s: %+v (stddev %v), want sum %v min %v max %v mean %v first %v last %v stddev %v",
					name, a, a.Stddev(), sum, mn, mx, mean, first, last, sd)
			}
		}
	}
}

func TestMergeEmpty(t *testing.T) {
	var a Acc
	a.Merge(Acc{})
	if a.Count != 0 {
		t.Fatalf("%+v", a)
	}
	b := StatsFn{}.AddInput(Acc{}, Reading{TS: 1, Value: 2})
	a.Merge(b)
	b.Merge(Acc{})
	if a != b || a.Stddev() != 0 {
		t.Fatalf("%+v %+v", a, b)
	}
}

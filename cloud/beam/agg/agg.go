// Package agg is the Beam combiner of edgegate's pane aggregates (SPEC §4): count, sum, min,
// max, mean, first, last (by event time, ties by arrival) and population stddev.
package agg

import (
	"math"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/typex"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Reading is one value entering a window: its event time (Unix ms) and its arrival rank,
// which breaks ties between equal timestamps for first and last.
type Reading struct {
	TS      int64
	Arrival int64
	Value   float64
}

// Acc is the running aggregate of a window (or of a pane, when discarding). Mean and M2 are
// Welford's running mean and sum of squared deviations.
type Acc struct {
	Count             int64
	Sum               float64
	Min, Max          float64
	Mean, M2          float64
	First, Last       float64
	FirstTS, LastTS   int64
	FirstArr, LastArr int64
}

// Add applies one reading.
func (a *Acc) Add(r Reading) {
	if a.Count == 0 {
		*a = Acc{Count: 1, Sum: r.Value, Min: r.Value, Max: r.Value, Mean: r.Value,
			First: r.Value, Last: r.Value, FirstTS: r.TS, LastTS: r.TS,
			FirstArr: r.Arrival, LastArr: r.Arrival}
		return
	}
	a.Count++
	a.Sum += r.Value
	a.Min = math.Min(a.Min, r.Value)
	a.Max = math.Max(a.Max, r.Value)
	d := r.Value - a.Mean
	a.Mean += d / float64(a.Count)
	a.M2 += d * (r.Value - a.Mean)
	if r.TS < a.FirstTS || r.TS == a.FirstTS && r.Arrival < a.FirstArr {
		a.First, a.FirstTS, a.FirstArr = r.Value, r.TS, r.Arrival
	}
	if r.TS > a.LastTS || r.TS == a.LastTS && r.Arrival > a.LastArr {
		a.Last, a.LastTS, a.LastArr = r.Value, r.TS, r.Arrival
	}
}

// Merge folds b into a, with Chan et al.'s pairwise update of the variance. Unlike Add,
// it does not assume b arrived after a: Beam merges accumulators in any order.
func (a *Acc) Merge(b Acc) {
	if b.Count == 0 {
		return
	}
	if a.Count == 0 {
		*a = b
		return
	}
	na, nb := float64(a.Count), float64(b.Count)
	n := na + nb
	d := b.Mean - a.Mean
	a.M2 += b.M2 + d*d*na*nb/n
	a.Mean += d * nb / n
	a.Count += b.Count
	a.Sum += b.Sum
	a.Min = math.Min(a.Min, b.Min)
	a.Max = math.Max(a.Max, b.Max)
	if b.FirstTS < a.FirstTS || b.FirstTS == a.FirstTS && b.FirstArr < a.FirstArr {
		a.First, a.FirstTS, a.FirstArr = b.First, b.FirstTS, b.FirstArr
	}
	if b.LastTS > a.LastTS || b.LastTS == a.LastTS && b.LastArr > a.LastArr {
		a.Last, a.LastTS, a.LastArr = b.Last, b.LastTS, b.LastArr
	}
}

// MeanValue is sum/count, the figure a batch computation gets (and edgegate's mean).
func (a *Acc) MeanValue() float64 { return a.Sum / float64(a.Count) }

// Stddev is the population standard deviation.
func (a *Acc) Stddev() float64 { return math.Sqrt(math.Max(a.M2, 0) / float64(a.Count)) }

// Pane is the SPEC §3.2 pane of a with these bounds (Unix ms) and firing: count, and the
// aggregates named in aggs. An empty aggregate carries count 0 and nothing else.
func (a *Acc) Pane(pipeline, key string, start, end, index int64, timing string, aggs []string) wire.Pane {
	p := wire.Pane{
		ID: wire.PaneID(pipeline, key, start, end, index), Pipeline: pipeline, Key: key,
		Start: wire.FormatTime(start), End: wire.FormatTime(end), Count: a.Count,
		Pane: wire.PaneInfo{Index: index, Timing: timing},
	}
	if a.Count == 0 {
		return p
	}
	val := func(v float64) *float64 { return &v }
	for _, name := range aggs {
		switch name {
		case "sum":
			p.Sum = val(a.Sum)
		case "min":
			p.Min = val(a.Min)
		case "max":
			p.Max = val(a.Max)
		case "mean":
			p.Mean = val(a.MeanValue())
		case "first":
			p.First = val(a.First)
		case "last":
			p.Last = val(a.Last)
		case "stddev":
			p.Stddev = val(a.Stddev())
		}
	}
	return p
}

// Timing names a Beam pane timing as edgegate's panes do.
func Timing(t typex.PaneTiming) string {
	switch t {
	case typex.PaneEarly:
		return "EARLY"
	case typex.PaneOnTime:
		return "ON_TIME"
	case typex.PaneLate:
		return "LATE"
	}
	return "UNKNOWN"
}

// StatsFn is the Beam CombineFn over Readings: its output is the accumulator, which the
// pane formatter turns into the aggregates a pipeline asks for.
type StatsFn struct{}

// CreateAccumulator returns an empty aggregate.
func (StatsFn) CreateAccumulator() Acc { return Acc{} }

// AddInput adds one reading.
func (StatsFn) AddInput(a Acc, r Reading) Acc {
	a.Add(r)
	return a
}

// MergeAccumulators merges two partial aggregates.
func (StatsFn) MergeAccumulators(a, b Acc) Acc {
	a.Merge(b)
	return a
}

// ExtractOutput returns the aggregate itself.
func (StatsFn) ExtractOutput(a Acc) Acc { return a }

func init() {
	register.Combiner3[Acc, Reading, Acc](&StatsFn{})
}

package pipeline

import "math"

// aggState is the running aggregate of one window (or of one pane, in discarding mode).
// Every field is kept whatever the pipeline asks for: it costs a few nanoseconds per
// record, and a config that adds an aggregate can continue saved windows.
type aggState struct {
	count    int64
	sum      float64
	min, max float64
	// mean and m2 are Welford's running mean and sum of squared deviations (stddev).
	mean, m2    float64
	first, last float64
	// first and last are by event time; among equal timestamps, by arrival.
	firstTS, lastTS   int64
	firstArr, lastArr uint64
}

// add applies one record. Arrivals increase, so among equal timestamps the current first
// stays first and the new record becomes last.
func (a *aggState) add(v float64, ts int64, arr uint64) {
	if a.count == 0 {
		*a = aggState{count: 1, sum: v, min: v, max: v, mean: v, first: v, last: v,
			firstTS: ts, lastTS: ts, firstArr: arr, lastArr: arr}
		return
	}
	a.count++
	a.sum += v
	if v < a.min {
		a.min = v
	}
	if v > a.max {
		a.max = v
	}
	d := v - a.mean
	a.mean += d / float64(a.count)
	a.m2 += d * (v - a.mean)
	if ts < a.firstTS {
		a.first, a.firstTS, a.firstArr = v, ts, arr
	}
	if ts >= a.lastTS {
		a.last, a.lastTS, a.lastArr = v, ts, arr
	}
}

// merge folds b into a (session windows merging), with Chan et al.'s pairwise update of
// the variance.
func (a *aggState) merge(b *aggState) {
	if b.count == 0 {
		return
	}
	if a.count == 0 {
		*a = *b
		return
	}
	na, nb := float64(a.count), float64(b.count)
	n := na + nb
	d := b.mean - a.mean
	a.m2 += b.m2 + d*d*na*nb/n
	a.mean += d * nb / n
	a.count += b.count
	a.sum += b.sum
	a.min = math.Min(a.min, b.min)
	a.max = math.Max(a.max, b.max)
	if b.firstTS < a.firstTS || b.firstTS == a.firstTS && b.firstArr < a.firstArr {
		a.first, a.firstTS, a.firstArr = b.first, b.firstTS, b.firstArr
	}
	if b.lastTS > a.lastTS || b.lastTS == a.lastTS && b.lastArr > a.lastArr {
		a.last, a.lastTS, a.lastArr = b.last, b.lastTS, b.lastArr
	}
}

// Mean is sum/count: the same figure a batch computation gets.
func (a *aggState) meanValue() float64 { return a.sum / float64(a.count) }

// stddev is the population standard deviation.
func (a *aggState) stddev() float64 { return math.Sqrt(math.Max(a.m2, 0) / float64(a.count)) }

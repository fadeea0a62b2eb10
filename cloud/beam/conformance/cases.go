package conformance

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/edgegate/edgegate/cloud/beam/winspec"
)

// base is the event time cases start from: a minute boundary, so windows align as in
// SPEC §4's tables.
var base = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixMilli()

// WorkedExample is SPEC §4's worked example: one series, tumbling 10s, out_of_order 2s,
// allowed_lateness 5s, in both accumulation modes.
func WorkedExample(discarding bool) Case {
	spec := winspec.Default()
	spec.Window = winspec.Window{Type: winspec.Tumbling, Size: 10 * time.Second}
	spec.OutOfOrder = 2 * time.Second
	spec.AllowedLateness = 5 * time.Second
	spec.Aggregates = winspec.Aggregates
	spec.Discarding = discarding
	var rs []Reading
	for i, ts := range []float64{1, 4, 9.999, 10, 8, 12.5, 7, 18, 3, 21} {
		rs = append(rs, Reading{Series: "t1/temperature", TS: base + int64(ts*1000), Value: float64(i + 1)})
	}
	name := "worked-accumulating"
	if discarding {
		name = "worked-discarding"
	}
	return Case{Name: name, Spec: spec, Records: rs}
}

// grid is the step of random timestamps: coarse enough that equal timestamps (first and
// last break ties by arrival) and readings exactly one gap apart (sessions that touch)
// happen often.
const grid = 250

// RandomCase draws a case of a window kind from seed: out_of_order and
// allowed_lateness from small sets (0 included), either accumulation mode, one to three
// series, and 15 to 40 readings in arrival order, most in order or out of order by up to
// twice out_of_order, some late within or past the allowed lateness. For sessions, late
// readings land near earlier ones, so they extend and merge sessions that already fired.
// Values are multiples of 1/4, so sums are exact in any order.
func RandomCase(seed uint64, kind string) Case {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	pick := func(ds ...time.Duration) time.Duration { return ds[r.IntN(len(ds))] }
	spec := winspec.Default()
	spec.Aggregates = winspec.Aggregates
	switch kind {
	case winspec.Tumbling:
		spec.Window = winspec.Window{Type: winspec.Tumbling, Size: pick(2*time.Second, 5*time.Second, 10*time.Second)}
	case winspec.Sliding:
		every := pick(time.Second, 2*time.Second, 5*time.Second)
		spec.Window = winspec.Window{Type: winspec.Sliding, Every: every, Size: every * time.Duration(2+r.IntN(3))}
	default:
		spec.Window = winspec.Window{Type: winspec.Session, Gap: pick(time.Second, 2*time.Second, 3*time.Second)}
	}
	spec.OutOfOrder = pick(0, 500*time.Millisecond, time.Second, 2*time.Second, 3*time.Second)
	spec.AllowedLateness = pick(0, time.Second, 2*time.Second, 5*time.Second, 10*time.Second)
	spec.Discarding = r.IntN(2) == 1

	ooo := spec.OutOfOrder.Milliseconds()
	late := spec.AllowedLateness.Milliseconds()
	span := max(spec.Window.Size, spec.Window.Gap).Milliseconds()
	gap := spec.Window.Gap.Milliseconds()
	uniform := func(n int64) int64 {
		if n <= 0 {
			return 0
		}
		return r.Int64N(n + 1)
	}
	series := 1 + r.IntN(3)
	n := 15 + r.IntN(26)
	clock := base
	var rs []Reading
	for range n {
		step := int64(r.IntN(6)) * grid
		if gap > 0 {
			step = uniform(2 * gap) // sessions: sometimes a gap, sometimes not
		}
		clock += step
		ts := clock
		switch x := r.Float64(); {
		case x < 0.45:
		case x < 0.75:
			ts -= uniform(2 * ooo)
		case gap > 0 && len(rs) > 0 && x < 0.95:
			ts = rs[r.IntN(len(rs))].TS + uniform(3*gap/2)
		case x < 0.92:
			ts -= ooo + uniform(late+span)
		default:
			ts -= ooo + late + uniform(2*span)
		}
		ts = ts / grid * grid
		rs = append(rs, Reading{
			Series: fmt.Sprintf("d%d/temperature", r.IntN(series)),
			TS:     ts,
			Value:  float64(r.IntN(200)-40) / 4,
		})
	}
	return Case{Name: fmt.Sprintf("%s-%d", kind, seed), Spec: spec, Records: rs}
}

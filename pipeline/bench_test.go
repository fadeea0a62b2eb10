package pipeline

import (
	"fmt"
	"runtime"
	"testing"
)

// benchKeys series report once a second each; events come in key order within a second,
// with a little disorder (up to 2 s late, within out_of_order).
func benchInputs(keys int) (names []string, jitter []int64) {
	names = make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("greenhouse/t%05d/temperature", i)
	}
	jitter = make([]int64, 1<<16)
	x := uint64(88172645463325252)
	for i := range jitter {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		jitter[i] = -int64(x % 2000)
	}
	return names, jitter
}

func benchSpec() Spec {
	return Spec{Name: "bench", Output: "agg/bench", Input: "#", Kind: Tumbling, Size: 60000,
		OutOfOrder: 5000, Aggs: AggMean, MaxOpenWindows: 1 << 20}
}

// BenchmarkCoreTumbling1mMean10kKeys is the core's throughput (SPEC §4 target: ≥ 2M
// events/s on one core): tumbling 1 m windows, mean, 10k series at 1 Hz each. Panes are
// taken and dropped as the runner would.
func BenchmarkCoreTumbling1mMean10kKeys(b *testing.B) {
	const keys = 10000
	names, jitter := benchInputs(keys)
	c, err := NewCore(benchSpec())
	if err != nil {
		b.Fatal(err)
	}
	t0 := base
	in := Input{Topic: "greenhouse/t/temperature"}
	feed := func(i int) {
		in.Series = names[i%keys]
		in.TS = t0 + int64(i/keys)*1000 + jitter[i&(len(jitter)-1)]
		in.Value = float64(i & 1023)
		c.Step(&in)
		if c.Pending() {
			c.Fire(-1)
		}
		if len(c.panes) > 4096 {
			c.ClearPanes()
		}
	}
	// Warm up: two full windows, so every key has its state and the queues their size.
	warm := 3 * 60 * keys
	for i := 0; i < warm; i++ {
		feed(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := warm; i < warm+b.N; i++ {
		feed(i)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if n := c.Counters().TooLate; n != 0 {
		b.Fatalf("%d records late in the benchmark stream", n)
	}
}

// BenchmarkBaselineMapSum is the floor the core is compared with in the same run: the
// same stream, with per event only a map lookup by series and a running count and sum.
func BenchmarkBaselineMapSum(b *testing.B) {
	const keys = 10000
	names, jitter := benchInputs(keys)
	type acc struct {
		n   int64
		sum float64
		ts  int64
	}
	m := make(map[string]*acc, keys)
	for _, n := range names {
		m[n] = &acc{}
	}
	in := Input{Topic: "greenhouse/t/temperature"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in.Series = names[i%keys]
		in.TS = base + int64(i/keys)*1000 + jitter[i&(len(jitter)-1)]
		in.Value = float64(i & 1023)
		a := m[in.Series]
		a.n++
		a.sum += in.Value
		a.ts = max(a.ts, in.TS)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStateBytesPerWindow measures the heap held per open window: 100k keys with one
// window each.
func BenchmarkStateBytesPerWindow(b *testing.B) {
	const keys = 100000
	names, _ := benchInputs(keys)
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		c, _ := NewCore(benchSpec())
		for k := 0; k < keys; k++ {
			c.Step(&Input{Series: names[k], TS: base + 1, Value: 1})
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		if c.OpenWindows() != keys {
			b.Fatalf("open %d", c.OpenWindows())
		}
		// The key strings are the caller's; what the core adds is its own copy of each.
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/keys, "B/window")
		runtime.KeepAlive(c)
	}
}

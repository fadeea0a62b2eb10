package pipeline

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

// BenchmarkRunnerVsCore measures, on the same stream (tumbling 1 m mean, 10k series at
// 1 Hz each, 600k records: a minute of event time, so one round of 10k panes), in the
// same run:
//   - core_ev/s: the core alone over decoded records (the baseline);
//   - parse+core_ev/s: the same from the stored JSON (what replay does);
//   - runner_ev/s: the durable runner reading the raw log from a Badger store on disk and
//     committing state, panes and cursor per checkpoint (DESIGN invariant 3);
//   - runner/core and runner/parse: its ratio to the first two (issue 20's goal is
//     runner/parse ≥ 0.3);
//   - runner_cpu_µs/ev: the process's CPU time (user and system, all goroutines: the
//     runner's, its checkpoint writes, the store's writer and compactions) while the runner
//     runs, per record: what the runner costs besides how fast it goes on a shared machine;
//   - append_ev/s: appending the same records to the raw log, 1000 per call (the store's
//     own write rate, for scale: the runner writes about one window state per record).
func BenchmarkRunnerVsCore(b *testing.B) {
	const keys, n = 10000, 600000
	names, jitter := benchInputs(keys)
	ins := make([]Input, n)
	for i := range ins {
		ins[i] = Input{Topic: "greenhouse/t/temperature", Series: names[i%keys],
			TS: base + int64(i/keys)*1000 + jitter[i&(len(jitter)-1)], Value: float64(i & 1023)}
	}
	recs := make([][]byte, n)
	for i, in := range ins {
		r := record.Record{ID: "x", Topic: in.Topic, Series: in.Series, TS: time.UnixMilli(in.TS).UTC(), Value: in.Value}
		recs[i] = r.AppendJSON(nil)
	}
	spec := benchSpec()
	var coreD, parseD, runD, appendD, runCPU time.Duration
	for it := 0; it < b.N; it++ {
		// The core alone.
		c, _ := NewCore(spec)
		t0 := time.Now()
		for i := range ins {
			c.Step(&ins[i])
			c.Fire(-1)
			c.ClearPanes()
		}
		coreD += time.Since(t0)
		panes := c.Counters().Panes[OnTime]

		// Parse and core.
		c, _ = NewCore(spec)
		var in Input
		t0 = time.Now()
		for _, v := range recs {
			if _, err := record.ParseReading(v, &in); err != nil {
				b.Fatal(err)
			}
			c.Step(&in)
			c.Fire(-1)
			c.ClearPanes()
		}
		parseD += time.Since(t0)

		// The durable runner over the raw log.
		b.StopTimer()
		st, err := buffer.Open(buffer.Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		for i := 0; i < n; i += 1000 {
			es := make([]buffer.Entry, 0, 1000)
			for _, v := range recs[i:min(n, i+1000)] {
				es = append(es, buffer.Entry{Value: v})
			}
			if _, err := st.Append(context.Background(), "raw", es); err != nil {
				b.Fatal(err)
			}
		}
		appendD += time.Since(t0)
		r, err := NewRunner(spec, RunnerOptions{Store: st, Input: "raw", Clock: clock.NewFake(time.Unix(1e9, 0))})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		t0 = time.Now()
		cpu0 := processCPU(b)
		go func() { done <- r.Run(ctx) }()
		for r.Stats().Position.Load() <= n {
			time.Sleep(time.Millisecond)
		}
		runD += time.Since(t0)
		runCPU += processCPU(b) - cpu0
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if got := r.Stats().PanesOnTime.Load(); got != panes || panes == 0 {
			b.Fatalf("runner fired %d panes, core %d", got, panes)
		}
		b.ReportMetric(float64(r.Stats().Commits.Load()), "commits")
		st.Close()
		b.StartTimer()
	}
	rate := func(d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(coreD), "core_ev/s")
	b.ReportMetric(rate(parseD), "parse+core_ev/s")
	b.ReportMetric(rate(runD), "runner_ev/s")
	b.ReportMetric(coreD.Seconds()/runD.Seconds(), "runner/core")
	b.ReportMetric(parseD.Seconds()/runD.Seconds(), "runner/parse")
	b.ReportMetric(rate(appendD), "append_ev/s")
	b.ReportMetric(runCPU.Seconds()*1e6/float64(n*b.N), "runner_cpu_µs/ev")
}

// processCPU is the CPU time the process has used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

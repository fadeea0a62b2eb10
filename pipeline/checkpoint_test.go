package pipeline

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

// waitRead waits until the runner has read (not necessarily committed) everything below
// pos.
func waitRead(t *testing.T, r *Runner, pos uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.read.Load() < pos {
		if time.Now().After(deadline) {
			t.Fatalf("runner read up to %d, want %d", r.read.Load(), pos)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// panesByID checks that no pane id is in the aggregate log twice and returns the log.
func panesByID(t *testing.T, got []string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range got {
		id := p[strings.Index(p, `"id":"`)+6:][:34]
		if seen[id] {
			t.Fatalf("pane %s appended twice", id)
		}
		seen[id] = true
	}
	return got
}

// TestRunnerCrashBetweenCheckpoints: records read since the last checkpoint are lost by a
// crash (the runner abandoned without its final checkpoint) and read again from the
// cursor: the aggregate log equals that of a run without the crash, pane ids included. The
// input turned idle between two batches, and the idle advance of the watermark made a
// record of the second batch too late: the advance is processing time, not in the input
// log, so the step where it happened ended with a checkpoint; replayed without it, the
// record would be aggregated and fire a pane the run without the crash never had.
func TestRunnerCrashBetweenCheckpoints(t *testing.T) {
	spec := runnerSpec()
	spec.Aggs, spec.AllowedLateness, spec.Idle = AggSum, 0, 5*time.Second
	batch1 := recordsJSON([]Input{
		{Topic: "t", Series: "a", TS: sec(1), Value: 1},
		{Topic: "t", Series: "a", TS: sec(2), Value: 2}, // W = 2 s − 3 s = −1 s
	})
	// After the idle advance (the clock at 8 s: W = 5 s): b's window [−10 s, 0) has ended,
	// so its record is too late; with W = −1 s it would be aggregated.
	batch2 := recordsJSON([]Input{
		{Topic: "t", Series: "b", TS: sec(-5), Value: 10},
		{Topic: "t", Series: "a", TS: sec(3), Value: 3},
	})
	batch3 := recordsJSON([]Input{
		{Topic: "t", Series: "a", TS: sec(30), Value: 4}, // W = 27 s: [0, 10 s) fires
		{Topic: "t", Series: "c", TS: sec(31), Value: 5},
	})
	run := func(crash bool) []string {
		s := openStore(t, t.TempDir())
		clk := clock.NewFake(time.UnixMilli(sec(3)))
		o := RunnerOptions{Store: s, Input: "raw", Clock: clk, CheckpointInterval: time.Hour, DeferCaughtUp: true}
		r, err := NewRunner(spec, o)
		if err != nil {
			t.Fatal(err)
		}
		r.skipFinalCommit = crash
		h := runRunner(t, r)
		appendRaw(t, s, batch1)
		waitRead(t, r, 3)
		if r.Stats().Position.Load() != 0 {
			t.Fatalf("batch 1 committed at once: position %d", r.Stats().Position.Load())
		}
		// The runner sleeps until the input turns idle: let processing time pass.
		for clk.Timers() == 0 {
			time.Sleep(time.Millisecond)
		}
		clk.Advance(5 * time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for r.Stats().Watermark.Load() != sec(5) {
			if time.Now().After(deadline) {
				t.Fatalf("the idle advance was not committed: W %s, position %d", fmtWM(r.Stats().Watermark.Load()), r.Stats().Position.Load())
			}
			time.Sleep(2 * time.Millisecond)
		}
		appendRaw(t, s, batch2)
		waitRead(t, r, 5)
		if crash {
			if p := r.Stats().Position.Load(); p != 3 {
				t.Fatalf("position %d at the crash, want 3 (batch 2 read, not committed)", p)
			}
			h.stop(t) // no final checkpoint: a crash
			if p, _ := s.Cursor("raw", ConsumerName(spec.Name)); p != 3 {
				t.Fatalf("cursor %d after the crash, want 3", p)
			}
			r, err = NewRunner(spec, o)
			if err != nil {
				t.Fatal(err)
			}
			h = runRunner(t, r)
		}
		appendRaw(t, s, batch3)
		waitAll(t, h, 6)
		if n := r.Stats().TooLate.Load(); n != 1 {
			t.Fatalf("%d records too late, want 1 (b's)", n)
		}
		return panesByID(t, aggLog(t, s))
	}
	want := run(false)
	got := run(true)
	if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after the crash:\n%s\nwithout:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRunnerCheckpointAcrossTransactions: checkpoints whose window state is larger than
// one store transaction (3000 series with long names: about 850 KB per round of updates,
// then the collection of all their windows) are written ahead of their flip, each window
// into the slot its committed version is not in. Crashes after those transactions, before
// the flip (in two checkpoints, so both slots hold a version that never flipped once), and
// after a flip that left dropped windows to delete, restart from the last checkpoint: the
// aggregate log is exactly the replay's, no pane twice, and the store holds exactly the
// open windows.
func TestRunnerCheckpointAcrossTransactions(t *testing.T) {
	spec := runnerSpec()
	spec.AllowedLateness = 5000
	const series = 3000
	name := func(i int) string {
		return fmt.Sprintf("site-%04d/building-with-a-rather-long-name/floor-03/room-%04d/temperature", i, i)
	}
	var ins []Input
	for round := range 3 { // rounds at 1, 2 and 3 s: the same windows, updated
		for i := range series {
			ins = append(ins, Input{Topic: "t", Series: name(i), TS: sec(1 + float64(round)), Value: longValue(i + round)})
		}
	}
	// Then x at 14 s: W = 11 s fires the 3000 windows [0, 10 s); y at 20 s: W = 17 s is
	// past their allowed lateness: 3000 windows dropped at once, more than a flip can delete.
	ins = append(ins, Input{Topic: "t", Series: "x", TS: sec(14), Value: 1}, Input{Topic: "t", Series: "y", TS: sec(20), Value: 2})
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	o := RunnerOptions{Store: s, Input: "raw", Clock: clock.Real{}, CheckpointInterval: time.Hour, DeferCaughtUp: true,
		MaxStepRecords: 1000, CheckpointRecords: series}
	r, err := NewRunner(spec, o)
	if err != nil {
		t.Fatal(err)
	}
	r.MinBackoff, r.MaxBackoff = time.Millisecond, time.Millisecond
	crashes := map[string]int{}
	writes := map[string]int{}
	r.afterCheckpointWrite = func(stage string) error {
		writes[stage]++
		if writes[stage]%2 == 1 && crashes[stage] < 2 {
			crashes[stage]++
			return errors.New("crash")
		}
		return nil
	}
	h := runRunner(t, r)
	appendRaw(t, s, recs)
	waitAll(t, h, len(recs))
	h.stop(t)
	if crashes["state"] < 2 || crashes["flip"] == 0 {
		t.Fatalf("crashes %v: the checkpoints did not span transactions", crashes)
	}
	got, want := panesByID(t, aggLog(t, s)), replayPanes(t, spec, recs)
	if len(want) != series || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
	// What is stored loads as the runner left it: the windows of x and y, nothing else.
	r2, err := NewRunner(spec, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.load(); err != nil {
		t.Fatal(err)
	}
	bases := map[string]bool{}
	s.ScanState(windowPrefix(spec.Name), func(k string, _ []byte) error {
		bases[strings.TrimSuffix(k, slotSuffix)] = true
		return nil
	})
	if r2.core.OpenWindows() != 2 || len(bases) != 2 {
		t.Fatalf("%d windows loaded, %d windows stored, want 2", r2.core.OpenWindows(), len(bases))
	}
}

// TestRunnerCheckpointInterval: readings held in memory (DeferCaughtUp) are committed one
// CheckpointInterval of processing time after the last checkpoint, without new input.
func TestRunnerCheckpointInterval(t *testing.T) {
	s := openStore(t, t.TempDir())
	clk := clock.NewFake(time.Unix(1e9, 0))
	h := startRunner(t, runnerSpec(), RunnerOptions{Store: s, Clock: clk, CheckpointInterval: time.Second, DeferCaughtUp: true})
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(1), Value: 1}, {Topic: "t", Series: "k", TS: sec(2), Value: 2}}))
	waitRead(t, h.r, 3)
	if p := h.r.Stats().Position.Load(); p != 0 {
		t.Fatalf("position %d before the interval, want 0", p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for clk.Timers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the runner holds uncommitted readings and sleeps without a deadline")
		}
		time.Sleep(time.Millisecond)
	}
	clk.Advance(time.Second)
	waitPosition(t, h.r, 3)
	if c, _ := s.Cursor("raw", ConsumerName("r1")); c != 3 {
		t.Fatalf("cursor %d, want 3", c)
	}
}

// TestRunnerCrashRestartSessions crashes the runner (no final checkpoint) again and again
// while input arrives, in session windows (merges move windows to other keys) with small
// transactions (a checkpoint's windows spread over many of them) and failures injected
// between them and after flips: the aggregate log is exactly the replay's, no pane lost or
// appended twice.
func TestRunnerCrashRestartSessions(t *testing.T) {
	spec := runnerSpec()
	spec.Kind, spec.Gap, spec.Size = Session, 3000, 0
	r := rand.New(rand.NewPCG(9, 9))
	ins := stream(r, Spec{Kind: Session, Gap: 3000, OutOfOrder: 10000}, 3000, 30)
	recs := recordsJSON(ins)
	dir := t.TempDir()
	s := openStore(t, dir)
	fed, failures := 0, 0
	for round := 0; fed < len(recs); round++ {
		n := min(len(recs)-fed, 1+r.IntN(400))
		appendRaw(t, s, recs[fed:fed+n])
		fed += n
		// The real clock: Run waits its backoff on it after a failure (the spec has no idle
		// and no early panes).
		o := RunnerOptions{Store: s, Input: "raw", Clock: clock.Real{}, DeferCaughtUp: r.IntN(2) == 0,
			MaxStepRecords: 1 + r.IntN(50), MaxStepOps: 2 + r.IntN(40), CheckpointRecords: 1 + r.IntN(200)}
		run, err := NewRunner(spec, o)
		if err != nil {
			t.Fatal(err)
		}
		run.skipFinalCommit = true
		run.MinBackoff, run.MaxBackoff = time.Millisecond, time.Millisecond
		fail := rand.New(rand.NewPCG(uint64(round), 3)) // the runner's goroutine's own
		run.afterCheckpointWrite = func(string) error {
			if fail.IntN(8) == 0 {
				failures++
				return errors.New("crash")
			}
			return nil
		}
		h := runRunner(t, run)
		// Crash somewhere in the middle of the backlog, or after it.
		waitRead(t, run, uint64(fed+1-r.IntN(n)))
		h.stop(t)
		if round%3 == 2 { // and reopen the store now and then
			s.Close()
			s = openStore(t, dir)
		}
	}
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	waitPosition(t, h.r, uint64(len(recs)+1))
	got, want := panesByID(t, aggLog(t, s)), replayPanes(t, spec, recs)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after crashes: %d panes, replay %d", len(got), len(want))
	}
	if failures == 0 {
		t.Fatal("no failure injected: the test tests less than it says")
	}
}

// TestRunnerCheckpointsQueuedBehindAFailure: while the runner reads a backlog, several
// checkpoints are in flight; the write of one fails before its flip, with more queued
// behind it. Those are not written (the store keeps a prefix of the checkpoints), the
// runner reloads from the last one written, and the aggregate log is exactly the replay's.
func TestRunnerCheckpointsQueuedBehindAFailure(t *testing.T) {
	spec := runnerSpec()
	const series = 200
	var ins []Input
	for round := range 11 { // every 3 s: windows [0, 10 s) and [10 s, 20 s) fire
		for i := range series {
			ins = append(ins, Input{Topic: "t", Series: fmt.Sprintf("s%03d", i), TS: sec(float64(3 * round)), Value: longValue(i + round)})
		}
	}
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recs) // a backlog: the runner reads on while its checkpoints are written
	const every = 50
	o := RunnerOptions{Store: s, Input: "raw", Clock: clock.Real{}, CheckpointInterval: time.Hour,
		MaxStepRecords: 10, MaxStepOps: 8, CheckpointRecords: every}
	r, err := NewRunner(spec, o)
	if err != nil {
		t.Fatal(err)
	}
	r.MinBackoff, r.MaxBackoff = time.Millisecond, time.Millisecond
	var failed, ahead bool // the flights' goroutines run one after another
	r.afterCheckpointWrite = func(stage string) error {
		if stage != "state" || failed {
			return nil
		}
		// The first checkpoint, at about every records: hold it until the runner has read
		// on by a few more, then fail it.
		failed = true
		deadline := time.Now().Add(20 * time.Second)
		for r.read.Load() < 4*every && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		ahead = r.read.Load() >= 4*every
		return errors.New("crash")
	}
	h := runRunner(t, r)
	waitAll(t, h, len(recs))
	h.stop(t)
	if !ahead {
		t.Fatal("the runner did not read on while a checkpoint was written: the test tests less than it says")
	}
	if r.Stats().Errors.Load() == 0 {
		t.Fatal("no checkpoint failed")
	}
	got, want := panesByID(t, aggLog(t, s)), replayPanes(t, spec, recs)
	if len(want) != 2*series || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
}

package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

// slidingSpec is a sliding pipeline whose every record updates windows windows, with every
// aggregate (the largest panes) and a lateness that keeps late windows open.
func slidingSpec(windows int64) Spec {
	s := runnerSpec()
	s.Kind, s.Size, s.Every = Sliding, windows*1000, 1000
	s.OutOfOrder, s.AllowedLateness = 3000, 10*windows*1000
	return s
}

// longValue is a reading whose aggregates print with many digits (the widest panes).
func longValue(i int) float64 { return 21.123456789012345 + float64(i)*1.0000001e-7 }

// TestRunnerLateRecordOverAThousandWindows: in a sliding pipeline with size/every = 1000,
// one late record updates 1000 windows and fires 1000 LATE panes: about 2000 writes and
// 800 KB, more than one store transaction takes. Before, that step failed with ErrTooLarge
// and was retried forever: the cursor stopped, and raw trimming with it. Now the record is
// applied alone, its first panes go out in transactions of their own, and the last one
// commits the rest with the window state, the watermark and the cursor; the aggregate log
// is exactly the replay's.
func TestRunnerLateRecordOverAThousandWindows(t *testing.T) {
	spec := slidingSpec(1000)
	series := "site-0001/building-a/floor-3/room-17/temperature" // 48 bytes, a usual series
	var ins []Input
	for i := range 3 {
		ins = append(ins, Input{Topic: "t", Series: series, TS: sec(3000 + float64(i)), Value: longValue(i)})
	}
	ins = append(ins, Input{Topic: "t", Series: series, TS: sec(1500), Value: longValue(9)}) // late for all its 1000 windows
	for i := range 3 {
		ins = append(ins, Input{Topic: "t", Series: series, TS: sec(3003 + float64(i)), Value: longValue(10 + i)})
	}
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recs)
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	waitAll(t, h, len(recs))
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
	if late := strings.Count(strings.Join(got, "\n"), `"timing":"LATE"`); late != 1000 {
		t.Errorf("%d LATE panes, want 1000", late)
	}
	if n := h.r.Stats().Errors.Load(); n != 0 {
		t.Errorf("%d failed steps", n)
	}
	if c, _ := s.Cursor("raw", ConsumerName(spec.Name)); c != uint64(len(recs)+1) {
		t.Errorf("raw cursor %d, want %d: trimming would stop", c, len(recs)+1)
	}
}

// waitAll waits until the runner committed all n records (generous deadline: a loaded
// machine), and fails with its failed steps if it does not.
func waitAll(t *testing.T, h *runHandle, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for h.r.Stats().Position.Load() < uint64(n+1) {
		if time.Now().After(deadline) {
			t.Fatalf("runner stuck at position %d of %d, %d failed steps", h.r.Stats().Position.Load(), n+1, h.r.Stats().Errors.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunnerCommitsBeforeARecordThatDoesNotFit: a runner allowed steps as large as the
// store's transactions (MaxStepBytes) reads a stream of sliding records, some of them late:
// before a record whose worst case no longer fits in the step, the step is committed. Before,
// the step took the record and its commit failed, forever.
func TestRunnerCommitsBeforeARecordThatDoesNotFit(t *testing.T) {
	spec := slidingSpec(400)
	r := rand.New(rand.NewPCG(7, 7))
	var ins []Input
	ts := 5000.0
	for i := range 120 {
		key := fmt.Sprintf("site-%02d/room-%02d/temperature", r.IntN(5), r.IntN(4))
		at := ts
		if r.IntN(3) == 0 {
			at = ts - 300 - float64(r.IntN(300)) // late for some or all of its 400 windows
		}
		ins = append(ins, Input{Topic: "t", Series: key, TS: sec(at), Value: longValue(i)})
		ts += 0.5
	}
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recs)
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0)), MaxStepBytes: int(s.MaxRequestBytes())})
	waitAll(t, h, len(recs))
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
	if h.r.Stats().LateRecords.Load() == 0 {
		t.Fatal("no late record: the test tests nothing")
	}
}

// TestRunnerSplitCommitCrash: a crash after the first panes of a record too large for one
// transaction were committed, before the rest (window state, watermark, cursor): the
// restart applies the record again from the cursor and appends the same panes again, with
// the same ids and the same content (DESIGN invariant 3, "per checkpoint"). Deduplicated by
// id, the aggregate log is the replay's.
func TestRunnerSplitCommitCrash(t *testing.T) {
	spec := slidingSpec(1000)
	series := "site-0001/building-a/floor-3/room-17/temperature"
	recs := recordsJSON([]Input{
		{Topic: "t", Series: series, TS: sec(3000), Value: longValue(0)},
		{Topic: "t", Series: series, TS: sec(1500), Value: longValue(1)},
		{Topic: "t", Series: series, TS: sec(3001), Value: longValue(2)},
	})
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recs)
	crashes := 0
	// The real clock: Run waits its backoff on it after the crash (the spec has no idle
	// and no early panes, so processing time changes nothing else).
	o := RunnerOptions{Store: s, Input: "raw", Clock: clock.Real{}}
	r, err := NewRunner(spec, o)
	if err != nil {
		t.Fatal(err)
	}
	r.MinBackoff, r.MaxBackoff = time.Millisecond, time.Millisecond
	r.afterPartialCommit = func() error {
		crashes++
		if crashes == 1 {
			return errors.New("crash")
		}
		return nil
	}
	h := runRunner(t, r)
	waitAll(t, h, len(recs))
	if crashes < 2 {
		t.Fatalf("%d split commits: the late record was not split", crashes)
	}
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	byID := map[string]string{}
	var dedup []string
	for _, p := range got {
		id := p[strings.Index(p, `"id":"`)+6:][:34]
		if prev, ok := byID[id]; ok {
			if prev != p {
				t.Fatalf("pane %s sent again with other content:\n%s\n%s", id, prev, p)
			}
			continue
		}
		byID[id] = p
		dedup = append(dedup, p)
	}
	if len(got) == len(dedup) {
		t.Fatal("no pane appended twice: the crash came after nothing")
	}
	if strings.Join(dedup, "\n") != strings.Join(want, "\n") {
		t.Fatalf("deduplicated aggregate log: %d panes, replay %d", len(dedup), len(want))
	}
}

// runRunner runs a runner built by the test.
func runRunner(t *testing.T, r *Runner) *runHandle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &runHandle{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// TestRunnerDropsARecordNoCommitHolds: a record whose window state alone could never be
// committed in one transaction (here a 2 KB series in a 1000-window sliding pipeline: 1000
// window entries of over 2 KB) is dropped from aggregation and counted, by the daemon and
// by replay alike, and the pipeline goes on.
func TestRunnerDropsARecordNoCommitHolds(t *testing.T) {
	spec := slidingSpec(1000)
	long := strings.Repeat("x", 2000)
	ins := []Input{
		{Topic: "t", Series: "k", TS: sec(3000), Value: 1},
		{Topic: "t", Series: long, TS: sec(3001), Value: 2},
		{Topic: "t", Series: "k", TS: sec(3002), Value: 3},
		{Topic: "t", Series: "k", TS: sec(1500), Value: 4}, // late: 1000 LATE panes
	}
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recs)
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	waitAll(t, h, len(recs))
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	if len(want) != 1000 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
	if st := h.r.Stats(); st.Oversized.Load() != 1 || st.Records.Load() != 3 || st.Errors.Load() != 0 {
		t.Errorf("oversized %d, records %d, failed steps %d; want 1, 3, 0", st.Oversized.Load(), st.Records.Load(), st.Errors.Load())
	}
	rp, _ := NewReplay([]Spec{spec})
	for _, b := range recs {
		rp.Record(b, func([]byte) error { return nil })
	}
	if c := rp.Counters()[0]; c.Oversized != 1 || c.Records != 3 {
		t.Errorf("replay counters %+v: want 1 oversized, 3 records", c)
	}
	if !tooBigToCommit(&spec, long) || tooBigToCommit(&spec, strings.Repeat("x", 200)) {
		t.Error("the limit is not between a 200- and a 2000-byte series for 1000 windows")
	}
}

// TestQuotedLen: quotedLen is the length AppendString writes.
func TestQuotedLen(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "9", "/", "\"", "\\", "<", ">", "&", "\n", "\t", "\x01", "\x7f", "é", "€", "😀", "\u2028", "\u2029", "\xff", "\xe2\x82"}
	for i := range 2000 {
		var b strings.Builder
		for range r.IntN(20) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		s := b.String()
		if got, want := quotedLen(s), len(record.AppendString(nil, s)); got != want {
			t.Fatalf("case %d: quotedLen(%q) = %d, want %d (valid UTF-8: %v)", i, s, got, want, utf8.ValidString(s))
		}
	}
}

// syncLog collects log lines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunnerStepLargerThanEstimated: the step budget is an estimate, and panes of series
// full of characters JSON escapes (6 bytes each) are larger than estimated. With steps
// allowed as large as a transaction, a firing of thousands of such windows comes out
// larger than one: nothing is written, the step is done again in smaller steps, and the
// aggregate log is the replay's.
func TestRunnerStepLargerThanEstimated(t *testing.T) {
	spec := runnerSpec()
	var ins []Input
	for k := range 2000 {
		ins = append(ins, Input{Topic: "t", Series: fmt.Sprintf("%04d", k) + strings.Repeat("<", 300), TS: sec(1), Value: longValue(k)})
	}
	ins = append(ins, Input{Topic: "t", Series: "clock", TS: sec(100), Value: 1}) // fires them all
	recs := recordsJSON(ins)
	s := openStore(t, t.TempDir())
	for i := 0; i < len(recs); i += 100 {
		appendRaw(t, s, recs[i:min(i+100, len(recs))]) // 2 KB records: 100 per transaction
	}
	logs := &syncLog{}
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0)), MaxStepBytes: int(s.MaxRequestBytes()),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	waitAll(t, h, len(recs))
	deadline := time.Now().Add(60 * time.Second)
	for len(aggLog(t, s)) < 2000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h.stop(t)
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	if len(want) != 2000 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d (want 2000)", len(got), len(want))
	}
	if !strings.Contains(logs.String(), "larger than one store transaction") {
		t.Error("no step came out too large: the test tests nothing")
	}
	if n := h.r.Stats().Errors.Load(); n != 0 {
		t.Errorf("%d failed steps", n)
	}
}

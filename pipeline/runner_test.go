package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/record"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
	)
}

func openStore(t testing.TB, dir string) *buffer.Store {
	t.Helper()
	s, err := buffer.Open(buffer.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recordsJSON renders inputs as stored records (SPEC §3.1).
func recordsJSON(ins []Input) [][]byte {
	out := make([][]byte, len(ins))
	for i, in := range ins {
		r := record.Record{ID: fmt.Sprintf("id-%d", i), Topic: in.Topic, Series: in.Series, TS: time.UnixMilli(in.TS).UTC(), Value: in.Value}
		out[i] = r.AppendJSON(nil)
	}
	return out
}

func appendRaw(t testing.TB, s *buffer.Store, recs [][]byte) {
	t.Helper()
	for len(recs) > 0 {
		n := min(len(recs), 500)
		es := make([]buffer.Entry, n)
		for i := range es {
			es[i] = buffer.Entry{Value: recs[i]}
		}
		if _, err := s.Append(context.Background(), "raw", es); err != nil {
			t.Fatal(err)
		}
		recs = recs[n:]
	}
}

// replayPanes is the oracle: the panes the same records give in batch, without Finish.
func replayPanes(t testing.TB, spec Spec, recs [][]byte) []string {
	t.Helper()
	rp, err := NewReplay([]Spec{spec})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range recs {
		if err := rp.Record(b, func(p []byte) error { out = append(out, string(p)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func aggLog(t testing.TB, s *buffer.Store) []string {
	t.Helper()
	var out []string
	if _, err := s.Read(logs.Agg, 0, 0, func(_ uint64, v []byte) error {
		out = append(out, string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

type runHandle struct {
	r      *Runner
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startRunner(t testing.TB, spec Spec, o RunnerOptions) *runHandle {
	t.Helper()
	o.Input = "raw"
	r, err := NewRunner(spec, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &runHandle{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *runHandle) stop(t testing.TB) {
	h.once.Do(func() {
		h.cancel()
		if err := <-h.done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
}

// waitPosition waits until the runner committed everything below pos.
func waitPosition(t testing.TB, r *Runner, pos uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.Stats().Position.Load() < pos {
		if time.Now().After(deadline) {
			t.Fatalf("runner stuck at %d, want %d", r.Stats().Position.Load(), pos)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func runnerSpec() Spec {
	return Spec{Name: "r1", Output: "agg/r1", Input: "#", Kind: Tumbling, Size: 10000, OutOfOrder: 3000,
		AllowedLateness: 20000, Aggs: AggSum | AggMin | AggMax | AggMean | AggFirst | AggLast | AggStddev, MaxOpenWindows: 1 << 20}
}

func TestRunnerEqualsReplay(t *testing.T) {
	specs := []Spec{runnerSpec(), runnerSpec(), runnerSpec()}
	specs[1].Kind, specs[1].Size, specs[1].Every = Sliding, 30000, 10000
	specs[2].Kind, specs[2].Size, specs[2].Gap = Session, 0, 4000
	for i, spec := range specs {
		for _, budget := range []int{0, 3} {
			t.Run(fmt.Sprintf("%s/ops=%d", spec.Kind, budget), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(i), 1))
				n := 2000
				if budget > 0 {
					n = 300 // a commit every few writes: keep it short
				}
				ins := stream(r, Spec{Kind: spec.Kind, Size: spec.Size, Gap: spec.Gap, OutOfOrder: 10000}, n, 20)
				recs := recordsJSON(ins)
				s := openStore(t, t.TempDir())
				appendRaw(t, s, recs)
				h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0)), MaxStepOps: budget, MaxStepRecords: 100})
				waitPosition(t, h.r, uint64(len(recs)+1))
				got, want := aggLog(t, s), replayPanes(t, spec, recs)
				if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("agg log (%d panes) differs from replay (%d panes)", len(got), len(want))
				}
				if st := h.r.Stats(); st.Commits.Load() < 2 || st.Records.Load() != uint64(len(recs)) {
					t.Fatalf("commits %d records %d", st.Commits.Load(), st.Records.Load())
				}
			})
		}
	}
}

// TestRunnerRestart stops and restarts the runner many times while input arrives: the
// aggregate log is exactly the replay's, no pane lost or repeated.
func TestRunnerRestart(t *testing.T) {
	spec := runnerSpec()
	spec.Kind, spec.Gap, spec.Size = Session, 3000, 0
	r := rand.New(rand.NewPCG(5, 5))
	ins := stream(r, Spec{Kind: Session, Gap: 3000, OutOfOrder: 10000}, 3000, 30)
	recs := recordsJSON(ins)
	dir := t.TempDir()
	s := openStore(t, dir)
	fed := 0
	for round := 0; fed < len(recs); round++ {
		n := min(len(recs)-fed, 1+r.IntN(400))
		appendRaw(t, s, recs[fed:fed+n])
		fed += n
		h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0)), MaxStepRecords: 1 + r.IntN(50), MaxStepOps: 2 + r.IntN(40)})
		// Stop somewhere in the middle of the backlog, or after it.
		waitPosition(t, h.r, uint64(fed+1-r.IntN(n)))
		h.stop(t)
		if round%3 == 2 { // and reopen the store now and then
			s.Close()
			s = openStore(t, dir)
		}
	}
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	waitPosition(t, h.r, uint64(len(recs)+1))
	got, want := aggLog(t, s), replayPanes(t, spec, recs)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after restarts: %d panes, replay %d", len(got), len(want))
	}
}

type pubRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (p *pubRecorder) PublishLocal(topic string, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, topic+" "+string(payload))
	return nil
}

func (p *pubRecorder) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs...)
}

func TestRunnerIdlePublishAndLate(t *testing.T) {
	spec := runnerSpec()
	spec.Aggs, spec.AllowedLateness, spec.Idle = AggSum, 0, time.Minute
	s := openStore(t, t.TempDir())
	now := time.UnixMilli(sec(100))
	clk := clock.NewFake(now)
	pub := &pubRecorder{}
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clk, Publisher: pub})
	recs := recordsJSON([]Input{
		{Topic: "t", Series: "k", TS: sec(1), Value: 1},
		{Topic: "t", Series: "k", TS: sec(5), Value: 2},
	})
	appendRaw(t, s, recs)
	waitPosition(t, h.r, 3)
	if got := aggLog(t, s); len(got) != 0 {
		t.Fatalf("panes before idle: %v", got)
	}
	// Wait for the runner to sleep on its idle deadline, then let processing time pass.
	for clk.Timers() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for len(aggLog(t, s)) == 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	got := aggLog(t, s)
	id := record.PaneID("r1", "k", sec(0), sec(10), 0)
	want := `{"id":"` + id + `","pipeline":"r1","key":"k","start":"2026-11-26T12:00:00.000Z","end":"2026-11-26T12:00:10.000Z","count":2,"sum":3.0,"pane":{"index":0,"timing":"ON_TIME"}}`
	if len(got) != 1 || got[0] != want {
		t.Fatalf("after idle:\n got %v\nwant %s", got, want)
	}
	// W follows the clock (160 s − 3 s): a record at 6 s is too late, and published on the
	// late topic as it was stored.
	late := recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(6), Value: 9}})
	appendRaw(t, s, late)
	waitPosition(t, h.r, 4)
	msgs := pub.get()
	if len(msgs) != 2 || msgs[0] != "agg/r1 "+want || msgs[1] != "agg/r1/late "+string(late[0]) {
		t.Fatalf("published %q", msgs)
	}
	if h.r.Stats().TooLate.Load() != 1 || h.r.Stats().Watermark.Load() != sec(157) {
		t.Fatalf("too late %d, W %s", h.r.Stats().TooLate.Load(), fmtWM(h.r.Stats().Watermark.Load()))
	}
}

func TestRunnerShapeChangeDropsWindows(t *testing.T) {
	spec := runnerSpec()
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(1), Value: 1}}))
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	waitPosition(t, h.r, 2)
	h.stop(t)
	if h.r.Stats().OpenWindows.Load() != 1 {
		t.Fatalf("open %d", h.r.Stats().OpenWindows.Load())
	}
	spec.Size = 20000
	h = startRunner(t, spec, RunnerOptions{Store: s, Clock: clock.NewFake(time.Unix(1e9, 0))})
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(2), Value: 1}}))
	waitPosition(t, h.r, 3)
	h.stop(t)
	n := 0
	s.ScanState(windowPrefix("r1"), func(string, []byte) error { n++; return nil })
	if h.r.Stats().OpenWindows.Load() != 1 || n != 1 || h.r.Stats().Watermark.Load() != sec(-1) {
		t.Fatalf("open %d, stored %d, W %d", h.r.Stats().OpenWindows.Load(), n, h.r.Stats().Watermark.Load())
	}
}

// FuzzWindowState: saved state decodes to what was saved, and garbage never panics.
func FuzzWindowState(f *testing.F) {
	c, _ := NewCore(runnerSpec())
	c.Step(&Input{Series: "k€", TS: 12345, Value: 1.5})
	c.Step(&Input{Series: "k€", TS: 12346, Value: -2})
	w := c.keys["k€"].wins[0]
	f.Add(appendWindow(nil, w), false)
	m := c.meta()
	f.Add(m.appendTo(nil), true)
	f.Fuzz(func(t *testing.T, b []byte, isMeta bool) {
		// Varints have several encodings: compare what decodes, through a canonical
		// re-encoding.
		if isMeta {
			if m, err := decodeMeta(b); err == nil {
				if m2, err := decodeMeta(m.appendTo(nil)); err != nil || m2 != m {
					t.Fatalf("meta round trip: %+v → %+v (%v)", m, m2, err)
				}
			}
			return
		}
		once := func(b []byte) ([]byte, error) {
			c, _ := NewCore(runnerSpec())
			if err := c.restoreWindow(b, 0); err != nil {
				return nil, err
			}
			for _, ks := range c.keys {
				return appendWindow(nil, ks.wins[0]), nil
			}
			t.Fatal("restored window not found")
			return nil, nil
		}
		enc, err := once(b)
		if err != nil {
			return
		}
		enc2, err := once(enc)
		if err != nil || string(enc2) != string(enc) {
			t.Fatalf("window round trip: %x → %x (%v)", enc, enc2, err)
		}
	})
}

// TestRunnerEarlyPanes: with early set, the runner wakes on the processing-time clock and
// emits an EARLY pane of an open window that changed, and none while nothing changes.
func TestRunnerEarlyPanes(t *testing.T) {
	spec := runnerSpec()
	spec.Aggs, spec.Early, spec.Idle = AggSum, 10*time.Second, 0
	s := openStore(t, t.TempDir())
	clk := clock.NewFake(time.Unix(2e9, 0))
	h := startRunner(t, spec, RunnerOptions{Store: s, Clock: clk})
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(1), Value: 1}, {Topic: "t", Series: "k", TS: sec(2), Value: 2}}))
	waitPosition(t, h.r, 3)
	sleeping := func() {
		for clk.Timers() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	waitPanes := func(n int) []string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := aggLog(t, s)
			if len(got) >= n || time.Now().After(deadline) {
				return got
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	sleeping()
	clk.Advance(10 * time.Second)
	got := waitPanes(1)
	if len(got) != 1 || !strings.Contains(got[0], `"count":2,"sum":3.0,"pane":{"index":0,"timing":"EARLY"}`) {
		t.Fatalf("after 10 s: %v", got)
	}
	// Nothing new: no timer, no pane; the runner sleeps on the input only.
	time.Sleep(20 * time.Millisecond)
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers armed with nothing to fire", n)
	}
	clk.Advance(time.Minute)
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(3), Value: 4}}))
	waitPosition(t, h.r, 4)
	if got := aggLog(t, s); len(got) != 1 {
		t.Fatalf("panes without change: %v", got)
	}
	sleeping()
	clk.Advance(10 * time.Second)
	got = waitPanes(2)
	if len(got) != 2 || !strings.Contains(got[1], `"count":3,"sum":7.0,"pane":{"index":1,"timing":"EARLY"}`) {
		t.Fatalf("second early pane: %v", got)
	}
}

// TestRunnerLargeFiringFitsTheStore: a watermark jump that closes thousands of windows at
// once (a gateway back from a long silence) is committed in steps the store accepts: no
// step fails, every pane is in the aggregate log once.
func TestRunnerLargeFiringFitsTheStore(t *testing.T) {
	s := openStore(t, t.TempDir())
	spec := runnerSpec()
	const keys = 12000
	var ins []Input
	for k := range keys {
		// Long series names: the window keys are a large part of each step's writes.
		ins = append(ins, Input{Topic: "t", Series: fmt.Sprintf("site-%04d/building-a/floor-3/room-17/temperature", k), TS: 1000, Value: float64(k)})
	}
	ins = append(ins, Input{Topic: "t", Series: "clock", TS: 1_000_000, Value: 1})
	recs := recordsJSON(ins)
	appendRaw(t, s, recs)
	h := startRunner(t, spec, RunnerOptions{Store: s})
	waitPosition(t, h.r, uint64(len(recs)))
	deadline := time.Now().Add(20 * time.Second)
	for len(aggLog(t, s)) < keys && h.r.Stats().Errors.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h.stop(t)
	if n := h.r.Stats().Errors.Load(); n != 0 {
		t.Fatalf("%d failed steps", n)
	}
	got := aggLog(t, s)
	if want := replayPanes(t, spec, recs); len(got) != len(want) || len(got) != keys {
		t.Fatalf("%d panes in the aggregate log, replay gives %d, want %d", len(got), len(want), keys)
	}
	if c := h.r.Stats().Commits.Load(); c < 2 {
		t.Fatalf("%d commits: the firing was not split", c)
	}
}

// TestRunnerStatsSurviveReload: a failed step makes Run reload the state into a new core;
// the runner's counters go on from the last commit, neither back to zero nor counting the
// failed step's records twice.
func TestRunnerStatsSurviveReload(t *testing.T) {
	s := openStore(t, t.TempDir())
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(1), Value: 1}, {Topic: "t", Series: "k", TS: sec(2), Value: 1}}))
	r, err := NewRunner(runnerSpec(), RunnerOptions{Store: s, Input: "raw", Clock: clock.NewFake(time.Unix(1e9, 0))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.step(); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, s, recordsJSON([]Input{{Topic: "t", Series: "k", TS: sec(3), Value: 1}}))
	r.core.Step(&Input{Topic: "t", Series: "k", TS: sec(3), Value: 1}) // a step that did not commit
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.step(); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Records.Load() != 3 || st.Commits.Load() != 2 || st.Position.Load() != 4 {
		t.Fatalf("records %d commits %d position %d, want 3, 2, 4", st.Records.Load(), st.Commits.Load(), st.Position.Load())
	}
}

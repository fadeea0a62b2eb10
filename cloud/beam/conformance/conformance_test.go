package conformance

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"

	"github.com/edgegate/edgegate/cloud/beam/internal/edgebin"
	"github.com/edgegate/edgegate/cloud/beam/internal/prismrace"
	"github.com/edgegate/edgegate/cloud/beam/winspec"
	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Seeds of the random cases per window kind. Each case runs edgegate replay once and
// Prism three or four times (about 0.1 s all told).
const randomCases = 40

var edgegate string // the binary TestMain built

// tally is what the suite compared, printed at the end.
var tally struct {
	sync.Mutex
	cases, edgePanes, beamPanes, windows, equal int
	gapCases                                    int
	gaps                                        map[Gap]int
}

func count(f func()) {
	tally.Lock()
	defer tally.Unlock()
	if tally.gaps == nil {
		tally.gaps = map[Gap]int{}
	}
	f()
}

func TestMain(m *testing.M) {
	// Prism logs every job at info level; keep the test output to what matters.
	beamlog.LogLevel = "warn"
	beam.Init()
	dir, err := os.MkdirTemp("", "edgegate-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	edgegate, err = edgebin.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if tally.cases > 0 {
		fmt.Printf("conformance (Beam %s, Prism): %d cases held against Beam: %d edgegate panes and %d Beam panes in %d windows, %d windows identical, the others equal but for a gap of Prism's; %d more cases run as a gap (streaming sessions)\n",
			BeamVersion(), tally.cases, tally.edgePanes, tally.beamPanes, tally.windows, tally.equal, tally.gapCases)
		gaps := make([]string, 0, len(tally.gaps))
		for g, n := range tally.gaps {
			gaps = append(gaps, fmt.Sprintf("%s %d", g, n))
		}
		slices.Sort(gaps)
		fmt.Printf("conformance: windows (or runs) that met each gap: %s\n", strings.Join(gaps, ", "))
	}
	os.Exit(code)
}

// runBeam runs c's Beam pipeline in variant v on Prism and returns its panes. A job that
// Prism's progress race crashed (prismrace) runs again, on a new output file.
func runBeam(t *testing.T, c *Case, v Variant) ([]BeamPane, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out := filepath.Join(t.TempDir(), "beam.jsonl")
		p, err := Build(c.Name, c.Spec, c.Records, v, out)
		if err != nil {
			t.Fatalf("%s: build %v: %v", c.Name, v, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		ps, err := Run(ctx, "prism", p, out)
		cancel()
		if err != nil && prismrace.Is(err.Error()) && attempt < prismrace.Attempts {
			t.Logf("%s, %v: Prism crashed in its progress race; running the job again", c.Name, v)
			count(func() { tally.gaps[GapProgressRace]++ })
			continue
		}
		return ps, err
	}
}

func mustBeam(t *testing.T, c *Case, v Variant) []BeamPane {
	t.Helper()
	ps, err := runBeam(t, c, v)
	if err != nil {
		t.Fatalf("%s: Prism, %v: %v", c.Name, v, err)
	}
	return ps
}

func mustReplay(t *testing.T, c *Case) []wire.Pane {
	t.Helper()
	ps, err := Replay(edgegate, t.TempDir(), c)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// keep writes a case that differs in a way no gap explains to a directory the test
// leaves behind, ready to become a fixture under testdata/.
func keep(t *testing.T, c *Case, edge []wire.Pane, beams map[string][]BeamPane) string {
	dir, err := os.MkdirTemp("", "edgegate-conformance-"+c.Name+"-")
	if err != nil {
		return ""
	}
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(c.Config()), 0o644)
	os.WriteFile(filepath.Join(dir, "input.jsonl"), c.Input(), 0o644)
	write := func(name string, v any) {
		var b strings.Builder
		switch ps := v.(type) {
		case []wire.Pane:
			for _, p := range ps {
				b.WriteString(fmt.Sprintf("%s [%s, %s) %d %s\n", p.Key, p.Start, p.End, p.Pane.Index, paneString(&p)))
			}
		case []BeamPane:
			for _, p := range ps {
				b.WriteString(fmt.Sprintf("%s [%s, %s) %d %s last=%v\n", p.Key, p.Start, p.End, p.Pane.Pane.Index, paneString(&p.Pane), p.IsLast))
			}
		}
		os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644)
	}
	write("edgegate.txt", edge)
	for v, ps := range beams {
		write("beam-"+v+".txt", ps)
	}
	return dir
}

// compareStreaming holds a tumbling or sliding case against Beam.
//
// The reference is what the Beam model fires for the case, obtained from Prism where
// Prism is faithful: the discarding pipeline, restamped (GapHeldWatermark), whose panes,
// accumulated, are those of the accumulating pipeline (Accumulate). edgegate must agree
// with it pane for pane. Then Prism runs the pipeline as written (and restamped, when
// accumulating): every window it fires differently from the reference must be explained
// by a gap, or the test fails.
func compareStreaming(t *testing.T, c *Case) {
	t.Helper()
	edge := mustReplay(t, c)
	dc := *c
	dc.Spec.Discarding = true
	ref := mustBeam(t, &dc, Variant{Late: winspec.LateEveryCount, Restamp: true})
	always := mustBeam(t, &dc, Variant{Late: winspec.LateAlways, Restamp: true})
	model := ref
	if !c.Spec.Discarding {
		model = Accumulate(ref, c.Spec.Aggregates)
	}
	runs := map[string][]BeamPane{"reference": model}
	fail := func(format string, args ...any) {
		t.Helper()
		dir := keep(t, c, edge, runs)
		t.Errorf("%s (%s): %s\n(case kept in %s)", c.Name, strings.ReplaceAll(c.Spec.YAML(), "\n", "; "), fmt.Sprintf(format, args...), dir)
	}

	// Two spellings of one trigger fire the same panes.
	for _, d := range Compare(plain(ref), always) {
		fail("late firings AfterCount(1) and Always differ: %v", d)
	}

	// edgegate against the model.
	ws := Windows(edge, model)
	for _, w := range ws {
		count(func() {
			tally.windows++
			tally.edgePanes += len(w.Edge)
			tally.beamPanes += len(w.Beam)
		})
	}
	problems := Disagreements(ws)
	for _, p := range problems {
		fail("edgegate and Beam differ: %s", p)
	}
	count(func() {
		tally.cases++
		tally.equal += len(ws) - len(problems)
	})

	// Prism as written: each difference from the model, attributed.
	restamped := ref
	if !c.Spec.Discarding {
		restamped = mustBeam(t, c, Variant{Late: winspec.LateEveryCount, Restamp: true})
	}
	literal := mustBeam(t, c, Variant{Late: winspec.LateEveryCount})
	runs["restamped"], runs["literal"] = restamped, literal
	byWindow := map[WindowID][]BeamPane{}
	for _, w := range Windows(nil, restamped) {
		byWindow[w.ID] = derefBeamPanes(w.Beam)
	}
	gapOf := map[WindowID]Gap{}
	for _, run := range []struct {
		name  string
		panes []BeamPane
	}{{"restamped", restamped}, {"literal", literal}} {
		for _, w := range Windows(plain(model), run.panes) {
			if w.Equal() {
				continue
			}
			var gap Gap
			switch {
			case run.name == "literal" && len(Compare(plain(byWindow[w.ID]), derefBeamPanes(w.Beam))) == 0:
				// The literal pipeline fired what the restamped one did: same cause.
				gap = gapOf[w.ID]
			case run.name == "literal":
				gap = GapHeldWatermark
			case !c.Spec.Discarding:
				gap = cmp.Or(w.ExplainAccumulating(), GapAccumulatingHold)
			}
			if gap == "" {
				var diffs []string
				for _, d := range Compare(derefPanes(w.Edge), derefBeamPanes(w.Beam)) {
					diffs = append(diffs, d.String())
				}
				fail("Prism's %s pipeline differs from the model in window %v, no gap explains it:\n%s", run.name, w.ID, strings.Join(diffs, "\n"))
				continue
			}
			gapOf[w.ID] = gap
			count(func() { tally.gaps[gap]++ })
		}
	}
}

func plain(bs []BeamPane) []wire.Pane {
	ps := make([]wire.Pane, len(bs))
	for i, b := range bs {
		ps[i] = b.Pane
	}
	return ps
}

// TestWorkedExample is SPEC §4's table, both accumulation modes: discarding agrees pane
// for pane with the restamped pipeline; accumulating differs only by named gaps.
func TestWorkedExample(t *testing.T) {
	for _, disc := range []bool{false, true} {
		c := WorkedExample(disc)
		t.Run(c.Name, func(t *testing.T) { compareStreaming(t, &c) })
	}
	c := WorkedExample(true)
	edge := mustReplay(t, &c)
	if d := Compare(edge, mustBeam(t, &c, Variant{Late: winspec.LateEveryCount, Restamp: true})); len(d) > 0 {
		t.Errorf("worked example, discarding: Beam differs from edgegate: %v", d)
	}
}

// gapCounts returns a copy of the gaps met so far.
func gapCounts() map[Gap]int {
	tally.Lock()
	defer tally.Unlock()
	return maps.Clone(tally.gaps)
}

// expectGaps fails t for each of gaps that t did not meet (since before): Prism no longer
// departs from the model that way, and the suite should compare instead of explaining.
func expectGaps(t *testing.T, before map[Gap]int, gaps ...Gap) {
	t.Helper()
	after := gapCounts()
	for _, g := range gaps {
		if after[g] == before[g] {
			t.Errorf("gap %s no longer shows with Beam %s: compare without it", g, BeamVersion())
		}
	}
}

func TestRandomTumbling(t *testing.T) {
	before := gapCounts()
	for seed := range uint64(randomCases) {
		c := RandomCase(seed, winspec.Tumbling)
		compareStreaming(t, &c)
	}
	expectGaps(t, before, GapHeldWatermark, GapClosingPane, GapLateFolded, GapAccumulatingHold)
}

func TestRandomSliding(t *testing.T) {
	before := gapCounts()
	for seed := range uint64(randomCases) {
		c := RandomCase(seed, winspec.Sliding)
		compareStreaming(t, &c)
	}
	expectGaps(t, before, GapHeldWatermark, GapClosingPane, GapLateFolded, GapAccumulatingHold)
}

// sessionCase is a random session case; onTime makes every reading on time (out_of_order
// of a day, no allowed lateness), so every session fires once, ON_TIME, at the end.
func sessionCase(seed uint64, onTime bool) Case {
	c := RandomCase(seed, winspec.Session)
	if onTime {
		c.Name = fmt.Sprintf("session-on-time-%d", seed)
		c.Spec.OutOfOrder = 24 * time.Hour
		c.Spec.AllowedLateness = 0
	}
	return c
}

// TestSessionsOnTime compares session windows where Prism can: every reading on time, so
// all merging happens in one bundle at the end. edgegate must agree with Prism once
// sessions that only touch are merged (GapSessionsTouching) and merged sessions' panes
// are read without their PaneInfo (GapMergedPaneInfo).
func TestSessionsOnTime(t *testing.T) {
	before := gapCounts()
	defer expectGaps(t, before, GapSessionsTouching, GapMergedPaneInfo)
	for seed := range uint64(randomCases) {
		c := sessionCase(seed, true)
		edge := mustReplay(t, &c)
		beamPanes := mustBeam(t, &c, Variant{Late: winspec.LateAlways, Restamp: true})
		want, touching := MergeTouching(edge)
		count(func() {
			tally.cases++
			tally.gaps[GapSessionsTouching] += touching
		})
		for _, w := range Windows(want, beamPanes) {
			count(func() {
				tally.windows++
				tally.edgePanes += len(w.Edge)
				tally.beamPanes += len(w.Beam)
			})
			switch {
			case w.Equal():
				count(func() { tally.equal++ })
			case w.mergedPaneInfo():
				count(func() { tally.gaps[GapMergedPaneInfo]++ })
			default:
				var diffs []string
				for _, d := range Compare(derefPanes(w.Edge), derefBeamPanes(w.Beam)) {
					diffs = append(diffs, d.String())
				}
				dir := keep(t, &c, edge, map[string][]BeamPane{"prism": beamPanes})
				t.Errorf("%s: session %v differs, no gap explains it:\n%s\n(case kept in %s)", c.Name, w.ID, strings.Join(diffs, "\n"), dir)
			}
		}
	}
}

// TestSessionsStreaming runs session cases with the watermark moving as they arrive.
// Prism splits sessions (GapSessionsStreaming): the suite checks that every session Prism
// fires lies within one of edgegate's (after merging touching ones), counts the windows
// that differ, and fails if none does, which would mean the gap closed. Cases run in
// discarding mode: in accumulating mode Prism also keeps readings past the allowed
// lateness (GapAccumulatingHold), which no edgegate session holds.
func TestSessionsStreaming(t *testing.T) {
	differ := 0
	for seed := range uint64(randomCases) {
		c := sessionCase(seed, false)
		c.Spec.Discarding = true
		edge := mustReplay(t, &c)
		beamPanes := mustBeam(t, &c, Variant{Late: winspec.LateAlways, Restamp: true})
		spans := Spans(edge)
		for _, w := range Windows(edge, beamPanes) {
			if w.Equal() {
				continue
			}
			differ++
			for _, b := range w.Beam {
				if !within(b, spans) {
					dir := keep(t, &c, edge, map[string][]BeamPane{"prism": beamPanes})
					t.Errorf("%s: Prism fired session %v [%s, %s), which no edgegate session holds (case kept in %s)", c.Name, b.Key, b.Start, b.End, dir)
				}
			}
		}
	}
	count(func() {
		tally.gaps[GapSessionsStreaming] += differ
		tally.gapCases += randomCases
	})
	if differ == 0 {
		t.Errorf("gap %s no longer shows with Beam %s: compare session cases pane for pane", GapSessionsStreaming, BeamVersion())
	}
}

// within reports whether b's window lies inside a span of its key.
func within(b *BeamPane, spans map[string][][2]string) bool {
	for _, s := range spans[b.Key] {
		if s[0] <= b.Start && b.End <= s[1] {
			return true
		}
	}
	return false
}

// TestGapSessionCountTrigger: Prism refuses Repeatedly(AfterCount(1)) as the late trigger
// of session windows. The suite runs sessions with the Always trigger instead (the same
// firings, stateless); this test fails once Prism accepts the pipeline.
func TestGapSessionCountTrigger(t *testing.T) {
	c := sessionCase(1, false)
	_, err := runBeam(t, &c, Variant{Late: winspec.LateEveryCount, Restamp: true})
	if err == nil {
		t.Fatalf("gap %s no longer shows with Beam %s: Prism runs AfterCount(1) with session windows; compare it", GapSessionCountTrigger, BeamVersion())
	}
	const want = "Using stateful triggers with merging windows isn't currently supported in prism"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Prism refused the session pipeline, but not as recorded (%q): %v", want, err)
	}
	t.Logf("Beam %s, Prism: %s", BeamVersion(), firstLine(err.Error(), want))
	count(func() { tally.gaps[GapSessionCountTrigger]++ })
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return s
}

// TestGapCombinePaneInfo: beam.CombinePerKey with the same CombineFn computes the same
// aggregates as the GroupByKey form, but its output carries no PaneInfo. The test fails
// once the panes come through.
func TestGapCombinePaneInfo(t *testing.T) {
	c := WorkedExample(true)
	grouped := mustBeam(t, &c, Variant{Late: winspec.LateEveryCount, Restamp: true})
	combined := mustBeam(t, &c, Variant{Late: winspec.LateEveryCount, Restamp: true, Combine: true})
	if len(combined) != len(grouped) {
		t.Fatalf("CombinePerKey fired %d panes, GroupByKey %d", len(combined), len(grouped))
	}
	contents := func(ps []BeamPane) []string {
		var s []string
		for _, p := range ps {
			s = append(s, fmt.Sprintf("%s %s %s %v", p.Key, p.Start, p.End, p.Acc))
		}
		slices.Sort(s)
		return s
	}
	if !slices.Equal(contents(combined), contents(grouped)) {
		t.Fatalf("CombinePerKey and GroupByKey aggregate differently:\n%v\n%v", contents(combined), contents(grouped))
	}
	if len(Compare(plain(grouped), combined)) == 0 {
		t.Fatalf("gap %s no longer shows with Beam %s: aggregate with CombinePerKey", GapCombinePaneInfo, BeamVersion())
	}
	for _, p := range combined {
		if p.Pane.Pane.Index != 0 || p.Pane.Pane.Timing != "EARLY" || p.IsFirst || p.IsLast {
			t.Fatalf("CombinePerKey pane %+v: expected the zero PaneInfo", p.Pane.Pane)
		}
	}
	count(func() { tally.gaps[GapCombinePaneInfo]++ })
}

// TestComparisonCatchesDifferences feeds the comparison edgegate panes that are wrong in
// one way each: it must report every one, and nothing for the true panes.
func TestComparisonCatchesDifferences(t *testing.T) {
	c := WorkedExample(false)
	edge := mustReplay(t, &c)
	dc := c
	dc.Spec.Discarding = true
	model := Accumulate(mustBeam(t, &dc, Variant{Late: winspec.LateEveryCount, Restamp: true}), c.Spec.Aggregates)
	if d := Disagreements(Windows(edge, model)); len(d) > 0 {
		t.Fatalf("the true panes disagree: %v", d)
	}
	find := func(ps []wire.Pane, start string, index int64) int {
		for i, p := range ps {
			if strings.HasSuffix(p.Start, start) && p.Pane.Index == index {
				return i
			}
		}
		t.Fatalf("no pane %s/%d", start, index)
		return -1
	}
	scale := func(f float64) func(*wire.Pane) {
		return func(p *wire.Pane) { v := *p.Sum * f; p.Sum = &v }
	}
	for _, m := range []struct {
		name   string
		mutate func([]wire.Pane) []wire.Pane
		caught bool
	}{
		{"late pane missing", func(ps []wire.Pane) []wire.Pane {
			i := find(ps, "00:00.000Z", 1)
			return slices.Delete(ps, i, i+1)
		}, true},
		{"too-late reading kept", func(ps []wire.Pane) []wire.Pane {
			p := ps[find(ps, "00:00.000Z", 1)]
			p.Pane.Index, p.Count = 2, p.Count+1
			return append(ps, p)
		}, true},
		{"ON_TIME called LATE", func(ps []wire.Pane) []wire.Pane {
			ps[find(ps, "00:10.000Z", 0)].Pane.Timing = "LATE"
			return ps
		}, true},
		{"window end off by 1 ms", func(ps []wire.Pane) []wire.Pane {
			ps[find(ps, "00:20.000Z", 0)].End = "2026-11-26T12:00:30.001Z"
			return ps
		}, true},
		{"first and last swapped", func(ps []wire.Pane) []wire.Pane {
			p := &ps[find(ps, "00:10.000Z", 0)]
			p.First, p.Last = p.Last, p.First
			return ps
		}, true},
		{"sum off by 1e-8 relative", func(ps []wire.Pane) []wire.Pane {
			scale(1 + 1e-8)(&ps[find(ps, "00:00.000Z", 0)])
			return ps
		}, true},
		{"sum off by 1e-12 relative (within tolerance)", func(ps []wire.Pane) []wire.Pane {
			scale(1 + 1e-12)(&ps[find(ps, "00:00.000Z", 0)])
			return ps
		}, false},
	} {
		ps := m.mutate(slices.Clone(edge))
		d := Disagreements(Windows(ps, model))
		if got := len(d) > 0; got != m.caught {
			t.Errorf("%s: reported %v, want %v: %v", m.name, got, m.caught, d)
		}
	}
}

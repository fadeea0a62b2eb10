package conformance

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core"

	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Gap names a way the Beam runner used here departs from the Beam model, or cannot run a
// case at all. Each was found by this suite, traced to the runner's source, and is kept
// as an expectation: the suite fails if a gap stops showing, so a newer Beam release that
// closes it turns it back into a plain comparison.
type Gap string

// The gaps of Prism in Beam 2.78.0 (paths under sdks/go/pkg/beam/).
const (
	// GapClosingPane: in accumulating mode, when the watermark passes a window's end +
	// allowed lateness, Prism fires one more LATE pane (is_last) with the window's whole
	// content, though nothing arrived since the previous pane. The Go SDK asks for
	// ClosingBehavior EMIT_IF_NONEMPTY (core/runtime/graphx/translate.go), which emits a
	// final pane only with new data; Prism treats both closing behaviours alike
	// (runners/prism/internal/jobservices/management.go) and always fires the "closing
	// pane after an ontime pane" (engine/elementmanager.go, computeNextWatermarkPane).
	GapClosingPane Gap = "closing-pane"
	// GapLateFolded: in accumulating mode, late readings of a window that fired ON_TIME
	// get no LATE pane each; they come together in the closing pane at end + allowed
	// lateness. Prism keeps a window's readings as pending elements for its later panes,
	// and pending elements hold the aggregation's input watermark
	// (engine/elementmanager.go, minPendingTimestampLocked, updateWatermarks): the late
	// reading's window end is then not behind that watermark, so the late trigger does
	// not see it as late (injectTriggeredBundlesIfReady, endOfWindowReached).
	GapLateFolded Gap = "late-folded"
	// GapAccumulatingHold: other ways in which Prism's accumulating pipeline fires panes
	// that are not the accumulation of its own discarding panes, from the same hold as
	// GapLateFolded: a reading past the allowed lateness is kept (not dropped) when a
	// window that keeps its readings holds the output watermark against which
	// aggregateStageKind.addPending drops.
	GapAccumulatingHold Gap = "accumulating-hold"
	// GapHeldWatermark: with readings grouped at their own timestamps, a reading that
	// waits in an open window holds the aggregation's input and output watermarks at its
	// timestamp (same functions as GapLateFolded). Late readings for older windows are
	// then not seen as late (no LATE pane at once), and readings past the allowed lateness
	// are not dropped (aggregateStageKind.addPending drops against the held output
	// watermark). Moving each windowed element to its window's last instant before the
	// GroupByKey changes nothing in the model but takes the hold away: the suite compares
	// that variant, and attributes what only the literal pipeline shows to this gap.
	GapHeldWatermark Gap = "held-watermark"
	// GapSessionsStreaming: Prism merges session windows only among the elements of one
	// bundle (handlerunner.go, gbkBytes); its trigger and pane state stay per unmerged
	// proto-window [ts, ts+gap) (engine/strategy.go: "TODO handle ... merging windows"). As
	// the watermark advances, each proto-window fires on its own, so sessions come out
	// split, and late readings never merge sessions that fired.
	GapSessionsStreaming Gap = "sessions-streaming"
	// GapMergedPaneInfo: a session merged from several proto-windows fires with the
	// zero PaneInfo (EARLY, index 0, not first), because Prism looks the pane up under
	// the merged window, for which it kept no state (aggregateStageKind.getPaneOrDefault).
	GapMergedPaneInfo Gap = "merged-session-paneinfo"
	// GapSessionsTouching: Prism merges two sessions that only touch ([a, b) and [b, c)),
	// i.e. readings exactly one gap apart (handlerunner.go, gbkBytes: merges unless
	// cur.Start-iw.End > 0). The model keeps them apart: Java's IntervalWindow.isDisjoint
	// holds for end == start, so MergeOverlappingIntervalWindows leaves them, as edgegate
	// does (SPEC §4: readings closer than gap merge).
	GapSessionsTouching Gap = "sessions-touching"
	// GapSessionCountTrigger: Prism refuses AfterCount (any stateful trigger) with
	// session windows; the error is recorded by TestGapSessionCountTrigger.
	GapSessionCountTrigger Gap = "sessions-count-trigger"
	// GapCombinePaneInfo: the Go SDK's CombinePerKey drops the PaneInfo of what it
	// combines (core/runtime/exec/combine.go builds its output without the input's
	// Pane): every combined pane says EARLY, index 0. The suite groups with GroupByKey and
	// folds the combiner's accumulator in a DoFn instead.
	GapCombinePaneInfo Gap = "combine-drops-paneinfo"
	// GapProgressRace: on a loaded machine Prism sometimes crashes a job with a nil pointer
	// in (*B).Progress: a stage the runner executes itself (a GroupByKey) has no worker to
	// ask for progress, and its 100 ms progress tick can win the select against the
	// bundle's completion (runners/prism/internal/stage.go). Nothing to do with the
	// pipeline: tests run such a job again (internal/prismrace) and count it here.
	GapProgressRace Gap = "progress-race"
)

// BeamVersion is the Beam Go SDK this binary was built with.
func BeamVersion() string { return core.SdkVersion }

// Window is one window's panes on both sides, each in index order.
type Window struct {
	ID   WindowID
	Edge []*wire.Pane
	Beam []*BeamPane
}

// Windows groups panes by window, in order of key and bounds.
func Windows(edge []wire.Pane, beam []BeamPane) []*Window {
	ws := map[WindowID]*Window{}
	get := func(id WindowID) *Window {
		if ws[id] == nil {
			ws[id] = &Window{ID: id}
		}
		return ws[id]
	}
	for i := range edge {
		p := &edge[i]
		w := get(WindowID{p.Key, p.Start, p.End})
		w.Edge = append(w.Edge, p)
	}
	for i := range beam {
		p := &beam[i]
		w := get(WindowID{p.Key, p.Start, p.End})
		w.Beam = append(w.Beam, p)
	}
	out := make([]*Window, 0, len(ws))
	for _, w := range ws {
		slices.SortFunc(w.Edge, func(a, b *wire.Pane) int { return cmp.Compare(a.Pane.Index, b.Pane.Index) })
		slices.SortFunc(w.Beam, func(a, b *BeamPane) int { return cmp.Compare(a.Pane.Pane.Index, b.Pane.Pane.Index) })
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *Window) int {
		return cmp.Or(cmp.Compare(a.ID.Key, b.ID.Key), cmp.Compare(a.ID.Start, b.ID.Start), cmp.Compare(a.ID.End, b.ID.End))
	})
	return out
}

// Equal reports whether both sides fired the same panes: index, timing and content.
func (w *Window) Equal() bool {
	return len(w.Edge) == len(w.Beam) && w.samePrefix(len(w.Edge))
}

func (w *Window) samePrefix(k int) bool {
	if k > len(w.Edge) || k > len(w.Beam) {
		return false
	}
	for i := range k {
		e, b := w.Edge[i], w.Beam[i]
		if e.Pane.Index != int64(i) || b.Pane.Pane.Index != int64(i) || len(SameContent(e, &b.Pane)) > 0 {
			return false
		}
	}
	return true
}

// Disagreements describes every window in which the two sides fired different panes, one
// string per window with its differing panes.
func Disagreements(ws []*Window) []string {
	var out []string
	for _, w := range ws {
		if w.Equal() {
			continue
		}
		var diffs []string
		for _, d := range Compare(derefPanes(w.Edge), derefBeamPanes(w.Beam)) {
			diffs = append(diffs, d.String())
		}
		out = append(out, fmt.Sprintf("window %v:\n%s", w.ID, strings.Join(diffs, "\n")))
	}
	return out
}

func derefPanes(ps []*wire.Pane) []wire.Pane {
	out := make([]wire.Pane, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

func derefBeamPanes(ps []*BeamPane) []BeamPane {
	out := make([]BeamPane, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

// ExplainAccumulating returns the gap that explains how Beam's panes of an accumulating
// window differ from edgegate's, or "" if none does:
//   - GapClosingPane: Beam fired every pane edgegate fired, then one more LATE pane,
//     marked last, with the same content as edgegate's last;
//   - GapLateFolded: Beam fired the first k panes edgegate fired (k ≥ 1), and instead of
//     edgegate's remaining LATE panes one LATE pane, marked last, with the content of
//     edgegate's last: the same data, in fewer panes.
func (w *Window) ExplainAccumulating() Gap {
	n, m := len(w.Edge), len(w.Beam)
	if n == 0 || m < 2 {
		return ""
	}
	k := m - 1
	closing := w.Beam[k]
	last := w.Edge[n-1]
	if closing.Pane.Pane.Timing != "LATE" || !closing.IsLast || closing.Pane.Pane.Index != int64(k) {
		return ""
	}
	if f := SameContent(last, &closing.Pane); len(f) > 1 || len(f) == 1 && f[0] != "timing" {
		return ""
	}
	switch {
	case k == n && w.samePrefix(n):
		return GapClosingPane
	case k < n && w.samePrefix(k):
		for _, e := range w.Edge[k:] {
			if e.Pane.Timing != "LATE" {
				return ""
			}
		}
		return GapLateFolded
	}
	return ""
}

// MergeTouching rewrites edgegate's panes as Prism fires sessions (GapSessionsTouching):
// per key, windows that touch (one's end is the next one's start) become their union,
// whose pane carries the merged aggregates. It applies to single-pane windows (sessions
// that fired once, ON_TIME), and returns the rewritten panes and how many windows merged.
func MergeTouching(edge []wire.Pane) ([]wire.Pane, int) {
	ps := slices.Clone(edge)
	slices.SortFunc(ps, func(a, b wire.Pane) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Start, b.Start), cmp.Compare(a.Pane.Index, b.Pane.Index))
	})
	var out []wire.Pane
	merged := 0
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Key == p.Key && out[n-1].End == p.Start &&
			out[n-1].Pane.Index == 0 && p.Pane.Index == 0 {
			out[n-1] = union(out[n-1], p)
			merged++
			continue
		}
		out = append(out, p)
	}
	return out, merged
}

// union is the pane of a then b, b later in event time and disjoint from a.
func union(a, b wire.Pane) wire.Pane {
	u := a
	u.End = b.End
	u.ID = wire.PaneID(u.Pipeline, u.Key, mustTime(u.Start), mustTime(u.End), u.Pane.Index)
	u.Count = a.Count + b.Count
	na, nb, n := float64(a.Count), float64(b.Count), float64(a.Count+b.Count)
	both := func(x, y *float64, f func(x, y float64) float64) *float64 {
		if x == nil || y == nil {
			return nil
		}
		v := f(*x, *y)
		return &v
	}
	u.Sum = both(a.Sum, b.Sum, func(x, y float64) float64 { return x + y })
	u.Min = both(a.Min, b.Min, math.Min)
	u.Max = both(a.Max, b.Max, math.Max)
	u.Last = b.Last
	if a.Mean != nil && b.Mean != nil {
		mean := (*a.Mean*na + *b.Mean*nb) / n
		u.Mean = &mean
		if a.Stddev != nil && b.Stddev != nil {
			d := *b.Mean - *a.Mean
			m2 := *a.Stddev**a.Stddev*na + *b.Stddev**b.Stddev*nb + d*d*na*nb/n
			sd := math.Sqrt(m2 / n)
			u.Stddev = &sd
		}
	}
	if u.Sum != nil {
		// edgegate's mean is sum/count; keep the same figure.
		mean := *u.Sum / n
		u.Mean = &mean
	}
	return u
}

// mergedPaneInfo reports whether the window is one session fired once on both sides, with
// the same content, and Beam's pane has the zero PaneInfo (GapMergedPaneInfo): a session
// of several readings.
func (w *Window) mergedPaneInfo() bool {
	if len(w.Edge) != 1 || len(w.Beam) != 1 {
		return false
	}
	e, b := w.Edge[0], w.Beam[0]
	f := SameContent(e, &b.Pane)
	return len(f) == 1 && f[0] == "timing" && e.Pane.Timing == "ON_TIME" && e.Count > 1 &&
		b.Pane.Pane == wire.PaneInfo{Index: 0, Timing: "EARLY"} && !b.IsFirst && !b.IsLast
}

// Spans returns, per key, the time each group of edgegate's session windows covers: windows
// that overlap or touch joined. A session Prism fires lies inside one span unless Prism put
// together readings that edgegate keeps in separate sessions. Times are edgegate's strings,
// which order as the times they write.
func Spans(edge []wire.Pane) map[string][][2]string {
	byKey := map[string][][2]string{}
	for _, p := range edge {
		byKey[p.Key] = append(byKey[p.Key], [2]string{p.Start, p.End})
	}
	for k, ws := range byKey {
		slices.SortFunc(ws, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
		var out [][2]string
		for _, w := range ws {
			if n := len(out); n > 0 && w[0] <= out[n-1][1] {
				out[n-1][1] = max(out[n-1][1], w[1])
				continue
			}
			out = append(out, w)
		}
		byKey[k] = out
	}
	return byKey
}

package conformance

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Tolerance is the relative difference allowed between two aggregates: Beam merges
// partial aggregates in its own order, edgegate adds in arrival order.
const Tolerance = 1e-9

// WindowID names a window of a key.
type WindowID struct{ Key, Start, End string }

func (w WindowID) String() string { return fmt.Sprintf("%s [%s, %s)", w.Key, w.Start, w.End) }

// Diff is one pane that differs: present on one side only, or with different fields.
type Diff struct {
	Window WindowID
	Index  int64
	Edge   *wire.Pane // nil: Beam only
	Beam   *BeamPane  // nil: edgegate only
	Fields []string   // the fields that differ, when both are present
}

func (d Diff) String() string {
	switch {
	case d.Beam == nil:
		return fmt.Sprintf("%s pane %d: edgegate only: %s", d.Window, d.Index, paneString(d.Edge))
	case d.Edge == nil:
		return fmt.Sprintf("%s pane %d: Beam only: %s (first %v, last %v)", d.Window, d.Index, paneString(&d.Beam.Pane), d.Beam.IsFirst, d.Beam.IsLast)
	}
	return fmt.Sprintf("%s pane %d: %s differ: edgegate %s, Beam %s", d.Window, d.Index, strings.Join(d.Fields, ", "), paneString(d.Edge), paneString(&d.Beam.Pane))
}

func paneString(p *wire.Pane) string {
	s := fmt.Sprintf("%s count %d", p.Pane.Timing, p.Count)
	for _, f := range aggFields {
		if v := f.get(p); v != nil {
			s += fmt.Sprintf(" %s %v", f.name, *v)
		}
	}
	return s
}

var aggFields = []struct {
	name string
	get  func(*wire.Pane) *float64
}{
	{"sum", func(p *wire.Pane) *float64 { return p.Sum }},
	{"min", func(p *wire.Pane) *float64 { return p.Min }},
	{"max", func(p *wire.Pane) *float64 { return p.Max }},
	{"mean", func(p *wire.Pane) *float64 { return p.Mean }},
	{"first", func(p *wire.Pane) *float64 { return p.First }},
	{"last", func(p *wire.Pane) *float64 { return p.Last }},
	{"stddev", func(p *wire.Pane) *float64 { return p.Stddev }},
}

// Close reports whether a and b agree to Tolerance, relative to the larger magnitude.
func Close(a, b float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= Tolerance*math.Max(math.Abs(a), math.Abs(b))
}

// SameContent lists the fields in which two panes differ, bounds and index aside.
func SameContent(a, b *wire.Pane) []string {
	var diff []string
	if a.Pane.Timing != b.Pane.Timing {
		diff = append(diff, "timing")
	}
	if a.Count != b.Count {
		diff = append(diff, "count")
	}
	for _, f := range aggFields {
		x, y := f.get(a), f.get(b)
		switch {
		case x == nil && y == nil:
		case x == nil || y == nil || !Close(*x, *y):
			diff = append(diff, f.name)
		}
	}
	return diff
}

type paneKey struct {
	WindowID
	Index int64
}

// Compare matches panes by key, window and index and returns every difference, in order of
// key, window and index. Emission order is not compared: it is the runner's business.
func Compare(edge []wire.Pane, beam []BeamPane) []Diff {
	es := map[paneKey]*wire.Pane{}
	bs := map[paneKey]*BeamPane{}
	var diffs []Diff
	for i := range edge {
		p := &edge[i]
		k := paneKey{WindowID{p.Key, p.Start, p.End}, p.Pane.Index}
		if es[k] != nil {
			diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Edge: p, Fields: []string{"edgegate fired this pane twice"}})
		}
		es[k] = p
		if want := wire.PaneID(p.Pipeline, p.Key, mustTime(p.Start), mustTime(p.End), p.Pane.Index); p.ID != want {
			diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Edge: p, Fields: []string{"id " + p.ID + ", want " + want}})
		}
	}
	for i := range beam {
		p := &beam[i]
		k := paneKey{WindowID{p.Key, p.Start, p.End}, p.Pane.Pane.Index}
		if bs[k] != nil {
			diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Beam: p, Fields: []string{"Beam fired this pane twice"}})
		}
		bs[k] = p
	}
	for k, e := range es {
		b := bs[k]
		switch {
		case b == nil:
			diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Edge: e})
		default:
			if f := SameContent(e, &b.Pane); len(f) > 0 {
				diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Edge: e, Beam: b, Fields: f})
			}
		}
	}
	for k, b := range bs {
		if es[k] == nil {
			diffs = append(diffs, Diff{Window: k.WindowID, Index: k.Index, Beam: b})
		}
	}
	slices.SortFunc(diffs, func(a, b Diff) int {
		return cmp.Or(cmp.Compare(a.Window.Key, b.Window.Key), cmp.Compare(a.Window.Start, b.Window.Start),
			cmp.Compare(a.Window.End, b.Window.End), cmp.Compare(a.Index, b.Index))
	})
	return diffs
}

func mustTime(s string) int64 {
	ms, err := wire.ParseTime(s)
	if err != nil {
		return math.MinInt64
	}
	return ms
}

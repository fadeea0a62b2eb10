// Package conformance holds edgegate's windowing against Apache Beam: for a pipeline spec
// and records in arrival order, it builds the Beam pipeline that means the same thing
// (a TestStream that moves the watermark as SPEC §4 moves W, the same windows, trigger,
// allowed lateness and accumulation, a combiner of every aggregate) and reads back the
// panes it fires, with their PaneInfo, in edgegate's pane form.
package conformance

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/teststream"

	"github.com/edgegate/edgegate/cloud/beam/agg"
	"github.com/edgegate/edgegate/cloud/beam/winspec"
	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Reading is one record of a case: its series, event time (Unix ms) and value.
type Reading struct {
	Series string
	TS     int64
	Value  float64
}

// Watermarks returns W after each reading as SPEC §4 moves it: max(ts seen) − out_of_order,
// never decreasing; math.MinInt64 before any.
func Watermarks(rs []Reading, outOfOrderMS int64) []int64 {
	w, maxTS := int64(math.MinInt64), int64(math.MinInt64)
	out := make([]int64, len(rs))
	for i, r := range rs {
		if r.TS > maxTS {
			maxTS = r.TS
			w = max(w, maxTS-outOfOrderMS)
		}
		out[i] = w
	}
	return out
}

// Variant is a way of writing the same pipeline. Under the Beam model every variant fires
// the same panes; a runner that differs between them has a bug the suite reports.
type Variant struct {
	// Late is how the trigger asks for a pane per late element.
	Late winspec.Late
	// Combine aggregates with beam.CombinePerKey (the CombineFn agg.StatsFn) instead of a
	// GroupByKey and a DoFn that folds the same accumulator. In Beam 2.78.0 the Go SDK's
	// combine drops the PaneInfo of what it combines (see TestGapCombinePaneInfo), so
	// comparisons use the GroupByKey form.
	Combine bool
	// Restamp moves every windowed element's timestamp to its window's last instant before
	// it is grouped. Windows are already assigned and the grouping's output timestamp is
	// the end of the window, so under the model nothing changes; Prism 2.78.0 however holds
	// an aggregation's watermarks at the oldest element it buffers, and restamping takes
	// that hold away for open windows (see GapHeldWatermark). Not to the end of time: Prism
	// then collects a window's state while its elements still wait, and panics.
	Restamp bool
}

func (v Variant) String() string {
	s := []string{"AfterCount(1)", "Always"}[v.Late]
	if v.Combine {
		s += "+CombinePerKey"
	} else {
		s += "+GroupByKey"
	}
	if v.Restamp {
		s += "+restamped"
	}
	return s
}

// Build returns the Beam pipeline of spec over rs in variant v, named name (the panes'
// pipeline), that appends each pane it fires to the JSON Lines file out.
func Build(name string, spec winspec.Spec, rs []Reading, v Variant, out string) (*beam.Pipeline, error) {
	p, s := beam.NewPipelineWithRoot()
	ts := teststream.NewConfig()
	wm := Watermarks(rs, spec.OutOfOrder.Milliseconds())
	prev := int64(math.MinInt64)
	for i, r := range rs {
		// The arrival rank travels with the element: first and last break event-time ties
		// by arrival, and Beam keeps no arrival order.
		line := strconv.Itoa(i) + "\x00" + r.Series + "\x00" + strconv.FormatFloat(r.Value, 'g', -1, 64)
		if err := ts.AddElements(r.TS, line); err != nil {
			return nil, fmt.Errorf("test stream: add record %d: %w", i, err)
		}
		if wm[i] > prev {
			if err := ts.AdvanceWatermark(wm[i]); err != nil {
				return nil, fmt.Errorf("test stream: watermark after record %d: %w", i, err)
			}
			prev = wm[i]
		}
	}
	if err := ts.AdvanceWatermarkToInfinity(); err != nil {
		return nil, fmt.Errorf("test stream: watermark to +inf: %w", err)
	}
	col := teststream.Create(s, ts)
	kv := beam.ParDo(s, parseReading, col)
	win := spec.WindowInto(s, kv, v.Late)
	if v.Restamp {
		win = beam.ParDo(s, restamp, win)
	}
	w := &writePaneFn{Path: out, Pipeline: name, Aggregates: spec.Aggregates}
	if v.Combine {
		beam.ParDo0(s, &writeAccFn{W: w}, beam.CombinePerKey(s, &agg.StatsFn{}, win))
	} else {
		beam.ParDo0(s, w, beam.GroupByKey(s, win))
	}
	return p, nil
}

// parseReading reads a test stream element back: key, and the reading at its event time.
func parseReading(et beam.EventTime, line string) (string, agg.Reading, error) {
	f := strings.SplitN(line, "\x00", 3)
	if len(f) != 3 {
		return "", agg.Reading{}, fmt.Errorf("bad test element %q", line)
	}
	arr, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return "", agg.Reading{}, fmt.Errorf("bad arrival in %q: %w", line, err)
	}
	v, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return "", agg.Reading{}, fmt.Errorf("bad value in %q: %w", line, err)
	}
	return f[1], agg.Reading{TS: et.Milliseconds(), Arrival: arr, Value: v}, nil
}

// BeamPane is a pane as Beam fired it: edgegate's pane form, plus the PaneInfo fields
// edgegate has no counterpart for.
type BeamPane struct {
	wire.Pane
	IsFirst             bool  `json:"is_first"`
	IsLast              bool  `json:"is_last"`
	NonSpeculativeIndex int64 `json:"non_speculative_index"`
	// Acc is the pane's whole accumulator, first and last with their timestamps, so
	// panes can be merged exactly (see Accumulate).
	Acc agg.Acc `json:"acc"`
}

// Accumulate turns the panes of a discarding pipeline into the panes the same pipeline
// fires in accumulating mode: under the model the two modes fire the same panes (the same
// windows, indexes and timings), and an accumulating pane carries everything its window's
// discarding panes carried up to it. Emission order is kept.
func Accumulate(ps []BeamPane, aggs []string) []BeamPane {
	type win struct{ key, start, end string }
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ps[a].Pane.Pane.Index, ps[b].Pane.Pane.Index) })
	running := map[win]agg.Acc{}
	out := slices.Clone(ps)
	for _, i := range order {
		p := ps[i]
		w := win{p.Key, p.Start, p.End}
		a := running[w]
		a.Merge(p.Acc)
		running[w] = a
		start, _ := wire.ParseTime(p.Start)
		end, _ := wire.ParseTime(p.End)
		out[i].Pane = a.Pane(p.Pipeline, p.Key, start, end, p.Pane.Pane.Index, p.Pane.Pane.Timing, aggs)
		out[i].Acc = a
	}
	return out
}

// fileMu serialises appends from the bundles Prism runs at once (loopback: one process).
var fileMu sync.Mutex

// writePaneFn appends each pane to a JSON Lines file.
type writePaneFn struct {
	Path       string
	Pipeline   string
	Aggregates []string
}

// restamp moves an element to the last instant of its window.
func restamp(w beam.Window, key string, r agg.Reading) (beam.EventTime, string, agg.Reading) {
	return w.MaxTimestamp(), key, r
}

// ProcessElement folds a pane's readings with the combiner's accumulator, in the order
// the runner gives them (Add breaks ties by arrival rank, not by order).
func (f *writePaneFn) ProcessElement(pn beam.PaneInfo, w beam.Window, key string, values func(*agg.Reading) bool) error {
	var a agg.Acc
	var r agg.Reading
	for values(&r) {
		a.Add(r)
	}
	return f.write(pn, w, key, a)
}

func (f *writePaneFn) write(pn beam.PaneInfo, w beam.Window, key string, a agg.Acc) error {
	iw, ok := w.(window.IntervalWindow)
	if !ok {
		return fmt.Errorf("pane of %q: window %v is not an interval", key, w)
	}
	bp := BeamPane{
		Pane:                a.Pane(f.Pipeline, key, iw.Start.Milliseconds(), iw.End.Milliseconds(), pn.Index, agg.Timing(pn.Timing), f.Aggregates),
		IsFirst:             pn.IsFirst,
		IsLast:              pn.IsLast,
		NonSpeculativeIndex: pn.NonSpeculativeIndex,
		Acc:                 a,
	}
	b, err := json.Marshal(bp)
	if err != nil {
		return fmt.Errorf("pane of %q: %w", key, err)
	}
	fileMu.Lock()
	defer fileMu.Unlock()
	fh, err := os.OpenFile(f.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pane of %q: %w", key, err)
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return fmt.Errorf("pane of %q: write %s: %w", key, f.Path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("pane of %q: close %s: %w", key, f.Path, err)
	}
	return nil
}

// writeAccFn writes what beam.CombinePerKey outputs.
type writeAccFn struct{ W *writePaneFn }

func (f *writeAccFn) ProcessElement(pn beam.PaneInfo, w beam.Window, key string, a agg.Acc) error {
	return f.W.write(pn, w, key, a)
}

// Run executes p on runner (prism: in-process) and returns the panes it wrote to out.
func Run(ctx context.Context, runner string, p *beam.Pipeline, out string) ([]BeamPane, error) {
	if _, err := beam.Run(ctx, runner, p); err != nil {
		return nil, err
	}
	return ReadBeamPanes(out)
}

// ReadBeamPanes reads the panes a pipeline wrote; a missing file means none.
func ReadBeamPanes(path string) ([]BeamPane, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ps []BeamPane
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var p BeamPane
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		ps = append(ps, p)
	}
	return ps, sc.Err()
}

func init() {
	register.Function2x3(parseReading)
	register.Function3x3(restamp)
	register.DoFn4x1[beam.PaneInfo, beam.Window, string, func(*agg.Reading) bool, error](&writePaneFn{})
	register.DoFn4x1[beam.PaneInfo, beam.Window, string, agg.Acc, error](&writeAccFn{})
	register.Iter1[agg.Reading]()
}

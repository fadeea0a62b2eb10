// Package winspec reads a pipeline's windowing in the daemon's config language (the
// `window:` block and its neighbours: aggregates, out_of_order, allowed_lateness,
// accumulation) and turns it into Beam's WindowInto. It parses the YAML itself rather than
// import the daemon's config package; its tests hold it against `edgegate validate`.
package winspec

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window/trigger"
	"go.yaml.in/yaml/v3"
)

// Window kinds, as window.type spells them.
const (
	Tumbling = "tumbling"
	Sliding  = "sliding"
	Session  = "session"
)

// MaxWindowsPerRecord bounds size/every of a sliding window, as the daemon does.
const MaxWindowsPerRecord = 1000

// Aggregates are the names a pipeline may ask for; count is always carried.
var Aggregates = []string{"count", "sum", "min", "max", "mean", "first", "last", "stddev"}

// Window is a window spec: tumbling (size), sliding (size, every) or session (gap).
type Window struct {
	Type  string
	Size  time.Duration
	Every time.Duration
	Gap   time.Duration
}

// Spec is what decides a pipeline's panes.
type Spec struct {
	Window          Window
	Aggregates      []string
	OutOfOrder      time.Duration
	AllowedLateness time.Duration
	Discarding      bool
}

// Default is a spec with the daemon's defaults: tumbling, [count mean min max],
// out_of_order 10s, no allowed lateness, accumulating. Size has no default.
func Default() Spec {
	return Spec{
		Window:     Window{Type: Tumbling},
		Aggregates: []string{"count", "mean", "min", "max"},
		OutOfOrder: 10 * time.Second,
	}
}

// keys are the keys Parse reads; others are errors, as in the daemon's config.
var (
	specKeys   = []string{"window", "aggregates", "out_of_order", "allowed_lateness", "accumulation"}
	windowKeys = []string{"type", "size", "every", "gap"}
)

// Parse reads a spec from a YAML mapping with the keys of a daemon pipeline's windowing,
// e.g. `{window: {type: sliding, size: 5m, every: 1m}, aggregates: [count, mean]}`.
// Absent keys keep their defaults (see Default). Every problem is reported, each as
// LINE:COL: message.
func Parse(data []byte) (Spec, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return Spec{}, fmt.Errorf("window spec: %w", err)
	}
	if len(doc.Content) == 0 {
		return Spec{}, errors.New("window spec: empty")
	}
	return FromNode(doc.Content[0])
}

// FromNode reads a spec from a YAML mapping node (see Parse).
func FromNode(n *yaml.Node) (Spec, error) {
	s := Default()
	p := &problems{}
	if n.Kind != yaml.MappingNode {
		p.at(n, "window spec: expected a mapping")
		return s, p.err()
	}
	setWindow := map[string]*yaml.Node{}
	winNode, winOK := n, true // where a missing length is reported: the window, else the spec
	forEach(n, p, specKeys, "", func(k string, v *yaml.Node) {
		switch k {
		case "window":
			if v.Kind != yaml.MappingNode {
				p.at(v, "window: expected a mapping such as {type: tumbling, size: 1m}")
				winOK = false
				return
			}
			winNode = v
			forEach(v, p, windowKeys, "window.", func(k string, w *yaml.Node) {
				setWindow[k] = w
				switch k {
				case "type":
					s.Window.Type = scalar(w, p, "window.type")
				case "size":
					s.Window.Size = duration(w, p, "window.size")
				case "every":
					s.Window.Every = duration(w, p, "window.every")
				case "gap":
					s.Window.Gap = duration(w, p, "window.gap")
				}
			})
		case "aggregates":
			if v.Kind != yaml.SequenceNode {
				p.at(v, "aggregates: expected a list such as [count, mean]")
				return
			}
			s.Aggregates = nil
			for i, a := range v.Content {
				name := scalar(a, p, fmt.Sprintf("aggregates[%d]", i))
				switch {
				case name == "":
				case !slices.Contains(Aggregates, name):
					p.at(a, "aggregates[%d] %q: unknown aggregate (known: %s)", i, name, strings.Join(Aggregates, ", "))
				case slices.Contains(s.Aggregates, name):
					p.at(a, "aggregates[%d] %q is listed twice", i, name)
				}
				s.Aggregates = append(s.Aggregates, name)
			}
		case "out_of_order":
			s.OutOfOrder = duration(v, p, k)
			msOnly(v, p, k, s.OutOfOrder)
		case "allowed_lateness":
			s.AllowedLateness = duration(v, p, k)
			msOnly(v, p, k, s.AllowedLateness)
		case "accumulation":
			switch a := scalar(v, p, k); a {
			case "accumulating":
				s.Discarding = false
			case "discarding":
				s.Discarding = true
			default:
				p.at(v, "accumulation %q: expected accumulating or discarding", a)
			}
		}
	})
	if winOK {
		s.Window.check(winNode, setWindow, p)
	}
	return s, p.err()
}

// check reports a window without the lengths its type needs, or with lengths it does not
// use, the way the daemon's validate does: at the key when it is there, else at the window
// mapping (at the spec when there is no window block).
func (w *Window) check(win *yaml.Node, set map[string]*yaml.Node, p *problems) {
	where := func(k string) *yaml.Node {
		if n, ok := set[k]; ok {
			return n
		}
		return win
	}
	unused := func(keys ...string) {
		for _, k := range keys {
			if n, ok := set[k]; ok {
				p.at(n, "window.%s: not used by a %s window", k, w.Type)
			}
		}
	}
	for _, k := range []string{"size", "every", "gap"} {
		if n, ok := set[k]; ok {
			msOnly(n, p, "window."+k, map[string]time.Duration{"size": w.Size, "every": w.Every, "gap": w.Gap}[k])
		}
	}
	switch w.Type {
	case Tumbling:
		if w.Size <= 0 {
			p.at(where("size"), "window: a tumbling window needs a size > 0, e.g. {type: tumbling, size: 1m}")
		}
		unused("every", "gap")
	case Sliding:
		switch {
		case w.Size <= 0:
			p.at(where("size"), "window: a sliding window needs a size > 0, e.g. {type: sliding, size: 5m, every: 1m}")
		case w.Every <= 0:
			p.at(where("every"), "window: a sliding window needs every > 0, e.g. {type: sliding, size: 5m, every: 1m}")
		case w.Size%w.Every != 0:
			p.at(where("size"), "window.size %s must be a multiple of every %s", w.Size, w.Every)
		case w.Size/w.Every > MaxWindowsPerRecord:
			p.at(where("every"), "window: size/every = %d windows per record; at most %d", w.Size/w.Every, MaxWindowsPerRecord)
		}
		unused("gap")
	case Session:
		if w.Gap <= 0 {
			p.at(where("gap"), "window: a session window needs a gap > 0, e.g. {type: session, gap: 5m}")
		}
		unused("size", "every")
	default:
		p.at(where("type"), "window.type %q: expected tumbling, sliding or session", w.Type)
	}
}

// Fn is the Beam window function of w.
func (w Window) Fn() *window.Fn {
	switch w.Type {
	case Sliding:
		return window.NewSlidingWindows(w.Every, w.Size)
	case Session:
		return window.NewSessions(w.Gap)
	default:
		return window.NewFixedWindows(w.Size)
	}
}

// Late is how Beam fires a window after its end: once for every late element.
type Late int

// The formulations of "a pane for every late element". Prism accepts them differently
// (see the conformance suite's gaps).
const (
	// LateEveryCount is Repeatedly(AfterCount(1)), the spelling of the Beam model.
	LateEveryCount Late = iota
	// LateAlways is the model's Always trigger, stateless, the same firings.
	LateAlways
)

// Trigger is the trigger of an edgegate pipeline: ON_TIME when the watermark passes the
// end of the window, then a LATE pane for every late element.
func Trigger(late Late) trigger.Trigger {
	t := trigger.AfterEndOfWindow()
	if late == LateAlways {
		return t.LateFiring(trigger.Always())
	}
	return t.LateFiring(trigger.Repeat(trigger.AfterCount(1)))
}

// WindowInto windows col as the spec says: window fn, trigger, allowed lateness and
// accumulation mode.
func (s Spec) WindowInto(sc beam.Scope, col beam.PCollection, late Late) beam.PCollection {
	mode := beam.PanesAccumulate()
	if s.Discarding {
		mode = beam.PanesDiscard()
	}
	return beam.WindowInto(sc, s.Window.Fn(), col,
		beam.Trigger(Trigger(late)), beam.AllowedLateness(s.AllowedLateness), mode)
}

// Has reports whether the spec asks for aggregate name (count always).
func (s Spec) Has(name string) bool {
	return name == "count" || slices.Contains(s.Aggregates, name)
}

// YAML writes the spec in the daemon's config language: the keys of a pipeline that
// Parse reads.
func (s Spec) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "window: {type: %s", s.Window.Type)
	switch s.Window.Type {
	case Sliding:
		fmt.Fprintf(&b, ", size: %s, every: %s", s.Window.Size, s.Window.Every)
	case Session:
		fmt.Fprintf(&b, ", gap: %s", s.Window.Gap)
	default:
		fmt.Fprintf(&b, ", size: %s", s.Window.Size)
	}
	acc := "accumulating"
	if s.Discarding {
		acc = "discarding"
	}
	fmt.Fprintf(&b, "}\naggregates: [%s]\nout_of_order: %s\nallowed_lateness: %s\naccumulation: %s\n",
		strings.Join(s.Aggregates, ", "), s.OutOfOrder, s.AllowedLateness, acc)
	return b.String()
}

// problems collects every error with its position.
type problems struct{ errs []error }

func (p *problems) at(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%d:%d: %s", n.Line, n.Column, fmt.Sprintf(format, args...)))
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// forEach calls fn for each key of mapping n, reporting unknown and repeated keys.
func forEach(n *yaml.Node, p *problems, known []string, prefix string, fn func(k string, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !slices.Contains(known, k.Value):
			p.at(k, "%s%s: unknown key (known: %s)", prefix, k.Value, strings.Join(known, ", "))
		case seen[k.Value]:
			p.at(k, "%s%s: key repeated", prefix, k.Value)
		default:
			seen[k.Value] = true
			fn(k.Value, v)
		}
	}
}

func scalar(n *yaml.Node, p *problems, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.at(n, "%s: expected a single value", what)
		return ""
	}
	return n.Value
}

// duration reads a Go duration (10s, 1m, 24h; a bare 0 is zero), never negative.
func duration(n *yaml.Node, p *problems, what string) time.Duration {
	v := scalar(n, p, what)
	if v == "" {
		return 0
	}
	if v == "0" {
		return 0
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		p.at(n, "%s: expected a duration such as 500ms, 10s, 1m or 24h, found %q", what, v)
	case d < 0:
		p.at(n, "%s: duration %q is negative", what, v)
	}
	return d
}

// msOnly reports an event-time length finer than the millisecond, the precision of
// timestamps and windows.
func msOnly(n *yaml.Node, p *problems, what string, d time.Duration) {
	if d%time.Millisecond != 0 {
		p.at(n, "%s %s: event-time durations are whole milliseconds", what, d)
	}
}

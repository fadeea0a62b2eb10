package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/topic"
)

// Pipeline aggregates routed records with event-time windows (SPEC §4, §7).
type Pipeline struct {
	Name string `yaml:"name"`
	// Input is a topic filter over routed records; default "#" (every routed record).
	Input  string `yaml:"input"`
	Window Window `yaml:"window"`
	// Aggregates lists what each pane carries besides count (always present).
	Aggregates []string `yaml:"aggregates"`
	// OutOfOrder is how far behind the newest event time a record may be and still be on
	// time: the watermark is max(ts) − out_of_order.
	OutOfOrder Duration `yaml:"out_of_order"`
	// Idle is how long the input may be silent (processing time) before the watermark
	// follows the gateway clock; 0 never.
	Idle Duration `yaml:"idle"`
	// AllowedLateness is how long after the watermark passed a window's end late records
	// still update it (LATE panes); later ones are dropped and published on <output>/late.
	AllowedLateness Duration `yaml:"allowed_lateness"`
	// Early is the processing-time period of EARLY panes of open windows; 0 none.
	Early Duration `yaml:"early"`
	// Accumulation is accumulating (each pane carries all data of its window so far) or
	// discarding (only the data since the previous pane of the window).
	Accumulation string `yaml:"accumulation"`
	// Output is the local topic panes are published on; default agg/<name>.
	Output string `yaml:"output"`
	// MaxOpenWindows caps the windows held in state; records that would open more are
	// dropped from aggregation and counted.
	MaxOpenWindows int `yaml:"max_open_windows"`
}

// Window is a pipeline's window: tumbling (size), sliding (size, every) or session (gap).
type Window struct {
	Type  string   `yaml:"type"`
	Size  Duration `yaml:"size"`
	Every Duration `yaml:"every"`
	Gap   Duration `yaml:"gap"`
}

// Aggregates lists the aggregate names a pipeline may ask for, in the order panes carry them.
var Aggregates = []string{"count", "sum", "min", "max", "mean", "first", "last", "stddev"}

// MaxWindowsPerRecord bounds size/every of a sliding window: every record updates that many
// windows, and each is state to keep.
const MaxWindowsPerRecord = 1000

func (p *Pipeline) setDefaults() {
	p.Input = "#"
	p.Window.Type = "tumbling"
	p.Aggregates = []string{"count", "mean", "min", "max"}
	p.OutOfOrder = Duration(10 * time.Second)
	p.Idle = Duration(time.Minute)
	p.Accumulation = "accumulating"
	p.MaxOpenWindows = 100000
}

// OutputTopic is the topic the pipeline's panes are published on.
func (p *Pipeline) OutputTopic() string {
	if p.Output != "" {
		return p.Output
	}
	return "agg/" + p.Name
}

// LateTopic is the topic records too late for the pipeline are published on.
func (p *Pipeline) LateTopic() string { return p.OutputTopic() + "/late" }

func (c *Config) validatePipelines(v *validator) {
	names := map[string]int{}
	topics := map[string]string{} // output and late topics → who publishes there
	for i := range c.Pipelines {
		pl := &c.Pipelines[i]
		p := fmt.Sprintf("pipelines[%d]", i)
		v.uniqueName(p, pl.Name, i, names)
		if err := topic.ValidFilter(pl.Input); err != nil {
			v.at(p+".input", "%s.input: %v", p, err)
		}
		c.validateWindow(v, p+".window", &pl.Window)
		seen := map[string]bool{}
		for j, a := range pl.Aggregates {
			q := fmt.Sprintf("%s.aggregates[%d]", p, j)
			switch {
			case !oneOf(a, Aggregates...):
				v.at(q, "%s %q: unknown aggregate (known: %s)", q, a, strings.Join(Aggregates, ", "))
			case seen[a]:
				v.at(q, "%s %q is listed twice", q, a)
			}
			seen[a] = true
		}
		msOnly(v, p+".out_of_order", pl.OutOfOrder)
		msOnly(v, p+".allowed_lateness", pl.AllowedLateness)
		if !oneOf(pl.Accumulation, "accumulating", "discarding") {
			v.at(p+".accumulation", "%s.accumulation %q: expected accumulating or discarding", p, pl.Accumulation)
		}
		if pl.Early.D() != 0 && pl.Early.D() < 100*time.Millisecond {
			v.at(p+".early", "%s.early %s: at least 100ms (or 0 for no early panes)", p, pl.Early)
		}
		if pl.Idle.D() != 0 && pl.Idle.D() < 100*time.Millisecond {
			v.at(p+".idle", "%s.idle %s: at least 100ms (or 0: the watermark never follows the clock)", p, pl.Idle)
		}
		if pl.MaxOpenWindows < 1 {
			v.at(p+".max_open_windows", "%s.max_open_windows %d: must be at least 1", p, pl.MaxOpenWindows)
		}
		out := pl.OutputTopic()
		key := p + ".output"
		if err := topic.ValidName(out); err != nil {
			v.at(key, "%s: %v", key, err)
			continue
		}
		if out[0] == '$' {
			v.at(key, "%s %q: topics starting with '$' belong to the broker", key, out)
			continue
		}
		for _, t := range []struct{ topic, what string }{{out, "output"}, {pl.LateTopic(), "late topic"}} {
			if other, dup := topics[t.topic]; dup {
				v.at(key, "%s: the %s %q is also the %s", key, t.what, t.topic, other)
			}
			topics[t.topic] = fmt.Sprintf("%s of %s", t.what, p)
			c.checkNotDeviceTopic(v, key, t.what, t.topic)
		}
	}
}

// checkNotDeviceTopic reports a pane topic that routes or sensors also use: local
// subscribers could not tell panes from readings.
func (c *Config) checkNotDeviceTopic(v *validator, key, what, t string) {
	for k, r := range c.Routes {
		if pat, err := topic.ParsePattern(r.Topic); err == nil && topic.Match(pat.Filter(), t) {
			v.at(key, "%s: the %s %q matches routes[%d].topic %q: panes and readings would share a topic", key, what, t, k, r.Topic)
		}
	}
	for k, s := range c.Sensors {
		tm, err := topic.ParseTemplate(s.Topic)
		if err != nil {
			continue
		}
		f := tm.Expand(func(n string) string {
			if n == "name" {
				return s.Name
			}
			return "+"
		})
		if topic.ValidFilter(f) == nil && topic.Match(f, t) {
			v.at(key, "%s: the %s %q is a topic of sensors[%d] %q: panes and readings would share a topic", key, what, t, k, s.Name)
		}
	}
}

func (c *Config) validateWindow(v *validator, p string, w *Window) {
	set := func(k string) bool {
		return c.Has(p+"."+k) || (k == "size" && w.Size != 0) || (k == "every" && w.Every != 0) || (k == "gap" && w.Gap != 0)
	}
	unused := func(kind string, keys ...string) {
		for _, k := range keys {
			if set(k) {
				v.at(p+"."+k, "%s.%s: not used by a %s window", p, k, kind)
			}
		}
	}
	switch w.Type {
	case "tumbling":
		if w.Size <= 0 {
			v.at(p+".size", "%s: a tumbling window needs a size > 0, e.g. {type: tumbling, size: 1m}", p)
		}
		msOnly(v, p+".size", w.Size)
		unused("tumbling", "every", "gap")
	case "sliding":
		switch {
		case w.Size <= 0:
			v.at(p+".size", "%s: a sliding window needs a size > 0, e.g. {type: sliding, size: 5m, every: 1m}", p)
		case w.Every <= 0:
			v.at(p+".every", "%s: a sliding window needs every > 0, e.g. {type: sliding, size: 5m, every: 1m}", p)
		case w.Size%w.Every != 0:
			v.at(p+".size", "%s.size %s must be a multiple of every %s", p, w.Size, w.Every)
		case w.Size/w.Every > MaxWindowsPerRecord:
			v.at(p+".every", "%s: size/every = %d windows per record; at most %d", p, w.Size/w.Every, MaxWindowsPerRecord)
		}
		msOnly(v, p+".size", w.Size)
		msOnly(v, p+".every", w.Every)
		unused("sliding", "gap")
	case "session":
		if w.Gap <= 0 {
			v.at(p+".gap", "%s: a session window needs a gap > 0, e.g. {type: session, gap: 5m}", p)
		}
		msOnly(v, p+".gap", w.Gap)
		unused("session", "size", "every")
	default:
		v.at(p+".type", "%s.type %q: expected tumbling, sliding or session", p, w.Type)
	}
}

// msOnly reports an event-time duration finer than the millisecond, the precision of
// timestamps and windows.
func msOnly(v *validator, path string, d Duration) {
	if d.D()%time.Millisecond != 0 {
		v.at(path, "%s %s: event-time durations are whole milliseconds", path, d)
	}
}

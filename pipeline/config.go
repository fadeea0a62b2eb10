package pipeline

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// Config is one entry of the config's pipelines list: it aggregates routed records with
// event-time windows (SPEC §4, §7).
type Config struct {
	Name string `yaml:"name"`
	// Input is a topic filter over routed records; default "#" (every routed record).
	Input  string `yaml:"input"`
	Window Window `yaml:"window"`
	// Aggregates lists what each pane carries besides count (always present).
	Aggregates []string `yaml:"aggregates"`
	// OutOfOrder is how far behind the newest event time a record may be and still be on
	// time: the watermark is max(ts) − out_of_order.
	OutOfOrder conf.Duration `yaml:"out_of_order"`
	// Idle is how long the input may be silent (processing time) before the watermark
	// follows the gateway clock; 0 never.
	Idle conf.Duration `yaml:"idle"`
	// AllowedLateness is how long after the watermark passed a window's end late records
	// still update it (LATE panes); later ones are dropped and published on <output>/late.
	AllowedLateness conf.Duration `yaml:"allowed_lateness"`
	// Early is the processing-time period of EARLY panes of open windows; 0 none.
	Early conf.Duration `yaml:"early"`
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
	Type  string        `yaml:"type"`
	Size  conf.Duration `yaml:"size"`
	Every conf.Duration `yaml:"every"`
	Gap   conf.Duration `yaml:"gap"`
}

// Aggregates lists the aggregate names a pipeline may ask for, in the order panes carry them.
var Aggregates = []string{"count", "sum", "min", "max", "mean", "first", "last", "stddev"}

// MaxWindowsPerRecord bounds size/every of a sliding window: every record updates that many
// windows, and each is state to keep.
const MaxWindowsPerRecord = 1000

// SetDefaults implements conf.Defaulter.
func (p *Config) SetDefaults() {
	p.Input = "#"
	p.Window.Type = "tumbling"
	p.Aggregates = []string{"count", "mean", "min", "max"}
	p.OutOfOrder = conf.Duration(10 * time.Second)
	p.Idle = conf.Duration(time.Minute)
	p.Accumulation = "accumulating"
	p.MaxOpenWindows = 100000
}

// OutputTopic is the topic the pipeline's panes are published on.
func (p *Config) OutputTopic() string {
	if p.Output != "" {
		return p.Output
	}
	return "agg/" + p.Name
}

// LateTopic is the topic records too late for the pipeline are published on.
func (p *Config) LateTopic() string { return p.OutputTopic() + "/late" }

// Validate checks the pipeline, each problem with its position, and reports whether its
// output topic is usable (the caller then checks it against the other sections). The
// uniqueness of names and topics is the caller's (it sees the whole config).
func (p *Config) Validate(r *conf.Reporter) (outputOK bool) {
	path := r.Path("")
	if err := topic.ValidFilter(p.Input); err != nil {
		r.Errorf("input", "%s.input: %v", path, err)
	}
	p.Window.validate(r.At("window"))
	seen := map[string]bool{}
	for j, a := range p.Aggregates {
		key := fmt.Sprintf("aggregates[%d]", j)
		q := r.Path(key)
		switch {
		case !slices.Contains(Aggregates, a):
			r.Errorf(key, "%s %q: unknown aggregate (known: %s)", q, a, strings.Join(Aggregates, ", "))
		case seen[a]:
			r.Errorf(key, "%s %q is listed twice", q, a)
		}
		seen[a] = true
	}
	msOnly(r, "out_of_order", p.OutOfOrder)
	msOnly(r, "allowed_lateness", p.AllowedLateness)
	if p.Accumulation != "accumulating" && p.Accumulation != "discarding" {
		r.Errorf("accumulation", "%s.accumulation %q: expected accumulating or discarding", path, p.Accumulation)
	}
	if p.Early.D() != 0 && p.Early.D() < 100*time.Millisecond {
		r.Errorf("early", "%s.early %s: at least 100ms (or 0 for no early panes)", path, p.Early)
	}
	if p.Idle.D() != 0 && p.Idle.D() < 100*time.Millisecond {
		r.Errorf("idle", "%s.idle %s: at least 100ms (or 0: the watermark never follows the clock)", path, p.Idle)
	}
	if p.MaxOpenWindows < 1 {
		r.Errorf("max_open_windows", "%s.max_open_windows %d: must be at least 1", path, p.MaxOpenWindows)
	}
	out := p.OutputTopic()
	key := r.Path("output")
	if err := topic.ValidName(out); err != nil {
		r.Errorf("output", "%s: %v", key, err)
		return false
	}
	if out[0] == '$' {
		r.Errorf("output", "%s %q: topics starting with '$' belong to the broker", key, out)
		return false
	}
	return true
}

func (w *Window) validate(r *conf.Reporter) {
	p := r.Path("")
	set := func(k string) bool {
		return r.Has(k) || (k == "size" && w.Size != 0) || (k == "every" && w.Every != 0) || (k == "gap" && w.Gap != 0)
	}
	unused := func(kind string, keys ...string) {
		for _, k := range keys {
			if set(k) {
				r.Errorf(k, "%s.%s: not used by a %s window", p, k, kind)
			}
		}
	}
	switch w.Type {
	case "tumbling":
		if w.Size <= 0 {
			r.Errorf("size", "%s: a tumbling window needs a size > 0, e.g. {type: tumbling, size: 1m}", p)
		}
		msOnly(r, "size", w.Size)
		unused("tumbling", "every", "gap")
	case "sliding":
		switch {
		case w.Size <= 0:
			r.Errorf("size", "%s: a sliding window needs a size > 0, e.g. {type: sliding, size: 5m, every: 1m}", p)
		case w.Every <= 0:
			r.Errorf("every", "%s: a sliding window needs every > 0, e.g. {type: sliding, size: 5m, every: 1m}", p)
		case w.Size%w.Every != 0:
			r.Errorf("size", "%s.size %s must be a multiple of every %s", p, w.Size, w.Every)
		case w.Size/w.Every > MaxWindowsPerRecord:
			r.Errorf("every", "%s: size/every = %d windows per record; at most %d", p, w.Size/w.Every, MaxWindowsPerRecord)
		}
		msOnly(r, "size", w.Size)
		msOnly(r, "every", w.Every)
		unused("sliding", "gap")
	case "session":
		if w.Gap <= 0 {
			r.Errorf("gap", "%s: a session window needs a gap > 0, e.g. {type: session, gap: 5m}", p)
		}
		msOnly(r, "gap", w.Gap)
		unused("session", "size", "every")
	default:
		r.Errorf("type", "%s.type %q: expected tumbling, sliding or session", p, w.Type)
	}
}

// msOnly reports an event-time duration finer than the millisecond, the precision of
// timestamps and windows.
func msOnly(r *conf.Reporter, key string, d conf.Duration) {
	if d.D()%time.Millisecond != 0 {
		r.Errorf(key, "%s %s: event-time durations are whole milliseconds", r.Path(key), d)
	}
}

package ops

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Type is a Prometheus metric type.
type Type string

// The metric types edgegate exposes. Histograms and summaries are left out on purpose: every
// figure here is a count or a level read at scrape time.
const (
	Counter Type = "counter"
	Gauge   Type = "gauge"
)

// Desc describes one metric family: its name, type, help text and label names. The README
// metrics table is checked against the descriptions a binary registers.
type Desc struct {
	Name   string
	Type   Type
	Help   string
	Labels []string
}

// Collector reads a component's figures into w at scrape time. It must be quick and must not
// block on I/O that can hang (a scrape runs on the HTTP handler's goroutine).
type Collector func(w *Writer)

// Registry holds the families a process exposes and the collectors that fill them. Describe
// and Register are for set-up; Write is safe for concurrent use.
type Registry struct {
	mu         sync.Mutex // guards descs and collectors
	descs      map[string]Desc
	collectors []Collector
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{descs: map[string]Desc{}} }

// Describe declares families. A family declared twice with a different shape panics: that is
// a programming error the tests catch.
func (r *Registry) Describe(ds ...Desc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		if old, ok := r.descs[d.Name]; ok {
			if old.Type != d.Type || strings.Join(old.Labels, ",") != strings.Join(d.Labels, ",") {
				panic(fmt.Sprintf("metric %s described twice with different shapes", d.Name))
			}
			continue
		}
		if !validName(d.Name) {
			panic(fmt.Sprintf("metric %q: invalid name", d.Name))
		}
		r.descs[d.Name] = d
	}
}

// Register adds a collector.
func (r *Registry) Register(c Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, c)
}

// Descs returns the declared families sorted by name.
func (r *Registry) Descs() []Desc {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Desc, 0, len(r.descs))
	for _, d := range r.descs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Write runs every collector and writes the result in the Prometheus text exposition
// format (version 0.0.4), families sorted by name. Samples for undeclared families, or with
// the wrong number of labels, are reported in the returned error and left out.
func (r *Registry) Write(out io.Writer) error {
	r.mu.Lock()
	descs := r.descs
	cs := append([]Collector(nil), r.collectors...)
	r.mu.Unlock()
	w := &Writer{descs: descs, samples: map[string][]sample{}}
	for _, c := range cs {
		c(w)
	}
	names := make([]string, 0, len(w.samples))
	for n := range w.samples {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriter(out)
	for _, n := range names {
		d := descs[n]
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", n, escapeHelp(d.Help), n, d.Type)
		ss := w.samples[n]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].labels < ss[j].labels })
		for _, s := range ss {
			bw.WriteString(n)
			bw.WriteString(s.labels)
			bw.WriteByte(' ')
			bw.WriteString(formatValue(s.value))
			bw.WriteByte('\n')
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if len(w.errs) > 0 {
		return fmt.Errorf("metrics: %s", strings.Join(w.errs, "; "))
	}
	return nil
}

// Writer receives the samples of one scrape.
type Writer struct {
	descs   map[string]Desc
	samples map[string][]sample
	errs    []string
}

type sample struct {
	labels string // rendered {a="x",b="y"}, or ""
	value  float64
}

// Add records one sample of the named family; labelValues follow the family's label names.
func (w *Writer) Add(name string, v float64, labelValues ...string) {
	d, ok := w.descs[name]
	if !ok {
		w.errs = append(w.errs, "undeclared family "+name)
		return
	}
	if len(labelValues) != len(d.Labels) {
		w.errs = append(w.errs, fmt.Sprintf("%s: %d label values for %d labels", name, len(labelValues), len(d.Labels)))
		return
	}
	var b strings.Builder
	if len(d.Labels) > 0 {
		b.WriteByte('{')
		for i, l := range d.Labels {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l)
			b.WriteString(`="`)
			b.WriteString(escapeLabel(labelValues[i]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	w.samples[name] = append(w.samples[name], sample{labels: b.String(), value: v})
}

// AddUint is Add for the counters components keep as uint64.
func (w *Writer) AddUint(name string, v uint64, labelValues ...string) {
	w.Add(name, float64(v), labelValues...)
}

// AddBool adds 1 for true and 0 for false.
func (w *Writer) AddBool(name string, v bool, labelValues ...string) {
	f := 0.0
	if v {
		f = 1
	}
	w.Add(name, f, labelValues...)
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

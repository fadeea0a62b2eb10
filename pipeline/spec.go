package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Kind is the shape of a pipeline's windows.
type Kind uint8

// Window kinds (SPEC §4).
const (
	Tumbling Kind = iota + 1
	Sliding
	Session
)

// kindNames are the kinds' names in the config (window.type).
var kindNames = [...]string{Tumbling: "tumbling", Sliding: "sliding", Session: "session"}

func (k Kind) String() string {
	if k >= Tumbling && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Aggs is a set of aggregates; count is always carried.
type Aggs uint16

// The aggregates a pane can carry, in the order they appear in its JSON.
const (
	AggSum Aggs = 1 << iota
	AggMin
	AggMax
	AggMean
	AggFirst
	AggLast
	AggStddev
)

// aggNames names each aggregate and reads its value from a window's running state.
var aggNames = []struct {
	name  string
	agg   Aggs
	value func(*aggState) float64
}{
	{"sum", AggSum, func(a *aggState) float64 { return a.sum }},
	{"min", AggMin, func(a *aggState) float64 { return a.min }},
	{"max", AggMax, func(a *aggState) float64 { return a.max }},
	{"mean", AggMean, (*aggState).meanValue},
	{"first", AggFirst, func(a *aggState) float64 { return a.first }},
	{"last", AggLast, func(a *aggState) float64 { return a.last }},
	{"stddev", AggStddev, (*aggState).stddev},
}

// ParseAggs turns aggregate names into a set; "count" is accepted and implied.
func ParseAggs(names []string) (Aggs, error) {
	var a Aggs
outer:
	for _, n := range names {
		if n == "count" {
			continue
		}
		for _, an := range aggNames {
			if an.name == n {
				a |= an.agg
				continue outer
			}
		}
		return 0, fmt.Errorf("unknown aggregate %q", n)
	}
	return a, nil
}

// Spec is what the core needs of a pipeline's config. Event-time lengths are in
// milliseconds, the precision of timestamps.
type Spec struct {
	Name  string
	Input string // topic filter over routed records
	Kind  Kind
	// Size and Every (sliding) or Gap (session), in ms.
	Size, Every, Gap int64
	Aggs             Aggs
	OutOfOrder       int64 // ms
	AllowedLateness  int64 // ms
	// Idle and Early are processing-time periods; 0 disables them.
	Idle, Early    time.Duration
	Discarding     bool
	Output         string
	MaxOpenWindows int
}

// SpecFromConfig converts a validated pipeline config.
func SpecFromConfig(p Config) (Spec, error) {
	aggs, err := ParseAggs(p.Aggregates)
	if err != nil {
		return Spec{}, fmt.Errorf("pipeline %q: %w", p.Name, err)
	}
	s := Spec{
		Name:            p.Name,
		Input:           p.Input,
		Size:            p.Window.Size.D().Milliseconds(),
		Every:           p.Window.Every.D().Milliseconds(),
		Gap:             p.Window.Gap.D().Milliseconds(),
		Aggs:            aggs,
		OutOfOrder:      p.OutOfOrder.D().Milliseconds(),
		AllowedLateness: p.AllowedLateness.D().Milliseconds(),
		Idle:            p.Idle.D(),
		Early:           p.Early.D(),
		Discarding:      p.Accumulation == "discarding",
		Output:          p.OutputTopic(),
		MaxOpenWindows:  p.MaxOpenWindows,
	}
	for k := Tumbling; int(k) < len(kindNames); k++ {
		if kindNames[k] == p.Window.Type {
			s.Kind = k
		}
	}
	if s.Kind == 0 {
		return Spec{}, fmt.Errorf("pipeline %q: unknown window type %q", p.Name, p.Window.Type)
	}
	return s, s.check()
}

// check rejects a spec the core cannot run (config validation reports these with
// positions; this guards programmatic use).
func (s *Spec) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("pipeline %q: %s", s.Name, fmt.Sprintf(format, args...))
	}
	switch s.Kind {
	case Tumbling:
		if s.Size <= 0 {
			return bad("tumbling window needs size > 0")
		}
	case Sliding:
		if s.Size <= 0 || s.Every <= 0 || s.Size%s.Every != 0 {
			return bad("sliding window needs size a positive multiple of every")
		}
		if s.Size/s.Every > MaxWindowsPerRecord {
			return bad("sliding window: more than %d windows per record", MaxWindowsPerRecord)
		}
	case Session:
		if s.Gap <= 0 {
			return bad("session window needs gap > 0")
		}
	default:
		return bad("no window kind")
	}
	if s.OutOfOrder < 0 || s.AllowedLateness < 0 || s.Idle < 0 || s.Early < 0 {
		return bad("negative duration")
	}
	if s.Output == "" {
		return bad("no output topic")
	}
	if s.MaxOpenWindows <= 0 {
		s.MaxOpenWindows = 100000
	}
	if s.Input == "" {
		s.Input = "#"
	}
	return nil
}

// shape is a fingerprint of what window state means: the window kind and lengths. State
// saved under another shape cannot be continued.
func (s *Spec) shape() uint64 {
	var b [25]byte
	b[0] = byte(s.Kind)
	binary.BigEndian.PutUint64(b[1:], uint64(s.Size))
	binary.BigEndian.PutUint64(b[9:], uint64(s.Every))
	binary.BigEndian.PutUint64(b[17:], uint64(s.Gap))
	sum := sha256.Sum256(b[:])
	return binary.BigEndian.Uint64(sum[:8])
}

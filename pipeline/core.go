package pipeline

import (
	"fmt"
	"math"
	"strings"

	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/record"
)

// Watermark bounds: no record seen yet, and end of input (replay).
const (
	NegInf int64 = math.MinInt64
	PosInf int64 = math.MaxInt64
)

// Timing is when a pane fired relative to the watermark (SPEC §3.2).
type Timing uint8

// Pane timings.
const (
	Early Timing = iota + 1
	OnTime
	Late
)

// timingNames are the timings as panes carry them (pane.timing).
var timingNames = [...]string{Early: "EARLY", OnTime: "ON_TIME", Late: "LATE"}

func (t Timing) String() string {
	if t >= Early && int(t) < len(timingNames) {
		return timingNames[t]
	}
	return fmt.Sprintf("Timing(%d)", uint8(t))
}

// Outcome says what Step did with a record.
type Outcome uint8

// Step outcomes.
const (
	// Skipped: not a reading of this pipeline's input.
	Skipped Outcome = iota
	// Aggregated: into windows the watermark has not passed.
	Aggregated
	// LateAccepted: aggregated into a window the watermark had passed, whose LATE pane
	// fired at once.
	LateAccepted
	// TooLate: dropped from aggregation, beyond the allowed lateness of all its windows.
	TooLate
	// Capped: dropped from aggregation because the open-window cap was reached.
	Capped
)

// Input is one reading as the core sees it (record.ParseReading reads it from a stored
// record). Its strings may point into a buffer the caller reuses: the core copies what it
// keeps.
type Input = record.Reading

// Pane is one firing of a window (SPEC §3.2). Key points into the core's state; a Pane
// stays valid after the core moves on.
type Pane struct {
	Key        string
	Start, End int64 // Unix ms, [Start, End)
	Index      int64
	Timing     Timing
	agg        aggState
}

// Count is the number of records the pane carries.
func (p *Pane) Count() int64 { return p.agg.count }

// Counters are what a core did since it was built.
type Counters struct {
	Records     uint64                   // readings of the pipeline's input
	LateRecords uint64                   // aggregated late (a LATE pane fired)
	TooLate     uint64                   // dropped: beyond allowed lateness
	CapDrops    uint64                   // dropped: open-window cap reached
	Oversized   uint64                   // dropped: too large to commit (see tooBigToCommit)
	Panes       [len(timingNames)]uint64 // by Timing
}

func (a Counters) add(b Counters) Counters {
	a.Records += b.Records
	a.LateRecords += b.LateRecords
	a.TooLate += b.TooLate
	a.CapDrops += b.CapDrops
	a.Oversized += b.Oversized
	for i := range a.Panes {
		a.Panes[i] += b.Panes[i]
	}
	return a
}

type keyState struct {
	key  string
	id   string    // store id of the key, set by the runner
	wins []*window // sorted by start; disjoint for sessions
	cur  *window   // the window last added to: most records go to the same one
}

type window struct {
	ks         *keyState
	start, end int64
	agg        aggState
	index      int64 // index of the next pane
	fired      bool  // in the collection queue: ON_TIME fired, or born late
	changed    bool  // data since the last pane
	earlyAt    int64 // processing time (Unix ns) an EARLY pane is due; 0: none
	pos        int   // position in fireQ or gcQ
	dirty      bool  // changed since the runner last saved it
	stored     bool  // saved in the store under (ks.id, start)
	slot       uint8 // the slot its saved version is in, when stored
}

type tomb struct {
	ks    *keyState
	start int64
	slot  uint8 // the slot its saved version is in
}

// Core is the pure windowing engine of one pipeline (SPEC §4): records in arrival order
// in, panes out. It does no I/O and never reads a clock: processing time comes in through
// Tick. Not safe for concurrent use.
//
// The order of calls: Tick(now) sets processing time (and advances an idle watermark);
// Fire emits what the watermark and the early period make due; Step applies one record.
// Step fires whatever is still due before applying its record, so a caller that bounds
// Fire (to cut commits) still gets Beam's semantics.
type Core struct {
	spec  Spec
	shape uint64 // spec.shape(), saved with every commit

	keys     map[string]*keyState
	wm       int64
	maxTS    int64
	arrival  uint64
	fireQ    winHeap // open windows, by (end, key, start)
	gcQ      winHeap // fired windows, by end
	free     []*window
	panes    []Pane
	outBytes int // estimated JSON bytes of panes
	scratch  []*window
	matchAll bool
	topics   map[string]bool

	now        int64 // processing time of the current step, Unix ns; 0: none (replay)
	lastInput  int64
	idleOn     bool
	earlyNext  int64
	rearmEarly bool

	trackDirty bool
	dirty      []*window
	tombs      []tomb
	dirtyBytes int

	stats Counters
}

// NewCore builds a core for spec.
func NewCore(spec Spec) (*Core, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	if err := topic.ValidFilter(spec.Input); err != nil {
		return nil, fmt.Errorf("pipeline %q: input: %w", spec.Name, err)
	}
	c := &Core{
		spec:      spec,
		shape:     spec.shape(),
		keys:      map[string]*keyState{},
		wm:        NegInf,
		maxTS:     NegInf,
		matchAll:  spec.Input == "#",
		topics:    map[string]bool{},
		earlyNext: PosInf,
	}
	c.fireQ.less = fireOrder
	c.gcQ.less = gcOrder
	return c, nil
}

// Watermark returns W (NegInf before the first record, PosInf after Finish).
func (c *Core) Watermark() int64 { return c.wm }

// OpenWindows returns the number of windows held in state: each is in one of the queues.
func (c *Core) OpenWindows() int { return c.fireQ.len() + c.gcQ.len() }

// Counters returns what the core did so far.
func (c *Core) Counters() Counters { return c.stats }

// Panes returns the panes emitted since the last ClearPanes, in emission order.
func (c *Core) Panes() []Pane { return c.panes }

// ClearPanes forgets the emitted panes (the slice is reused).
func (c *Core) ClearPanes() { c.panes, c.outBytes = c.panes[:0], 0 }

// Step applies one record. Records must come in arrival order.
func (c *Core) Step(in *Input) Outcome {
	if c.Pending() {
		c.Fire(-1)
	}
	if !c.match(in.Topic) {
		return Skipped
	}
	c.arrival++
	c.lastInput, c.idleOn = c.now, false
	c.stats.Records++
	w0 := c.wm
	ks := c.keys[in.Series]
	var out Outcome
	switch c.spec.Kind {
	case Tumbling:
		s := floorDiv(in.TS, c.spec.Size) * c.spec.Size
		out = c.addTo(&ks, in, s, s+c.spec.Size, w0)
	case Sliding:
		last := floorDiv(in.TS, c.spec.Every) * c.spec.Every
		out = TooLate
		for s := last - c.spec.Size + c.spec.Every; s <= last; s += c.spec.Every {
			out = better(out, c.addTo(&ks, in, s, s+c.spec.Size, w0))
		}
	case Session:
		out = c.addSession(&ks, in, w0)
	}
	switch out {
	case LateAccepted:
		c.stats.LateRecords++
	case TooLate:
		c.stats.TooLate++
	case Capped:
		c.stats.CapDrops++
	}
	if in.TS > c.maxTS {
		c.maxTS = in.TS
		if w := satAdd(c.maxTS, -c.spec.OutOfOrder); w > c.wm {
			c.wm = w
		}
	}
	return out
}

// better combines the outcomes of one record in several windows (sliding): it counts as
// aggregated if any window took it.
func better(a, b Outcome) Outcome {
	rank := func(o Outcome) int {
		switch o {
		case LateAccepted:
			return 3
		case Aggregated:
			return 2
		case Capped:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

func (c *Core) match(t string) bool {
	if c.matchAll {
		return true
	}
	if m, ok := c.topics[t]; ok {
		return m
	}
	m := topic.Match(c.spec.Input, t)
	if len(c.topics) >= 4096 {
		clear(c.topics) // bounded: a flood of distinct topics only costs matching again
	}
	c.topics[strings.Clone(t)] = m
	return m
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// satAdd is a+b saturated at NegInf and PosInf, which stay infinite.
func satAdd(a, b int64) int64 {
	if a == PosInf || a == NegInf {
		return a
	}
	s := a + b
	if b > 0 && s < a {
		return PosInf
	}
	if b < 0 && s > a {
		return NegInf
	}
	return s
}

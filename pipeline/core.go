package pipeline

import (
	"fmt"
	"math"
	"slices"
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
}

type tomb struct {
	ks    *keyState
	start int64
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

// addTo adds in to the window [start, end) of its key (tumbling and sliding).
func (c *Core) addTo(ksp **keyState, in *Input, start, end, w0 int64) Outcome {
	late := end <= w0
	if late && satAdd(end, c.spec.AllowedLateness) <= w0 {
		return TooLate
	}
	ks := *ksp
	var w *window
	if ks != nil {
		if w = ks.cur; w == nil || w.start != start {
			w = ks.find(start)
		}
	}
	if w == nil {
		if c.OpenWindows() >= c.spec.MaxOpenWindows {
			return Capped
		}
		if ks == nil {
			ks = c.newKey(in.Series)
			*ksp = ks
		}
		w = c.newWindow(ks, start, end, late)
	}
	ks.cur = w
	w.agg.add(in.Value, in.TS, c.arrival)
	c.touch(w)
	if late {
		c.emit(w, Late)
		return LateAccepted
	}
	return Aggregated
}

// addSession adds in to its key's sessions: its proto-window [ts, ts+gap) merges with
// every session it overlaps. A merge that changes a session's bounds makes a new window,
// whose panes count from 0 again (its id differs from the old one's by its bounds).
func (c *Core) addSession(ksp **keyState, in *Input, w0 int64) Outcome {
	ts := in.TS
	pEnd := ts + c.spec.Gap
	if pEnd <= w0 && satAdd(pEnd, c.spec.AllowedLateness) <= w0 {
		return TooLate
	}
	ks := *ksp
	i, j := 0, 0
	if ks != nil {
		for i < len(ks.wins) && ks.wins[i].end <= ts {
			i++
		}
		j = i
		for j < len(ks.wins) && ks.wins[j].start < pEnd {
			j++
		}
	}
	var w *window
	if i == j {
		if c.OpenWindows() >= c.spec.MaxOpenWindows {
			return Capped
		}
		if ks == nil {
			ks = c.newKey(in.Series)
			*ksp = ks
		}
		w = c.newWindow(ks, ts, pEnd, pEnd <= w0)
	} else {
		w = ks.wins[i]
		start, end := min(w.start, ts), max(ks.wins[j-1].end, pEnd)
		if j > i+1 {
			for _, o := range ks.wins[i+1 : j] {
				w.agg.merge(&o.agg)
				c.forget(o)
			}
			n := copy(ks.wins[i+1:], ks.wins[j:])
			clear(ks.wins[i+1+n:])
			ks.wins = ks.wins[:i+1+n]
		}
		if start != w.start || end != w.end {
			if start != w.start && w.stored {
				c.tombs = append(c.tombs, tomb{ks, w.start})
				w.stored = false
			}
			w.start, w.end, w.index = start, end, 0
			c.dequeue(w)
			w.earlyAt = 0
			c.enqueue(w, end <= w0)
		}
	}
	w.agg.add(in.Value, ts, c.arrival)
	c.touch(w)
	if w.end <= w0 {
		c.emit(w, Late)
		return LateAccepted
	}
	return Aggregated
}

func (c *Core) newKey(series string) *keyState {
	ks := &keyState{key: strings.Clone(series)}
	c.keys[ks.key] = ks
	return ks
}

// find returns the window of ks starting at start; recent windows are at the end.
func (ks *keyState) find(start int64) *window {
	for i := len(ks.wins) - 1; i >= 0; i-- {
		w := ks.wins[i]
		if w.start == start {
			return w
		}
		if w.start < start {
			return nil
		}
	}
	return nil
}

func (ks *keyState) insert(w *window) {
	i := len(ks.wins)
	for i > 0 && ks.wins[i-1].start > w.start {
		i--
	}
	ks.wins = slices.Insert(ks.wins, i, w)
}

func (ks *keyState) remove(w *window) {
	for i, o := range ks.wins {
		if o == w {
			ks.wins = slices.Delete(ks.wins, i, i+1)
			return
		}
	}
}

// newWindow opens [start, end) for ks. A window born after the watermark passed its end
// never fires ON_TIME: it goes straight to the collection queue.
func (c *Core) newWindow(ks *keyState, start, end int64, late bool) *window {
	var w *window
	if n := len(c.free); n > 0 {
		w = c.free[n-1]
		c.free = c.free[:n-1]
		*w = window{}
	} else {
		w = &window{}
	}
	w.ks, w.start, w.end = ks, start, end
	ks.insert(w)
	c.enqueue(w, late)
	return w
}

// dequeue takes w out of its queue.
func (c *Core) dequeue(w *window) {
	if w.fired {
		c.gcQ.remove(w.pos)
	} else {
		c.fireQ.remove(w.pos)
	}
}

func (c *Core) enqueue(w *window, fired bool) {
	w.fired = fired
	if fired {
		c.gcQ.push(w)
	} else {
		c.fireQ.push(w)
	}
}

// touch notes new data in w: it must be saved, and may fire early.
func (c *Core) touch(w *window) {
	w.changed = true
	if c.spec.Early > 0 && c.now != 0 && !w.fired && w.earlyAt == 0 {
		w.earlyAt = c.now + int64(c.spec.Early)
		c.earlyNext = min(c.earlyNext, w.earlyAt)
	}
	c.markDirty(w)
}

// Estimates of what saving one window and appending one pane cost in a transaction
// (beyond the key, which both carry).
const (
	stateBytes = 160
	paneBytes  = 400
)

func (c *Core) markDirty(w *window) {
	if c.trackDirty && !w.dirty {
		w.dirty = true
		c.dirty = append(c.dirty, w)
		c.dirtyBytes += stateBytes + len(w.ks.key)
	}
}

// emit fires a pane of w.
func (c *Core) emit(w *window, t Timing) {
	c.panes = append(c.panes, Pane{Key: w.ks.key, Start: w.start, End: w.end, Index: w.index, Timing: t, agg: w.agg})
	c.outBytes += paneBytes + 2*len(w.ks.key)
	w.index++
	w.changed = false
	w.earlyAt = 0
	if c.spec.Discarding {
		w.agg = aggState{}
	}
	c.markDirty(w)
	c.stats.Panes[t]++
}

// forget removes w from its queue and frees it; the caller removes it from its key.
func (c *Core) forget(w *window) {
	c.dequeue(w)
	c.release(w)
}

// release frees w (already out of its queue and its key's list).
func (c *Core) release(w *window) {
	if w.ks.cur == w {
		w.ks.cur = nil
	}
	if w.stored {
		c.tombs = append(c.tombs, tomb{w.ks, w.start})
	}
	w.dirty = false // a stale entry in c.dirty is skipped
	w.ks = nil
	c.free = append(c.free, w)
}

// drop forgets a window past its end + allowed lateness.
func (c *Core) drop(w *window) {
	ks := w.ks
	ks.remove(w)
	c.release(w)
	if len(ks.wins) == 0 {
		delete(c.keys, ks.key)
	}
}

// Pending reports whether the watermark has made windows due that Fire has not handled.
func (c *Core) Pending() bool {
	return c.fireQ.len() > 0 && c.fireQ.top().end <= c.wm ||
		c.gcQ.len() > 0 && satAdd(c.gcQ.top().end, c.spec.AllowedLateness) <= c.wm
}

// Fire emits, in order, the ON_TIME panes of windows the watermark has passed, forgets
// windows past their allowed lateness, then emits due EARLY panes. max bounds the work (a
// pane or a forgotten window each count one; negative: no bound); it returns the work done.
func (c *Core) Fire(max int) int {
	n := 0
	for c.fireQ.len() > 0 && c.fireQ.top().end <= c.wm {
		if max >= 0 && n >= max {
			return n
		}
		w := c.fireQ.pop()
		c.emit(w, OnTime)
		n++
		if satAdd(w.end, c.spec.AllowedLateness) <= c.wm {
			c.drop(w)
		} else {
			c.enqueue(w, true)
		}
	}
	for c.gcQ.len() > 0 && satAdd(c.gcQ.top().end, c.spec.AllowedLateness) <= c.wm {
		if max >= 0 && n >= max {
			return n
		}
		c.drop(c.gcQ.pop())
		n++
	}
	if max >= 0 {
		return n + c.fireEarly(max-n)
	}
	return n + c.fireEarly(-1)
}

// fireEarly emits EARLY panes of open windows that changed and whose early time came.
func (c *Core) fireEarly(max int) int {
	if c.spec.Early <= 0 || c.now == 0 || c.now < c.earlyNext || max == 0 {
		return 0
	}
	due := c.scratch[:0]
	next := PosInf
	for _, w := range c.fireQ.ws {
		switch {
		case !w.changed || w.earlyAt == 0:
		case w.earlyAt <= c.now:
			due = append(due, w)
		default:
			next = min(next, w.earlyAt)
		}
	}
	slices.SortFunc(due, func(a, b *window) int {
		if fireOrder(a, b) {
			return -1
		}
		return 1
	})
	n := 0
	for _, w := range due {
		if max >= 0 && n >= max {
			next = c.now
			break
		}
		c.emit(w, Early)
		n++
	}
	clear(due)
	c.scratch = due[:0]
	c.earlyNext = next
	return n
}

// Tick sets processing time (Unix ns) for what follows. When the input has been idle for
// the spec's idle period, the watermark advances as if a record stamped now had arrived.
func (c *Core) Tick(now int64) {
	c.now = now
	if c.lastInput == 0 {
		c.lastInput = now // a (re)start gives devices a full idle period
	}
	if c.rearmEarly {
		c.rearmEarly = false
		for _, w := range c.fireQ.ws {
			if w.changed && w.earlyAt == 0 {
				w.earlyAt = now + int64(c.spec.Early)
				c.earlyNext = min(c.earlyNext, w.earlyAt)
			}
		}
	}
	if c.spec.Idle > 0 && now-c.lastInput >= int64(c.spec.Idle) {
		c.idleOn = true
		if ms := floorDiv(now, 1e6); ms > c.maxTS {
			c.maxTS = ms
		}
		if w := satAdd(c.maxTS, -c.spec.OutOfOrder); w > c.wm {
			c.wm = w
		}
	}
}

// NextDeadline returns the processing time (Unix ns) at which Tick and Fire next have
// something to do without new input: the input turning idle, the idle watermark reaching
// the next window end, or an early pane coming due.
func (c *Core) NextDeadline() (int64, bool) {
	d := PosInf
	if c.spec.Idle > 0 {
		if !c.idleOn {
			d = c.lastInput + int64(c.spec.Idle)
		} else {
			b := PosInf
			if c.fireQ.len() > 0 {
				b = c.fireQ.top().end
			}
			if c.gcQ.len() > 0 {
				b = min(b, satAdd(c.gcQ.top().end, c.spec.AllowedLateness))
			}
			if b != PosInf {
				// W = now − out_of_order reaches b at now = b + out_of_order.
				at := satAdd(b, c.spec.OutOfOrder)
				if at < PosInf/1e6 && at > NegInf/1e6 {
					d = min(d, at*1e6)
				}
			}
		}
	}
	if c.spec.Early > 0 {
		d = min(d, c.earlyNext)
	}
	return d, d != PosInf
}

// Finish advances the watermark to +∞ (end of replay input) and fires everything.
func (c *Core) Finish() {
	c.wm = PosInf
	c.Fire(-1)
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

package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
)

// AggLog is the log panes are appended to; uplinks forward it as batches of kind
// "aggregates".
const AggLog = "agg"

// ConsumerName is a pipeline's consumer name in its input log: its committed position
// there holds back trimming.
func ConsumerName(pipeline string) string { return "pipeline/" + pipeline }

// Publisher delivers a message to local subscribers without ingesting it (the broker's
// PublishLocal). The runner hands over a fresh payload per call, which it may keep.
type Publisher interface {
	PublishLocal(topic string, payload []byte) error
}

// RunnerOptions are what a runner needs besides its spec.
type RunnerOptions struct {
	Store *buffer.Store
	// Input is the log of records ("raw"); Output the log of panes (default AggLog).
	Input, Output string
	// Publisher, when set, gets each pane on the pipeline's output topic and each record
	// too late for it on the late topic, after they are committed.
	Publisher Publisher
	Clock     clock.Clock
	Logger    *slog.Logger
	// MaxStepRecords, MaxStepBytes and MaxStepOps bound one step's transaction (defaults
	// 4096 records, half the store's MaxRequestBytes (about 280 KiB) and 4000 writes).
	MaxStepRecords int
	MaxStepBytes   int
	MaxStepOps     int
}

// RunnerStats are a runner's counters, read by metrics and /status.
type RunnerStats struct {
	Watermark   atomic.Int64  // event time, Unix ms; NegInf before any record
	Position    atomic.Uint64 // next input sequence number to process (committed)
	Records     atomic.Uint64 // readings of the pipeline's input
	LateRecords atomic.Uint64 // aggregated late, with a LATE pane
	TooLate     atomic.Uint64 // dropped: beyond allowed lateness (sent to the late topic)
	CapDrops    atomic.Uint64 // dropped: open-window cap reached
	Malformed   atomic.Uint64 // input entries that are not records
	PanesEarly  atomic.Uint64
	PanesOnTime atomic.Uint64
	PanesLate   atomic.Uint64
	OpenWindows atomic.Int64
	Commits     atomic.Uint64
	Errors      atomic.Uint64
}

// PaneSummary is a committed pane, for /status.
type PaneSummary struct {
	Key        string
	Start, End int64 // Unix ms
	Timing     Timing
	Count      int64
}

// lastPanes is how many recent panes a runner remembers for /status.
const lastPanes = 10

// Runner runs one pipeline durably: one goroutine reads the input log from the
// pipeline's cursor and, per step, commits window state, watermark, the panes emitted
// (appended to the output log) and the cursor in one store transaction (DESIGN invariant
// 3). A restart continues exactly from the last commit: no pane is lost, and none is
// emitted again under its id with other content.
type Runner struct {
	spec  Spec
	o     RunnerOptions
	lg    *slog.Logger
	enc   *Encoder
	core  *Core
	stats RunnerStats

	// Store keys and names, fixed for the runner's life.
	metaKey, winPrefix, consumer string

	next  uint64 // committed input position
	saved meta   // the meta last committed (or found at load)
	// base is what the cores before this one counted up to their last commit; committed
	// adds the current core's counts at its last commit. A reload starts a core at zero.
	base, committed Counters
	buf             []byte
	keyBuf          []byte
	lates           [][]byte
	lastWarn        map[string]time.Time
	output          atomic.Pointer[string] // the output topic; SetOutput changes it while running

	lastMu sync.Mutex // guards last
	last   []PaneSummary

	// Backoff after a failed commit, settable by tests.
	MinBackoff, MaxBackoff time.Duration
}

// NewRunner builds a runner; nothing is read until Run.
func NewRunner(spec Spec, o RunnerOptions) (*Runner, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	if o.Store == nil || o.Input == "" {
		return nil, fmt.Errorf("pipeline %q: runner needs a store and an input log", spec.Name)
	}
	if o.Output == "" {
		o.Output = AggLog
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxStepRecords <= 0 {
		o.MaxStepRecords = 4096
	}
	if o.MaxStepBytes <= 0 {
		o.MaxStepBytes = int(o.Store.MaxRequestBytes() / 2)
	}
	if o.MaxStepOps <= 0 {
		o.MaxStepOps = 4000
	}
	r := &Runner{
		spec: spec, o: o, enc: NewEncoder(&spec),
		lg:         o.Logger.With("component", "pipeline", "pipeline", spec.Name),
		metaKey:    metaKey(spec.Name),
		winPrefix:  windowPrefix(spec.Name),
		consumer:   ConsumerName(spec.Name),
		lastWarn:   map[string]time.Time{},
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second,
	}
	r.stats.Watermark.Store(NegInf)
	r.output.Store(&spec.Output)
	return r, nil
}

// SetOutput changes the topic panes are published on (and <topic>/late), from the next
// commit on (SIGHUP reload). Safe for concurrent use.
func (r *Runner) SetOutput(topic string) { r.output.Store(&topic) }

// Output returns the topic panes are published on.
func (r *Runner) Output() string { return *r.output.Load() }

// LastPanes returns the most recently committed panes, newest last. Safe for concurrent use.
func (r *Runner) LastPanes() []PaneSummary {
	r.lastMu.Lock()
	defer r.lastMu.Unlock()
	return append([]PaneSummary(nil), r.last...)
}

// Name is the pipeline's name.
func (r *Runner) Name() string { return r.spec.Name }

// Consumer is the runner's consumer name in its input log.
func (r *Runner) Consumer() string { return r.consumer }

// Stats returns the runner's counters.
func (r *Runner) Stats() *RunnerStats { return &r.stats }

// Run processes the input log until ctx ends. A failed commit is retried after reloading
// the state from the store; only a failure to read the store ends Run with an error.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.load(); err != nil {
		return err
	}
	r.lg.Info("pipeline started", "position", r.next, "watermark", fmtWM(r.core.Watermark()), "open_windows", r.core.OpenWindows())
	failures := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		more, err := r.step()
		if err != nil {
			failures++
			r.stats.Errors.Add(1)
			r.lg.Warn("pipeline step failed; reloading its state and retrying", "failures", failures, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-r.o.Clock.After(r.backoff(failures)):
			}
			// The core ran ahead of what is durable: start again from the store.
			if err := r.load(); err != nil {
				return err
			}
			continue
		}
		failures = 0
		if more {
			continue
		}
		if err := r.wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, buffer.ErrClosed) {
				return nil
			}
			return fmt.Errorf("pipeline %q: %w", r.spec.Name, err)
		}
	}
}

func (r *Runner) backoff(failures int) time.Duration {
	d := r.MinBackoff
	for i := 1; i < failures && d < r.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.MaxBackoff)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// load rebuilds the core from the store: meta, windows, cursor.
func (r *Runner) load() error {
	c, err := NewCore(r.spec)
	if err != nil {
		return err
	}
	c.trackDirty = true
	name := r.spec.Name
	saved := c.meta() // nothing to save while nothing happens
	if v, ok, err := r.o.Store.Get(r.metaKey); err != nil {
		return fmt.Errorf("pipeline %q: load state: %w", name, err)
	} else if ok {
		m, err := decodeMeta(v)
		if err != nil {
			return fmt.Errorf("pipeline %q: load state: meta: %w", name, err)
		}
		c.restoreMeta(m)
		saved = m
		if m.shape != c.shape {
			r.lg.Warn("window shape changed since the last run: open windows are dropped; the watermark is kept")
		}
	}
	var stale []string
	err = r.o.Store.ScanState(r.winPrefix, func(k string, v []byte) error {
		if saved.shape != c.shape {
			stale = append(stale, k)
			return nil
		}
		if err := c.restoreWindow(v); err != nil {
			r.lg.Error("unreadable window state dropped", "key", k, "err", err)
			stale = append(stale, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: load state: %w", name, err)
	}
	for len(stale) > 0 {
		n := min(len(stale), 1000)
		chunk := stale[:n]
		stale = stale[n:]
		err := r.o.Store.Update(context.Background(), func(tx *buffer.Tx) {
			for _, k := range chunk {
				tx.Delete(k)
			}
		})
		if err != nil {
			return fmt.Errorf("pipeline %q: drop stale state: %w", name, err)
		}
	}
	r.next, err = r.o.Store.Cursor(r.o.Input, r.consumer)
	if err != nil {
		return fmt.Errorf("pipeline %q: %w", name, err)
	}
	r.core = c
	r.saved = saved // a changed shape differs from c.meta(): the next step saves it
	r.base = r.committed
	r.stats.Position.Store(r.next)
	r.stats.Watermark.Store(c.wm)
	r.stats.OpenWindows.Store(int64(c.OpenWindows()))
	return nil
}

// full reports whether the step's transaction has reached its budget.
func (r *Runner) full() bool {
	c := r.core
	ops := len(c.panes) + len(c.dirty) + len(c.tombs)
	// Each write also costs the store its log or state key prefix and 16 bytes.
	bytes := c.outBytes + c.dirtyBytes + 100*len(c.tombs) + 64*ops
	return bytes >= r.o.MaxStepBytes || ops >= r.o.MaxStepOps
}

// fire lets the core emit what is due, within the step's budget, and reports whether the
// budget is reached. When it is not, nothing is pending: Fire did less than it was allowed.
func (r *Runner) fire() (full bool) {
	c := r.core
	for !r.full() {
		n := min(64, r.o.MaxStepOps-len(c.panes)-len(c.dirty)-len(c.tombs))
		if n <= 0 {
			return true
		}
		if c.Fire(n) < n {
			return false
		}
	}
	return true
}

// step processes what is available, within the budget, and commits it. more reports
// that work is left (budget reached).
func (r *Runner) step() (more bool, err error) {
	c := r.core
	c.Tick(r.o.Clock.Now().UnixNano())
	next := r.next
	r.lates = r.lates[:0]
	stopped := r.fire()
	if !stopped {
		last, err := r.o.Store.LastSeq(r.o.Input)
		if err != nil {
			return false, err
		}
		var in Input
		n := 0
		_, err = r.o.Store.Read(r.o.Input, r.next, r.o.MaxStepRecords, func(seq uint64, v []byte) error {
			next = seq + 1
			n++
			reading, err := ParseRecord(v, &in)
			if err != nil {
				r.stats.Malformed.Add(1)
				r.warn("malformed", "skipping an input entry that is not a record", "seq", seq, "err", err)
				return nil
			}
			if !reading {
				return nil
			}
			switch c.Step(&in) {
			case TooLate:
				if r.o.Publisher != nil {
					r.lates = append(r.lates, bytes.Clone(v))
				}
			case Capped:
				r.warn("cap", "open-window cap reached: records dropped from aggregation", "max_open_windows", r.spec.MaxOpenWindows)
			}
			if r.fire() {
				stopped = true
				return buffer.ErrStop
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if n == r.o.MaxStepRecords {
			stopped = true
		}
		if !stopped && next <= last {
			next = last + 1 // the rest of the range was trimmed: nothing to read there
		}
	}
	if next != r.next || len(c.panes) > 0 || len(c.dirty) > 0 || len(c.tombs) > 0 || c.meta() != r.saved {
		if err := r.commit(next); err != nil {
			return false, err
		}
	}
	return stopped, nil // not stopped: nothing is pending either (fire)
}

// commit writes the step in one transaction, then publishes its panes and late records.
func (r *Runner) commit(next uint64) error {
	c := r.core
	r.buf = r.buf[:0]
	var panes [][2]int // offsets in r.buf, for publishing once committed
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// build encodes into r.buf and hands tx slices of it: a slice stays valid when r.buf
	// grows (growing copies, it does not overwrite).
	err := r.o.Store.Update(cctx, func(tx *buffer.Tx) {
		for i := range c.panes {
			s := len(r.buf)
			r.buf = r.enc.AppendJSON(r.buf, &c.panes[i])
			tx.Append(r.o.Output, r.buf[s:])
			panes = append(panes, [2]int{s, len(r.buf)})
		}
		for _, t := range c.tombs {
			r.keyBuf = r.windowKey(r.keyBuf[:0], t.ks, t.start)
			tx.Delete(string(r.keyBuf))
		}
		for _, w := range c.dirty {
			if !w.dirty {
				continue // freed since, or listed twice
			}
			w.dirty = false
			w.stored = true
			r.keyBuf = r.windowKey(r.keyBuf[:0], w.ks, w.start)
			s := len(r.buf)
			r.buf = appendWindow(r.buf, w)
			tx.Put(string(r.keyBuf), r.buf[s:])
		}
		m, s := c.meta(), len(r.buf)
		r.buf = m.appendTo(r.buf)
		tx.Put(r.metaKey, r.buf[s:])
		tx.SetCursor(r.o.Input, r.consumer, next)
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
	}
	r.next, r.saved = next, c.meta()
	c.dirty = c.dirty[:0]
	c.tombs = c.tombs[:0]
	c.dirtyBytes = 0
	if pub := r.o.Publisher; pub != nil {
		out := r.Output()
		for _, p := range panes {
			if err := pub.PublishLocal(out, bytes.Clone(r.buf[p[0]:p[1]])); err != nil {
				r.warn("publish", "publishing panes locally failed (they are in the aggregate log)", "err", err)
			}
		}
		for _, v := range r.lates {
			if err := pub.PublishLocal(out+"/late", v); err != nil {
				r.warn("publish", "publishing a late record locally failed", "err", err)
			}
		}
	}
	if n := len(c.panes); n > 0 {
		r.lastMu.Lock()
		for i := max(0, n-lastPanes); i < n; i++ {
			p := &c.panes[i]
			r.last = append(r.last, PaneSummary{Key: p.Key, Start: p.Start, End: p.End, Timing: p.Timing, Count: p.agg.count})
		}
		if k := len(r.last) - lastPanes; k > 0 {
			r.last = append(r.last[:0], r.last[k:]...)
		}
		r.lastMu.Unlock()
	}
	c.ClearPanes()
	r.stats.Commits.Add(1)
	r.publishStats()
	return nil
}

func (r *Runner) publishStats() {
	c := r.core
	cn := r.base.add(c.Counters())
	r.committed = cn
	s := &r.stats
	s.Position.Store(r.next)
	s.Watermark.Store(c.wm)
	s.OpenWindows.Store(int64(c.OpenWindows()))
	s.Records.Store(cn.Records)
	s.LateRecords.Store(cn.LateRecords)
	s.TooLate.Store(cn.TooLate)
	s.CapDrops.Store(cn.CapDrops)
	s.PanesEarly.Store(cn.Panes[Early])
	s.PanesOnTime.Store(cn.Panes[OnTime])
	s.PanesLate.Store(cn.Panes[Late])
}

// wait sleeps until the input log grows, the core's next deadline, or ctx ends.
func (r *Runner) wait(ctx context.Context) error {
	var timer <-chan time.Time
	if d, ok := r.core.NextDeadline(); ok {
		dur := time.Duration(d - r.o.Clock.Now().UnixNano())
		if dur <= 0 {
			return nil
		}
		t := r.o.Clock.NewTimer(dur)
		defer t.Stop()
		timer = t.C()
	}
	after := r.next
	if after > 0 {
		after--
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	woke := make(chan error, 1)
	go func() { woke <- r.o.Store.Wait(wctx, r.o.Input, after) }()
	select {
	case <-ctx.Done():
		cancel()
		<-woke
		return ctx.Err()
	case <-timer:
		cancel()
		<-woke // the waiter ends with wctx; wait for it so it has an owner
		return nil
	case err := <-woke:
		return err
	}
}

// warn logs at most once a minute per kind: bad input must not flood the journal.
func (r *Runner) warn(kind, msg string, args ...any) {
	now := r.o.Clock.Now()
	if t, ok := r.lastWarn[kind]; ok && now.Sub(t) < time.Minute {
		return
	}
	r.lastWarn[kind] = now
	r.lg.Warn(msg, args...)
}

func fmtWM(w int64) string {
	switch w {
	case NegInf:
		return "-inf"
	case PosInf:
		return "+inf"
	}
	return time.UnixMilli(w).UTC().Format(time.RFC3339Nano)
}

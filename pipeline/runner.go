package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/backoff"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/record"
)

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
	// Input is the log of records ("raw"); Output the log of panes (default logs.Agg).
	Input, Output string
	// Publisher, when set, gets each pane on the pipeline's output topic and each record
	// too late for it on the late topic, after they are committed.
	Publisher Publisher
	Clock     clock.Clock
	Logger    *slog.Logger
	// MaxStepRecords, MaxStepBytes and MaxStepOps bound one step's transaction (defaults
	// 4096 records, half the store's MaxRequestBytes (about 280 KiB) and 4000 writes). A
	// step is committed before a record whose worst case would take it past them; a record
	// whose worst case alone is past them is committed alone (see step).
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
	Oversized   atomic.Uint64 // dropped: too large to commit in one transaction (tooBigToCommit)
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
// emitted again under its id with other content. A step never needs more than one
// transaction, except one record whose panes do not fit with its window state (a late
// record in a wide sliding pipeline): its first panes are committed ahead (see commit).
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

	// maxTxn is the most one commit may write, by the store's count (see putCost).
	maxTxn int
	bound  commitBound
	// shrink divides the step's limits by 2^shrink after a step came out larger than one
	// transaction (the estimates of full are not bounds), until the position passes
	// shrinkUntil.
	shrink      uint
	shrinkUntil uint64
	// afterPartialCommit, if set, runs between the transactions of a split commit (tests
	// make it fail: a crash there).
	afterPartialCommit func() error

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
		o.Output = logs.Agg
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
	maxTxn := int(o.Store.MaxRequestBytes()) - txnSlack
	if maxTxn < maxCommitBytes {
		return nil, fmt.Errorf("pipeline %q: the store's transactions (%d bytes) are smaller than a pipeline needs (%d)", spec.Name, maxTxn, maxCommitBytes)
	}
	r := &Runner{
		spec: spec, o: o, enc: NewEncoder(&spec),
		lg:         o.Logger.With("component", "pipeline", "pipeline", spec.Name),
		metaKey:    metaKey(spec.Name),
		winPrefix:  windowPrefix(spec.Name),
		consumer:   ConsumerName(spec.Name),
		lastWarn:   map[string]time.Time{},
		maxTxn:     maxTxn,
		bound:      newCommitBound(&spec),
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
		var big *stepTooLargeError
		if errors.As(err, &big) {
			// Nothing was written: try again at once, in smaller steps.
			r.shrink = min(r.shrink+1, maxShrink)
			r.shrinkUntil = max(r.shrinkUntil, big.next, r.next+1)
			r.lg.Info("pipeline step larger than one store transaction; retrying in smaller steps", "bytes", big.bytes, "limit", r.maxTxn, "shrink", r.shrink)
			if err := r.load(); err != nil {
				return err
			}
			continue
		}
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

// backoff is the wait after the n-th failed step: exponential within MinBackoff and
// MaxBackoff, at least half of each step (a failing store is not hammered), jittered.
func (r *Runner) backoff(failures int) time.Duration {
	return backoff.Policy{Min: r.MinBackoff, Max: r.MaxBackoff, Jitter: backoff.Equal}.Wait(failures)
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

// The step's limits, divided by 2^shrink.
func (r *Runner) stepBytes() int   { return max(r.o.MaxStepBytes>>r.shrink, 1) }
func (r *Runner) stepOps() int     { return max(r.o.MaxStepOps>>r.shrink, 1) }
func (r *Runner) stepRecords() int { return max(r.o.MaxStepRecords>>r.shrink, 1) }
func (r *Runner) fireChunk() int   { return max(64>>r.shrink, 1) }

// maxShrink bounds shrink: a step of one record or one firing, which always fits.
const maxShrink = 6

// pending estimates the step's transaction so far: its writes and their bytes.
func (r *Runner) pending() (bytes, ops int) {
	c := r.core
	ops = len(c.panes) + len(c.dirty) + len(c.tombs)
	// Each write also costs the store its log or state key prefix and 16 bytes.
	return c.outBytes + c.dirtyBytes + 100*len(c.tombs) + 64*ops, ops
}

// full reports whether the step's transaction has reached its budget.
func (r *Runner) full() bool {
	bytes, ops := r.pending()
	return bytes >= r.stepBytes() || ops >= r.stepOps()
}

// dirty reports whether the step holds anything to commit, next being where its input
// ends.
func (r *Runner) dirty(next uint64) bool {
	c := r.core
	return next != r.next || len(c.panes) > 0 || len(c.dirty) > 0 || len(c.tombs) > 0 || c.meta() != r.saved
}

// fire lets the core emit what is due, within the step's budget, and reports whether the
// budget is reached. When it is not, nothing is pending: Fire did less than it was allowed.
func (r *Runner) fire() (full bool) {
	c := r.core
	for !r.full() {
		n := min(r.fireChunk(), r.stepOps()-len(c.panes)-len(c.dirty)-len(c.tombs))
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
//
// Before each record it bounds what the record can write (worst): a step that could no
// longer hold it is committed first, and the record goes to the next one. A record whose
// worst case alone is past the budget (a late one in a sliding pipeline fires a pane per
// window) is applied alone, from a committed state, without firing after it: its commit
// may then be split (see commit). A record too large to commit at all is dropped from
// aggregation and counted (tooBigToCommit), as replay does.
func (r *Runner) step() (more bool, err error) {
	c := r.core
	c.Tick(r.o.Clock.Now().UnixNano())
	next := r.next
	r.lates = r.lates[:0]
	stopped := r.fire()
	var alone *Input // a record to apply alone once what precedes it is committed
	var aloneRaw []byte
	aloneSeq := uint64(0)
	isolated := false
	if !stopped {
		last, err := r.o.Store.LastSeq(r.o.Input)
		if err != nil {
			return false, err
		}
		var in Input
		n := 0
		_, err = r.o.Store.Read(r.o.Input, r.next, r.stepRecords(), func(seq uint64, v []byte) error {
			reading, err := record.ParseReading(v, &in)
			if err != nil {
				next = seq + 1
				n++
				r.stats.Malformed.Add(1)
				r.warn("malformed", "skipping an input entry that is not a record", "seq", seq, "err", err)
				return nil
			}
			if reading && c.match(in.Topic) {
				if r.bound.tooBig(in.Series) {
					next = seq + 1
					n++
					c.stats.Oversized++
					r.warn("oversized", "a record whose window updates cannot be committed in one store transaction is dropped from aggregation", "seq", seq, "series_bytes", len(in.Series))
					return nil
				}
				wb, wo := r.worst(&in)
				if wb > r.stepBytes() || wo > r.stepOps() {
					if r.dirty(next) {
						// Commit what precedes it first, then apply it alone (below).
						alone = &Input{Topic: strings.Clone(in.Topic), Series: strings.Clone(in.Series), TS: in.TS, Value: in.Value}
						aloneRaw, aloneSeq = bytes.Clone(v), seq
					} else {
						next = seq + 1
						r.apply(&in, v)
						isolated = true
					}
					stopped = true
					return buffer.ErrStop
				}
				if pb, po := r.pending(); pb+wb > r.stepBytes() || po+wo > r.stepOps() {
					stopped = true // it goes in the next step
					return buffer.ErrStop
				}
			}
			next = seq + 1
			n++
			if !reading {
				return nil
			}
			r.apply(&in, v)
			if r.fire() {
				stopped = true
				return buffer.ErrStop
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if n == r.stepRecords() {
			stopped = true
		}
		if !stopped && next <= last {
			next = last + 1 // the rest of the range was trimmed: nothing to read there
		}
	}
	if r.dirty(next) {
		if err := r.commit(next, isolated); err != nil {
			return false, err
		}
	}
	if alone != nil {
		// No Tick in between: the record is applied to exactly the state just committed,
		// so a crash during its split commit replays it to the same panes.
		r.lates = r.lates[:0]
		r.apply(alone, aloneRaw)
		if err := r.commit(aloneSeq+1, true); err != nil {
			return false, err
		}
	}
	return stopped, nil // not stopped: nothing is pending either (fire)
}

// apply steps the core with one record; v is the stored record (the late topic gets it).
func (r *Runner) apply(in *Input, v []byte) {
	switch r.core.Step(in) {
	case TooLate:
		if r.o.Publisher != nil {
			r.lates = append(r.lates, bytes.Clone(v))
		}
	case Capped:
		r.warn("cap", "open-window cap reached: records dropped from aggregation", "max_open_windows", r.spec.MaxOpenWindows)
	}
}

// commit writes the step in one transaction, then publishes its panes and late records.
//
// A step larger than one transaction is not written. When it holds one record applied
// alone (isolated), its panes are split off: the first ones are appended in transactions
// of their own, and the last transaction commits the remaining panes with the window
// state, the watermark and the cursor. A crash in between restarts from the cursor before
// that record and the state it was applied to, so the record fires the same panes again,
// with the same ids and content (DESIGN invariant 3, per checkpoint): the aggregate log
// holds those twice, as after any crash between an append and an uplink's commit. Any
// other step too large returns a stepTooLargeError: Run retries it in smaller steps.
func (r *Runner) commit(next uint64, isolated bool) error {
	st := r.encodeStep()
	// The panes that go with the state: all of them when they fit.
	with := len(st.panes)
	if total := st.stateCost + st.paneCost; total > r.maxTxn {
		if !isolated {
			return &stepTooLargeError{next: next, bytes: total}
		}
		with = r.panesWithState(st)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if head := st.panes[:len(st.panes)-with]; len(head) > 0 {
		if err := r.commitPanesApart(cctx, head); err != nil {
			return err
		}
	}
	if err := r.commitState(cctx, st, st.panes[len(st.panes)-with:], next); err != nil {
		return err
	}
	r.published(st.panes)
	r.core.ClearPanes()
	r.stats.Commits.Add(1)
	r.publishStats()
	return nil
}

// encodedStep is a step encoded into r.buf, with what it costs in a transaction.
type encodedStep struct {
	panes     [][2]int // offsets in r.buf, for publishing once committed
	paneCost  int
	tombs     []string
	puts      []stateKV
	meta      []byte
	stateCost int
}

type stateKV struct {
	key string
	v   []byte
}

// encodeStep encodes the step's panes, window state and meta into r.buf, to know the
// transaction's size: a slice of r.buf stays valid when it grows (growing copies, it does
// not overwrite).
func (r *Runner) encodeStep() *encodedStep {
	c := r.core
	r.buf = r.buf[:0]
	st := &encodedStep{}
	for i := range c.panes {
		s := len(r.buf)
		r.buf = r.enc.AppendJSON(r.buf, &c.panes[i])
		st.panes = append(st.panes, [2]int{s, len(r.buf)})
		st.paneCost += appendCost(len(r.o.Output), len(r.buf)-s)
	}
	st.stateCost = metaCost(len(r.metaKey)) + cursorCost(len(r.o.Input), len(r.consumer))
	if len(st.panes) > 0 {
		st.stateCost += logCost(len(r.o.Output))
	}
	for _, t := range c.tombs {
		r.keyBuf = r.windowKey(r.keyBuf[:0], t.ks, t.start)
		st.tombs = append(st.tombs, string(r.keyBuf))
		st.stateCost += putCost(len(r.keyBuf), 0)
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
		st.puts = append(st.puts, stateKV{string(r.keyBuf), r.buf[s:]})
		st.stateCost += putCost(len(r.keyBuf), len(r.buf)-s)
	}
	m, ms := c.meta(), len(r.buf)
	r.buf = m.appendTo(r.buf)
	st.meta = r.buf[ms:]
	return st
}

// panesWithState is how many of the last panes of an isolated step too large for one
// transaction fit in the transaction of its state.
func (r *Runner) panesWithState(st *encodedStep) int {
	room := r.maxTxn - st.stateCost // > 0: tooBigToCommit let the record in
	with := 0
	for with < len(st.panes) {
		p := st.panes[len(st.panes)-1-with]
		if room -= appendCost(len(r.o.Output), p[1]-p[0]); room < 0 {
			break
		}
		with++
	}
	return with
}

// commitPanesApart appends the panes split off a step, in order, in transactions of their
// own.
func (r *Runner) commitPanesApart(ctx context.Context, head [][2]int) error {
	for len(head) > 0 {
		n, size := 0, logCost(len(r.o.Output))
		for n < len(head) && n < r.o.MaxStepOps {
			pc := appendCost(len(r.o.Output), head[n][1]-head[n][0])
			if n > 0 && size+pc > r.maxTxn {
				break
			}
			size += pc
			n++
		}
		part := head[:n]
		head = head[n:]
		err := r.o.Store.Update(ctx, func(tx *buffer.Tx) {
			for _, p := range part {
				tx.Append(r.o.Output, r.buf[p[0]:p[1]])
			}
		})
		if err != nil {
			return fmt.Errorf("pipeline %q: commit step: panes: %w", r.spec.Name, err)
		}
	}
	if r.afterPartialCommit != nil {
		if err := r.afterPartialCommit(); err != nil {
			return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
		}
	}
	return nil
}

// commitState commits, in one transaction, the panes that go with the state, the window
// state, the meta and the cursor at next.
func (r *Runner) commitState(ctx context.Context, st *encodedStep, panes [][2]int, next uint64) error {
	c := r.core
	err := r.o.Store.Update(ctx, func(tx *buffer.Tx) {
		for _, p := range panes {
			tx.Append(r.o.Output, r.buf[p[0]:p[1]])
		}
		for _, k := range st.tombs {
			tx.Delete(k)
		}
		for _, p := range st.puts {
			tx.Put(p.key, p.v)
		}
		tx.Put(r.metaKey, st.meta)
		tx.SetCursor(r.o.Input, r.consumer, next)
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
	}
	r.next, r.saved = next, c.meta()
	if r.shrink > 0 && r.next >= r.shrinkUntil {
		r.shrink = 0 // past what was too large: back to full steps
	}
	c.dirty = c.dirty[:0]
	c.tombs = c.tombs[:0]
	c.dirtyBytes = 0
	return nil
}

// published publishes a committed step's panes and late records locally and keeps the
// summaries of the last panes (status).
func (r *Runner) published(panes [][2]int) {
	c := r.core
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
}

// stepTooLargeError: a step came out larger than one store transaction; nothing was
// written. next is where its input ended.
type stepTooLargeError struct {
	next  uint64
	bytes int
}

func (e *stepTooLargeError) Error() string {
	return fmt.Sprintf("step of %d bytes is larger than one store transaction", e.bytes)
}

// What a commit writes, by the store's count (buffer.Store.MaxRequestBytes: each write's
// key and value plus 16 bytes, and 48 per log appended to), as upper bounds: the store's
// key prefixes are taken at their largest.
const (
	// txnSlack is kept below the store's limit for what these bounds miss.
	txnSlack = 1024
	// maxCommitBytes bounds what one record may need in one commit: the window state it
	// changes (committed together with the watermark and the cursor), or one of its
	// windows' pane with its state (a later firing). It is a constant, not the store's
	// limit, so that replay drops exactly the records the daemon drops; NewRunner checks
	// that the store's transactions hold it (they hold about 553 KiB).
	maxCommitBytes = 512 << 10
	// paneFixed is a pane's JSON without its pipeline's name and its key, every field at
	// its widest: id, 30-byte times, count, 7 aggregates of 24 characters, pane index.
	paneFixed = 468
	// windowFixed is a window's state without its series (pipeline.appendWindow, varints
	// at their widest), windowKeyFixed its key without the pipeline's name.
	windowFixed    = 141
	windowKeyFixed = 53
	// logNameBound stands for the input and output log names where they are not known
	// (replay): the gateway's are "raw" and "agg".
	logNameBound = 64
)

func putCost(key, value int) int       { return 2 + key + value + 16 } // "s/" + key
func appendCost(log, value int) int    { return 11 + log + value + 16 }
func logCost(log int) int              { return 48 + appendCost(log, 8) } // meta and a time-index key
func metaCost(key int) int             { return putCost(key, 39) }
func cursorCost(log, consumer int) int { return 3 + log + consumer + 8 + 16 }

// windowCost is what saving one window of a series of k bytes costs.
func windowCost(name, k int) int { return putCost(windowKeyFixed+name, windowFixed+k) }

// worst bounds what Step(in) writes, in bytes and writes: the windows it updates, and a
// LATE pane for each of them the watermark has passed.
func (r *Runner) worst(in *Input) (bytes, ops int) {
	c := r.core
	name := len(r.spec.Name)
	wc := windowCost(name, len(in.Series))
	var touched, late, tombs int
	switch r.spec.Kind {
	case Tumbling, Sliding:
		every := r.spec.Every
		if r.spec.Kind == Tumbling {
			every = r.spec.Size
		}
		n := r.spec.Size / every
		last := floorDiv(in.TS, every) * every
		first := last - r.spec.Size + every
		// How many of the record's window starts first, first+every, ... are ≤ x.
		upTo := func(x int64) int64 {
			if x == NegInf || x < first {
				return 0
			}
			return min((x-first)/every+1, n)
		}
		tooLate := upTo(satAdd(c.wm, -r.spec.Size-r.spec.AllowedLateness))
		touched = int(n - tooLate)
		late = int(upTo(satAdd(c.wm, -r.spec.Size)) - tooLate)
	case Session:
		if end := in.TS + r.spec.Gap; satAdd(end, r.spec.AllowedLateness) > c.wm {
			touched, late, tombs = 1, 1, 2 // a merge of two sessions, and a new start
		}
	}
	bytes = touched*wc + tombs*putCost(windowKeyFixed+name, 0)
	if late > 0 {
		bytes += late * appendCost(len(r.o.Output), paneFixed+r.bound.nameQ+quotedLen(in.Series))
	}
	return bytes, touched + late + tombs
}

// commitBound is what tooBig needs to know of a pipeline, computed once.
type commitBound struct {
	name, nameQ, windows, tombs, fixed int
}

func newCommitBound(spec *Spec) commitBound {
	b := commitBound{name: len(spec.Name), nameQ: quotedLen(spec.Name), windows: 1}
	switch spec.Kind {
	case Sliding:
		b.windows = int(spec.Size / spec.Every)
	case Session:
		b.tombs = 2
	}
	b.fixed = metaCost(len(metaKey(spec.Name))) + cursorCost(logNameBound, len(ConsumerName(spec.Name))) + logCost(logNameBound)
	return b
}

// tooBig reports whether a record of series could need more than one transaction can
// hold: the state of all its windows (committed at once with the watermark and the
// cursor: they cannot be split), or one window's pane with its state (a firing). The
// runner and replay both drop such a record from aggregation (Counters.Oversized), so
// they emit the same panes. With the gateway's limits, a 1000-window sliding pipeline
// takes series of up to about 300 bytes, a tumbling one up to about 250 KB.
func (b *commitBound) tooBig(series string) bool {
	k := len(series)
	if b.windows*windowCost(b.name, k)+b.tombs*putCost(windowKeyFixed+b.name, 0)+b.fixed > maxCommitBytes {
		return true
	}
	unit := func(quoted int) int {
		return appendCost(logNameBound, paneFixed+b.nameQ+quoted) + windowCost(b.name, k) + b.fixed
	}
	if unit(6*k+2) <= maxCommitBytes { // quoted at its longest: no need to measure
		return false
	}
	return unit(quotedLen(series)) > maxCommitBytes
}

// tooBigToCommit is commitBound.tooBig for one spec (tests).
func tooBigToCommit(spec *Spec, series string) bool {
	b := newCommitBound(spec)
	return b.tooBig(series)
}

// quotedLen is len(record.AppendString(nil, s)), without writing it.
func quotedLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&':
				n++
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
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
	s.Oversized.Store(cn.Oversized)
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

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
	// A checkpoint commits what the runner holds in memory (see Runner). It takes one when
	// it has read all its input (unless DeferCaughtUp), and while it reads at the latest
	// after CheckpointRecords input entries (default 262144), when the window state
	// changed since the last one reaches about CheckpointBytes (default 4 MiB), or
	// CheckpointInterval (processing time, default 1 s) after the last one.
	// DeferCaughtUp, once all input is read, leaves what is held in memory to the interval,
	// unless panes or late records wait to be published (tests use it to crash between
	// checkpoints).
	CheckpointRecords  int
	CheckpointBytes    int
	CheckpointInterval time.Duration
	DeferCaughtUp      bool
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
// pipeline's cursor, keeps window state in memory and, per checkpoint, commits the
// window state changed since the last one, the watermark, the panes emitted (appended to
// the output log) and the cursor (DESIGN invariant 3, per checkpoint). Panes become
// visible (output log, local publishing) only with the checkpoint that holds their state.
// A crash between checkpoints restarts from the last one and applies the same records to
// the same state: the same panes, with the same ids and content. What processing time
// does to the state (an idle advance of the watermark, EARLY panes) is not in the input
// log: a step where it happens ends with a checkpoint, so that it is durable before any
// record is applied after it that a replay would have to see it for.
//
// The window state of a checkpoint may span several transactions (see state.go), the
// panes not: a checkpoint is taken before a record whose worst case no longer fits in one
// with them, except one record whose panes alone do not fit (a late record in a wide
// sliding pipeline): its first panes are committed ahead (see commit).
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
	pos   uint64 // input position the core has read up to (≥ next)
	saved meta   // the meta last committed (or found at load), without its generation
	gen   uint64 // the generation of the last checkpoint
	// lastCheckpoint is the processing time of the last checkpoint (or load);
	// sinceCheckpoint counts the input entries read since.
	lastCheckpoint  time.Time
	sinceCheckpoint int
	// read mirrors pos, for tests (the runner's goroutine owns pos).
	read atomic.Uint64
	// afterCheckpointWrite, if set, runs after each transaction of a checkpoint before its
	// flip ("state") and after the flip when dropped windows are left to delete ("flip");
	// tests make it fail: a crash there.
	afterCheckpointWrite func(stage string) error
	// skipFinalCommit, set by tests, makes Run end without the checkpoint it commits when
	// its context ends: a crash.
	skipFinalCommit bool
	// base is what the cores before this one counted up to their last commit; committed
	// adds the current core's counts at its last commit. A reload starts a core at zero.
	base, committed Counters
	buf, cbuf       []byte // a checkpoint's panes and meta, its window values
	spareBuf        []byte // the buffers of the last checkpoint written, for the next
	spareCbuf       []byte
	flight          *flight // the checkpoint being written (see commit)
	keyBuf          []byte
	lates           [][]byte // too late, published with the next checkpoint
	latesBytes      int
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
	if o.CheckpointRecords <= 0 {
		o.CheckpointRecords = 1 << 18
	}
	if o.CheckpointBytes <= 0 {
		o.CheckpointBytes = 4 << 20
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Second
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
			r.final()
			return nil
		}
		more, err := r.step()
		var big *stepTooLargeError
		if errors.As(err, &big) {
			// Nothing of it was written: try again at once, in smaller steps.
			r.settle()
			r.shrink = min(r.shrink+1, maxShrink)
			r.shrinkUntil = max(r.shrinkUntil, big.next, r.next+1)
			r.lg.Info("pipeline step larger than one store transaction; retrying in smaller steps", "bytes", big.bytes, "limit", r.maxTxn, "shrink", r.shrink)
			if err := r.load(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			r.settle()
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
				r.final()
				return nil
			}
			r.settle()
			if errors.Is(err, buffer.ErrClosed) {
				return nil
			}
			return fmt.Errorf("pipeline %q: %w", r.spec.Name, err)
		}
	}
}

// settle waits for the checkpoint in flight, if any, before the runner reloads or ends: a
// failure of it is of no more consequence than the one being handled.
func (r *Runner) settle() {
	if err := r.reap(); err != nil {
		r.lg.Warn("pipeline: checkpoint failed; a restart reads again from the one before", "err", err)
	}
}

// final takes a last checkpoint when Run ends, so that a restart has nothing to read
// again. A failure only costs that: the restart replays from the last checkpoint.
func (r *Runner) final() {
	if !r.skipFinalCommit && r.dirty() {
		if err := r.commit(r.pos, false); err != nil {
			r.stats.Errors.Add(1)
			r.lg.Warn("pipeline: last checkpoint failed; a restart reads again from the one before", "err", err)
		}
	}
	r.settle()
}

// backoff is the wait after the n-th failed step: exponential within MinBackoff and
// MaxBackoff, at least half of each step (a failing store is not hammered), jittered.
func (r *Runner) backoff(failures int) time.Duration {
	return backoff.Policy{Min: r.MinBackoff, Max: r.MaxBackoff, Jitter: backoff.Equal}.Wait(failures)
}

// load rebuilds the core from the store: meta, windows, cursor. It deletes what a
// checkpoint that never flipped wrote, and what a flipped one dropped but did not delete
// yet (see state.go).
func (r *Runner) load() error {
	c, err := NewCore(r.spec)
	if err != nil {
		return err
	}
	c.trackDirty = true
	name := r.spec.Name
	saved := c.meta() // nothing to save while nothing happens
	gen := uint64(0)
	if v, ok, err := r.o.Store.Get(r.metaKey); err != nil {
		return fmt.Errorf("pipeline %q: load state: %w", name, err)
	} else if ok {
		m, err := decodeMeta(v)
		if err != nil {
			return fmt.Errorf("pipeline %q: load state: meta: %w", name, err)
		}
		gen, m.gen = m.gen, 0
		c.restoreMeta(m)
		saved = m
		if m.shape != c.shape {
			r.lg.Warn("window shape changed since the last run: open windows are dropped; the watermark is kept")
		}
	}
	var stale []string
	// A window's two slots come one after the other (slot 1's key extends slot 0's).
	var held struct {
		base  string
		slot  uint8
		gen   uint64
		tomb  bool
		v     []byte
		valid bool
	}
	resolve := func() {
		if !held.valid {
			return
		}
		held.valid = false
		if held.tomb {
			stale = append(stale, held.base, held.base+slotSuffix)
			return
		}
		if err := c.restoreWindow(held.v, held.slot); err != nil {
			r.lg.Error("unreadable window state dropped", "key", held.base, "err", err)
			stale = append(stale, held.base, held.base+slotSuffix)
		}
	}
	err = r.o.Store.ScanState(r.winPrefix, func(k string, v []byte) error {
		if saved.shape != c.shape {
			stale = append(stale, k)
			return nil
		}
		base, slot := k, uint8(0)
		if b, ok := strings.CutSuffix(k, slotSuffix); ok {
			base, slot = b, 1
		}
		g, tomb, err := decodeSlot(v)
		if err != nil {
			r.lg.Error("unreadable window state dropped", "key", k, "err", err)
			stale = append(stale, k)
			return nil
		}
		if g > gen {
			stale = append(stale, k) // written by a checkpoint that did not flip
			return nil
		}
		if held.valid && held.base == base {
			if g < held.gen {
				return nil // superseded: the next checkpoint of the window overwrites it
			}
		} else {
			resolve()
		}
		held.base, held.slot, held.gen, held.tomb, held.valid = base, slot, g, tomb, true
		held.v = append(held.v[:0], v...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: load state: %w", name, err)
	}
	resolve()
	if err := r.deleteState(stale); err != nil {
		return fmt.Errorf("pipeline %q: drop stale state: %w", name, err)
	}
	r.next, err = r.o.Store.Cursor(r.o.Input, r.consumer)
	if err != nil {
		return fmt.Errorf("pipeline %q: %w", name, err)
	}
	r.core = c
	r.lates, r.latesBytes = r.lates[:0], 0
	r.pos = r.next
	r.read.Store(r.pos)
	r.gen = gen
	r.saved = saved // a changed shape differs from c.meta(): the next step saves it
	r.base = r.committed
	r.lastCheckpoint = r.o.Clock.Now()
	r.sinceCheckpoint = 0
	r.stats.Position.Store(r.next)
	r.stats.Watermark.Store(c.wm)
	r.stats.OpenWindows.Store(int64(c.OpenWindows()))
	return nil
}

// deleteState deletes keys of the state KV, in transactions of 1000.
func (r *Runner) deleteState(keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		chunk := keys[:n]
		keys = keys[n:]
		err := r.o.Store.Update(context.Background(), func(tx *buffer.Tx) {
			for _, k := range chunk {
				tx.Delete(k)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// The step's limits, divided by 2^shrink.
func (r *Runner) stepBytes() int   { return max(r.o.MaxStepBytes>>r.shrink, 1) }
func (r *Runner) stepOps() int     { return max(r.o.MaxStepOps>>r.shrink, 1) }
func (r *Runner) stepRecords() int { return max(r.o.MaxStepRecords>>r.shrink, 1) }
func (r *Runner) fireChunk() int   { return max(64>>r.shrink, 1) }

// maxShrink bounds shrink: a step of one record or one firing, which always fits.
const maxShrink = 6

// pending estimates what the next flip holds so far besides its fixed writes: the panes
// and their bytes (and the late records waiting to be published, held in memory until
// then).
func (r *Runner) pending() (bytes, ops int) {
	c := r.core
	ops = len(c.panes)
	// Each write also costs the store its log key prefix and 16 bytes.
	return c.outBytes + r.latesBytes + 64*ops, ops
}

// stateFull reports whether the window state changed since the last checkpoint reached
// CheckpointBytes.
func (r *Runner) stateFull() bool {
	c := r.core
	return c.dirtyBytes+100*len(c.tombs) >= r.o.CheckpointBytes
}

// full reports whether the checkpoint has reached its budget.
func (r *Runner) full() bool {
	bytes, ops := r.pending()
	return bytes >= r.stepBytes() || ops >= r.stepOps() || r.stateFull()
}

// dirty reports whether the runner holds anything the last checkpoint does not.
func (r *Runner) dirty() bool {
	c := r.core
	return r.pos != r.next || len(c.panes) > 0 || len(c.dirty) > 0 || len(c.tombs) > 0 || len(r.lates) > 0 || c.meta() != r.saved
}

// fire lets the core emit what is due, within the checkpoint's budget, and reports whether
// the budget is reached. When it is not, nothing is pending: Fire did less than it was
// allowed.
func (r *Runner) fire() (full bool) {
	c := r.core
	for !r.full() {
		n := min(r.fireChunk(), r.stepOps()-len(c.panes))
		if n <= 0 {
			return true
		}
		if c.Fire(n) < n {
			return false
		}
	}
	return true
}

// step processes what is available, within the budget, and takes a checkpoint when one is
// due (see RunnerOptions). more reports that work is left (budget reached, or more input
// than one read).
//
// Before each record it bounds the panes the record can fire (worst): a checkpoint that
// could no longer hold them is taken first, and the record goes to the next step. A record
// whose panes alone are past the budget (a late one in a sliding pipeline fires a pane per
// window) is applied alone, after a checkpoint, without firing after it: its commit may
// then be split (see commit). A record too large to commit at all is dropped from
// aggregation and counted (tooBigToCommit), as replay does.
//
// A step in which processing time changed the state (Tick advanced an idle watermark, or
// EARLY panes fired) ends with a checkpoint: replay from the cursor could not redo it.
func (r *Runner) step() (more bool, err error) {
	if r.landed() {
		if err := r.reap(); err != nil {
			return false, err
		}
	}
	c := r.core
	early0 := c.stats.Panes[Early]
	now := r.o.Clock.Now()
	m0 := c.meta()
	c.Tick(now.UnixNano())
	idled := c.meta() != m0 // an idle advance of the watermark
	next := r.pos
	stopped := r.fire()
	full := stopped
	caughtUp := false
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
		_, err = r.o.Store.Read(r.o.Input, r.pos, r.stepRecords(), func(seq uint64, v []byte) error {
			reading, err := record.ParseReading(v, &in)
			if err != nil {
				next = seq + 1
				n++
				r.skipMalformed(seq, err)
				return nil
			}
			if reading && c.match(in.Topic) {
				if r.bound.tooBig(in.Series) {
					next = seq + 1
					n++
					r.dropOversized(seq, in.Series)
					return nil
				}
				wb, wo := r.worst(&in)
				if wb > r.stepBytes() || wo > r.stepOps() {
					if next != r.next || r.dirty() {
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
				if pb, po := r.pending(); pb+wb > r.stepBytes() || po+wo > r.stepOps() || r.stateFull() {
					stopped, full = true, true // it goes in the next step
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
				stopped, full = true, true
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
		if !stopped {
			if next <= last {
				next = last + 1 // the rest of the range was trimmed: nothing to read there
			}
			caughtUp = true
		}
	}
	r.sinceCheckpoint += int(next - r.pos)
	r.pos = next
	r.read.Store(next)
	iv := r.o.CheckpointInterval
	due := full || alone != nil || isolated ||
		idled || c.stats.Panes[Early] != early0 || // processing time changed the state
		r.sinceCheckpoint >= r.o.CheckpointRecords ||
		now.Sub(r.lastCheckpoint) >= iv ||
		caughtUp && (!r.o.DeferCaughtUp || len(c.panes) > 0 || len(r.lates) > 0)
	if due && r.dirty() {
		if err := r.commit(next, isolated); err != nil {
			return false, err
		}
	}
	if alone != nil {
		// No Tick in between: the record is applied to exactly the state just committed,
		// so a crash during its split commit replays it to the same panes.
		r.apply(alone, aloneRaw)
		r.pos = aloneSeq + 1
		r.read.Store(r.pos)
		r.sinceCheckpoint++
		if err := r.commit(aloneSeq+1, true); err != nil {
			return false, err
		}
	}
	if !stopped {
		// Caught up: nothing to overlap the checkpoint's write with.
		if err := r.reap(); err != nil {
			return false, err
		}
	}
	return stopped, nil // not stopped: nothing is pending either (fire)
}

// skipMalformed counts an input entry that is not a record; the step goes past it.
func (r *Runner) skipMalformed(seq uint64, err error) {
	r.stats.Malformed.Add(1)
	r.warn("malformed", "skipping an input entry that is not a record", "seq", seq, "err", err)
}

// dropOversized counts a record whose window updates cannot be committed in one store
// transaction: it is dropped from aggregation.
func (r *Runner) dropOversized(seq uint64, series string) {
	r.core.stats.Oversized++
	r.warn("oversized", "a record whose window updates cannot be committed in one store transaction is dropped from aggregation", "seq", seq, "series_bytes", len(series))
}

// apply steps the core with one record; v is the stored record (the late topic gets it).
func (r *Runner) apply(in *Input, v []byte) {
	switch r.core.Step(in) {
	case TooLate:
		if r.o.Publisher != nil {
			r.lates = append(r.lates, bytes.Clone(v))
			r.latesBytes += len(v)
		}
	case Capped:
		r.warn("cap", "open-window cap reached: records dropped from aggregation", "max_open_windows", r.spec.MaxOpenWindows)
	}
}

// wait sleeps until the input log grows, the core's next deadline, a checkpoint's
// deadline, or ctx ends.
func (r *Runner) wait(ctx context.Context) error {
	var timer <-chan time.Time
	now := r.o.Clock.Now()
	d, ok := r.core.NextDeadline()
	if iv := r.o.CheckpointInterval; r.dirty() {
		// What is held in memory is committed an interval after the last checkpoint.
		at := r.lastCheckpoint.Add(iv).UnixNano()
		if !ok || at < d {
			d, ok = at, true
		}
	}
	if ok {
		dur := time.Duration(d - now.UnixNano())
		if dur <= 0 {
			return nil
		}
		t := r.o.Clock.NewTimer(dur)
		defer t.Stop()
		timer = t.C()
	}
	after := r.pos
	if after > 0 {
		after--
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	woke := make(chan error, 1)
	go func() { woke <- r.o.Store.Wait(wctx, r.o.Input, after) }()
	var landed chan struct{} // a checkpoint written: publish it (step reaps it)
	if r.flight != nil {
		landed = r.flight.done
	}
	select {
	case <-landed:
		cancel()
		<-woke
		return nil
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

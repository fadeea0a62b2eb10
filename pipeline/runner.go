package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/backoff"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
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
	flights         []*flight // the checkpoints being written, oldest first (see commit)
	flightBytes     int       // what they hold
	keyBuf          []byte
	// cur is the batch of input the runner takes entries from, ahead the next one, being
	// read, spareBatch one taken, for its buffers (see current).
	cur, ahead, spareBatch *inBatch
	batchHigh              int      // the most bytes of input a batch held (tests)
	lates                  [][]byte // too late, published with the next checkpoint
	latesBytes             int
	lastWarn               map[string]time.Time
	output                 atomic.Pointer[string] // the output topic; SetOutput changes it while running

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
	defer r.dropReadAhead()
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

// settle waits for the checkpoints in flight, if any, before the runner reloads or ends: a
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
	if len(r.flights) > 0 {
		landed = r.flights[0].done
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

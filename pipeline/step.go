// A step of the runner: reading input within the budget of one checkpoint, firing panes,
// and deciding when a checkpoint is due (see commit.go for writing it).

package pipeline

import (
	"bytes"
	"errors"
	"strings"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/record"
)

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
	if err := r.reapLanded(); err != nil {
		return false, err
	}
	c := r.core
	early0 := c.stats.Panes[Early]
	now := r.o.Clock.Now()
	m0 := c.meta()
	c.Tick(now.UnixNano())
	idled := c.meta() != m0 // an idle advance of the watermark
	s := stepState{next: r.pos}
	s.stopped = r.fire()
	s.full = s.stopped
	if !s.stopped {
		if err := r.readStep(&s); err != nil {
			return false, err
		}
	}
	r.sinceCheckpoint += int(s.next - r.pos)
	r.pos = s.next
	r.read.Store(s.next)
	iv := r.o.CheckpointInterval
	due := s.full || s.alone != nil || s.isolated ||
		idled || c.stats.Panes[Early] != early0 || // processing time changed the state
		r.sinceCheckpoint >= r.o.CheckpointRecords ||
		now.Sub(r.lastCheckpoint) >= iv ||
		s.caughtUp && (!r.o.DeferCaughtUp || len(c.panes) > 0 || len(r.lates) > 0)
	if due && r.dirty() {
		if err := r.commit(s.next, s.isolated); err != nil {
			return false, err
		}
	}
	if s.alone != nil {
		if err := r.commitAlone(&s); err != nil {
			return false, err
		}
	}
	if !s.stopped {
		// Caught up: nothing to overlap the checkpoint's write with.
		if err := r.reap(); err != nil {
			return false, err
		}
	}
	return s.stopped, nil // not stopped: nothing is pending either (fire)
}

// stepState is what a step's read leaves to the rest of the step.
type stepState struct {
	next     uint64 // the input position after what the step took
	n        int    // the input entries taken
	stopped  bool   // the step stopped before the end of what it could read
	full     bool   // the checkpoint's budget is reached
	caughtUp bool   // the step read to the end of the input log
	isolated bool   // a record was applied alone in the step (setAside)
	// alone is a record set aside to apply alone once what precedes it is committed
	// (commitAlone): aloneRaw is the stored record, aloneSeq its position.
	alone    *Input
	aloneRaw []byte
	aloneSeq uint64
}

// readStep takes the step's input from r.pos, at most stepRecords entries, each (take)
// until one stops the step. The entries come from batches read ahead (see current); a
// step that takes a batch read to the end of the log is caught up: its position goes past
// the end as of that read, over what was trimmed.
func (r *Runner) readStep(s *stepState) error {
	b, err := r.current()
	if err != nil {
		return err
	}
	var in Input
	limit := r.stepRecords()
	for b.i < len(b.ents) {
		if s.n == limit {
			s.stopped = true
			break
		}
		e := b.ents[b.i]
		if err := r.take(s, &in, e.seq, b.value(e)); errors.Is(err, buffer.ErrStop) {
			break // the step stops at or before e
		} else if err != nil {
			return err
		}
		b.i++
	}
	for b.i < len(b.ents) && b.ents[b.i].seq < s.next {
		b.i++ // taken by setAside
	}
	b.pos = max(b.pos, s.next)
	if s.stopped || b.i < len(b.ents) {
		return nil
	}
	if b.full {
		s.stopped = true // more to read
		return nil
	}
	if s.next <= b.last {
		s.next = b.last + 1 // the rest of the range was trimmed: nothing to read there
	}
	s.caughtUp = true
	return nil
}

// take processes the input entry at seq (v; in is reused from entry to entry), or returns
// buffer.ErrStop to stop the step before it (it goes in the next step) or at it (setAside).
func (r *Runner) take(s *stepState, in *Input, seq uint64, v []byte) error {
	reading, err := record.ParseReading(v, in)
	if err != nil {
		s.next = seq + 1
		s.n++
		r.skipMalformed(seq, err)
		return nil
	}
	if reading && r.core.match(in.Topic) {
		if r.bound.tooBig(in.Series) {
			s.next = seq + 1
			s.n++
			r.dropOversized(seq, in.Series)
			return nil
		}
		wb, wo := r.worst(in)
		if wb > r.stepBytes() || wo > r.stepOps() {
			r.setAside(s, in, seq, v)
			return buffer.ErrStop
		}
		if pb, po := r.pending(); pb+wb > r.stepBytes() || po+wo > r.stepOps() || r.stateFull() {
			s.stopped, s.full = true, true // it goes in the next step
			return buffer.ErrStop
		}
	}
	s.next = seq + 1
	s.n++
	if !reading {
		return nil
	}
	r.apply(in, v)
	if r.fire() {
		s.stopped, s.full = true, true
		return buffer.ErrStop
	}
	return nil
}

// setAside stops the step at a record whose panes alone are past the budget. When anything
// precedes it since the last checkpoint, the record is kept to be applied alone once that
// is committed (commitAlone); else it is applied now, alone in its step (isolated).
func (r *Runner) setAside(s *stepState, in *Input, seq uint64, v []byte) {
	if s.next != r.next || r.dirty() {
		// Commit what precedes it first, then apply it alone (commitAlone).
		s.alone = &Input{Topic: strings.Clone(in.Topic), Series: strings.Clone(in.Series), TS: in.TS, Value: in.Value}
		s.aloneRaw, s.aloneSeq = bytes.Clone(v), seq
	} else {
		s.next = seq + 1
		r.apply(in, v)
		s.isolated = true
	}
	s.stopped = true
}

// commitAlone applies the record set aside (setAside) and commits it alone. No Tick in
// between: the record is applied to exactly the state just committed, so a crash during
// its split commit replays it to the same panes.
func (r *Runner) commitAlone(s *stepState) error {
	r.apply(s.alone, s.aloneRaw)
	r.pos = s.aloneSeq + 1
	r.read.Store(r.pos)
	r.sinceCheckpoint++
	return r.commit(s.aloneSeq+1, true)
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

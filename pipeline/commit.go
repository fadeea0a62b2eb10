// Committing a step: its transaction (or, for an isolated record too large for one, its
// panes split off first), and the cost model that bounds what a step may write.

package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/buffer"
)

// commit takes a checkpoint at input position next: the window state changed since the
// last one, then its flip (see state.go): one transaction with the panes, the meta, the
// cursor and what fits of the window state. It then publishes the panes and late records.
//
// Panes that do not fit in one transaction are not written. When the checkpoint holds one
// record applied alone (isolated), they are split: the first ones are appended in
// transactions of their own before the flip. A crash in between restarts from the cursor
// before that record and the state it was applied to, so the record fires the same panes
// again, with the same ids and content (DESIGN invariant 3, per checkpoint): the aggregate
// log holds those twice, as after any crash between an append and an uplink's commit. Any
// other checkpoint whose panes are too large returns a stepTooLargeError: Run retries it in
// smaller steps.
func (r *Runner) commit(next uint64, isolated bool) error {
	gen := r.gen + 1
	st := r.encodeStep(gen)
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ws *flipWrites
	var err error
	// The panes that go with the flip: all of them when they fit.
	with := len(st.panes)
	if total := st.stateCost + st.paneCost; total > r.maxTxn || isolated {
		if !isolated {
			return &stepTooLargeError{next: next, bytes: total}
		}
		// One record applied alone: its window state (which fits, see tooBigToCommit)
		// goes with the flip, and as many of its last panes as fit there too.
		if ws, err = r.writeWindows(cctx, gen, r.maxTxn-st.stateCost, r.o.MaxStepOps-2); err != nil {
			return err
		}
		with = r.panesWithState(st, ws)
	} else {
		room, roomOps := r.maxTxn-st.stateCost-st.paneCost, r.o.MaxStepOps-2-len(st.panes)
		if ws, err = r.writeWindows(cctx, gen, room, roomOps); err != nil {
			return err
		}
	}
	if head := st.panes[:len(st.panes)-with]; len(head) > 0 {
		if err := r.commitPanesApart(cctx, head); err != nil {
			return err
		}
	}
	if err := r.commitState(cctx, st, st.panes[len(st.panes)-with:], ws, next, gen); err != nil {
		return err
	}
	if len(ws.purge) > 0 {
		if r.afterCheckpointWrite != nil {
			if err := r.afterCheckpointWrite("flip"); err != nil {
				return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
			}
		}
		// Flipped: the windows marked dropped are gone. A crash before these deletes
		// leaves them to the next load.
		if err := r.deleteState(ws.purge); err != nil {
			return fmt.Errorf("pipeline %q: commit step: delete dropped windows: %w", r.spec.Name, err)
		}
	}
	r.published(st.panes)
	r.core.ClearPanes()
	r.lates, r.latesBytes = r.lates[:0], 0
	r.lastCheckpoint = r.o.Clock.Now()
	r.sinceCheckpoint = 0
	r.stats.Commits.Add(1)
	r.publishStats()
	return nil
}

// encodedStep is a checkpoint's panes and meta encoded into r.buf, with what they cost in
// a transaction.
type encodedStep struct {
	panes     [][2]int // offsets in r.buf, for publishing once committed
	paneCost  int
	meta      []byte
	stateCost int // the meta, the cursor and the output log's own writes
}

type stateKV struct {
	key string
	v   []byte
}

// encodeStep encodes the checkpoint's panes and meta into r.buf, to know the flip's size:
// a slice of r.buf stays valid when it grows (growing copies, it does not overwrite).
func (r *Runner) encodeStep(gen uint64) *encodedStep {
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
	m, ms := c.meta(), len(r.buf)
	m.gen = gen
	r.buf = m.appendTo(r.buf)
	st.meta = r.buf[ms:]
	return st
}

// flipWrites are the window writes that go into a checkpoint's flip, and the keys to
// delete after it.
type flipWrites struct {
	puts      []stateKV
	dels      []string
	purge     []string
	size, ops int // what puts and dels cost
}

// writeWindows writes the window state changed since the last checkpoint, as generation
// gen, each window into the slot its saved version is not in. What fits in room bytes and
// roomOps writes is left for the flip, in the returned flipWrites; the rest is committed
// now, in transactions of its own. A window dropped is deleted in the flip when it fits,
// or else marked dropped before it and deleted after.
func (r *Runner) writeWindows(ctx context.Context, gen uint64, room, roomOps int) (*flipWrites, error) {
	c := r.core
	fw := &flipWrites{}
	// The saved slot of each dropped window, by key: a window saved again at the same key
	// (a session merged back to a start it had) goes to the other slot instead.
	var dropped map[string]uint8
	if len(c.tombs) > 0 {
		dropped = make(map[string]uint8, len(c.tombs))
		for _, t := range c.tombs {
			r.keyBuf = r.windowKey(r.keyBuf[:0], t.ks, t.start)
			dropped[string(r.keyBuf)] = t.slot
		}
	}
	var chunk []stateKV
	size, ops := 0, 0
	r.cbuf = r.cbuf[:0]
	flush := func() error {
		part := chunk
		err := r.o.Store.Update(ctx, func(tx *buffer.Tx) {
			for _, p := range part {
				tx.Put(p.key, p.v)
			}
		})
		if err != nil {
			return fmt.Errorf("pipeline %q: commit step: window state: %w", r.spec.Name, err)
		}
		chunk, size, ops = chunk[:0], 0, 0
		r.cbuf = r.cbuf[:0] // the chunk's values are written: their bytes can be reused
		if r.afterCheckpointWrite != nil {
			if err := r.afterCheckpointWrite("state"); err != nil {
				return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
			}
		}
		return nil
	}
	put := func(key string, w *window) error {
		s := len(r.cbuf)
		r.cbuf = appendSlot(r.cbuf, w, gen)
		cost := putCost(len(key), len(r.cbuf)-s)
		if len(chunk) > 0 && (size+cost > r.maxTxn || ops+1 > r.o.MaxStepOps) {
			// Written before the flip; the bytes of w's value move to the front.
			v := bytes.Clone(r.cbuf[s:])
			r.cbuf = r.cbuf[:s]
			if err := flush(); err != nil {
				return err
			}
			r.cbuf = append(r.cbuf, v...)
			s = 0
		}
		chunk = append(chunk, stateKV{key, r.cbuf[s:len(r.cbuf):len(r.cbuf)]})
		size += cost
		ops++
		return nil
	}
	slotKey := func(base string, slot uint8) string {
		if slot == 1 {
			return base + slotSuffix
		}
		return base
	}
	for _, w := range c.dirty {
		if !w.dirty {
			continue // freed since, or listed twice
		}
		w.dirty = false
		r.keyBuf = r.windowKey(r.keyBuf[:0], w.ks, w.start)
		base := string(r.keyBuf)
		slot := uint8(0)
		if w.stored {
			slot = 1 - w.slot
		} else if k, ok := dropped[base]; ok {
			slot = 1 - k
			delete(dropped, base) // replaced, not dropped
		}
		w.stored, w.slot = true, slot
		if err := put(slotKey(base, slot), w); err != nil {
			return nil, err
		}
	}
	for _, t := range c.tombs {
		r.keyBuf = r.windowKey(r.keyBuf[:0], t.ks, t.start)
		base := string(r.keyBuf)
		if _, ok := dropped[base]; !ok {
			continue // saved again
		}
		delete(dropped, base) // once
		if cost := 2 * putCost(len(base)+len(slotSuffix), 0); cost <= room && roomOps >= 2 {
			fw.dels = append(fw.dels, base, base+slotSuffix)
			room -= cost
			roomOps -= 2
			fw.size += cost
			fw.ops += 2
			continue
		}
		if err := put(slotKey(base, 1-t.slot), nil); err != nil {
			return nil, err
		}
		fw.purge = append(fw.purge, base, base+slotSuffix)
	}
	if len(chunk) > 0 {
		if size > room || ops > roomOps {
			if err := flush(); err != nil {
				return nil, err
			}
		} else {
			fw.puts = chunk
			fw.size += size
			fw.ops += ops
		}
	}
	return fw, nil
}

// panesWithState is how many of the last panes of an isolated step too large for one
// transaction fit in the transaction of its state.
func (r *Runner) panesWithState(st *encodedStep, ws *flipWrites) int {
	room := r.maxTxn - st.stateCost - ws.size // > 0: tooBigToCommit let the record in
	with := 0
	for with < len(st.panes) && with < r.o.MaxStepOps-2-ws.ops {
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

// commitState commits the flip, in one transaction: the panes that go with it, the
// window writes that fit (ws), the meta of generation gen and the cursor at next.
func (r *Runner) commitState(ctx context.Context, st *encodedStep, panes [][2]int, ws *flipWrites, next, gen uint64) error {
	c := r.core
	err := r.o.Store.Update(ctx, func(tx *buffer.Tx) {
		for _, p := range panes {
			tx.Append(r.o.Output, r.buf[p[0]:p[1]])
		}
		for _, k := range ws.dels {
			tx.Delete(k)
		}
		for _, p := range ws.puts {
			tx.Put(p.key, p.v)
		}
		tx.Put(r.metaKey, st.meta)
		tx.SetCursor(r.o.Input, r.consumer, next)
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
	}
	r.next, r.saved, r.gen = next, c.meta(), gen
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

// worst bounds what Step(in) adds to the flip of its checkpoint, in bytes and writes: a
// LATE pane for each of its windows the watermark has passed. (The window state it
// changes is written in transactions of its own when the flip cannot hold it.)
func (r *Runner) worst(in *Input) (bytes, ops int) {
	c := r.core
	var late int
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
		late = int(upTo(satAdd(c.wm, -r.spec.Size)) - tooLate)
	case Session:
		if end := in.TS + r.spec.Gap; satAdd(end, r.spec.AllowedLateness) > c.wm {
			late = 1
		}
	}
	if late > 0 {
		bytes = late * appendCost(len(r.o.Output), paneFixed+r.bound.nameQ+quotedLen(in.Series))
	}
	return bytes, late
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

// Committing a step: its transaction (or, for an isolated record too large for one, its
// panes split off first), and the cost model that bounds what a step may write.

package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/buffer"
)

// commit takes a checkpoint at input position next: the window state changed since the
// last one, then its flip (see state.go): one transaction with the panes, the meta, the
// cursor and what fits of the window state. The checkpoint is encoded at once and written
// by a goroutine while the runner reads on. Several may be in flight (maxFlights,
// maxFlightBytes): each is written once the one before it is, and not at all when that
// one failed, so the store always holds a prefix of them. Its panes and late records are
// published, and its counters shown, in order, once it is durable. A failed write makes
// the runner reload from the store: it then reads again from the last checkpoint that was
// written.
//
// Panes that do not fit in one transaction are not written. When the checkpoint holds one
// record applied alone (isolated), they are split: the first ones are appended in
// transactions of their own before the flip. A crash in between restarts from the cursor
// before that record and the state it was applied to, so the record fires the same panes
// again, with the same ids and content (DESIGN invariant 3, per checkpoint): the aggregate
// log holds those twice, as after any crash between an append and an uplink's commit. Any
// other checkpoint whose panes are too large returns a stepTooLargeError: Run retries it in
// smaller steps. An isolated checkpoint is written before commit returns.
func (r *Runner) commit(next uint64, isolated bool) error {
	if isolated {
		// Written before commit returns: after all before it.
		if err := r.reap(); err != nil {
			return err
		}
	}
	if err := r.reapLanded(); err != nil {
		return err
	}
	for len(r.flights) >= maxFlights || r.flightBytes >= maxFlightBytes {
		if err := r.reapOne(); err != nil {
			return err
		}
	}
	c := r.core
	gen := r.gen + 1
	f := &flight{next: next, gen: gen}
	r.buf, r.cbuf = r.spareBuf, r.spareCbuf
	r.spareBuf, r.spareCbuf = nil, nil
	st := r.encodeStep(gen)
	// The panes that go with the flip: all of them when they fit.
	with := len(st.panes)
	if total := st.stateCost + st.paneCost; total > r.maxTxn || isolated {
		if !isolated {
			return &stepTooLargeError{next: next, bytes: total}
		}
		// One record applied alone: its window state (which fits, see tooBigToCommit)
		// goes with the flip, and as many of its last panes as fit there too.
		r.encodeWindows(f, gen, r.maxTxn-st.stateCost, r.o.MaxStepOps-2)
		with = r.panesWithState(st, &f.fw)
	} else {
		r.encodeWindows(f, gen, r.maxTxn-st.stateCost-st.paneCost, r.o.MaxStepOps-2-len(st.panes))
	}
	f.st, f.with = st, with
	f.buf, f.cbuf = r.buf, r.cbuf
	r.buf, r.cbuf = nil, nil
	f.lates, r.lates, r.latesBytes = r.lates, nil, 0
	for i := max(0, len(c.panes)-lastPanes); i < len(c.panes); i++ {
		p := &c.panes[i]
		f.last = append(f.last, PaneSummary{Key: p.Key, Start: p.Start, End: p.End, Timing: p.Timing, Count: p.agg.count})
	}
	f.counters = r.base.add(c.Counters())
	f.wm, f.open = c.wm, int64(c.OpenWindows())
	// From here on the core moves on from this checkpoint, as if it were written: if it is
	// not, the runner reloads.
	r.next, r.saved, r.gen = next, c.meta(), gen
	if r.shrink > 0 && r.next >= r.shrinkUntil {
		r.shrink = 0 // past what was too large: back to full steps
	}
	c.dirty = c.dirty[:0]
	c.tombs = c.tombs[:0]
	c.dirtyBytes = 0
	c.ClearPanes()
	r.lastCheckpoint = r.o.Clock.Now()
	r.sinceCheckpoint = 0
	f.done = make(chan struct{})
	f.bytes = f.size()
	r.flights = append(r.flights, f)
	r.flightBytes += f.bytes
	if isolated {
		f.err = r.write(f)
		close(f.done)
		return r.reap()
	}
	var prev *flight
	if n := len(r.flights); n > 1 {
		prev = r.flights[n-2]
	}
	go func() {
		defer close(f.done)
		if prev != nil {
			<-prev.done
			if prev.err != nil {
				f.err = fmt.Errorf("pipeline %q: checkpoint not written: the one before it failed", r.spec.Name)
				return
			}
		}
		f.err = r.write(f)
	}()
	return nil
}

// At most maxFlights checkpoints, holding at most about maxFlightBytes of encoded panes
// and window state, are in flight: a checkpoint waits for the oldest to land beyond that.
// A burst of panes (10 000 series whose windows end together) then takes the flips it
// needs while the runner reads on, in memory bounded by these.
const (
	maxFlights     = 32
	maxFlightBytes = 8 << 20
)

// size is about what f holds in memory: its buffers and its window keys.
func (f *flight) size() int {
	n := cap(f.buf) + cap(f.cbuf)
	keys := func(kvs []stateKV) {
		for _, kv := range kvs {
			n += len(kv.key) + 40 // the key, and the stateKV with the string's header
		}
	}
	for _, c := range f.chunks {
		keys(c)
	}
	keys(f.fw.puts)
	for _, ks := range [][]string{f.fw.dels, f.fw.purge} {
		for _, k := range ks {
			n += len(k) + 16
		}
	}
	return n
}

// flight is a checkpoint encoded, being written or written. Once handed to write, the
// runner's goroutine touches it only after done (reap).
type flight struct {
	next, gen uint64
	st        *encodedStep
	with      int         // the last panes that go with the flip
	buf, cbuf []byte      // st's bytes; the window values
	chunks    [][]stateKV // window writes before the flip
	fw        flipWrites
	lates     [][]byte
	last      []PaneSummary
	counters  Counters
	wm, open  int64
	bytes     int           // size(), for maxFlightBytes
	done      chan struct{} // closed once written or failed
	err       error
}

// write writes a checkpoint: the window state that does not go with the flip, the panes
// split off, the flip, then the deletes of the windows marked dropped. It runs on the
// flight's goroutine: it reads only the flight and what does not change.
func (r *Runner) write(f *flight) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.writeChunks(ctx, f.chunks); err != nil {
		return err
	}
	st := f.st
	if head := st.panes[:len(st.panes)-f.with]; len(head) > 0 {
		if err := r.commitPanesApart(ctx, f.buf, head); err != nil {
			return err
		}
	}
	err := r.o.Store.Update(ctx, func(tx *buffer.Tx) {
		for _, p := range st.panes[len(st.panes)-f.with:] {
			tx.Append(r.o.Output, f.buf[p[0]:p[1]])
		}
		for _, k := range f.fw.dels {
			tx.Delete(k)
		}
		for _, p := range f.fw.puts {
			tx.Put(p.key, p.v)
		}
		tx.Put(r.metaKey, st.meta)
		tx.SetCursor(r.o.Input, r.consumer, f.next)
	})
	if err != nil {
		return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
	}
	if len(f.fw.purge) > 0 {
		if r.afterCheckpointWrite != nil {
			if err := r.afterCheckpointWrite("flip"); err != nil {
				return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
			}
		}
		// Flipped: the windows marked dropped are gone. A crash before these deletes
		// leaves them to the next load.
		if err := r.deleteState(f.fw.purge); err != nil {
			return fmt.Errorf("pipeline %q: commit step: delete dropped windows: %w", r.spec.Name, err)
		}
	}
	return nil
}

// writeChunks writes the window state of a checkpoint that does not go with its flip. The
// transactions are independent (each window goes to the slot its committed version is not
// in) and only have to be written before the flip: they are submitted together, at most
// chunkWriters at once, so that the store takes them in one group commit and one fsync.
func (r *Runner) writeChunks(ctx context.Context, chunks [][]stateKV) error {
	if len(chunks) == 0 {
		return nil
	}
	errs := make([]error, len(chunks))
	sem := make(chan struct{}, chunkWriters)
	var wg sync.WaitGroup
	for i, part := range chunks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = r.o.Store.Update(ctx, func(tx *buffer.Tx) {
				for _, p := range part {
					tx.Put(p.key, p.v)
				}
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("pipeline %q: commit step: window state: %w", r.spec.Name, err)
		}
		if r.afterCheckpointWrite != nil {
			if err := r.afterCheckpointWrite("state"); err != nil {
				return fmt.Errorf("pipeline %q: commit step: %w", r.spec.Name, err)
			}
		}
	}
	return nil
}

// chunkWriters bounds the window-state transactions of a checkpoint submitted at once.
const chunkWriters = 8

// reap waits for every checkpoint in flight and publishes what they made durable, in
// order. It returns the first failure: the checkpoints after it were not written.
func (r *Runner) reap() error {
	var first error
	for len(r.flights) > 0 {
		if err := r.reapOne(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// reapLanded publishes the checkpoints that have landed, oldest first, up to the first
// one still being written.
func (r *Runner) reapLanded() error {
	for r.landed() && len(r.flights) > 0 {
		if err := r.reapOne(); err != nil {
			return err
		}
	}
	return nil
}

// reapOne waits for the oldest checkpoint in flight and publishes what it made durable.
func (r *Runner) reapOne() error {
	f := r.flights[0]
	<-f.done
	r.flights[0] = nil
	r.flights = r.flights[1:]
	if len(r.flights) == 0 {
		r.flights = r.flights[:0:0]
	}
	r.flightBytes -= f.bytes
	r.spareBuf, r.spareCbuf = f.buf[:0], f.cbuf[:0]
	if f.err != nil {
		return f.err
	}
	r.published(f)
	r.committed = f.counters
	r.stats.Commits.Add(1)
	s := &r.stats
	cn := f.counters
	s.Position.Store(f.next)
	s.Watermark.Store(f.wm)
	s.OpenWindows.Store(f.open)
	s.Records.Store(cn.Records)
	s.LateRecords.Store(cn.LateRecords)
	s.TooLate.Store(cn.TooLate)
	s.CapDrops.Store(cn.CapDrops)
	s.Oversized.Store(cn.Oversized)
	s.PanesEarly.Store(cn.Panes[Early])
	s.PanesOnTime.Store(cn.Panes[OnTime])
	s.PanesLate.Store(cn.Panes[Late])
	return nil
}

// landed reports whether the oldest checkpoint in flight, if any, is written (or failed).
func (r *Runner) landed() bool {
	if len(r.flights) == 0 {
		return true
	}
	select {
	case <-r.flights[0].done:
		return true
	default:
		return false
	}
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

// encodeWindows encodes into r.cbuf the window state changed since the last checkpoint, as
// generation gen, each window into the slot its saved version is not in. What fits in
// room bytes and roomOps writes goes into the flip (f.fw); the rest into transactions of
// its own before it (f.chunks). A window dropped is deleted in the flip when it fits, or
// else marked dropped before it and deleted after.
func (r *Runner) encodeWindows(f *flight, gen uint64, room, roomOps int) {
	c := r.core
	fw := &f.fw
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
	put := func(key string, w *window) {
		s := len(r.cbuf)
		r.cbuf = appendSlot(r.cbuf, w, gen)
		cost := putCost(len(key), len(r.cbuf)-s)
		if len(chunk) > 0 && (size+cost > r.maxTxn || ops+1 > r.o.MaxStepOps) {
			f.chunks = append(f.chunks, chunk)
			chunk, size, ops = nil, 0, 0
		}
		// A slice of r.cbuf stays valid when it grows.
		chunk = append(chunk, stateKV{key, r.cbuf[s:len(r.cbuf):len(r.cbuf)]})
		size += cost
		ops++
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
		put(slotKey(base, slot), w)
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
		put(slotKey(base, 1-t.slot), nil)
		fw.purge = append(fw.purge, base, base+slotSuffix)
	}
	if len(chunk) > 0 {
		if size > room || ops > roomOps {
			f.chunks = append(f.chunks, chunk)
		} else {
			fw.puts = chunk
			fw.size += size
			fw.ops += ops
		}
	}
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

// commitPanesApart appends the panes split off a step (offsets in buf), in order, in
// transactions of their own.
func (r *Runner) commitPanesApart(ctx context.Context, buf []byte, head [][2]int) error {
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
				tx.Append(r.o.Output, buf[p[0]:p[1]])
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

// published publishes a written checkpoint's panes and late records locally and keeps the
// summaries of the last panes (status).
func (r *Runner) published(f *flight) {
	if pub := r.o.Publisher; pub != nil {
		out := r.Output()
		for _, p := range f.st.panes {
			if err := pub.PublishLocal(out, bytes.Clone(f.buf[p[0]:p[1]])); err != nil {
				r.warn("publish", "publishing panes locally failed (they are in the aggregate log)", "err", err)
			}
		}
		for _, v := range f.lates {
			if err := pub.PublishLocal(out+"/late", v); err != nil {
				r.warn("publish", "publishing a late record locally failed", "err", err)
			}
		}
	}
	if len(f.last) > 0 {
		r.lastMu.Lock()
		r.last = append(r.last, f.last...)
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

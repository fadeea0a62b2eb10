// Picking, cutting, recording and committing an uplink's batches: what Run sends next,
// read from the store and recorded before it is sent (DESIGN invariant 4).

package uplink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/backoff"
	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/record"
)

// pick returns the next batches to send, recorded durably: head lanes' batches in flight,
// then new head batches that are due, then backlog lanes' batches in flight, then new
// backlog batches the rate allows. Otherwise it waits for data, a linger deadline or the
// rate limiter.
func (u *Uplink) pick(ctx context.Context) (s *stream, bs []*Batch, isHead bool, err error) {
	for {
		for _, s := range u.streams {
			if len(s.head) > 0 {
				return s, s.head, true, nil
			}
		}
		// A due head batch goes before a backlog group, even one already recorded: with
		// no cap, the backlog lane always has its next group ready.
		now := u.clock.Now()
		var wake time.Time
		known := make([]uint64, len(u.streams))
		for i, s := range u.streams {
			due, err := u.cutHead(ctx, s, now, &known[i])
			if err != nil {
				return nil, nil, false, err
			}
			if len(s.head) > 0 {
				return s, s.head, true, nil
			}
			if !due.IsZero() && (wake.IsZero() || due.Before(wake)) {
				wake = due
			}
		}
		for _, s := range u.streams {
			if len(s.backlog) > 0 {
				return s, s.backlog, false, nil
			}
		}
		for _, s := range u.streams {
			if !s.lanes.draining() {
				continue
			}
			if !u.rateAllows(now) {
				if wake.IsZero() || u.nextBacklog.Before(wake) {
					wake = u.nextBacklog
				}
				break
			}
			if _, err := u.cutBacklog(ctx, s, s.cursor, now, nil); err != nil {
				return nil, nil, false, err
			}
			if len(s.backlog) > 0 {
				return s, s.backlog, false, nil
			}
		}
		if err := u.wait(ctx, known, wake); err != nil {
			return nil, nil, false, err
		}
	}
}

// groupSize is how many batches a lane cuts, records and sends at once at most. The
// backlog lane keeps a group to about a quarter second of max_rate, so a fresh batch never
// waits long behind it.
const groupSize = 16

func (u *Uplink) backlogGroup() int {
	if u.maxRate <= 0 {
		return groupSize
	}
	return min(max(u.maxRate/4/u.batch.MaxRecords, 1), groupSize)
}

// cutHead cuts the head lane's next batches — every full one, then a partial one whose
// linger has passed — and records them in s.head. Otherwise it returns when a partial
// batch will be due (zero: no data yet) and, in known, the log's last sequence number it
// has looked at.
func (u *Uplink) cutHead(ctx context.Context, s *stream, now time.Time, known *uint64) (time.Time, error) {
	last, err := u.store.LastSeq(s.Log)
	if err != nil {
		return time.Time{}, err
	}
	*known = last
	pos := s.lanes.headPos(s.cursor)
	var bs []*Batch
	var due time.Time
	for pos <= last && len(bs) < groupSize {
		from, lo, floor := u.skipTo(s, pos)
		b, full, err := u.readFrom(s, pos, from, lo, ^uint64(0), false)
		if err != nil {
			return time.Time{}, err
		}
		if b == nil {
			break
		}
		if b.Records == 0 && !full {
			s.skip = skipped{first: pos, lo: b.First, last: b.Last, floor: floor, ok: true}
		}
		if !full {
			if s.seenAt.IsZero() {
				// Linger counts from when the uplink first saw the batch's first record.
				s.seenAt = now
			}
			if d := s.seenAt.Add(u.linger()); now.Before(d) {
				if len(bs) == 0 {
					due = d
				}
				break
			}
		}
		bs = append(bs, b)
		s.seenAt = time.Time{}
		pos = b.Last + 1
		if !full {
			break
		}
	}
	if len(bs) == 0 {
		return due, nil
	}
	if err := u.record(ctx, s, bs, true, nil); err != nil {
		return time.Time{}, err
	}
	s.head = bs
	return time.Time{}, nil
}

// cutBacklog cuts and records the backlog lane's next batches from pos — the cursor, or
// the end of the group in flight — within the batch limits, before the first acknowledged
// range, as many as the group allows; it appends them to s.backlog and returns them.
// Backlog batches do not linger. done, if any, are the leading backlog batches already
// acknowledged: they are committed in the same transaction, or on their own if nothing is
// recorded; whatever cutBacklog returns, it has tried to commit them.
func (u *Uplink) cutBacklog(ctx context.Context, s *stream, pos uint64, now time.Time, done []*Batch) ([]*Batch, error) {
	end := s.lanes.backlogEnd()
	n := u.backlogGroup()
	bs, err := u.takeAhead(s, pos, end, n)
	if bs == nil && err == nil {
		bs, err = u.readGroup(s, pos, end, n)
	}
	if err != nil {
		if len(done) > 0 {
			err = errors.Join(err, u.commit(ctx, s, done, false, nil))
		}
		return nil, err
	}
	if len(bs) > 0 && u.maxRate <= 0 {
		// An uncapped drain: the next group is read while this one is recorded and sent.
		u.readAhead(s, bs[len(bs)-1].Last+1, end, n)
	}
	if err := u.record(ctx, s, bs, false, done); err != nil {
		return nil, err
	}
	u.charge(bs, now)
	s.backlog = append(s.backlog, bs...)
	return bs, nil
}

// ahead is a backlog group read by its own goroutine while the group before it is
// recorded and sent (readAhead): the store's read, most of a drain's CPU, then overlaps
// the record's fsync and the send instead of following them.
type ahead struct {
	pos, end uint64
	n        int
	done     chan struct{}
	g        groupRead // the read's limits and state, its own while it runs
	bs       []*Batch
	err      error
}

// readAhead starts reading the backlog group of n batches from pos, below end, with the
// uplink's current limits. Nothing is read when pos is at end.
func (u *Uplink) readAhead(s *stream, pos, end uint64, n int) {
	u.dropAhead(s)
	if pos >= end {
		return
	}
	a := &ahead{pos: pos, end: end, n: n, done: make(chan struct{}), g: groupRead{lim: u.batch, hint: s.hint, specOff: s.specOff}}
	s.ahead = a
	go func() {
		defer close(a.done)
		a.bs, a.err = u.readGroupWith(s, a.pos, a.end, a.n, &a.g)
	}()
}

// takeAhead returns the group read ahead if it is the one readGroup(s, pos, end, n) would
// read now — it starts at pos, with the same range end, size and limits: a batch depends
// only on where it starts, so the group is the same — and nil otherwise. Either way the
// read has ended and is dropped.
func (u *Uplink) takeAhead(s *stream, pos, end uint64, n int) ([]*Batch, error) {
	a := s.ahead
	if a == nil {
		return nil, nil
	}
	u.dropAhead(s)
	if a.pos != pos || a.end != end || a.n != n || a.g.lim != u.batch {
		return nil, nil
	}
	if a.err != nil {
		return nil, a.err
	}
	s.hint, s.specOff = a.g.hint, a.g.specOff
	return a.bs, nil
}

// dropAhead waits for the read ahead of s, if any, to end, and forgets it.
func (u *Uplink) dropAhead(s *stream) {
	if s.ahead != nil {
		<-s.ahead.done
		s.ahead = nil
	}
}

// readGroup reads the backlog lane's next n batches from pos, below end: each batch starts
// where the one before ended, as far as the batch limits allow, several per read of the
// store (readRun).
//
// The store's read is most of a drain's CPU, so once the first batch is read, the second
// half of the group is read at the same time by a second goroutine, from where it starts
// if the batches in between are as full as the first, of consecutive entries. It is used
// only if the first half does end there: the batches are then exactly those a read in
// sequence gives (a batch depends only on where it starts); otherwise it is dropped and
// the read goes on in sequence (and the next few groups are read in sequence only).
func (u *Uplink) readGroup(s *stream, pos, end uint64, n int) ([]*Batch, error) {
	g := groupRead{lim: u.batch, hint: s.hint, specOff: s.specOff}
	bs, err := u.readGroupWith(s, pos, end, n, &g)
	s.hint, s.specOff = g.hint, g.specOff
	return bs, err
}

// groupRead is what a read of a backlog group uses and updates besides the stream's
// fixed fields: its own copy, so that a group read ahead (readAhead) shares nothing with
// the goroutine that runs the uplink meanwhile.
type groupRead struct {
	lim     BatchLimits
	hint    sizeHint
	specOff int // groups still to read in sequence after a missed speculation
}

// readGroupWith is readGroup with the limits and state of g.
func (u *Uplink) readGroupWith(s *stream, pos, end uint64, n int, g *groupRead) ([]*Batch, error) {
	if pos >= end {
		return nil, nil
	}
	var bs []*Batch
	read := func(k int) (int, error) {
		more, err := u.readRun(s, pos, end-1, k, g.lim, &g.hint)
		if err != nil {
			return 0, err
		}
		bs = append(bs, more...)
		if len(more) > 0 {
			pos = more[len(more)-1].Last + 1
		}
		return len(more), nil
	}
	got, err := read(1)
	if err != nil {
		return nil, err
	}
	half := n / 2
	if got == 1 && half >= 2 && bs[0].Records == g.lim.MaxRecords && g.specOff == 0 {
		// The guess: batches of max_records consecutive entries, as most are.
		if from := pos + uint64(half-1)*uint64(g.lim.MaxRecords); from < end {
			spec := u.speculate(s, from, end, n-half, g)
			_, err := read(half - 1)
			r := spec.wait() // the spawned reader is always waited for
			if err != nil {
				return nil, err
			}
			if len(bs) == half && pos == spec.from && r.err == nil && len(r.bs) > 0 {
				bs = append(bs, r.bs...)
				pos = r.bs[len(r.bs)-1].Last + 1
				g.hint = r.hint
				u.stats.speculated.Add(1)
			} else {
				g.specOff = specPause
			}
		}
	} else if g.specOff > 0 {
		g.specOff--
	}
	for pos < end && len(bs) < n {
		got, err := read(n - len(bs))
		if err != nil {
			return nil, err
		}
		if got == 0 {
			// Nothing left below the range (trimmed by the disk budget): an empty batch
			// lets the cursor fold the range.
			b := &Batch{Kind: s.Kind, Log: s.Log, First: pos, Last: end - 1}
			b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
			bs = append(bs, b)
			pos = end
		}
	}
	return bs, nil
}

// specPause is how many groups are read in sequence after a speculation missed: its read
// was wasted.
const specPause = 8

// speculation is the second half of a group, read by its own goroutine from a guessed
// start (readGroup).
type speculation struct {
	from   uint64
	done   chan struct{}
	result specResult
}

type specResult struct {
	bs   []*Batch
	hint sizeHint
	err  error
}

// speculate reads up to n batches from from, below end, in a goroutine (readRun), with
// the limits of g.
func (u *Uplink) speculate(s *stream, from, end uint64, n int, g *groupRead) *speculation {
	sp := &speculation{from: from, done: make(chan struct{})}
	lim, hint := g.lim, g.hint
	go func() {
		defer close(sp.done)
		sp.result.bs, sp.result.err = u.readRun(s, from, end-1, n, lim, &hint)
		sp.result.hint = hint
	}()
	return sp
}

// wait returns the speculation's result once its goroutine has ended.
func (sp *speculation) wait() specResult {
	<-sp.done
	return sp.result
}

// rateAllows reports whether max_rate lets the backlog lane cut its next group now.
func (u *Uplink) rateAllows(now time.Time) bool {
	return u.maxRate <= 0 || !now.Before(u.nextBacklog)
}

// charge advances the backlog rate limiter by the records of bs.
func (u *Uplink) charge(bs []*Batch, now time.Time) {
	records := 0
	for _, b := range bs {
		records += b.Records
	}
	if u.maxRate <= 0 || records == 0 {
		return
	}
	if u.nextBacklog.Before(now) {
		u.nextBacklog = now
	}
	u.nextBacklog = u.nextBacklog.Add(time.Duration(records) * time.Second / time.Duration(u.maxRate))
}

// record writes the ranges of a lane's new batches to the store before they are sent.
// done, if any, are the backlog lane's leading batches, acknowledged: their commit shares
// the transaction (and its fsync), so a drain writes one transaction per group, not two.
func (u *Uplink) record(ctx context.Context, s *stream, bs []*Batch, isHead bool, done []*Batch) error {
	empty := true
	rs := make([][2]uint64, len(bs))
	for i, b := range bs {
		rs[i] = [2]uint64{b.First, b.Last}
		empty = empty && b.Records == 0
	}
	next := s.lanes.clone()
	c := s.cursor
	if len(done) > 0 {
		c = next.ackBacklog(done[len(done)-1].Last)
		if empty || !next.draining() || isHead {
			// Nothing to record with them (or the drain ended with them, which a group cut
			// after them cannot do): they are committed on their own.
			if err := u.commit(ctx, s, done, false, nil); err != nil {
				return err
			}
			return u.record(ctx, s, bs, isHead, nil)
		}
		// Like commit's, this transaction must be written even while shutting down, or the
		// acknowledged batches would be sent twice.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		ctx = cctx
	}
	if empty {
		return nil // nothing will be sent: no resend to prepare for
	}
	switch {
	case isHead && next.draining():
		next.FreshPending = rs
	case isHead:
		next.Pending = rs
	default:
		// The backlog lane may have a group in flight still: the new one follows it.
		next.Pending = append(next.Pending, rs...)
	}
	err := u.store.Update(ctx, func(tx *buffer.Tx) {
		if c != s.cursor {
			tx.SetCursor(s.Log, u.name, c)
		}
		tx.Put(u.laneKey(s), next.encode())
	})
	if err != nil {
		if len(done) > 0 {
			return fmt.Errorf("commit batch %s and record batch %s: %w", done[len(done)-1].ID, bs[0].ID, err)
		}
		return fmt.Errorf("record batch %s: %w", bs[0].ID, err)
	}
	s.cursor, s.lanes = c, next
	if len(done) > 0 {
		u.publish(s)
		u.acked(done)
		s.backlog = s.backlog[len(done):]
	}
	return nil
}

// wait returns when a log grows past what was seen (known), the wake time passes, Flush
// is called, or ctx ends.
func (u *Uplink) wait(ctx context.Context, known []uint64, wake time.Time) error {
	wctx, cancel := context.WithCancel(ctx)
	woke := make(chan error, len(u.streams))
	for i, s := range u.streams {
		go func() { woke <- u.store.Wait(wctx, s.Log, known[i]) }()
	}
	var timer <-chan time.Time
	if !wake.IsZero() {
		t := u.clock.NewTimer(max(wake.Sub(u.clock.Now()), 0))
		defer t.Stop()
		timer = t.C()
	}
	// Flush ends a linger: wake up for it, unless it came already (a closed channel would
	// wake every wait).
	var flush <-chan struct{}
	select {
	case <-u.flushing:
	default:
		flush = u.flushing
	}
	pending := len(u.streams)
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-flush:
	case <-timer:
	case err = <-woke:
		pending--
	}
	cancel()
	// Every waiter ends with wctx: wait for them so they have an owner.
	for ; pending > 0; pending-- {
		<-woke
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// commit records bs — the leading batches of a lane's in-flight group — as acknowledged,
// with extra writes in the same transaction (a dead-letter entry). It uses a fresh
// context: an acknowledged batch must be committed even while shutting down, or it would
// be sent twice.
func (u *Uplink) commit(ctx context.Context, s *stream, bs []*Batch, isHead bool, extra func(*buffer.Tx)) error {
	last := bs[len(bs)-1].Last
	next := s.lanes.clone()
	var c uint64
	if isHead {
		c = next.ackHead(s.cursor, last)
	} else {
		c = next.ackBacklog(last)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := u.store.Update(cctx, func(tx *buffer.Tx) {
		if extra != nil {
			extra(tx)
		}
		if c != s.cursor {
			tx.SetCursor(s.Log, u.name, c)
		}
		if next.draining() || len(next.Pending) > 0 {
			tx.Put(u.laneKey(s), next.encode())
		} else {
			tx.Delete(u.laneKey(s))
		}
	})
	if err != nil {
		return fmt.Errorf("commit batch %s: %w", bs[len(bs)-1].ID, err)
	}
	wasDraining := s.lanes.draining()
	s.cursor, s.lanes = c, next
	u.publish(s)
	if extra == nil {
		u.acked(bs)
	}
	if isHead {
		s.head = s.head[len(bs):]
	} else {
		s.backlog = s.backlog[len(bs):]
		if wasDraining && !next.draining() {
			// The drain is over; the head lane's batches in flight, if any, were recorded
			// as the only lane's by ackBacklog.
			u.lg.Info("backlog drained", "log", s.Log)
		}
	}
	return nil
}

// backoff is exponential with full jitter: uniform in [0, min(max, min·2^failures)], but
// at least what the upstream asked for (HTTP Retry-After), within max.
func (u *Uplink) backoff(failures int, err error) time.Duration {
	j := backoff.Policy{Min: u.MinBackoff, Max: u.MaxBackoff, Jitter: backoff.Full}.Wait(failures)
	var ra *retryAfterError
	if errors.As(err, &ra) && ra.after > j {
		j = min(ra.after, u.MaxBackoff)
	}
	return j
}

// skipped is a range of a log the head lane has read and found nothing to forward in, while
// the batch starting there lingers: read from first, its entries are lo…last. floor was the
// log's FirstSeq before that read.
type skipped struct {
	first, lo, last, floor uint64
	ok                     bool // the zero value skips nothing
}

// skipTo returns where the head lane's read of a batch starting at pos may begin: after
// the entries it already read from pos and found nothing to forward in, while the batch
// lingered. Every entry is then read once, not at each wake-up until the linger ends (an
// uplink forwarding only agg/# read each raw reading a thousand times at 2k msg/s). Those
// entries add nothing but the batch's bounds, so the batch is the one a read from pos
// gives, unless the disk budget has dropped some of them since: then pos. When it skips,
// lo is the first of the skipped entries. It also returns the log's FirstSeq, for the
// skipped range the read may record.
func (u *Uplink) skipTo(s *stream, pos uint64) (from, lo, floor uint64) {
	floor, err := u.store.FirstSeq(s.Log)
	if err != nil || !s.skip.ok || s.skip.first != pos || s.skip.last < pos || floor > max(pos, s.skip.floor) {
		return pos, 0, floor
	}
	return s.skip.last + 1, s.skip.lo, s.skip.floor
}

// read builds the batch of s's log from first: exactly up to last when exact (a recorded
// range, rebuilt), else as far as the size limits allow without passing last. full reports
// that a limit was reached. It returns nil when no entry is in range.
//
// The batch's range, hence its id (SPEC §3.3), runs from the first entry present to its
// last: a range rebuilt after the disk budget dropped its head covers, and is named by,
// what is left of it, and keeps its id only when nothing was dropped. A recorded range with
// nothing left is an empty batch, never sent, that lets the lanes move past it.
func (u *Uplink) read(s *stream, first, last uint64, exact bool) (b *Batch, full bool, err error) {
	return u.readFrom(s, first, first, 0, last, exact)
}

// readFrom is read, where the entries lo…from-1 are known to be the ones present from first
// on, and to hold nothing to forward (skipTo): it reads from from.
func (u *Uplink) readFrom(s *stream, first, from, lo, last uint64, exact bool) (b *Batch, full bool, err error) {
	return u.readHint(s, first, from, lo, last, exact, &s.hint)
}

// readHint is readFrom with the buffers sized by hint, which it updates: the second reader
// of a group has its own (readGroup).
func (u *Uplink) readHint(s *stream, first, from, lo, last uint64, exact bool, hint *sizeHint) (b *Batch, full bool, err error) {
	c := u.newCut(s, u.batch, hint)
	if from > first {
		c.first, c.end, c.found = lo, from-1, true
	}
	scanned := uint64(0)
	_, err = u.store.Read(s.Log, from, 0, func(seq uint64, v []byte) error {
		if seq > last {
			return buffer.ErrStop
		}
		scanned++
		if !exact && c.overflows(v) {
			full = true
			return buffer.ErrStop
		}
		c.take(seq, v)
		if !exact && c.fullCount() {
			full = true
			return buffer.ErrStop
		}
		return nil
	})
	u.stats.scanned.Add(scanned)
	if err != nil {
		return nil, full, err
	}
	if exact {
		if !c.found {
			c.first = first // the whole range is gone: an empty batch
		}
		c.end, c.found = last, true
	}
	if !c.found {
		return nil, full, nil
	}
	b, err = c.finish()
	return b, full, err
}

// readRun reads up to n consecutive batches from pos, each as far as the batch limits
// allow without passing last, in one read of the store: the batches read lets one by one
// would cut (each depends only on where it starts), without a read transaction and seek
// per batch. It stops early at the end of the range or of the log.
func (u *Uplink) readRun(s *stream, pos, last uint64, n int, lim BatchLimits, hint *sizeHint) ([]*Batch, error) {
	var bs []*Batch
	c := u.newCut(s, lim, hint)
	var ferr error
	next := func() error {
		b, err := c.finish()
		if err != nil {
			ferr = err
			return err
		}
		bs = append(bs, b)
		if len(bs) == n {
			return buffer.ErrStop
		}
		c = u.newCutSpans(s, lim, hint, c.spans)
		return nil
	}
	scanned := uint64(0)
	_, err := u.store.Read(s.Log, pos, 0, func(seq uint64, v []byte) error {
		if seq > last {
			return buffer.ErrStop
		}
		scanned++
		if c.overflows(v) {
			if err := next(); err != nil {
				return err
			}
		}
		c.take(seq, v)
		if c.fullCount() {
			return next()
		}
		return nil
	})
	u.stats.scanned.Add(scanned)
	if ferr != nil {
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	if c.found && len(bs) < n {
		b, err := c.finish()
		if err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// cut is a batch being built from the entries of a log in order.
type cut struct {
	u     *Uplink
	s     *stream
	lim   BatchLimits
	hint  *sizeHint
	first uint64 // the first entry taken
	head  int    // the envelope's head: room left at the start of buf
	buf   []byte
	spans [][2]int
	seqs  []uint64
	end   uint64 // the last entry taken
	found bool   // an entry was taken
}

func (u *Uplink) newCut(s *stream, lim BatchLimits, hint *sizeHint) *cut {
	return u.newCutSpans(s, lim, hint, nil)
}

// newCutSpans is newCut with spans for the cut's: those of a finished cut (finish keeps
// none), so that a run of cuts allocates them once.
func (u *Uplink) newCutSpans(s *stream, lim BatchLimits, hint *sizeHint, spans [][2]int) *cut {
	// The records are copied once, straight into the payload after room for the envelope's
	// head, whose length is fixed (ids are 32 hex digits); Items are views of the payload.
	head := s.envHead
	// Sized like the stream's previous batch, so that a drain of full batches allocates
	// each payload once instead of growing it by doubling (copying and clearing it again at
	// each step, a third of the read's CPU).
	size := max(hint.bytes, 4096)
	var buf []byte
	if p, ok := payloads.Get().(*[]byte); ok && cap(*p) >= size {
		buf = (*p)[:head] // its head is written by finish
	} else {
		buf = make([]byte, head, size)
	}
	if spans == nil {
		spans = make([][2]int, 0, hint.records)
	}
	return &cut{
		u: u, s: s, lim: lim, hint: hint, head: head,
		buf:   buf,
		spans: spans[:0],
		seqs:  make([]uint64, 0, hint.records),
	}
}

// overflows reports that the batch is full before v: it has max_records records, or v
// would take it past max_bytes. A batch always takes its first entry.
func (c *cut) overflows(v []byte) bool {
	return c.found && (len(c.spans) >= c.lim.MaxRecords || len(c.buf)+len(v)+3 > int(c.lim.MaxBytes))
}

// fullCount reports that the batch has max_records records.
func (c *cut) fullCount() bool { return len(c.spans) >= c.lim.MaxRecords }

// take adds the entry seq to the batch's range, and its value to the payload if forwarded.
func (c *cut) take(seq uint64, v []byte) {
	if !c.found {
		c.first = seq
	}
	c.end, c.found = seq, true
	if c.u.forwardAll || c.u.selected(c.s, v) {
		if len(c.spans) > 0 {
			c.buf = append(c.buf, ',')
		}
		c.spans = append(c.spans, [2]int{len(c.buf), len(c.buf) + len(v)})
		c.seqs = append(c.seqs, seq)
		c.buf = append(c.buf, v...)
	}
}

// finish returns the batch of [first, end].
func (c *cut) finish() (*Batch, error) {
	u, s, buf := c.u, c.s, c.buf
	b := &Batch{Kind: s.Kind, Log: s.Log, First: c.first, Last: c.end, Records: len(c.spans), Seqs: c.seqs}
	b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
	copy(buf, record.AppendBatch(nil, u.gateway, b.ID, s.Kind, nil)[:c.head])
	buf = append(buf, "]}"...)
	b.Items = make([][]byte, len(c.spans))
	for i, sp := range c.spans {
		b.Items[i] = buf[sp[0]:sp[1]:sp[1]]
	}
	b.Payload = buf
	*c.hint = sizeHint{bytes: len(buf) + len(buf)/16, records: len(c.spans)}
	if u.gzip {
		var err error
		if b.Payload, err = gzipBytes(buf); err != nil {
			return nil, fmt.Errorf("compress batch %s: %w", b.ID, err)
		}
		b.Encoding = "gzip"
	}
	return b, nil
}

// sizeHint is what readFrom allocates for a batch: its payload's bytes and its records.
// A batch that outgrows it grows as usual.
type sizeHint struct{ bytes, records int }

// idPlaceholder has the length of every batch id (record.BatchID: 16 bytes in hex).
var idPlaceholder = strings.Repeat("0", 32)

// selected reports whether a stored entry's topic matches one of the forward filters.
func (u *Uplink) selected(s *stream, v []byte) bool {
	if u.forwardAll {
		return true
	}
	tp := s.Topic(v)
	for _, f := range u.forward {
		if topic.Match(f, tp) {
			return true
		}
	}
	return false
}

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
			if _, err := u.cutBacklog(ctx, s, s.cursor, now); err != nil {
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
	if err := u.record(ctx, s, bs, true); err != nil {
		return time.Time{}, err
	}
	s.head = bs
	return time.Time{}, nil
}

// cutBacklog cuts and records the backlog lane's next batches from pos — the cursor, or
// the end of the group in flight — within the batch limits, before the first acknowledged
// range, as many as the group allows; it appends them to s.backlog and returns them.
// Backlog batches do not linger.
func (u *Uplink) cutBacklog(ctx context.Context, s *stream, pos uint64, now time.Time) ([]*Batch, error) {
	end := s.lanes.backlogEnd()
	var bs []*Batch
	for pos < end && len(bs) < u.backlogGroup() {
		b, _, err := u.read(s, pos, end-1, false)
		if err != nil {
			return nil, err
		}
		if b == nil {
			// Nothing left below the range (trimmed by the disk budget): an empty batch
			// lets the cursor fold the range.
			b = &Batch{Kind: s.Kind, Log: s.Log, First: pos, Last: end - 1}
			b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
		}
		bs = append(bs, b)
		pos = b.Last + 1
	}
	if err := u.record(ctx, s, bs, false); err != nil {
		return nil, err
	}
	u.charge(bs, now)
	s.backlog = append(s.backlog, bs...)
	return bs, nil
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
func (u *Uplink) record(ctx context.Context, s *stream, bs []*Batch, isHead bool) error {
	empty := true
	rs := make([][2]uint64, len(bs))
	for i, b := range bs {
		rs[i] = [2]uint64{b.First, b.Last}
		empty = empty && b.Records == 0
	}
	if empty {
		return nil // nothing will be sent: no resend to prepare for
	}
	next := s.lanes.clone()
	switch {
	case isHead && next.draining():
		next.FreshPending = rs
	case isHead:
		next.Pending = rs
	default:
		// The backlog lane may have a group in flight still: the new one follows it.
		next.Pending = append(next.Pending, rs...)
	}
	if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.laneKey(s), next.encode()) }); err != nil {
		return fmt.Errorf("record batch %s: %w", bs[0].ID, err)
	}
	s.lanes = next
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
	// The records are copied once, straight into the payload after room for the envelope's
	// head, whose length is fixed (ids are 32 hex digits); Items are views of the payload.
	head := record.AppendBatch(nil, u.gateway, idPlaceholder, s.Kind, nil)
	head = head[:len(head)-2] // without "]}"
	buf := make([]byte, len(head), 4096)
	var spans [][2]int
	var seqs []uint64
	var end uint64
	found := false
	if from > first {
		end, found = from-1, true
	}
	_, err = u.store.Read(s.Log, from, 0, func(seq uint64, v []byte) error {
		if seq > last {
			return buffer.ErrStop
		}
		u.stats.scanned.Add(1)
		if !exact && found && (len(spans) >= u.batch.MaxRecords || len(buf)+len(v)+3 > int(u.batch.MaxBytes)) {
			full = true
			return buffer.ErrStop
		}
		if !found {
			lo = seq
		}
		end, found = seq, true
		if u.selected(s, v) {
			if len(spans) > 0 {
				buf = append(buf, ',')
			}
			spans = append(spans, [2]int{len(buf), len(buf) + len(v)})
			seqs = append(seqs, seq)
			buf = append(buf, v...)
		}
		if !exact && len(spans) >= u.batch.MaxRecords {
			full = true
			return buffer.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, full, err
	}
	if exact {
		if !found {
			lo = first // the whole range is gone: an empty batch
		}
		end, found = last, true
	}
	if !found {
		return nil, full, nil
	}
	b = &Batch{Kind: s.Kind, Log: s.Log, First: lo, Last: end, Records: len(spans), Seqs: seqs}
	b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
	copy(buf, record.AppendBatch(head[:0], u.gateway, b.ID, s.Kind, nil)[:len(head)])
	buf = append(buf, "]}"...)
	b.Items = make([][]byte, len(spans))
	for i, sp := range spans {
		b.Items[i] = buf[sp[0]:sp[1]:sp[1]]
	}
	b.Payload = buf
	if u.gzip {
		if b.Payload, err = gzipBytes(buf); err != nil {
			return nil, full, fmt.Errorf("compress batch %s: %w", b.ID, err)
		}
		b.Encoding = "gzip"
	}
	return b, full, nil
}

// idPlaceholder has the length of every batch id (record.BatchID: 16 bytes in hex).
var idPlaceholder = strings.Repeat("0", 32)

// selected reports whether a stored entry's topic matches one of the forward filters.
func (u *Uplink) selected(s *stream, v []byte) bool {
	if len(u.forward) == 1 && u.forward[0] == "#" {
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

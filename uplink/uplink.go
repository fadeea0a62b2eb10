// Package uplink forwards the buffer's logs upstream: it cuts deterministic batches from
// its logs, sends them through a Sink and commits its position only after the remote ack
// (DESIGN invariants 4 and 7); after an outage it sends fresh data first while the backlog
// drains at a capped rate (see lanes.go). Sinks live in sub-packages, one per protocol.
package uplink

import (
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
	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/record"
)

// ErrPermanent marks a send error that retrying cannot fix.
var ErrPermanent = errors.New("permanent")

// Sink sends one batch upstream. Send returns nil only after the remote side acknowledged
// every record of b; it may be called again with the same batch after an error (same id,
// same bytes). Send connects lazily: a sink must build without network. Errors wrapping
// ErrPermanent are not retried. Not safe for concurrent use. Whoever creates a sink closes
// it: an uplink only sends through it.
type Sink interface {
	Send(ctx context.Context, b *Batch) error
	Close() error
}

// MultiSender is implemented by sinks that can keep several batches in flight. SendAll
// sends bs in order and returns how many leading batches were acknowledged: all of them
// when err is nil; otherwise err is the error of bs[acked]. The same rules as Send apply
// to each batch.
type MultiSender interface {
	SendAll(ctx context.Context, bs []*Batch) (acked int, err error)
}

// Batch is one uplink message: the SPEC §3.3 JSON of the records of one log range.
type Batch struct {
	ID          string
	Kind        record.Kind
	Log         string
	First, Last uint64 // the log range covered, inclusive
	Records     int    // records in the payload (the range may hold filtered-out entries)
	Payload     []byte // the §3.3 JSON, compressed when Encoding is set
	Encoding    string // "" or "gzip" (HTTP's Content-Encoding names)
	// Items are the records' own JSON, for sinks that send one message per record.
	Items [][]byte
	// Seqs are the items' sequence numbers in the log.
	Seqs []uint64
}

// Stats of one uplink, read by metrics and /status (Uplink.Status gives a snapshot).
type Stats struct {
	Batches    atomic.Uint64 // batches acknowledged
	Records    atomic.Uint64 // records acknowledged
	Errors     atomic.Uint64 // failed sends
	Connected  atomic.Bool   // last send succeeded
	LastError  atomic.Value  // string
	Position   atomic.Uint64 // committed position in the first log (see Uplink.Drained for all)
	BackoffNow atomic.Bool

	LastErrorAt       atomic.Int64  // unix ns of LastError
	Backoffs          atomic.Uint64 // waits after a failed send
	DeadLetters       atomic.Uint64 // batches refused permanently, kept in the dead-letter log
	DeadLetterRecords atomic.Uint64 // their records
	DeadLetterOmitted atomic.Uint64 // of those, records too large to copy (kept by position)
}

// Source is one log an uplink forwards, with the kind of batch its records make.
type Source struct {
	Log  string
	Kind record.Kind
	// Topic returns the local topic of a stored entry, matched against the forward filters
	// (panes carry their pipeline, not a topic); nil reads the "topic" of a stored record.
	Topic func(v []byte) string
}

// Uplink forwards one or more logs to one sink, from one goroutine: the sources in the
// order given (aggregates before raw records), each with its own position, lanes and batch
// in flight.
type Uplink struct {
	name      string
	gateway   string
	sink      Sink
	store     *buffer.Store
	forward   []string
	batch     BatchLimits
	gzip      bool
	typ       string
	maxRate   int
	reload    atomic.Pointer[Limits] // new limits from SetLimits, taken by Run
	flushing  chan struct{}          // closed by Flush: partial batches go at once
	flushOnce sync.Once
	clock     clock.Clock
	lg        *slog.Logger
	stats     Stats

	streams     []*stream // owned by Run's goroutine, except the atomics
	nextBacklog time.Time // the backlog lanes' rate limiter: no backlog batch before this

	// Backoff bounds, settable by tests.
	MinBackoff, MaxBackoff time.Duration
}

// stream is one source's state. cursor, lanes and the batches are owned by Run.
type stream struct {
	Source
	cursor  uint64
	lanes   laneState
	head    []*Batch  // the head lane's batches in flight (recorded)
	backlog []*Batch  // the backlog lane's batches in flight (recorded)
	seenAt  time.Time // when the head lane first saw data it has not cut yet (linger)

	position atomic.Uint64 // cursor, for Status and Drained
	acked    atomic.Uint64 // entries in acknowledged ranges above the cursor
	draining atomic.Bool
}

// New builds an uplink over one log of the given kind.
func New(cfg Config, gateway, log string, kind record.Kind, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	return NewMulti(cfg, gateway, []Source{{Log: log, Kind: kind}}, sink, store, clk, lg)
}

// NewMulti builds an uplink over several logs, served in the order given.
func NewMulti(cfg Config, gateway string, sources []Source, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	u := &Uplink{
		name: cfg.Name, gateway: gateway, sink: sink, store: store,
		forward: cfg.Forward, batch: cfg.Batch, clock: clk,
		typ: cfg.Type, maxRate: cfg.MaxRate,
		lg:         lg.With("component", "uplink", "uplink", cfg.Name),
		MinBackoff: cfg.Backoff.Min.D(), MaxBackoff: cfg.Backoff.Max.D(),
		flushing: make(chan struct{}),
	}
	if e, ok := cfg.Sink.(Encoder); ok {
		u.gzip = e.PayloadEncoding() == "gzip"
	}
	for _, s := range sources {
		if s.Topic == nil {
			s.Topic = record.TopicOf
		}
		u.streams = append(u.streams, &stream{Source: s})
	}
	return u
}

// Name is the uplink's name, also its consumer name in the log.
func (u *Uplink) Name() string { return u.name }

// Stats returns the uplink's counters.
func (u *Uplink) Stats() *Stats { return &u.stats }

// Limits are what a config reload may change while an uplink runs.
type Limits struct {
	Batch   BatchLimits
	MaxRate int
}

// SetLimits changes the batch limits and the drain rate (a config reload); the next batch
// cut uses them.
func (u *Uplink) SetLimits(l Limits) { u.reload.Store(&l) }

// Drained reports whether the uplink has nothing left to send up to the given sequence
// numbers (by log; a log not in the map up to its end): every source's cursor is past
// them, or no entry is left between the cursor and them (an empty log, entries dropped by
// the disk budget or retention). Safe to call from any goroutine.
func (u *Uplink) Drained(upTo map[string]uint64) bool {
	for _, s := range u.streams {
		last, ok := upTo[s.Log]
		if !ok {
			var err error
			if last, err = u.store.LastSeq(s.Log); err != nil {
				return false
			}
		}
		from := max(s.position.Load(), 1) // sequence numbers start at 1
		if from > last {
			continue
		}
		left := false
		if _, err := u.store.Read(s.Log, from, 1, func(seq uint64, _ []byte) error {
			left = seq <= last
			return nil
		}); err != nil || left {
			return false
		}
	}
	return true
}

// Flush makes the uplink send what it holds without waiting for batches to fill: partial
// batches no longer linger. The gateway calls it when it stops; it cannot be undone.
func (u *Uplink) Flush() {
	u.flushOnce.Do(func() { close(u.flushing) })
}

// linger is how long a partial batch waits for more records: batch.linger, or nothing
// once Flush was called.
func (u *Uplink) linger() time.Duration {
	select {
	case <-u.flushing:
		return 0
	default:
		return u.batch.Linger.D()
	}
}

func (u *Uplink) laneKey(s *stream) string { return "uplink/" + u.name + "/" + s.Log + "/lanes" }

// splitThreshold is the unsent backlog, in log entries, above which a (re)connection splits
// a stream into a head lane and a backlog lane.
func (u *Uplink) splitThreshold() uint64 { return 2 * uint64(u.batch.MaxRecords) }

// Run sends batches until ctx ends. Batches recorded before a crash are sent again first,
// with the same ids and contents. The sink stays open: its creator closes it once Run has
// returned.
func (u *Uplink) Run(ctx context.Context) error {
	for _, s := range u.streams {
		if err := u.load(s); err != nil {
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
	}
	if err := u.maybeSplit(ctx); err != nil {
		return fmt.Errorf("uplink %q: %w", u.name, err)
	}
	failures := 0
	// fl is the group in flight, sent by its own goroutine (the only user of the sink while
	// it runs); whatever happens, Run waits for it before it returns. Returning on an
	// error cancels it first: its batches are resent after a restart, not waited for.
	ctx, cancel := context.WithCancel(ctx)
	var fl *flight
	defer func() {
		cancel()
		if fl != nil {
			<-fl.done
		}
	}()
	for {
		if l := u.reload.Swap(nil); l != nil {
			u.batch, u.maxRate = l.Batch, l.MaxRate
		}
		if fl == nil {
			s, bs, isHead, err := u.pick(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
			fl = u.launch(ctx, s, bs, isHead)
		}
		// While a backlog group is in flight, read and record the next one, so it can go
		// out the moment this one is acknowledged, while this one's commit is written.
		s, bs, isHead := fl.s, fl.bs, fl.isHead
		var ahead []*Batch
		if now := u.clock.Now(); !isHead && s.lanes.draining() && u.rateAllows(now) {
			var err error
			if ahead, err = u.cutBacklog(ctx, s, bs[len(bs)-1].Last+1, now); err != nil {
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
		}
		r := <-fl.done
		fl = nil
		n, err := r.n, r.err
		if err == nil && len(ahead) > 0 && !u.headDue(u.clock.Now()) {
			fl = u.launch(ctx, s, ahead, false)
		}
		if n > 0 {
			if cerr := u.commit(ctx, s, bs[:n], isHead, nil); cerr != nil {
				return fmt.Errorf("uplink %q: %w", u.name, cerr)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures, err = u.sendFailed(ctx, s, bs[n], isHead, err, failures); err != nil {
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if failures > 0 {
			u.lg.Info("upstream reachable again", "after_failures", failures)
			failures = 0
			if err := u.maybeSplit(ctx); err != nil {
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
		}
	}
}

// sendFailed handles a failed send of b and returns the count of consecutive failures. A
// batch the upstream refused for what it is goes to the dead-letter log at once: retrying
// cannot help, and waiting would wedge the uplink. Any other error counts a failure and
// backs off, until ctx ends.
func (u *Uplink) sendFailed(ctx context.Context, s *stream, b *Batch, isHead bool, err error, failures int) (int, error) {
	u.stats.Errors.Add(1)
	u.stats.noteError(err, u.clock.Now())
	if errors.Is(err, ErrPermanent) {
		return failures, u.deadLetter(ctx, s, b, isHead, err)
	}
	failures++
	u.stats.Connected.Store(false)
	if failures == 1 || failures%10 == 0 {
		u.lg.Warn("send failed; backing off", "batch", b.ID, "failures", failures, "err", err)
	}
	u.stats.BackoffNow.Store(true)
	u.stats.Backoffs.Add(1)
	t := u.clock.NewTimer(u.backoff(failures, err))
	select {
	case <-ctx.Done():
		t.Stop()
		return failures, nil
	case <-t.C():
	}
	u.stats.BackoffNow.Store(false)
	return failures, nil
}

// flight is a group being sent.
type flight struct {
	s      *stream
	bs     []*Batch
	isHead bool
	done   chan sendResult
}

type sendResult struct {
	n   int
	err error
}

func (u *Uplink) launch(ctx context.Context, s *stream, bs []*Batch, isHead bool) *flight {
	f := &flight{s: s, bs: bs, isHead: isHead, done: make(chan sendResult, 1)}
	go func() {
		n, err := u.sendAll(ctx, bs)
		f.done <- sendResult{n, err}
	}()
	return f
}

// headDue reports whether a head lane has a batch to send now (full, or lingered long
// enough): the backlog lane then yields instead of chaining its next group. It starts the
// linger of data it sees for the first time, as cutHead would. No head lane has batches in
// flight here: pick hands out a backlog group only when none has, and none is cut while
// the group is in flight.
func (u *Uplink) headDue(now time.Time) bool {
	for _, s := range u.streams {
		last, err := u.store.LastSeq(s.Log)
		pos := s.lanes.headPos(s.cursor)
		if err != nil || last < pos {
			continue
		}
		if last-pos+1 >= uint64(u.batch.MaxRecords) {
			return true
		}
		if s.seenAt.IsZero() {
			s.seenAt = now
		}
		if !now.Before(s.seenAt.Add(u.linger())) {
			return true
		}
	}
	return false
}

// sendAll sends bs in order, several in flight when the sink can, and returns how many
// leading batches were acknowledged (batches whose records were all filtered out need no
// send and count as acknowledged once reached).
func (u *Uplink) sendAll(ctx context.Context, bs []*Batch) (int, error) {
	if ms, ok := u.sink.(MultiSender); ok && len(bs) > 1 {
		var send []*Batch
		var at []int // index in bs of each batch in send
		for i, b := range bs {
			if b.Records > 0 {
				send = append(send, b)
				at = append(at, i)
			}
		}
		if len(send) == 0 {
			return len(bs), nil // all filtered out: nothing to send, no connection needed
		}
		k, err := ms.SendAll(ctx, send)
		if k == len(send) {
			return len(bs), err
		}
		return at[k], err
	}
	for i, b := range bs {
		if b.Records == 0 {
			continue
		}
		if err := u.sink.Send(ctx, b); err != nil {
			return i, err
		}
	}
	return len(bs), nil
}

// acked counts committed batches; the counters move only once the commit is durable, so
// a reader never sees records counted that a crash would send again.
func (u *Uplink) acked(bs []*Batch) {
	for _, b := range bs {
		if b.Records > 0 {
			u.stats.Connected.Store(true)
			u.stats.Batches.Add(1)
			u.stats.Records.Add(uint64(b.Records))
		}
	}
}

// load reads a stream's cursor and lanes and rebuilds the batches that were in flight.
func (u *Uplink) load(s *stream) error {
	c, err := u.store.Cursor(s.Log, u.name)
	if err != nil {
		return err
	}
	v, _, err := u.store.Get(u.laneKey(s))
	if err != nil {
		return err
	}
	l, err := decodeLanes(v, c)
	if err != nil {
		return err
	}
	s.cursor, s.lanes = c, l
	rebuild := func(rs [][2]uint64) ([]*Batch, error) {
		var out []*Batch
		for _, r := range rs {
			if r[0] < c {
				continue
			}
			b, _, err := u.read(s, r[0], r[1], true)
			if err != nil {
				return nil, err
			}
			u.lg.Info("resending a batch in flight at the last stop", "batch", b.ID, "log", s.Log, "first", r[0], "last", r[1])
			out = append(out, b)
		}
		return out, nil
	}
	if l.draining() {
		if s.backlog, err = rebuild(l.Pending); err != nil {
			return err
		}
		s.head, err = rebuild(l.FreshPending)
	} else {
		s.head, err = rebuild(l.Pending)
	}
	if err != nil {
		return err
	}
	u.publish(s)
	return nil
}

// publish mirrors a stream's state into its atomics.
func (u *Uplink) publish(s *stream) {
	s.position.Store(s.cursor)
	s.acked.Store(s.lanes.ackedAbove())
	s.draining.Store(s.lanes.draining())
	if s == u.streams[0] {
		u.stats.Position.Store(s.cursor)
	}
}

// maybeSplit starts fresh-first draining on every stream whose unsent backlog exceeds the
// threshold: called at start and whenever the upstream is reachable again.
func (u *Uplink) maybeSplit(ctx context.Context) error {
	for _, s := range u.streams {
		last, err := u.store.LastSeq(s.Log)
		if err != nil {
			return err
		}
		head := s.lanes.headPos(s.cursor)
		if len(s.head) > 0 {
			head = s.head[len(s.head)-1].Last + 1
		}
		if last < head || last-head+1 <= u.splitThreshold() {
			continue
		}
		next := s.lanes.clone()
		if !next.split(last + 1) {
			continue
		}
		if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.laneKey(s), next.encode()) }); err != nil {
			return fmt.Errorf("record split of log %q: %w", s.Log, err)
		}
		if !s.lanes.draining() {
			s.backlog, s.head = s.head, nil
		}
		s.lanes, s.seenAt = next, time.Time{}
		u.publish(s)
		u.lg.Info("backlog drains beside fresh data", "log", s.Log, "backlog_entries", last+1-s.cursor-s.lanes.ackedAbove(), "max_rate", u.maxRate)
	}
	return nil
}

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
		b, full, err := u.read(s, pos, ^uint64(0), false)
		if err != nil {
			return time.Time{}, err
		}
		if b == nil {
			break
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

// read builds the batch of s's log starting at first: exactly up to last when exact (a
// recorded range, rebuilt as it was), else as far as the size limits allow without passing
// last. full reports that a limit was reached. It returns nil when no entry is in range.
func (u *Uplink) read(s *stream, first, last uint64, exact bool) (b *Batch, full bool, err error) {
	// The records are copied once, straight into the payload after room for the envelope's
	// head, whose length is fixed (ids are 32 hex digits); Items are views of the payload.
	head := record.AppendBatch(nil, u.gateway, idPlaceholder, s.Kind, nil)
	head = head[:len(head)-2] // without "]}"
	buf := make([]byte, len(head), 4096)
	var spans [][2]int
	var seqs []uint64
	var end uint64
	found := false
	_, err = u.store.Read(s.Log, first, 0, func(seq uint64, v []byte) error {
		if seq > last {
			return buffer.ErrStop
		}
		if !exact && found && (len(spans) >= u.batch.MaxRecords || len(buf)+len(v)+3 > int(u.batch.MaxBytes)) {
			full = true
			return buffer.ErrStop
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
		// A recorded range keeps its bounds even if the disk budget dropped some of its
		// entries: the id stays the same, the content is what is left.
		end, found = last, true
	}
	if !found {
		return nil, full, nil
	}
	b = &Batch{Kind: s.Kind, Log: s.Log, First: first, Last: end, Records: len(spans), Seqs: seqs}
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

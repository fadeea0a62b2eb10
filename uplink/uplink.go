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
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/topic"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

// ErrPermanent marks a send error that retrying cannot fix.
var ErrPermanent = errors.New("permanent")

// Sink sends one batch upstream. Send returns nil only after the remote side acknowledged
// every record of b; it may be called again with the same batch after an error (same id,
// same bytes). Send connects lazily: a sink must build without network. Errors wrapping
// ErrPermanent are not retried. Not safe for concurrent use.
type Sink interface {
	Send(ctx context.Context, b *Batch) error
	Close() error
}

// SinkFactory builds a sink from its config without dialing.
type SinkFactory func(cfg config.Uplink, gateway string, log *slog.Logger) (Sink, error)

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
}

// Source is one log an uplink forwards, with the kind of batch its records make.
type Source struct {
	Log  string
	Kind record.Kind
}

// Uplink forwards one or more logs to one sink, from one goroutine: the sources in the
// order given (aggregates before raw records), each with its own position, lanes and batch
// in flight.
type Uplink struct {
	name    string
	gateway string
	sink    Sink
	store   *buffer.Store
	forward []string
	batch   config.Batch
	gzip    bool
	typ     string
	maxRate int
	reload  atomic.Pointer[Limits] // new limits from SetLimits, taken by Run
	clock   clock.Clock
	lg      *slog.Logger
	stats   Stats

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
	head    *Batch    // the head lane's batch in flight (recorded), or nil
	backlog *Batch    // the backlog lane's batch in flight (recorded), or nil
	seenAt  time.Time // when the head lane first saw data it has not cut yet (linger)

	position atomic.Uint64 // cursor, for Status and Drained
	acked    atomic.Uint64 // entries in acknowledged ranges above the cursor
	draining atomic.Bool
}

// New builds an uplink over one log of the given kind.
func New(cfg config.Uplink, gateway, log string, kind record.Kind, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	return NewMulti(cfg, gateway, []Source{{Log: log, Kind: kind}}, sink, store, clk, lg)
}

// NewMulti builds an uplink over several logs, served in the order given.
func NewMulti(cfg config.Uplink, gateway string, sources []Source, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	u := &Uplink{
		name: cfg.Name, gateway: gateway, sink: sink, store: store,
		forward: cfg.Forward, batch: cfg.Batch, clock: clk,
		gzip: cfg.Compression == "gzip", typ: cfg.Type, maxRate: cfg.MaxRate,
		lg:         lg.With("component", "uplink", "uplink", cfg.Name),
		MinBackoff: cfg.Backoff.Min.D(), MaxBackoff: cfg.Backoff.Max.D(),
	}
	for _, s := range sources {
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
	Batch   config.Batch
	MaxRate int
}

// SetLimits changes the batch limits and the drain rate (a config reload); the next batch
// cut uses them.
func (u *Uplink) SetLimits(l Limits) { u.reload.Store(&l) }

// Drained reports whether every source's cursor is past the given sequence numbers (by
// log; a log not in the map must be fully sent): all of it was acknowledged.
func (u *Uplink) Drained(upTo map[string]uint64) bool {
	for _, s := range u.streams {
		last, ok := upTo[s.Log]
		if !ok {
			var err error
			if last, err = u.store.LastSeq(s.Log); err != nil {
				return false
			}
		}
		if s.position.Load() <= last {
			return false
		}
	}
	return true
}

func (u *Uplink) laneKey(s *stream) string { return "uplink/" + u.name + "/" + s.Log + "/lanes" }

// splitThreshold is the unsent backlog, in log entries, above which a (re)connection splits
// a stream into a head lane and a backlog lane.
func (u *Uplink) splitThreshold() uint64 { return 2 * uint64(u.batch.MaxRecords) }

// Run sends batches until ctx ends. Batches recorded before a crash are sent again first,
// with the same ids and contents.
func (u *Uplink) Run(ctx context.Context) error {
	defer u.sink.Close()
	for _, s := range u.streams {
		if err := u.load(s); err != nil {
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
	}
	if err := u.maybeSplit(ctx); err != nil {
		return fmt.Errorf("uplink %q: %w", u.name, err)
	}
	failures := 0
	for {
		if l := u.reload.Swap(nil); l != nil {
			u.batch, u.maxRate = l.Batch, l.MaxRate
		}
		s, b, isHead, err := u.pick(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
		if b.Records > 0 {
			err = u.sink.Send(ctx, b)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			u.stats.Errors.Add(1)
			u.stats.noteError(err, u.clock.Now())
			if errors.Is(err, ErrPermanent) {
				// The upstream refused this batch for what it is: retrying cannot help, and
				// waiting would wedge the uplink. Keep it in the dead-letter log and move on.
				if err := u.deadLetter(ctx, s, b, isHead, err); err != nil {
					return fmt.Errorf("uplink %q: %w", u.name, err)
				}
				continue
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
				return nil
			case <-t.C():
			}
			u.stats.BackoffNow.Store(false)
			continue
		}
		if err := u.commit(ctx, s, b, isHead, nil); err != nil {
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
		if b.Records > 0 {
			u.stats.Connected.Store(true)
			u.stats.Batches.Add(1)
			u.stats.Records.Add(uint64(b.Records))
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
	rebuild := func(r *[2]uint64) (*Batch, error) {
		if r == nil || r[0] < c {
			return nil, nil
		}
		b, _, err := u.read(s, r[0], r[1], true)
		if b == nil || err != nil {
			return nil, err
		}
		u.lg.Info("resending the batch in flight at the last stop", "batch", b.ID, "log", s.Log, "first", r[0], "last", r[1])
		return b, nil
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
		if last < head || last-head+1 <= u.splitThreshold() {
			continue
		}
		next := s.lanes
		next.Acked = append([][2]uint64(nil), s.lanes.Acked...)
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

// pick returns the next batch to send, recorded durably: head lanes' batches in flight,
// then backlog lanes' batches in flight, then new head batches that are due, then new
// backlog batches the rate allows. Otherwise it waits for data, a linger deadline or the
// rate limiter.
func (u *Uplink) pick(ctx context.Context) (s *stream, b *Batch, isHead bool, err error) {
	for {
		for _, s := range u.streams {
			if s.head != nil {
				return s, s.head, true, nil
			}
		}
		for _, s := range u.streams {
			if s.backlog != nil {
				return s, s.backlog, false, nil
			}
		}
		now := u.clock.Now()
		var wake time.Time
		known := make([]uint64, len(u.streams))
		for i, s := range u.streams {
			b, due, err := u.cutHead(ctx, s, now, &known[i])
			if err != nil {
				return nil, nil, false, err
			}
			if b != nil {
				return s, b, true, nil
			}
			if !due.IsZero() && (wake.IsZero() || due.Before(wake)) {
				wake = due
			}
		}
		for _, s := range u.streams {
			if !s.lanes.draining() {
				continue
			}
			if u.maxRate > 0 && now.Before(u.nextBacklog) {
				if wake.IsZero() || u.nextBacklog.Before(wake) {
					wake = u.nextBacklog
				}
				break
			}
			b, err := u.cutBacklog(ctx, s, now)
			if err != nil {
				return nil, nil, false, err
			}
			if b != nil {
				return s, b, false, nil
			}
		}
		if err := u.wait(ctx, known, wake); err != nil {
			return nil, nil, false, err
		}
	}
}

// cutHead cuts the head lane's next batch if it is due (full, or its linger has passed)
// and records it. Otherwise it returns when it will be due (zero: no data yet) and, in
// known, the log's last sequence number it has looked at.
func (u *Uplink) cutHead(ctx context.Context, s *stream, now time.Time, known *uint64) (*Batch, time.Time, error) {
	last, err := u.store.LastSeq(s.Log)
	if err != nil {
		return nil, time.Time{}, err
	}
	*known = last
	pos := s.lanes.headPos(s.cursor)
	if last < pos {
		return nil, time.Time{}, nil
	}
	b, full, err := u.read(s, pos, ^uint64(0), false)
	if err != nil || b == nil {
		return nil, time.Time{}, err
	}
	if s.seenAt.IsZero() {
		// Linger counts from when the uplink first saw the batch's first record.
		s.seenAt = now
	}
	due := s.seenAt.Add(u.batch.Linger.D())
	if !full && now.Before(due) {
		return nil, due, nil
	}
	s.seenAt = time.Time{}
	if b.Records > 0 {
		next := s.lanes
		r := &[2]uint64{b.First, b.Last}
		if next.draining() {
			next.FreshPending = r
		} else {
			next.Pending = r
		}
		if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.laneKey(s), next.encode()) }); err != nil {
			return nil, time.Time{}, fmt.Errorf("record batch %s: %w", b.ID, err)
		}
		s.lanes = next
	}
	s.head = b
	return b, time.Time{}, nil
}

// cutBacklog cuts and records the backlog lane's next batch: from the cursor, up to the
// batch limits, before the first acknowledged range. Backlog batches do not linger.
func (u *Uplink) cutBacklog(ctx context.Context, s *stream, now time.Time) (*Batch, error) {
	end := s.lanes.backlogEnd()
	b, _, err := u.read(s, s.cursor, end-1, false)
	if err != nil {
		return nil, err
	}
	if b == nil {
		// Nothing left below the range (trimmed by the disk budget): an empty batch lets
		// the cursor fold the range.
		b = &Batch{Kind: s.Kind, Log: s.Log, First: s.cursor, Last: end - 1}
		b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
	}
	if b.Records > 0 {
		next := s.lanes
		next.Pending = &[2]uint64{b.First, b.Last}
		if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.laneKey(s), next.encode()) }); err != nil {
			return nil, fmt.Errorf("record batch %s: %w", b.ID, err)
		}
		s.lanes = next
		if u.maxRate > 0 {
			if u.nextBacklog.Before(now) {
				u.nextBacklog = now
			}
			u.nextBacklog = u.nextBacklog.Add(time.Duration(b.Records) * time.Second / time.Duration(u.maxRate))
		}
	}
	s.backlog = b
	return b, nil
}

// wait returns when a log grows past what was seen (known), the wake time passes, or ctx
// ends.
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
	pending := len(u.streams)
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
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

// commit records b as acknowledged on its lane, with extra writes in the same transaction
// (the dead-letter entry). It uses a fresh context: an acknowledged batch must be committed
// even while shutting down, or it would be sent twice.
func (u *Uplink) commit(ctx context.Context, s *stream, b *Batch, isHead bool, extra func(*buffer.Tx)) error {
	next := s.lanes
	next.Acked = append([][2]uint64(nil), s.lanes.Acked...)
	var c uint64
	if isHead {
		c = next.ackHead(s.cursor, b.Last)
	} else {
		c = next.ackBacklog(b.Last)
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
		if next.draining() || next.Pending != nil {
			tx.Put(u.laneKey(s), next.encode())
		} else {
			tx.Delete(u.laneKey(s))
		}
	})
	if err != nil {
		return fmt.Errorf("commit batch %s: %w", b.ID, err)
	}
	wasDraining := s.lanes.draining()
	s.cursor, s.lanes = c, next
	if isHead {
		s.head = nil
	} else {
		s.backlog = nil
		if wasDraining && !next.draining() {
			// The drain is over; the head lane's batch in flight, if any, was recorded as
			// the only lane's by ackBacklog.
			u.lg.Info("backlog drained", "log", s.Log)
		}
	}
	u.publish(s)
	return nil
}

// backoff is exponential with full jitter: uniform in [0, min(max, min·2^failures)], but
// at least what the upstream asked for (HTTP Retry-After), within max.
func (u *Uplink) backoff(failures int, err error) time.Duration {
	d := u.MinBackoff
	for i := 1; i < failures && d < u.MaxBackoff; i++ {
		d *= 2
	}
	if d > u.MaxBackoff {
		d = u.MaxBackoff
	}
	j := time.Duration(rand.Int64N(int64(d) + 1))
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
	var items [][]byte
	size := 64
	var end uint64
	found := false
	_, err = u.store.Read(s.Log, first, 0, func(seq uint64, v []byte) error {
		if seq > last {
			return buffer.ErrStop
		}
		if !exact && found && (len(items) >= u.batch.MaxRecords || size+len(v)+1 > int(u.batch.MaxBytes)) {
			full = true
			return buffer.ErrStop
		}
		end, found = seq, true
		if u.selected(v) {
			items = append(items, append([]byte(nil), v...))
			size += len(v) + 1
		}
		if !exact && len(items) >= u.batch.MaxRecords {
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
	b = &Batch{Kind: s.Kind, Log: s.Log, First: first, Last: end, Records: len(items), Items: items}
	b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
	b.Payload = record.AppendBatch(make([]byte, 0, size+128), u.gateway, b.ID, s.Kind, items)
	if u.gzip {
		if b.Payload, err = gzipBytes(b.Payload); err != nil {
			return nil, full, fmt.Errorf("compress batch %s: %w", b.ID, err)
		}
		b.Encoding = "gzip"
	}
	return b, full, nil
}

// selected reports whether a stored record's topic matches one of the forward filters.
func (u *Uplink) selected(v []byte) bool {
	if len(u.forward) == 1 && u.forward[0] == "#" {
		return true
	}
	tp := recordTopic(v)
	for _, f := range u.forward {
		if topic.Match(f, tp) {
			return true
		}
	}
	return false
}

// recordTopic extracts "topic" from a stored record without decoding all of it: records
// are written by record.AppendJSON, which puts id then topic first.
func recordTopic(v []byte) string {
	var r struct {
		Topic string `json:"topic"`
	}
	if err := jsonUnmarshal(v, &r); err != nil {
		return ""
	}
	return r.Topic
}

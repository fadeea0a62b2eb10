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
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
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

// Recycler is implemented by sinks that keep no reference to a batch's Payload or Items
// once they have reported it acknowledged (Send returned nil for it, or SendAll counted
// it): the uplink then reuses that memory for the payloads of later batches, instead of
// allocating (and zeroing) each one anew and leaving the old ones to the garbage
// collector.
type Recycler interface {
	RecyclesPayloads() bool
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

	scanned    atomic.Uint64 // log entries read from the store, forwarded or not (tests)
	speculated atomic.Uint64 // groups whose second half was read in parallel (tests)
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
	name       string
	gateway    string
	sink       Sink
	store      *buffer.Store
	forward    []string
	forwardAll bool // forward is "#" alone
	batch      BatchLimits
	gzip       bool
	typ        string
	maxRate    int
	reload     atomic.Pointer[Limits] // new limits from SetLimits, taken by Run
	flushing   chan struct{}          // closed by Flush: partial batches go at once
	flushOnce  sync.Once
	recycle    bool // the sink is a Recycler: acknowledged payloads go to payloads
	clock      clock.Clock
	lg         *slog.Logger
	stats      Stats

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
	skip    skipped   // what the head lane read of its lingering batch, with nothing to forward
	hint    sizeHint  // the size of the last batch read, for the next one's buffers
	specOff int       // groups still to read in sequence after a missed speculation (readGroup)
	ahead   *ahead    // the backlog group being read ahead, if any (readAhead)
	envHead int       // the length of a batch's envelope before its records (ids have one length)

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
	u.forwardAll = len(u.forward) == 1 && u.forward[0] == "#"
	if r, ok := sink.(Recycler); ok {
		u.recycle = r.RecyclesPayloads()
	}
	for _, s := range sources {
		if s.Topic == nil {
			s.Topic = record.TopicOf
		}
		u.streams = append(u.streams, &stream{Source: s, envHead: len(record.AppendBatch(nil, gateway, idPlaceholder, s.Kind, nil)) - 2}) // without "]}"
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
		for _, s := range u.streams {
			u.dropAhead(s)
		}
	}()
	// done is the backlog group acknowledged before fl, the group that followed it, was
	// launched: its commit waits for the next group's record and shares its transaction.
	var done []*Batch
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
		// out the moment this one is acknowledged; the group before, if acknowledged, is
		// committed with that record (one transaction and fsync per group).
		s, bs, isHead := fl.s, fl.bs, fl.isHead
		// fl is the drain's last group: no record follows to share the commit of the group
		// before it, which then waits for fl and is committed with it (one fsync, not two
		// in a row, at the end of a drain). s.backlog holds both, done first.
		tail := len(done) > 0 && bs[len(bs)-1].Last+1 >= s.lanes.backlogEnd() &&
			len(s.backlog) == len(done)+len(bs) && s.backlog[0] == done[0]
		var ahead []*Batch
		if now := u.clock.Now(); !tail && !isHead && s.lanes.draining() && u.rateAllows(now) {
			var err error
			ahead, err = u.cutBacklog(ctx, s, bs[len(bs)-1].Last+1, now, done)
			done = nil
			if err != nil {
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
		}
		if len(done) > 0 && !tail {
			err := u.commit(ctx, s, done, false, nil)
			done = nil
			if err != nil {
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
		}
		r := <-fl.done
		fl = nil
		n, err := r.n, r.err
		if tail {
			// bs[n], if it failed, is still the batch to handle below.
			cerr := u.commit(ctx, s, s.backlog[:len(done)+n], false, nil)
			done = nil
			if cerr != nil {
				return fmt.Errorf("uplink %q: %w", u.name, cerr)
			}
		}
		if err == nil && len(ahead) > 0 && !u.headDue(u.clock.Now()) {
			fl = u.launch(ctx, s, ahead, false)
			done, n = bs, 0 // committed with the next group's record, or before fl is awaited
		}
		if n > 0 && !tail {
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
		// Sequence numbers start at 1: a cursor of 0 (nothing committed yet) is at 1.
		pos := max(s.lanes.headPos(s.cursor), 1)
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
		u.release(b)
	}
}

// payloads holds the payload buffers of acknowledged batches (*[]byte), for the next cuts
// of any uplink.
var payloads sync.Pool

// release hands an acknowledged and committed batch's payload buffer to the next cuts,
// when the sink is done with it (Recycler). The batch keeps its range and id only.
func (u *Uplink) release(b *Batch) {
	if !u.recycle || b.Payload == nil {
		return
	}
	if b.Encoding == "" {
		p := b.Payload[:0]
		payloads.Put(&p)
	}
	b.Payload, b.Items = nil, nil
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
		if len(s.head) == 0 && !s.lanes.draining() && u.maxRate <= 0 {
			// The first group of an uncapped drain is read at once.
			u.readAhead(s, s.cursor, next.backlogEnd(), u.backlogGroup())
		}
		// The split is not written on its own: every later write of the lanes (the record
		// of a lane's first batches, a commit) carries it, in the same fsynced transaction.
		// Until then nothing depends on it: a restart splits again.
		if !s.lanes.draining() {
			s.backlog, s.head = s.head, nil
		}
		s.lanes, s.seenAt = next, time.Time{}
		u.publish(s)
		u.lg.Info("backlog drains beside fresh data", "log", s.Log, "backlog_entries", last+1-s.cursor-s.lanes.ackedAbove(), "max_rate", u.maxRate)
	}
	return nil
}

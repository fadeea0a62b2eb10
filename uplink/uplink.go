// Package uplink forwards the buffer's logs upstream: it cuts deterministic batches from a
// log, sends them through a Sink and commits its position only after the remote ack
// (DESIGN invariants 4 and 7). Sinks live in sub-packages, one per protocol.
package uplink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
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
	Payload     []byte // the §3.3 JSON
}

// Stats of one uplink, read by metrics and /status.
type Stats struct {
	Batches    atomic.Uint64 // batches acknowledged
	Records    atomic.Uint64 // records acknowledged
	Errors     atomic.Uint64 // failed sends
	Connected  atomic.Bool   // last send succeeded
	LastError  atomic.Value  // string
	Position   atomic.Uint64 // committed position in the first log of kind records
	BackoffNow atomic.Bool
}

// Source is one log an uplink forwards. Each log has its own committed position (the
// uplink's name is its consumer name there) and its own recorded pending batch.
type Source struct {
	Log  string
	Kind record.Kind
	// Topic returns the local topic of a stored entry, for the forward filters; nil reads
	// the "topic" field of a stored record.
	Topic func(v []byte) string
}

type source struct {
	Source
	next     uint64    // committed position; owned by Run
	pending  *Batch    // range recorded, not yet acknowledged
	deadline time.Time // linger deadline of the batch being filled; zero: none
	position atomic.Uint64
}

// Uplink forwards one or more logs to one sink, from one goroutine: sinks are not safe for
// concurrent use, and an upstream client id must not be connected twice. Batches of the
// first source go before those of the next (aggregates before raw records).
type Uplink struct {
	name    string
	gateway string
	srcs    []*source
	sink    Sink
	store   *buffer.Store
	forward []string
	batch   config.Batch
	clock   clock.Clock
	lg      *slog.Logger
	stats   Stats

	// Backoff bounds, settable by tests.
	MinBackoff, MaxBackoff time.Duration
}

// New builds an uplink over sources, in priority order.
func New(cfg config.Uplink, gateway string, sources []Source, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	u := &Uplink{
		name: cfg.Name, gateway: gateway, sink: sink, store: store,
		forward: cfg.Forward, batch: cfg.Batch, clock: clk,
		lg:         lg.With("component", "uplink", "uplink", cfg.Name),
		MinBackoff: 500 * time.Millisecond, MaxBackoff: time.Minute,
	}
	for _, s := range sources {
		if s.Topic == nil {
			s.Topic = recordTopic
		}
		u.srcs = append(u.srcs, &source{Source: s})
	}
	return u
}

// Name is the uplink's name, also its consumer name in the logs.
func (u *Uplink) Name() string { return u.name }

// Stats returns the uplink's counters.
func (u *Uplink) Stats() *Stats { return &u.stats }

// Position returns the committed position in log (the next sequence number to send), and
// false when the uplink does not forward log.
func (u *Uplink) Position(log string) (uint64, bool) {
	for _, s := range u.srcs {
		if s.Log == log {
			return s.position.Load(), true
		}
	}
	return 0, false
}

// Logs lists the logs the uplink forwards, in priority order.
func (u *Uplink) Logs() []string {
	out := make([]string, len(u.srcs))
	for i, s := range u.srcs {
		out[i] = s.Log
	}
	return out
}

func (u *Uplink) pendingKey(s *source) string { return "uplink/" + u.name + "/" + s.Log + "/pending" }

func (u *Uplink) setPosition(s *source, next uint64) {
	s.next = next
	s.position.Store(next)
	if s.Kind == record.KindRecords && u.firstOfKind(s) {
		u.stats.Position.Store(next)
	}
}

func (u *Uplink) firstOfKind(s *source) bool {
	for _, o := range u.srcs {
		if o.Kind == s.Kind {
			return o == s
		}
	}
	return false
}

// Run sends batches until ctx ends. Batches whose range was recorded before a crash are
// sent again first, with the same id and content.
func (u *Uplink) Run(ctx context.Context) error {
	defer u.sink.Close()
	for _, s := range u.srcs {
		next, err := u.store.Cursor(s.Log, u.name)
		if err != nil {
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
		u.setPosition(s, next)
		if s.pending, err = u.pendingBatch(s); err != nil {
			return fmt.Errorf("uplink %q: %w", u.name, err)
		}
	}
	failures := 0
	for {
		b, s, err := u.nextBatch(ctx)
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
			failures++
			u.stats.Errors.Add(1)
			u.stats.Connected.Store(false)
			u.stats.LastError.Store(err.Error())
			if errors.Is(err, ErrPermanent) {
				// Dead-lettering comes with the HTTP sink; until then a permanent error is
				// retried slowly rather than dropped.
				u.lg.Error("batch refused permanently; retrying", "batch", b.ID, "err", err)
			} else if failures == 1 || failures%10 == 0 {
				u.lg.Warn("send failed; backing off", "batch", b.ID, "failures", failures, "err", err)
			}
			u.stats.BackoffNow.Store(true)
			select {
			case <-ctx.Done():
				return nil
			case <-u.clock.After(u.backoff(failures)):
			}
			u.stats.BackoffNow.Store(false)
			continue
		}
		if failures > 0 {
			u.lg.Info("upstream reachable again", "after_failures", failures)
		}
		failures = 0
		u.stats.Connected.Store(b.Records > 0 || u.stats.Connected.Load())
		// Commit after the remote ack: the position and the cleared pending range together.
		// This uses a fresh context: an acknowledged batch must be committed even while
		// shutting down, or it would be sent twice.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = u.store.Update(cctx, func(tx *buffer.Tx) {
			tx.SetCursor(s.Log, u.name, b.Last+1)
			tx.Delete(u.pendingKey(s))
		})
		cancel()
		if err != nil {
			return fmt.Errorf("uplink %q: commit batch %s: %w", u.name, b.ID, err)
		}
		u.setPosition(s, b.Last+1)
		s.pending = nil
		if b.Records > 0 {
			u.stats.Batches.Add(1)
			u.stats.Records.Add(uint64(b.Records))
		}
	}
}

// pendingBatch rebuilds the batch of s whose range was recorded but not committed before
// the last stop, or returns nil.
func (u *Uplink) pendingBatch(s *source) (*Batch, error) {
	v, ok, err := u.store.Get(u.pendingKey(s))
	if err != nil || !ok || len(v) != 16 {
		return nil, err
	}
	first, last := binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
	if first < s.next {
		return nil, nil // committed already; the pending mark is stale
	}
	b, _, err := u.read(s, first, last)
	if err != nil {
		return nil, err
	}
	u.lg.Info("resending the batch sent before the last stop", "batch", b.ID, "first", first, "last", last)
	return b, nil
}

// backoff is exponential with full jitter: uniform in [0, min(max, min·2^failures)].
func (u *Uplink) backoff(failures int) time.Duration {
	d := u.MinBackoff
	for i := 1; i < failures && d < u.MaxBackoff; i++ {
		d *= 2
	}
	if d > u.MaxBackoff {
		d = u.MaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// nextBatch returns the batch to send next and its source: going through the sources in
// priority order, a recorded batch not yet acknowledged, or a new one when the source has
// a full batch or its linger is over. It waits until one is ready, and records the range
// of a new batch durably before returning it.
func (u *Uplink) nextBatch(ctx context.Context) (*Batch, *source, error) {
	for {
		var earliest time.Time
		afters := make([]uint64, len(u.srcs))
		for i, s := range u.srcs {
			if s.pending != nil {
				return s.pending, s, nil
			}
			last, err := u.store.LastSeq(s.Log)
			if err != nil {
				return nil, nil, err
			}
			b, full, err := u.read(s, s.next, 0)
			if err != nil {
				return nil, nil, err
			}
			if b == nil {
				// Nothing to send: wake when the log grows, then give the batch its linger.
				s.deadline = time.Time{}
				afters[i] = max(last, s.next-min(s.next, 1))
				continue
			}
			if s.deadline.IsZero() {
				// A backlog was already there: no reason to linger beyond what is readable.
				s.deadline = u.clock.Now()
			}
			if full || !u.clock.Now().Before(s.deadline) {
				s.deadline = time.Time{}
				if b.Records > 0 {
					var r [16]byte
					binary.BigEndian.PutUint64(r[:8], b.First)
					binary.BigEndian.PutUint64(r[8:], b.Last)
					if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.pendingKey(s), r[:]) }); err != nil {
						return nil, nil, err
					}
				}
				s.pending = b
				return b, s, nil
			}
			afters[i] = b.Last
			if earliest.IsZero() || s.deadline.Before(earliest) {
				earliest = s.deadline
			}
		}
		grew, err := u.waitAny(ctx, afters, earliest)
		if err != nil {
			return nil, nil, err
		}
		for _, i := range grew {
			if s := u.srcs[i]; s.deadline.IsZero() {
				s.deadline = u.clock.Now().Add(u.batch.Linger.D())
			}
		}
	}
}

// waitAny waits until one of the logs holds an entry after afters[i], or until deadline
// (when not zero), or ctx ends. It returns the indexes of the logs that grew.
func (u *Uplink) waitAny(ctx context.Context, afters []uint64, deadline time.Time) ([]int, error) {
	var timer <-chan time.Time
	if !deadline.IsZero() {
		wait := deadline.Sub(u.clock.Now())
		if wait <= 0 {
			return nil, nil
		}
		t := u.clock.NewTimer(wait)
		defer t.Stop()
		timer = t.C()
	}
	wctx, cancel := context.WithCancel(ctx)
	woke := make(chan int, len(afters))
	var wg sync.WaitGroup
	for i, s := range u.srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if u.store.Wait(wctx, s.Log, afters[i]) == nil {
				woke <- i
			}
		}()
	}
	// Every waiter ends with wctx; waiting for them keeps each goroutine owned.
	defer func() { cancel(); wg.Wait() }()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer:
		return nil, nil
	case i := <-woke:
		grew := []int{i}
		for {
			select {
			case j := <-woke:
				grew = append(grew, j)
			default:
				return grew, nil
			}
		}
	}
}

// read builds the batch for the range starting at first: up to last when last > 0 (a
// recorded range, rebuilt exactly), else as far as the size limits allow. full reports
// that a limit was reached.
func (u *Uplink) read(s *source, first, last uint64) (b *Batch, full bool, err error) {
	var items [][]byte
	size := 64
	var end uint64
	exact := last > 0
	_, err = u.store.Read(s.Log, first, 0, func(seq uint64, v []byte) error {
		if exact && seq > last {
			return buffer.ErrStop
		}
		if !exact && (len(items) >= u.batch.MaxRecords || size+len(v)+1 > int(u.batch.MaxBytes)) && end > 0 {
			full = true
			return buffer.ErrStop
		}
		end = seq
		if u.selected(s, v) {
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
		end = last
	}
	if end == 0 {
		return nil, full, nil
	}
	b = &Batch{Kind: s.Kind, Log: s.Log, First: first, Last: end, Records: len(items)}
	b.ID = record.BatchID(u.gateway, u.name, s.Log, b.First, b.Last)
	b.Payload = record.AppendBatch(make([]byte, 0, size+128), u.gateway, b.ID, s.Kind, items)
	return b, full, nil
}

// selected reports whether a stored entry's topic matches one of the forward filters.
func (u *Uplink) selected(s *source, v []byte) bool {
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

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
	Position   atomic.Uint64 // committed position in the log
	BackoffNow atomic.Bool
}

// Uplink forwards one log to one sink.
type Uplink struct {
	name    string
	gateway string
	log     string
	kind    record.Kind
	sink    Sink
	store   *buffer.Store
	forward []string
	batch   config.Batch                 // owned by Run
	reload  atomic.Pointer[config.Batch] // new limits from SetBatch, taken by Run
	clock   clock.Clock
	lg      *slog.Logger
	stats   Stats

	// Backoff bounds, settable by tests.
	MinBackoff, MaxBackoff time.Duration
}

// New builds an uplink over log of the given kind.
func New(cfg config.Uplink, gateway, log string, kind record.Kind, sink Sink, store *buffer.Store, clk clock.Clock, lg *slog.Logger) *Uplink {
	return &Uplink{
		name: cfg.Name, gateway: gateway, log: log, kind: kind, sink: sink, store: store,
		forward: cfg.Forward, batch: cfg.Batch, clock: clk,
		lg:         lg.With("component", "uplink", "uplink", cfg.Name),
		MinBackoff: 500 * time.Millisecond, MaxBackoff: time.Minute,
	}
}

// Name is the uplink's name, also its consumer name in the log.
func (u *Uplink) Name() string { return u.name }

// Stats returns the uplink's counters.
func (u *Uplink) Stats() *Stats { return &u.stats }

// SetBatch changes the batch limits (a config reload); the next batch cut uses them.
func (u *Uplink) SetBatch(b config.Batch) { u.reload.Store(&b) }

func (u *Uplink) pendingKey() string { return "uplink/" + u.name + "/" + u.log + "/pending" }

// Run sends batches until ctx ends. A batch whose range was recorded before a crash is sent
// again first, with the same id and content.
func (u *Uplink) Run(ctx context.Context) error {
	defer u.sink.Close()
	next, err := u.store.Cursor(u.log, u.name)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", u.name, err)
	}
	u.stats.Position.Store(next)
	b, err := u.pendingBatch(next)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", u.name, err)
	}
	failures := 0
	for {
		if nb := u.reload.Swap(nil); nb != nil {
			u.batch = *nb
		}
		if b == nil {
			b, err = u.nextBatch(ctx, next)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("uplink %q: %w", u.name, err)
			}
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
			tx.SetCursor(u.log, u.name, b.Last+1)
			tx.Delete(u.pendingKey())
		})
		cancel()
		if err != nil {
			return fmt.Errorf("uplink %q: commit batch %s: %w", u.name, b.ID, err)
		}
		next = b.Last + 1
		u.stats.Position.Store(next)
		if b.Records > 0 {
			u.stats.Batches.Add(1)
			u.stats.Records.Add(uint64(b.Records))
		}
		b = nil
	}
}

// pendingBatch rebuilds the batch whose range was recorded but not committed before the
// last stop, or returns nil.
func (u *Uplink) pendingBatch(next uint64) (*Batch, error) {
	v, ok, err := u.store.Get(u.pendingKey())
	if err != nil || !ok || len(v) != 16 {
		return nil, err
	}
	first, last := binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
	if first < next {
		return nil, nil // committed already; the pending mark is stale
	}
	b, _, err := u.read(first, last)
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

// nextBatch cuts a new batch starting at next: it waits for the first record, then up to linger for the batch to fill, and
// records the range durably before returning it.
func (u *Uplink) nextBatch(ctx context.Context, next uint64) (*Batch, error) {
	var deadline time.Time
	for {
		b, full, err := u.read(next, 0)
		if err != nil {
			return nil, err
		}
		if b == nil {
			// Nothing to send: sleep until the log grows, then give the batch its linger.
			last, err := u.store.LastSeq(u.log)
			if err != nil {
				return nil, err
			}
			if err := u.store.Wait(ctx, u.log, max(last, next-min(next, 1))); err != nil {
				return nil, err
			}
			deadline = u.clock.Now().Add(u.batch.Linger.D())
			continue
		}
		if deadline.IsZero() {
			// Linger counts from when the uplink first saw the batch's first record.
			deadline = u.clock.Now().Add(u.batch.Linger.D())
		}
		wait := deadline.Sub(u.clock.Now())
		if full || wait <= 0 {
			var r [16]byte
			binary.BigEndian.PutUint64(r[:8], b.First)
			binary.BigEndian.PutUint64(r[8:], b.Last)
			if b.Records > 0 {
				if err := u.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(u.pendingKey(), r[:]) }); err != nil {
					return nil, err
				}
			}
			return b, nil
		}
		last := b.Last
		wctx, cancel := context.WithCancel(ctx)
		woke := make(chan error, 1)
		go func() { woke <- u.store.Wait(wctx, u.log, last) }()
		select {
		case <-ctx.Done():
			cancel()
			<-woke
			return nil, ctx.Err()
		case <-u.clock.After(wait):
			cancel()
			<-woke // the waiter ends with wctx; wait for it so it has an owner
		case <-woke:
			cancel()
		}
	}
}

// read builds the batch for the range starting at first: up to last when last > 0 (a
// recorded range, rebuilt exactly), else as far as the size limits allow. full reports
// that a limit was reached.
func (u *Uplink) read(first, last uint64) (b *Batch, full bool, err error) {
	var items [][]byte
	size := 64
	var end uint64
	exact := last > 0
	_, err = u.store.Read(u.log, first, 0, func(seq uint64, v []byte) error {
		if exact && seq > last {
			return buffer.ErrStop
		}
		if !exact && (len(items) >= u.batch.MaxRecords || size+len(v)+1 > int(u.batch.MaxBytes)) && end > 0 {
			full = true
			return buffer.ErrStop
		}
		end = seq
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
		end = last
	}
	if end == 0 {
		return nil, full, nil
	}
	b = &Batch{Kind: u.kind, Log: u.log, First: first, Last: end, Records: len(items)}
	b.ID = record.BatchID(u.gateway, u.name, u.log, b.First, b.Last)
	b.Payload = record.AppendBatch(make([]byte, 0, size+128), u.gateway, b.ID, u.kind, items)
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

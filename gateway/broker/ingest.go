package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
)

// RawLog is the log every accepted reading is appended to.
const RawLog = "raw"

// IngestHook captures every publish in mochi's OnPublish, before the PUBACK (DESIGN
// invariants 1 and 2): route, decode, dedup and a durable append; only then does mochi
// acknowledge. A message that cannot be accepted is refused per SPEC §2.
type IngestHook struct {
	mqtt.HookBase
	router *ingest.Router
	store  *buffer.Store
	clock  clock.Clock
	log    *slog.Logger
	ctx    context.Context

	disconnect func(cl *mqtt.Client) // set by the broker

	stats   IngestStats
	limitMu sync.Mutex // guards lastLog
	lastLog map[ingest.Reason]time.Time
}

// IngestStats count what the hook did, by outcome.
type IngestStats struct {
	Accepted  atomic.Uint64 // messages stored (or all duplicates)
	Records   atomic.Uint64 // records stored
	Dups      atomic.Uint64 // records dropped as duplicates
	Raw       atomic.Uint64 // unrouted messages forwarded raw
	Dropped   atomic.Uint64 // unrouted messages dropped by config
	Malformed atomic.Uint64
	StoreErr  atomic.Uint64
}

// NewIngestHook builds the hook. ctx bounds store waits (cancelled at shutdown).
func NewIngestHook(ctx context.Context, r *ingest.Router, s *buffer.Store, c clock.Clock, log *slog.Logger) *IngestHook {
	return &IngestHook{
		router: r, store: s, clock: c, ctx: ctx,
		log:     log.With("component", "ingest"),
		lastLog: map[ingest.Reason]time.Time{},
	}
}

// Stats returns the hook's counters.
func (h *IngestHook) Stats() *IngestStats { return &h.stats }

func (h *IngestHook) ID() string { return "edgegate-ingest" }

func (h *IngestHook) Provides(b byte) bool { return bytes.Contains([]byte{mqtt.OnPublish}, []byte{b}) }

// OnPublish runs on the publisher's read goroutine. Returning nil lets mochi PUBACK and
// deliver; packets.ErrRejectPacket stops both; a packets.Code makes an MQTT 5 PUBACK carry
// that reason code (QoS > 0 only).
func (h *IngestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if len(pk.TopicName) > 0 && pk.TopicName[0] == '$' {
		return pk, nil
	}
	if cl.Net.Inline && (cl.ID == SensorClientID || cl.ID == InternalClientID) {
		return pk, nil // ingested by Broker.Publish, or derived data with its own log
	}
	err := h.Ingest(h.ctx, pk.TopicName, pk.Payload)
	if err == nil {
		return pk, nil
	}
	var ie *ingest.Error
	if !errors.As(err, &ie) {
		ie = &ingest.Error{Reason: ingest.ReasonStore, Err: err}
	}
	h.logRefusal(cl, pk, ie)
	v5 := cl.Properties.ProtocolVersion == 5
	if ie.Reason == ingest.ReasonStore || ie.Reason == ingest.ReasonShutdown || ie.Reason == ingest.ReasonBufferFull {
		// Not stored, so not acknowledged. A 3.1.1 client only resends an unacknowledged
		// message after a reconnect: close the connection so it does (DESIGN invariant 1).
		if !v5 && !cl.Net.Inline && h.disconnect != nil {
			h.disconnect(cl)
		}
	}
	if v5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.Code{Code: ie.Reason.Code(), Reason: string(ie.Reason)}
	}
	return pk, packets.ErrRejectPacket
}

// Ingest routes, decodes and durably appends one message; nil means it is stored (or was a
// duplicate, or unrouted and dropped by config). Errors are *ingest.Error.
func (h *IngestHook) Ingest(ctx context.Context, topic string, payload []byte) error {
	recs, outcome, err := h.router.Decode(topic, payload, h.clock.Now())
	if err != nil {
		h.stats.Malformed.Add(1)
		return err
	}
	switch outcome {
	case ingest.Dropped:
		h.stats.Dropped.Add(1)
		return nil
	case ingest.Raw:
		h.stats.Raw.Add(1)
	}
	entries := make([]buffer.Entry, len(recs))
	for i := range recs {
		entries[i] = buffer.Entry{ID: recs[i].ID, Value: recs[i].AppendJSON(nil)}
	}
	res, err := h.store.Append(ctx, RawLog, entries)
	if err != nil {
		h.stats.StoreErr.Add(1)
		reason := ingest.ReasonStore
		switch {
		case errors.Is(err, buffer.ErrClosed) || errors.Is(err, context.Canceled):
			reason = ingest.ReasonShutdown
		case errors.Is(err, buffer.ErrFull):
			reason = ingest.ReasonBufferFull // on_full: reject (SPEC §2: MQTT 5 gets 0x97)
		case errors.Is(err, buffer.ErrTooLarge):
			reason = ingest.ReasonTooLarge // a record beyond buffer.MaxValueSize: resending cannot help
		}
		return &ingest.Error{Reason: reason, Err: err}
	}
	h.stats.Accepted.Add(1)
	for _, r := range res {
		if r.Dup {
			h.stats.Dups.Add(1)
		} else {
			h.stats.Records.Add(1)
		}
	}
	return nil
}

// logRefusal logs at most one line per reason every 10 s: a misbehaving device must not
// flood the journal.
func (h *IngestHook) logRefusal(cl *mqtt.Client, pk packets.Packet, e *ingest.Error) {
	now := h.clock.Now()
	h.limitMu.Lock()
	last, ok := h.lastLog[e.Reason]
	if ok && now.Sub(last) < 10*time.Second {
		h.limitMu.Unlock()
		return
	}
	h.lastLog[e.Reason] = now
	h.limitMu.Unlock()
	h.log.Warn("publish refused", "reason", string(e.Reason), "client", cl.ID, "topic", pk.TopicName, "err", e.Err)
}

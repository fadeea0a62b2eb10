package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/record"
)

// IngestHook captures every publish in mochi's OnPublish, before the PUBACK (DESIGN
// invariants 1 and 2): route, decode, dedup and a durable append; only then does mochi
// acknowledge. A message that cannot be accepted is refused per SPEC §2.
type IngestHook struct {
	mqtt.HookBase
	router atomic.Pointer[ingest.Router] // swapped by a config reload
	holder Holder                        // nil: none
	recent Observer                      // nil: none
	store  *buffer.Store
	clock  clock.Clock
	log    *slog.Logger
	ctx    context.Context

	disconnect func(cl *mqtt.Client)   // the broker's
	deliver    func(pk packets.Packet) // the broker's: to local subscribers, after the append
	acks       *acker

	stats    IngestStats
	sources  SourceCounts
	refusals *Refusals // shared with the broker's guard

	refused      *refusedLog // nil: refused messages are only counted
	refusedStats *RefusedStats
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

// IngestOptions are what the ingest hook gets from the gateway (New builds the hook).
type IngestOptions struct {
	// Ctx bounds the store waits (cancelled at shutdown).
	Ctx    context.Context
	Router *ingest.Router
	Store  *buffer.Store
	Clock  clock.Clock
	// Observer sees every reading stored; nil: none.
	Observer Observer
	// Holder may divert messages to another log (the clock's hold); nil: none.
	Holder Holder
}

// brokerSide is what the ingest hook gets from the broker that builds it.
type brokerSide struct {
	disconnect func(cl *mqtt.Client)
	deliver    func(pk packets.Packet)
	refused    *refusedLog   // nil: refused messages are only counted
	stats      *RefusedStats // the refused log's counters
}

// newIngestHook builds the hook from the gateway's options and the broker's side.
func newIngestHook(o IngestOptions, b brokerSide, log *slog.Logger) *IngestHook {
	h := &IngestHook{
		store: o.Store, clock: o.Clock, ctx: o.Ctx, holder: o.Holder, recent: o.Observer,
		log:        log.With("component", "ingest"),
		refusals:   NewRefusals(o.Clock, log.With("component", "broker")),
		acks:       newAcker(ackBytes, ackConnBytes),
		disconnect: b.disconnect, deliver: b.deliver, refused: b.refused, refusedStats: b.stats,
	}
	h.router.Store(o.Router)
	return h
}

// Refusals returns the counters of refused messages and connections, by reason.
func (h *IngestHook) Refusals() *Refusals { return h.refusals }

// SetRouter replaces the routes (a config reload); messages decoded after it returns use r.
func (h *IngestHook) SetRouter(r *ingest.Router) { h.router.Store(r) }

// Stats returns the hook's counters.
func (h *IngestHook) Stats() *IngestStats { return &h.stats }

// Sources returns the counters by source and outcome.
func (h *IngestHook) Sources() *SourceCounts { return &h.sources }

func (h *IngestHook) ID() string { return "edgegate-ingest" }

// Provides is asked by mochi for every event of every packet: three comparisons.
func (h *IngestHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSessionEstablished || b == mqtt.OnStopped
}

// OnStopped runs when mochi has closed the listeners and every read goroutine returned:
// the answers they queued run now, deliveries included, while the server can still route
// them to subscribers' sessions.
func (h *IngestHook) OnStopped() { h.acks.wait() }

// OnSessionEstablished tells the store of each connection, before its first publish is
// read: a clean one ends the client's session, whose records of arrivals then match only
// resends marked DUP (buffer.Store.Connected).
func (h *IngestHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	if err := h.store.Connected(h.ctx, cl.ID, cl.Properties.Clean); err != nil && h.ctx.Err() == nil {
		h.log.Warn("cannot forget the arrivals of a session the client discarded", "client", cl.ID, "err", err)
	}
}

// arrive stages pk, which arrived now. A QoS ≥ 1 publish in a persistent session whose
// readings take their time from its arrival (JSON without ts, a bare number, an unrouted
// raw message: record.HashID and record.RawID hash that time) is recorded by the store
// under its client, packet id and payload, and a resend of it is staged again with its
// first arrival (buffer.Store.Arrive): its readings then get the ids they were stored
// with, and the id dedup drops the resend, with or without the DUP flag. A publish whose
// readings carry their own time is not recorded: a resend gets the same ids anyway, and
// its record would only take room from those that need one (and cost a key written to
// flash with every publish).
func (h *IngestHook) arrive(cl *mqtt.Client, pk *packets.Packet) (staged, buffer.Arrival) {
	now := h.clock.Now()
	st := h.stage(SourceMQTT, pk.TopicName, pk.Payload, now)
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline || st.entries == nil || !stampedAt(st.recs, now) {
		return st, buffer.Arrival{At: now}
	}
	// How long a resend may come: the session's expiry, as mochi keeps it (an MQTT 5 expiry
	// is capped by the broker's maximum at CONNACK), or the broker's maximum for a 3.1.1
	// persistent session and for a session that ends with its connection (a clean-session
	// client such as paho resends what it had in flight, marked DUP, whenever it reconnects).
	var maxKeep time.Duration
	if h.Opts != nil && h.Opts.Capabilities != nil {
		maxKeep = time.Duration(h.Opts.Capabilities.MaximumSessionExpiryInterval) * time.Second
	}
	keep, ends := maxKeep, cl.Properties.Clean
	if cl.Properties.ProtocolVersion == 5 {
		keep = time.Duration(cl.Properties.Props.SessionExpiryInterval) * time.Second
		if ends = keep == 0; ends {
			keep = maxKeep
		}
	}
	a := h.store.Arrive(buffer.Publish{
		Client: cl.ID, PacketID: pk.PacketID, Payload: pk.Payload, Dup: pk.FixedHeader.Dup,
		Resumed: !cl.Properties.Clean, Keep: keep, Ends: ends,
	}, now)
	if !a.At.Equal(now) { // a resend: its readings take the first copy's arrival
		st = h.decode(SourceMQTT, pk.TopicName, pk.Payload, a.At)
	}
	return st, a
}

// stampedAt tells whether a reading of recs took its time from the arrival now, as the
// clock hold tells them (a device's own time equal to it to the millisecond is taken for
// a stamp: it costs a record, no more).
func stampedAt(recs []record.Record, now time.Time) bool {
	at := record.TruncTime(now)
	for i := range recs {
		if recs[i].TS.Equal(at) {
			return true
		}
	}
	return false
}

// OnPublish runs on the publisher's read goroutine. A QoS 0 or 1 message is decoded here
// and its append queued; the connection's acker writes the PUBACK and delivers the message
// once it is durable (acker.go), and mochi is told to do neither (ErrRejectPacket). A QoS 2
// or retained message is stored before returning, and mochi answers it. A refusal is
// answered by refusePublish (SPEC §2).
func (h *IngestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if len(pk.TopicName) > 0 && pk.TopicName[0] == '$' {
		return pk, nil
	}
	if cl.Net.Inline && (cl.ID == SensorClientID || cl.ID == InternalClientID || cl.ID == RelayClientID) {
		return pk, nil // ingested already, or derived data with its own log
	}
	if pk.FixedHeader.Retain && len(pk.Payload) == 0 {
		h.acks.idle(cl)
		return pk, nil // clears a retained message (MQTT §3.3.1.3): no reading to store
	}
	if pk.FixedHeader.Qos > 1 || pk.FixedHeader.Retain || cl.Net.Inline || h.deliver == nil {
		// Stored before returning; mochi answers and retains it, after the earlier answers.
		// Retained messages take this path so the guard's count of retained topics is
		// exact when the next publish is checked.
		h.acks.idle(cl)
		h.sources.begin()
		st, arr := h.arrive(cl, &pk)
		oc, err := h.append(h.ctx, st, arr)
		h.sources.done(SourceMQTT, oc)
		return pk, h.refuse(cl, pk, err, false)
	}

	h.sources.begin()
	st, arr := h.arrive(cl, &pk)
	arr.Lazy = pk.FixedHeader.Qos == 0      // no PUBACK waits: it may wait to share a commit (buffer.DefaultLazyDelay)
	if st.err != nil || st.entries == nil { // refused, or dropped by config: no append
		h.store.Unarrive(arr)
		h.sources.done(SourceMQTT, st.oc)
		if st.err != nil || !h.acks.busy(cl) {
			return pk, h.refuse(cl, pk, st.err, false)
		}
		h.acks.push(cl, 0, nil, h.acceptLater(cl, pk))
		return pk, packets.ErrRejectPacket
	}
	cost, err := h.acks.reserve(h.ctx, cl, int64(len(pk.Payload))+ackCost)
	if err != nil {
		h.store.Unarrive(arr)
		h.sources.done(SourceMQTT, OutcomeRefused)
		return pk, h.refuse(cl, pk, &ingest.Error{Reason: ingest.ReasonShutdown, Err: err}, false)
	}
	p := h.store.AppendArrived(h.ctx, st.log, st.entries, arr)
	h.acks.push(cl, cost, p.Ready, h.answerWhenStored(cl, pk, st, p))
	return pk, packets.ErrRejectPacket
}

// The closures the acker runs are made by functions of their own: a variable a closure
// captures lives on the heap from the start of the function that declares it, so a
// closure in OnPublish would cost every publish a heap copy of its 800-byte packet,
// whichever way it is answered.

// answerWhenStored is the answer to a queued append: the PUBACK and the delivery once it
// is durable, a refusal if it failed.
func (h *IngestHook) answerWhenStored(cl *mqtt.Client, pk packets.Packet, st staged, p *buffer.Pending) func() {
	return func() {
		res, err := p.Wait()
		oc, err := h.settle(st, res, err)
		h.sources.done(SourceMQTT, oc)
		if err != nil {
			_ = h.refuse(cl, pk, err, true) // in order already: answer now
			return
		}
		if h.accepted(cl, pk) == nil && p.Recorded() {
			if lc := baseConn(cl.Net.Conn); lc != nil {
				lc.whenDelivered(func() { h.store.Delivered(p) })
			}
		}
	}
}

// acceptLater is the answer to a publish that needs no append (dropped by config) queued
// behind earlier ones.
func (h *IngestHook) acceptLater(cl *mqtt.Client, pk packets.Packet) func() {
	return func() { _ = h.accepted(cl, pk) }
}

// accepted acknowledges a stored publish and delivers it to local subscribers, as mochi
// does when OnPublish returns nil.
func (h *IngestHook) accepted(cl *mqtt.Client, pk packets.Packet) error {
	err := puback(cl, pk)
	h.deliver(pk)
	return err
}

// refuse answers a publish that ingest refused (err nil: none, it returns nil) with
// refusePublish; inOrder: the caller is the acker, answering in order already.
func (h *IngestHook) refuse(cl *mqtt.Client, pk packets.Packet, err error, inOrder bool) error {
	if err == nil {
		return nil
	}
	var ie *ingest.Error
	if !errors.As(err, &ie) {
		ie = &ingest.Error{Reason: ingest.ReasonStore, Err: err}
	}
	return h.refusePublish(cl, pk, ie.Reason, ie.Err, inOrder)
}

// RefusedStats returns the counters of the refused log.
func (h *IngestHook) RefusedStats() *RefusedStats { return h.refusedStats }

// Ingest routes, decodes and durably appends one message; nil means it is stored (or was a
// duplicate, or unrouted and dropped by config). Errors are *ingest.Error.
func (h *IngestHook) Ingest(ctx context.Context, topic string, payload []byte) error {
	return h.IngestFrom(ctx, SourceMQTT, topic, payload)
}

// IngestFrom is Ingest for a message from src; it counts the outcome by source.
func (h *IngestHook) IngestFrom(ctx context.Context, src Source, topic string, payload []byte) error {
	h.sources.begin()
	now := h.clock.Now()
	oc, err := h.append(ctx, h.stage(src, topic, payload, now), buffer.Arrival{At: now})
	h.sources.done(src, oc) // OutcomeRefused with err
	return err
}

// append appends a staged message with its arrival arr, and waits until it is durable.
func (h *IngestHook) append(ctx context.Context, st staged, arr buffer.Arrival) (Outcome, error) {
	if st.err != nil || st.entries == nil {
		h.store.Unarrive(arr) // nothing stored under its arrival
		return st.oc, st.err
	}
	res, err := h.store.AppendArrived(ctx, st.log, st.entries, arr).Wait()
	return h.settle(st, res, err)
}

// checkPayload decodes a payload as its route would, and returns the refusal it would
// get (nil when it would be accepted, or is unrouted).
func (h *IngestHook) checkPayload(topic string, payload []byte) error {
	_, _, err := h.router.Load().Decode(topic, payload, h.clock.Now())
	return err
}

// staged is a message routed and decoded: what to append where, or the outcome already.
type staged struct {
	oc      Outcome // OutcomeStored or OutcomeRaw while entries wait; else final
	err     error   // an *ingest.Error (oc is OutcomeRefused)
	log     string
	entries []buffer.Entry
	recs    []record.Record // what entries hold, for the Observer
	now     time.Time       // arrival
}

// stage routes and decodes a message that arrived (first) at now and turns its records
// into entries of the log they go to. It runs on the publisher's goroutine.
func (h *IngestHook) stage(src Source, topic string, payload []byte, now time.Time) staged {
	st := h.decode(src, topic, payload, now)
	h.count(st)
	return st
}

// count counts a staged message's outcome: once per message, however often it is staged.
func (h *IngestHook) count(st staged) {
	switch st.oc {
	case OutcomeRefused:
		h.stats.Malformed.Add(1)
	case OutcomeDropped:
		h.stats.Dropped.Add(1)
	case OutcomeRaw:
		h.stats.Raw.Add(1)
	}
}

// decode is stage without counting: arrive stages a resend again with its first arrival.
func (h *IngestHook) decode(src Source, topic string, payload []byte, now time.Time) staged {
	recs, outcome, err := h.router.Load().Decode(topic, payload, now)
	if err != nil {
		return staged{oc: OutcomeRefused, err: err}
	}
	st := staged{oc: OutcomeStored, log: logs.Raw, recs: recs, now: now}
	switch outcome {
	case ingest.Dropped:
		return staged{oc: OutcomeDropped}
	case ingest.Raw:
		st.oc = OutcomeRaw
	}
	if h.holder != nil {
		if lg, es, ok := h.holder.Hold(src, recs, now); ok {
			st.log, st.entries = lg, es
		}
	}
	if st.entries == nil {
		st.entries = make([]buffer.Entry, len(recs))
		for i := range recs {
			st.entries[i] = buffer.Entry{Value: recs[i].AppendJSON(nil)}
		}
	}
	for i := range st.entries { // a Holder gives one entry per record
		if i < len(recs) {
			st.entries[i].ID = dedupKey(&recs[i])
		}
	}
	return st
}

// dedupKey is the key the store deduplicates a record by: its id scoped to the topic it
// came on. The publish grants confine a device to its topics, so a device cannot make
// another's readings duplicates by sending their ids first (issue 21, item 4); a resend
// comes on the same topic. The record keeps its own id (SPEC §3.1).
func dedupKey(r *record.Record) string {
	return r.Topic + "\x00" + r.ID
}

// settle counts the outcome of a staged message's append and turns a store error into
// the refusal it means.
func (h *IngestHook) settle(st staged, res []buffer.Result, err error) (Outcome, error) {
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
		return OutcomeRefused, &ingest.Error{Reason: reason, Err: err}
	}
	dups := 0
	for _, r := range res {
		if r.Dup {
			dups++
		}
	}
	// One add per counter and message, not per record: they are shared by every publisher.
	h.stats.Accepted.Add(1)
	if dups > 0 {
		h.stats.Dups.Add(uint64(dups))
	}
	h.stats.Records.Add(uint64(len(res) - dups))
	if h.recent != nil && st.oc == OutcomeStored {
		for i := range res {
			if !res[i].Dup && i < len(st.recs) {
				r := &st.recs[i]
				h.recent.Observe(r.Series, r.Unit, r.Value, r.TS, st.now)
			}
		}
	}
	oc := st.oc
	if dups == len(res) && oc == OutcomeStored {
		oc = OutcomeDuplicate
	}
	return oc, nil
}

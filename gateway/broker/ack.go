package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/ingest"
)

// refusePublish counts and logs a refused PUBLISH and answers it as SPEC §2 says, after
// the answers to the client's earlier publishes (acker). It returns the error that makes
// mochi neither acknowledge nor deliver the message. inOrder says the caller is the acker
// itself, answering in order already.
//
//   - Permanent reasons (ingest.Reason.Permanent): the message is kept in the refused log,
//     and once that append is done it is acknowledged: an MQTT 5 client gets the reason
//     code in its PUBACK (QoS 1) or PUBREC (QoS 2), a 3.1.1 client a plain PUBACK or PUBREC
//     (3.1.1 has no negative one, and a withheld PUBACK would fill its in-flight window).
//   - Transient reasons: no acknowledgement. An MQTT 5 client gets the reason code; a 3.1.1
//     client is disconnected, so that it resends the message later (DESIGN invariant 1).
//
// The acknowledgement is written here rather than by returning a packets.Code, because
// mochi v2.7.9 answers a refused QoS 2 publish with a PUBACK and logs every coded refusal
// at error level with its payload.
func (h *IngestHook) refusePublish(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error, inOrder bool) error {
	h.refusals.Add(reason, cl.ID, pk.TopicName, err)
	if cl.Net.Inline {
		return packets.ErrRejectPacket // nobody to answer, nothing to keep
	}
	v5 := cl.Properties.ProtocolVersion == 5
	if !reason.Permanent() {
		switch {
		case v5 && pk.FixedHeader.Qos > 0:
			h.answer(cl, inOrder, func() { writeRefusal(cl, pk, reason) })
		case !v5 && h.disconnect != nil:
			h.disconnect(cl)
		}
		return packets.ErrRejectPacket
	}
	if h.refused == nil {
		h.answer(cl, inOrder, func() { ackRefused(cl, pk, reason) })
		return packets.ErrRejectPacket
	}
	value := refusedEntry(h.clock.Now(), cl.ID, string(cl.Properties.Username), pk.TopicName, pk.FixedHeader.Qos, pk.Payload, reason, err)
	if inOrder {
		h.keepRefused(cl, pk, reason, value, h.refused.append(h.ctx, value))()
		return packets.ErrRejectPacket
	}
	cost, rerr := h.acks.reserve(h.ctx, cl, int64(len(value))+ackCost)
	if rerr != nil { // shutting down: the message is neither kept nor answered
		h.refusedStats.Failed.Add(1)
		if !v5 && h.disconnect != nil {
			h.disconnect(cl)
		}
		return packets.ErrRejectPacket
	}
	p := h.refused.append(h.ctx, value)
	h.acks.push(cl, cost, p.Ready, h.keepRefused(cl, pk, reason, value, p))
	return packets.ErrRejectPacket
}

// keepRefusedNow counts a refused message that no client waits an answer for (a will) and,
// for a permanent reason, keeps it in the refused log before returning.
func (h *IngestHook) keepRefusedNow(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) {
	h.refusals.Add(reason, cl.ID, pk.TopicName, err)
	if h.refused == nil || !reason.Permanent() {
		return
	}
	value := refusedEntry(h.clock.Now(), cl.ID, string(cl.Properties.Username), pk.TopicName, pk.FixedHeader.Qos, pk.Payload, reason, err)
	res, werr := h.refused.append(h.ctx, value).Wait()
	h.refused.settle(h.ctx, len(value), res, werr)
}

// refuseForGuard is refusePublish for the guard hook, which runs before the ingest hook.
func (h *IngestHook) refuseForGuard(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) error {
	return h.refusePublish(cl, pk, reason, err, false)
}

// keepRefused is the answer to a refused message whose append to the refused log was
// queued: once it is done, the acknowledgement. A message the log could not take (store
// full or failing) is acknowledged all the same: resending it cannot make it acceptable,
// and it was counted and logged.
func (h *IngestHook) keepRefused(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, value []byte, p *buffer.Pending) func() {
	return func() {
		res, err := p.Wait()
		h.refused.settle(h.ctx, len(value), res, err)
		ackRefused(cl, pk, reason)
	}
}

// answer runs fn after cl's earlier answers (at once when inOrder).
func (h *IngestHook) answer(cl *mqtt.Client, inOrder bool, fn func()) {
	if inOrder {
		fn()
		return
	}
	h.acks.then(cl, fn)
}

// ackRefused acknowledges a permanently refused publish: with its reason code for MQTT 5,
// plainly for 3.1.1.
func ackRefused(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason) {
	switch {
	case pk.FixedHeader.Qos == 0:
	case cl.Properties.ProtocolVersion == 5:
		writeRefusal(cl, pk, reason)
	default:
		typ := byte(packets.Puback)
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec // the client's PUBREL then gets mochi's PUBCOMP
		}
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: pk.PacketID})
	}
}

func writeRefusal(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason) {
	typ := byte(packets.Puback)
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	_ = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID,
		ReasonCode:  reason.Code(),
		Properties:  packets.Properties{ReasonString: string(reason)},
	})
}

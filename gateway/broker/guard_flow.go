// The guard's flow control: the per-client packet rate, the QoS messages queued to
// subscribers, and the packet size MQTT 5 clients are told.

package broker

import (
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OnPacketRead meters every packet a client initiates. A client over its rate is paced: its
// read goroutine (this call) waits for the token, so its socket is read no faster than
// max_rate_per_client and TCP pushes back on it (SPEC §2: slowed down, not refused); no
// other client waits. A client that stays over its rate without a pause for flood_after is
// disconnected as a flood.
func (g *guard) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Subscribe, packets.Unsubscribe, packets.Pingreq, packets.Auth:
	default:
		return pk, nil // acknowledgements of what the broker sent
	}
	s := g.session(cl)
	if s == nil {
		return pk, nil // the CONNECT itself, or a client being torn down
	}
	wait, flood := s.meter.pace(pk.FixedHeader.Type == packets.Publish, g.clock.Now(), g.cfg.FloodAfter.D())
	if flood {
		g.refusals.Add(ReasonFlood, cl.ID, "", fmt.Errorf("over max_rate_per_client (%g/s) without a pause for flood_after (%v): disconnected", g.cfg.MaxRatePerClient, g.cfg.FloodAfter))
		if cl.Properties.ProtocolVersion == 5 {
			_ = g.srv.DisconnectClient(cl, packets.ErrMessageRateTooHigh)
		} else {
			cl.Stop(packets.ErrMessageRateTooHigh) // 3.1.1 has no server DISCONNECT
		}
		// mochi v2.7.9 ignores any other error from OnPacketRead and would process the packet.
		return pk, packets.ErrRejectPacket
	}
	if wait > 0 {
		var closed <-chan struct{} // nil (never) without a socket of ours
		if lc := baseConn(cl.Net.Conn); lc != nil {
			closed = lc.done()
		}
		select {
		case <-g.clock.After(wait):
		case <-closed: // disconnected or shutting down: mochi drops the packet
			return pk, packets.ErrRejectPacket
		}
	}
	if pk.FixedHeader.Type == packets.Publish && pk.TopicName != "" && !mqtt.IsValidFilter(pk.TopicName, true) {
		// mochi would drop it before any hook, without an answer (and a QoS 1/2 one would
		// stay in the client's in-flight window for good): $SYS/... is the broker's, and a
		// topic name holds no wildcard. An error here would close the connection, so the
		// topic is swapped for one mochi lets through to OnPublish, which refuses it.
		s.invalidTopic = pk.TopicName
		pk.TopicName = invalidTopicStandIn
	}
	return pk, nil
}

// OnQosPublish counts a QoS 1/2 message sent or queued to a subscriber.
func (g *guard) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish {
		return // inline clients queue nothing; PUBREC/PUBCOMP are inbound QoS 2 state
	}
	g.queues.add(cl.ID, pk.PacketID, queueCost(pk))
}

// OnQosComplete forgets a message its subscriber acknowledged.
func (g *guard) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish || cl.IsTakenOver() {
		return // a taken-over connection's messages go on in its successor
	}
	g.queues.done(cl.ID, pk.PacketID)
}

// OnQosDropped forgets a message mochi gave up on (expired, or its clean session ended).
func (g *guard) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || cl.IsTakenOver() {
		return
	}
	g.queues.done(cl.ID, pk.PacketID)
}

// OnPacketEncode tells MQTT 5 clients the largest packet the broker accepts (mochi v2.7.9
// does not put it in the CONNACK), so that a compliant client refuses to send a larger
// one rather than being disconnected for it.
func (g *guard) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == 0 {
		pk.Properties.MaximumPacketSize = uint32(g.cfg.MaxPacketBytes)
	}
	return pk
}

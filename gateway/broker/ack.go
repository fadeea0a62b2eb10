package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/ingest"
)

// refusePublish counts and logs a refused PUBLISH and answers it as SPEC §2 says: an MQTT 5
// client gets a PUBACK (QoS 1) or PUBREC (QoS 2) carrying the reason code, a 3.1.1 client
// gets no acknowledgement. It returns the error that makes mochi neither acknowledge nor
// deliver the message. The ack is written here rather than by returning a packets.Code,
// because mochi v2.7.9 answers a refused QoS 2 publish with a PUBACK and logs every coded
// refusal at error level with its payload.
//
// The coded ack is written after the answers to the client's earlier publishes (acker).
func refusePublish(r *Refusals, a *acker, cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) error {
	r.Add(reason, cl.ID, pk.TopicName, err)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 && !cl.Net.Inline {
		a.then(cl, func() { writeRefusal(cl, pk, reason) })
	}
	return packets.ErrRejectPacket
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

package soak

import (
	"encoding/binary"
	"net"
	"sync"
)

// MQTT control packet types (the fixed header's high nibble).
const (
	pktConnack = 2
	pktPublish = 3
	pktPuback  = 4
)

// frame is one MQTT control packet: its type, flags and body (after the remaining length).
type frame struct {
	typ, flags byte
	body       []byte
}

// frameReader cuts a byte stream into MQTT control packets.
type frameReader struct{ buf []byte }

// feed appends p and calls fn with every complete packet; fn must copy what it keeps.
func (r *frameReader) feed(p []byte, fn func(frame)) {
	r.buf = append(r.buf, p...)
	for len(r.buf) >= 2 {
		n, used, ok := varint(r.buf[1:])
		if !ok {
			return // the remaining length is not all here yet
		}
		total := 1 + used + n
		if len(r.buf) < total {
			return
		}
		fn(frame{typ: r.buf[0] >> 4, flags: r.buf[0] & 0x0f, body: r.buf[1+used : total]})
		r.buf = r.buf[total:]
	}
	if len(r.buf) == 0 {
		r.buf = nil // let the old array go
	}
}

// varint decodes an MQTT variable byte integer: the value and the bytes it took.
func varint(b []byte) (n, used int, ok bool) {
	mult := 1
	for i := 0; i < 4 && i < len(b); i++ {
		n += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return n, i + 1, true
		}
		mult *= 128
	}
	return 0, 0, false
}

// publishOf parses a PUBLISH body: topic, packet id (0 for QoS 0), QoS and payload.
func publishOf(f frame, v5 bool) (topic string, pid uint16, qos byte, payload []byte, ok bool) {
	b := f.body
	if len(b) < 2 {
		return
	}
	tl := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+tl {
		return
	}
	topic, b = string(b[2:2+tl]), b[2+tl:]
	qos = (f.flags >> 1) & 3
	if qos > 0 {
		if len(b) < 2 {
			return
		}
		pid, b = binary.BigEndian.Uint16(b), b[2:]
	}
	if v5 {
		n, used, vok := varint(b)
		if !vok || len(b) < used+n {
			return
		}
		b = b[used+n:]
	}
	return topic, pid, qos, b, true
}

// pubackOf parses a PUBACK body: packet id and reason code (0 when absent, as in 3.1.1).
func pubackOf(f frame) (pid uint16, reason byte, ok bool) {
	if len(f.body) < 2 {
		return 0, 0, false
	}
	pid = binary.BigEndian.Uint16(f.body)
	if len(f.body) > 2 {
		reason = f.body[2]
	}
	return pid, reason, true
}

// wireEvents hears what a sniffed connection carried.
type wireEvents interface {
	// sent: a PUBLISH left the client (a resend too, with the same packet id and payload).
	sent(pid uint16, qos byte, topic string, payload []byte)
	// acked: a PUBACK came back for pid, with its reason code (≥ 0x80: a refusal).
	acked(pid uint16, reason byte)
	// connack: the broker answered the CONNECT.
	connack(sessionPresent bool, code byte)
}

// sniffConn is a client's connection that reports, from the bytes themselves, every
// PUBLISH the client sent and every PUBACK and CONNACK it received: the truth about what
// was acknowledged, whatever the client library believes after a reconnect.
type sniffConn struct {
	net.Conn
	v5 bool
	ev wireEvents

	wmu sync.Mutex // serialises writes and guards out: a client may write from several goroutines
	out frameReader
	in  frameReader // read goroutine only
}

func (c *sniffConn) Write(p []byte) (int, error) {
	// The packets are noted before they leave: the answer can be read before Write returns.
	// The lock keeps the parser seeing the bytes in the order they go out.
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out.feed(p, func(f frame) {
		if f.typ == pktPublish {
			if tp, pid, qos, pl, ok := publishOf(f, c.v5); ok {
				c.ev.sent(pid, qos, tp, pl)
			}
		}
	})
	return c.Conn.Write(p)
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.feed(p[:n], func(f frame) {
		switch f.typ {
		case pktPuback:
			if pid, reason, ok := pubackOf(f); ok {
				c.ev.acked(pid, reason)
			}
		case pktConnack:
			if len(f.body) >= 2 {
				c.ev.connack(f.body[0]&1 == 1, f.body[1])
			}
		}
	})
	return n, err
}

package soak

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// Raw MQTT 3.1.1, for the attackers: clients that do what no library lets a client do
// (drop the connection under a will, never upgrade a WebSocket) and whose every answer
// the soak reads itself.

// login3 is an MQTT 3.1.1 CONNECT (keepalive 60 s).
type login3 struct {
	id, user, pass string
	persistent     bool // clean session off
	willTopic      string
	willPayload    string
	willRetain     bool
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// packet3 prefixes body with a fixed header: first byte h and the remaining length.
func packet3(h byte, body []byte) []byte {
	out := []byte{h}
	n := len(body)
	for {
		d := byte(n % 128)
		if n /= 128; n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func (l login3) packet() []byte {
	var flags byte
	if !l.persistent {
		flags |= 0x02
	}
	if l.willTopic != "" {
		flags |= 0x04 | 1<<3 // will at QoS 1
		if l.willRetain {
			flags |= 0x20
		}
	}
	if l.user != "" {
		flags |= 0x80 | 0x40
	}
	body := append(appendString(nil, "MQTT"), 4, flags, 0, 60)
	body = appendString(body, l.id)
	if l.willTopic != "" {
		body = appendString(body, l.willTopic)
		body = appendString(body, l.willPayload)
	}
	if l.user != "" {
		body = appendString(body, l.user)
		body = appendString(body, l.pass)
	}
	return packet3(0x10, body)
}

// publish3 is a QoS 1 PUBLISH.
func publish3(topic string, pid uint16, payload string) []byte {
	body := binary.BigEndian.AppendUint16(appendString(nil, topic), pid)
	return packet3(0x32, append(body, payload...))
}

// subscribe3 is a SUBSCRIBE to one filter at QoS 1.
func subscribe3(pid uint16, filter string) []byte {
	body := appendString(binary.BigEndian.AppendUint16(nil, pid), filter)
	return packet3(0x82, append(body, 1))
}

// Codes login returns when no CONNACK came: noConnack, the connection was refused, closed
// at accept (max_connect_rate_per_ip) or the daemon is down; noAnswer, the daemon took the
// CONNECT but did not answer within 15 s (it may have accepted it).
const (
	noConnack = 0xff
	noAnswer  = 0xfe
)

// mqttConn is a raw MQTT connection.
type mqttConn struct {
	net.Conn
	r *bufio.Reader
}

// login connects to addr from src and sends l. It returns the connection when the CONNACK
// accepted it, and the CONNACK's return code (noConnack: none came).
func login(addr string, src net.IP, l login3) (*mqttConn, byte) {
	dl := net.Dialer{Timeout: 5 * time.Second}
	if src != nil {
		dl.LocalAddr = &net.TCPAddr{IP: src}
	}
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		return nil, noConnack
	}
	mc := &mqttConn{Conn: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(l.packet()); err != nil {
		c.Close()
		return nil, noConnack
	}
	typ, body, err := mc.read()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.Close()
		return nil, noAnswer
	}
	if err != nil || typ != pktConnack || len(body) < 2 {
		c.Close()
		return nil, noConnack
	}
	if body[1] != 0 {
		c.Close()
		return nil, body[1]
	}
	_ = c.SetDeadline(time.Time{})
	return mc, 0
}

// read reads one packet: its type and body.
func (c *mqttConn) read() (byte, []byte, error) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if mult *= 128; i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(c.r, body)
	return h >> 4, body, err
}

// await reads packets until one of type typ with packet id pid (the first two bytes of its
// body) or the deadline.
func (c *mqttConn) await(typ byte, pid uint16, within time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(within))
	defer c.SetReadDeadline(time.Time{})
	for {
		t, body, err := c.read()
		if err != nil {
			return err
		}
		if t == typ && len(body) >= 2 && binary.BigEndian.Uint16(body) == pid {
			return nil
		}
	}
}

// wsLogin logs in anonymously with client id id over the WebSocket listener at addr
// (MQTT in binary messages, subprotocol "mqtt") and disconnects. It returns the CONNACK's
// return code, or an error when none came.
func wsLogin(addr, id string) (byte, error) {
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if err != nil {
		return 0, err
	}
	defer ws.Close()
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.BinaryMessage, login3{id: id}.packet()); err != nil {
		return 0, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		return 0, err
	}
	if len(msg) < 4 || msg[0] != pktConnack<<4 {
		return 0, errors.New("not a CONNACK")
	}
	if msg[3] == 0 {
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte{0xe0, 0}) // DISCONNECT
	}
	return msg[3], nil
}

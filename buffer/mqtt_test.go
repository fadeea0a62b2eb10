package buffer_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient speaks MQTT packet by packet, so a test can do what paho hides: send a DUP
// resend with the packet id of a message whose PUBACK it chose to ignore, or watch for a
// PUBACK that must not come.
type rawClient struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

func dialMQTT(t *testing.T, addr, clientID string, version byte) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	t.Cleanup(func() { conn.Close() })
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: true, Keepalive: 30,
		},
	}
	c.send(&pk, (*packets.Packet).ConnectEncode)
	typ, body := c.read(5 * time.Second)
	if typ != packets.Connack {
		t.Fatalf("connect %s: got packet type %d", clientID, typ)
	}
	if len(body) < 2 || body[1] != 0 {
		t.Fatalf("connect %s refused: % x", clientID, body)
	}
	return c
}

func (c *rawClient) send(pk *packets.Packet, enc func(*packets.Packet, *bytes.Buffer) error) {
	c.t.Helper()
	var b bytes.Buffer
	if err := enc(pk, &b); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b.Bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// publish sends a QoS 1 PUBLISH.
func (c *rawClient) publish(pid uint16, dup bool, topic, payload string) {
	c.t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: dup},
		ProtocolVersion: c.version,
		TopicName:       topic,
		PacketID:        pid,
		Payload:         []byte(payload),
	}
	c.send(&pk, (*packets.Packet).PublishEncode)
}

// read returns the next packet's type and body; type 0 when the connection closed or
// nothing came within timeout.
func (c *rawClient) read(timeout time.Duration) (byte, []byte) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	hb, err := c.r.ReadByte()
	if err != nil {
		return 0, nil
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return 0, nil
	}
	body := make([]byte, n)
	for got := 0; got < n; {
		k, err := c.r.Read(body[got:])
		if err != nil {
			return 0, nil
		}
		got += k
	}
	return hb >> 4, body
}

// puback waits for the PUBACK of pid and returns its reason code (0 for MQTT 3.1.1);
// ok is false when the connection closed or no PUBACK came.
func (c *rawClient) puback(pid uint16, timeout time.Duration) (code byte, ok bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		typ, body := c.read(time.Until(deadline))
		switch {
		case typ == 0:
			return 0, false
		case typ != packets.Puback || len(body) < 2:
			continue
		case uint16(body[0])<<8|uint16(body[1]) != pid:
			continue
		case len(body) >= 3:
			return body[2], true
		default:
			return 0, true
		}
	}
	return 0, false
}

func (c *rawClient) String() string { return fmt.Sprintf("mqtt v%d client", c.version) }

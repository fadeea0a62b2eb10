package broker

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Raw MQTT 3.1.1 packets, for clients that misbehave in ways no library allows.

func appendLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// connectPacket is a 3.1.1 CONNECT with a clean session and keepalive 60 s.
func connectPacket(clientID, user, pass string) []byte {
	var body []byte
	body = appendString(body, "MQTT")
	flags := byte(0x02)
	if user != "" {
		flags |= 0x80 | 0x40
	}
	body = append(body, 4, flags, 0, 60)
	body = appendString(body, clientID)
	if user != "" {
		body = appendString(body, user)
		body = appendString(body, pass)
	}
	return append(appendLength([]byte{0x10}, len(body)), body...)
}

// publishPacket is a 3.1.1 QoS 0 PUBLISH.
func publishPacket(topic string, payload []byte) []byte {
	body := appendString(nil, topic)
	body = append(body, payload...)
	return append(appendLength([]byte{0x30}, len(body)), body...)
}

// hugeConnect is the fixed header of a CONNECT claiming the largest remaining length MQTT
// can encode (268,435,455 bytes, 256 MiB - 1), followed by a few bytes of body.
var hugeConnect = []byte{0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04, 'M', 'Q', 'T', 'T'}

// rawLogin connects a raw 3.1.1 client and reads its CONNACK; it returns the return code.
func rawLogin(t *testing.T, c net.Conn, clientID, user, pass string) byte {
	t.Helper()
	if _, err := c.Write(connectPacket(clientID, user, pass)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if ack[0] != 0x20 {
		t.Fatalf("CONNACK expected, got % x", ack)
	}
	return ack[3]
}

// closedWithin reports whether the peer closes c within d (anything it sends is skipped).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

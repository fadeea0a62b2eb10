package broker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

// Issue 16, item 3: a resend of a reading the gateway stamps on arrival (a bare number, JSON
// without ts, an unrouted message) gets the ids stored the first time, with or without the
// DUP flag, in a persistent session; a device on clean sessions that sends the same number
// with the same packet id has each one stored.

// sessionOpts is how a raw client connects: its protocol version, clean session / clean start,
// and (MQTT 5) session expiry.
type sessionOpts struct {
	version byte
	clean   bool
	expiry  uint32
}

func (s sessionOpts) String() string {
	return fmt.Sprintf("v%d clean=%v expiry=%d", s.version, s.clean, s.expiry)
}

type rawMQTT struct {
	conn net.Conn
	r    *bufio.Reader
	v    byte
}

// dialSession logs in as test user dev-1 with client id "dev-1" over TCP.
func (e *env) dialSession(t *testing.T, s sessionOpts) *rawMQTT {
	t.Helper()
	conn, err := e.dial(t, "tcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := appendString(nil, "MQTT")
	flags := byte(0x80 | 0x40)
	if s.clean {
		flags |= 0x02
	}
	body = append(body, s.version, flags, 0, 60)
	if s.version == 5 {
		if s.expiry > 0 {
			body = append(body, 5, 0x11)
			body = binary.BigEndian.AppendUint32(body, s.expiry)
		} else {
			body = append(body, 0)
		}
	}
	body = appendString(body, "dev-1")
	body = appendString(body, "dev-1")
	body = appendString(body, password("dev-1"))
	c := &rawMQTT{conn: conn, r: bufio.NewReader(conn), v: s.version}
	c.write(t, append(appendLength([]byte{0x10}, len(body)), body...))
	typ, ack := c.read(t)
	if typ != 2 || len(ack) < 2 || ack[1] != 0 {
		t.Fatalf("%v: CONNACK %d % x", s, typ, ack)
	}
	return c
}

func (c *rawMQTT) write(t *testing.T, b []byte) {
	t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (c *rawMQTT) read(t *testing.T) (byte, []byte) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := readPacket(c.r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, body
}

// publish sends a QoS 1 PUBLISH and waits for its PUBACK.
func (c *rawMQTT) publish(t *testing.T, pid uint16, dup bool, topic, payload string) {
	t.Helper()
	body := appendString(nil, topic)
	body = binary.BigEndian.AppendUint16(body, pid)
	if c.v == 5 {
		body = append(body, 0)
	}
	body = append(body, payload...)
	h := byte(0x32)
	if dup {
		h |= 0x08
	}
	c.write(t, append(appendLength([]byte{h}, len(body)), body...))
	typ, ack := c.read(t)
	if typ != 4 || binary.BigEndian.Uint16(ack) != pid || len(ack) > 2 && ack[2] != 0 {
		t.Fatalf("PUBACK for %d expected, got type %d % x", pid, typ, ack)
	}
}

// readings lists the raw log as "series=value" or "topic:payload" for raw records, and
// the number of distinct ids.
func (e *env) readings(t *testing.T) ([]string, int) {
	t.Helper()
	ids := map[string]bool{}
	var out []string
	for _, r := range e.records(t) {
		ids[r.ID] = true
		if r.Raw {
			out = append(out, r.Topic+":"+string(r.Payload))
		} else {
			out = append(out, fmt.Sprintf("%s=%g", r.Series, r.Value))
		}
	}
	sort.Strings(out)
	return out, len(ids)
}

func TestResendOfAStampedReadingStoredOnce(t *testing.T) {
	for _, s := range []sessionOpts{{version: 4}, {version: 5, expiry: 3600}, {version: 5, clean: true, expiry: 3600}} {
		t.Run(s.String(), func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
			e := newEnvClock(t, clk, nil)
			c := e.dialSession(t, s)
			c.publish(t, 7, false, "devices/dev-1/temperature", "21.5")       // a bare number
			c.publish(t, 8, false, "devices/dev-1/humidity", `{"value": 40}`) // JSON without ts
			c.publish(t, 9, false, "devices/dev-1/x/y", "opaque")             // unrouted: raw
			c.publish(t, 10, false, "devices/dev-1/temperature", "22")        // acknowledged, then reused
			clk.Advance(10 * time.Millisecond)
			c.publish(t, 10, false, "devices/dev-1/temperature", "22") // ... for the same payload
			c.conn.Close()                                             // the PUBACKs are "lost"
			clk.Advance(5 * time.Second)
			// The client resends what it had unacknowledged, without DUP (as MQTT.js does),
			// on a connection that resumes the session.
			s.clean = false
			c = e.dialSession(t, s)
			c.publish(t, 7, false, "devices/dev-1/temperature", "21.5")
			c.publish(t, 8, false, "devices/dev-1/humidity", `{"value": 40}`)
			c.publish(t, 9, true, "devices/dev-1/x/y", "opaque")
			c.publish(t, 10, false, "devices/dev-1/temperature", "22")
			// A new reading with a packet id whose PUBACK arrived: a new payload.
			c.publish(t, 7, false, "devices/dev-1/temperature", "21.6")
			got, ids := e.readings(t)
			want := []string{"dev-1/humidity=40", "dev-1/temperature=21.5", "dev-1/temperature=21.6", "dev-1/temperature=22", "dev-1/temperature=22", "devices/dev-1/x/y:opaque"}
			if fmt.Sprint(got) != fmt.Sprint(want) || ids != len(want) {
				t.Fatalf("raw log %q with %d ids; want %q, each once", got, ids, want)
			}
			if n := e.store.Stats().Resends.Load(); n != 4 {
				t.Fatalf("%d resends recognised, want 4", n)
			}
			if n := e.hook.Stats().Raw.Load(); n != 2 { // sent and resent, counted once each
				t.Fatalf("%d raw messages counted, want 2: a resend is staged again, and counted once", n)
			}
		})
	}
}

// Readings that carry their own time get the same ids when resent, so the id dedup needs
// no record of their arrival: none is kept (it would take room from the stamped readings'
// records, and cost a key written with every publish), and the resend is stored once.
func TestReadingsWithTheirOwnTimeLeaveNoRecord(t *testing.T) {
	for _, s := range []sessionOpts{{version: 4}, {version: 5, expiry: 3600}} {
		t.Run(s.String(), func(t *testing.T) {
			e := newEnvClock(t, clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)), nil)
			c := e.dialSession(t, s)
			c.publish(t, 7, false, "devices/dev-1/temperature", `{"value": 21.5, "ts": "2026-11-26T11:59:00Z"}`)
			c.publish(t, 8, false, "devices/dev-1/humidity", `{"value": 40, "ts": 1795694340000}`)
			c.conn.Close() // the PUBACKs are "lost"
			c = e.dialSession(t, s)
			c.publish(t, 7, false, "devices/dev-1/temperature", `{"value": 21.5, "ts": "2026-11-26T11:59:00Z"}`)
			c.publish(t, 8, true, "devices/dev-1/humidity", `{"value": 40, "ts": 1795694340000}`)
			if got, ids := e.readings(t); fmt.Sprint(got) != "[dev-1/humidity=40 dev-1/temperature=21.5]" || ids != 2 {
				t.Fatalf("raw log %q with %d ids; want each reading once", got, ids)
			}
			if n := e.store.Arrivals(); n != 0 {
				t.Fatalf("%d records of arrivals kept for readings with their own time, want 0", n)
			}
			// A stamped reading of the same client is recorded.
			c.publish(t, 9, false, "devices/dev-1/temperature", "21.7")
			if n := e.store.Arrivals(); n != 1 {
				t.Fatalf("%d records of arrivals after a stamped reading, want 1", n)
			}
		})
	}
}

// A device on clean sessions (a battery device connecting for each reading) whose reading
// and packet id repeat has each reading stored: a clean session cannot be resumed, so
// nothing is resent across it, and it discards what an earlier persistent session of the
// client recorded.
func TestCleanSessionRepeatsStoredEachTime(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
			e := newEnvClock(t, clk, nil)
			persistent := sessionOpts{version: v, expiry: 3600}
			c := e.dialSession(t, persistent)
			c.publish(t, 1, false, "devices/dev-1/temperature", "21.5")
			c.conn.Close()
			for range 3 {
				clk.Advance(5 * time.Minute)
				c = e.dialSession(t, sessionOpts{version: v, clean: true})
				c.publish(t, 1, false, "devices/dev-1/temperature", "21.5")
				c.conn.Close()
			}
			// Persistent again: the session it resumes began clean, after the first reading.
			clk.Advance(5 * time.Minute)
			c = e.dialSession(t, persistent)
			c.publish(t, 1, false, "devices/dev-1/temperature", "21.5")
			if got, ids := e.readings(t); len(got) != 5 || ids != 5 {
				t.Fatalf("raw log %q with %d ids; want 5 readings", got, ids)
			}
		})
	}
}

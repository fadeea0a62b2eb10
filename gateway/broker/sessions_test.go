package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
)

// persistentLogin connects a raw 3.1.1 client with clean:false and subscribes it to filter
// at QoS 1; it returns the session-present flag of the CONNACK.
func persistentLogin(t testing.TB, addr, clientID, filter string) (net.Conn, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0xc0, 0, 60) // user, password, clean:false
	body = appendString(body, clientID)
	body = appendString(body, "reader")
	body = appendString(body, password("reader"))
	if _, err := c.Write(append(appendLength([]byte{0x10}, len(body)), body...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("%s: CONNACK % x %v", clientID, ack, err)
	}
	if filter != "" {
		sub := binary.BigEndian.AppendUint16(nil, 1)
		sub = appendString(sub, filter)
		sub = append(sub, 1)
		c.Write(append(appendLength([]byte{0x82}, len(sub)), sub...))
		var suback [5]byte
		if _, err := io.ReadFull(c, suback[:]); err != nil || suback[0] != 0x90 || suback[4] != 1 {
			t.Fatalf("%s: SUBACK % x %v", clientID, suback, err)
		}
	}
	c.SetReadDeadline(time.Time{})
	return c, ack[2]&1 == 1
}

// TestSessionsRestored: what the broker stores of persistent sessions and gives back after
// a restart (in process; TestDurableSessionsSurviveRestart in cmd/edgegate restarts the
// daemon itself): sessions, their subscriptions and queued messages are restored; a clean
// session and an ended one leave nothing behind; acknowledged messages are forgotten.
func TestSessionsRestored(t *testing.T) {
	e := newEnv(t, nil)
	c, present := persistentLogin(t, e.addr["tcp"], "keep", "devices/dev-1/#")
	if present {
		t.Fatal("a new session was present")
	}
	c.Close()
	clean := e.user(t, "reader", "clean") // a clean MQTT 5 session: not stored
	clean.subscribe(t, "devices/#")
	pub := e.user(t, "dev-1", "pub")
	for i := 0; i < 3; i++ {
		if code, _ := pub.publish(t, "devices/dev-1/t", 1, strconv.Itoa(i)); code != 0 {
			t.Fatalf("publish %d: %#x", i, code)
		}
	}
	st := e.b.Sessions()
	testutil.Eventually(t, 10*time.Second, "the queued messages stored", func() bool {
		return st.Messages.Load() == 3 && st.Pending.Load() == 0
	})
	if st.Sessions.Load() != 1 {
		t.Errorf("%d sessions stored, want 1 (clean ones are not)", st.Sessions.Load())
	}

	e.restart(t)
	st = e.b.Sessions()
	if st.Restored.Load() != 1 || st.Sessions.Load() != 1 || st.Messages.Load() != 3 {
		t.Fatalf("restored %d sessions, %d of them, %d messages", st.Restored.Load(), st.Sessions.Load(), st.Messages.Load())
	}
	c, present = persistentLogin(t, e.addr["tcp"], "keep", "")
	if !present {
		t.Error("session not present after the restart")
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// mochi resends a session's messages sorted by their creation second only: the order
	// within one second is not kept.
	var got []string
	for i := 0; i < 3; i++ {
		typ, body, err := readPacket(r)
		if err != nil || typ != 3 {
			t.Fatalf("queued message %d: type %d body %q %v", i, typ, body, err)
		}
		n := 2 + binary.BigEndian.Uint16(body)
		got = append(got, string(body[n+2:]))
		c.Write([]byte{0x40, 2, body[n], body[n+1]}) // PUBACK
	}
	slices.Sort(got)
	if strings.Join(got, ",") != "0,1,2" {
		t.Errorf("queued messages after the restart: %v, want 0, 1 and 2", got)
	}
	testutil.Eventually(t, 10*time.Second, "acknowledged messages forgotten", func() bool {
		return st.Messages.Load() == 0 && st.Pending.Load() == 0
	})
	c.Close()

	// The same client id with a clean session: the stored one goes.
	c2, present := persistentLoginClean(t, e.addr["tcp"], "keep")
	if present {
		t.Error("clean session present")
	}
	c2.Close()
	testutil.Eventually(t, 10*time.Second, "the session forgotten", func() bool {
		return st.Sessions.Load() == 0 && st.Pending.Load() == 0
	})
	n := 0
	if err := e.store.ScanState(sessionPrefix, func(string, []byte) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("%d session keys left in the store (%v)", n, err)
	}
}

func persistentLoginClean(t testing.TB, addr, clientID string) (net.Conn, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(connectPacket(clientID, "reader", password("reader")))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[3] != 0 {
		t.Fatalf("CONNACK % x %v", ack, err)
	}
	return c, ack[2]&1 == 1
}

// TestSessionExpiredWhileDown: a session whose expiry passed while the daemon was down is
// not restored, and its keys are deleted.
func TestSessionExpiredWhileDown(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.MaxSessionExpiry = conf.Duration(time.Second) })
	c, _ := persistentLogin(t, e.addr["tcp"], "short", "devices/#")
	c.Close()
	st := e.b.Sessions()
	testutil.Eventually(t, 10*time.Second, "the disconnect stored", func() bool { return st.Pending.Load() == 0 && st.Sessions.Load() == 1 })
	e.b.Close()
	time.Sleep(2100 * time.Millisecond) // stored to the second: over 1 s for sure
	e.restart(t)
	st = e.b.Sessions()
	if st.Restored.Load() != 0 || st.Sessions.Load() != 0 {
		t.Errorf("restored %d, %d stored: an expired session came back", st.Restored.Load(), st.Sessions.Load())
	}
	testutil.Eventually(t, 10*time.Second, "its keys deleted", func() bool {
		n := 0
		_ = e.store.ScanState(sessionPrefix, func(string, []byte) error { n++; return nil })
		return n == 0
	})
}

// TestDurableSessionMemory measures what durable sessions cost: N persistent sessions
// with M queued messages each, stored, then restored by a restarted broker. The figures
// are in BENCHMARKS.md; run with
//
//	EDGEGATE_MEASURE=1 go test -run TestDurableSessionMemory -v ./gateway/broker/
func TestDurableSessionMemory(t *testing.T) {
	if os.Getenv("EDGEGATE_MEASURE") == "" {
		t.Skip("a measurement: set EDGEGATE_MEASURE=1 (see BENCHMARKS.md)")
	}
	sessions, msgs := 1000, 100
	if v, err := strconv.Atoi(os.Getenv("EDGEGATE_SESSIONS")); err == nil {
		sessions = v
	}
	if v, err := strconv.Atoi(os.Getenv("EDGEGATE_SESSION_MESSAGES")); err == nil {
		msgs = v
	}
	// The queue bounds of issue 21 (max_queued_bytes...) are the config's defaults unless
	// EDGEGATE_QUEUE_BYTES sets max_queued_bytes (0: unbounded, as before them).
	queueBytes := int64(-1)
	if v, err := strconv.ParseInt(os.Getenv("EDGEGATE_QUEUE_BYTES"), 10, 64); err == nil {
		queueBytes = v
	}
	e := newEnv(t, func(c *config.Config) {
		c.Broker.MaxClients = sessions + 100
		c.Broker.MaxConnectionsPerIP = sessions + 100
		c.Broker.MaxPendingPerIP = sessions + 100
		c.Broker.MaxInflight = msgs
		c.Broker.MaxSessions = sessions
		c.Broker.MaxSessionsPerUser = sessions
		switch {
		case queueBytes == 0:
			c.Broker.MaxQueuedBytes, c.Broker.MaxQueuedBytesPerSession = 1<<50, 1<<50
		case queueBytes > 0:
			c.Broker.MaxQueuedBytes = conf.ByteSize(queueBytes)
		}
	})
	t.Logf("max_queued_bytes %s, max_queued_bytes_per_session %s", e.cfg.MaxQueuedBytes, e.cfg.MaxQueuedBytesPerSession)
	base := memNow()
	for i := 0; i < sessions; i++ {
		c, _ := persistentLogin(t, e.addr["tcp"], fmt.Sprintf("s-%05d", i), "devices/dev-1/#")
		c.Close()
	}
	pub := e.user(t, "dev-1", "pub")
	payload := `{"value": 21.5, "unit": "Cel", "id": "%08d"}` // ~45 bytes, as a small reading
	for i := 0; i < msgs; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := pub.c.Publish(ctx, &paho.Publish{Topic: "devices/dev-1/t", QoS: 1, Payload: []byte(fmt.Sprintf(payload, i))}); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	st := e.b.Sessions()
	q := &e.b.guard.queues.stats
	testutil.Eventually(t, 10*time.Minute, "every queued message stored", func() bool {
		return st.Messages.Load() == q.Messages.Load() && st.Pending.Load() == 0
	})
	queued := st.Messages.Load()
	t.Logf("queued %d messages (cost %.1f MiB); %d not queued at a session's bound, %d at the total", queued, mib(q.Bytes.Load()), q.DroppedClient.Load(), q.DroppedTotal.Load())
	stored := memNow()
	pub.close()
	e.restart(t)
	st = e.b.Sessions()
	restored := memNow()
	if st.Restored.Load() != int64(sessions) || st.Messages.Load() != queued {
		t.Fatalf("restored %d sessions, %d messages; want %d, %d", st.Restored.Load(), st.Messages.Load(), sessions, queued)
	}
	var keyBytes int64
	_ = e.store.ScanState(sessionPrefix, func(k string, v []byte) error { keyBytes += int64(len(k) + len(v)); return nil })
	t.Logf("%d persistent sessions × %d QoS 1 messages published (%d bytes of payload each; %d queued):", sessions, msgs, len(fmt.Sprintf(payload, 0)), queued)
	t.Logf("  Go heap in use: %.1f MiB before, %.1f MiB with them queued, %.1f MiB after a restart restored them",
		mib(base.heap), mib(stored.heap), mib(restored.heap))
	t.Logf("  RSS: %.1f MiB before, %.1f MiB queued, %.1f MiB restored", mib(base.rss), mib(stored.rss), mib(restored.rss))
	t.Logf("  per queued message: %.0f bytes of heap queued, %.0f restored; %.0f bytes of keys and values in the store",
		float64(stored.heap-base.heap)/float64(queued), float64(restored.heap-base.heap)/float64(queued), float64(keyBytes)/float64(queued))
}

type memFig struct{ heap, rss int64 }

func memNow() memFig {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := testutil.ProcField(os.Getpid(), "status", "VmRSS")
	return memFig{heap: int64(ms.HeapInuse), rss: rss * 1024}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// TestSessionTakeoverKeepsStoredMessages: when a persistent session is taken over by a new
// connection of its client (session present), the messages the old connection had in
// flight go on in the new one: they stay in the store, and a restart restores them.
func TestSessionTakeoverKeepsStoredMessages(t *testing.T) {
	e := newEnv(t, nil)
	c, _ := persistentLogin(t, e.addr["tcp"], "tk", "devices/#")
	c.Close()
	pub := e.user(t, "dev-1", "pub")
	for i := 0; i < 3; i++ {
		if code, _ := pub.publish(t, "devices/dev-1/t", 1, strconv.Itoa(i)); code != 0 {
			t.Fatalf("publish: %#x", code)
		}
	}
	st := e.b.Sessions()
	testutil.Eventually(t, 10*time.Second, "queued", func() bool { return st.Messages.Load() == 3 && st.Pending.Load() == 0 })
	first, _ := persistentLogin(t, e.addr["tcp"], "tk", "") // gets them, acknowledges none
	defer first.Close()
	second, present := persistentLogin(t, e.addr["tcp"], "tk", "") // takes the session over
	defer second.Close()
	if !present {
		t.Fatal("session not present at the takeover")
	}
	testutil.Eventually(t, 10*time.Second, "writes applied", func() bool { return st.Pending.Load() == 0 })
	if n := st.Messages.Load(); n != 3 {
		t.Errorf("%d messages stored after the takeover, want the 3 in flight", n)
	}
	if n := e.b.guard.queues.stats.Messages.Load(); n != 3 {
		t.Errorf("%d messages counted against the queue bounds after the takeover, want 3", n)
	}
	second.Close()
	first.Close()
	pub.close()
	e.restart(t)
	if n := e.b.Sessions().Messages.Load(); n != 3 {
		t.Errorf("%d messages restored after a restart, want 3", n)
	}
	if n := e.b.guard.queues.stats.Messages.Load(); n != 3 {
		t.Errorf("%d restored messages counted against the queue bounds, want 3", n)
	}
}

package broker

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestPublishReasonCodes checks with an MQTT 5 client the reason code of each refusal in its
// PUBACK (QoS 1) or PUBREC (QoS 2), that the connection stays up, that refusals are
// counted by reason and that nothing refused reaches the store.
func TestPublishReasonCodes(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.MaxTopicBytes = 40
		c.Broker.MaxTopicLevels = 4
		c.Broker.MaxRetainedMessages = 2
	})
	c := e.user(t, "dev-1", "rc")
	send := func(topic string, qos byte, retain bool, payload string) func() byte {
		return func() byte {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
			if r == nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
			return r.ReasonCode
		}
	}
	cases := []struct {
		name   string
		send   func() byte
		code   byte
		reason ingest.Reason
		stored bool
	}{
		{"accepted", send("devices/dev-1/t", 1, false, `{"value": 1}`), 0x00, "", true},
		{"accepted QoS 2", send("devices/dev-1/t", 2, false, `{"value": 2}`), 0x00, "", true},
		{"malformed", send("devices/dev-1/t", 1, false, `{"value": "x"}`), 0x99, ingest.ReasonMalformed, false},
		{"malformed QoS 2 (PUBREC)", send("devices/dev-1/t", 2, false, `not json`), 0x99, ingest.ReasonMalformed, false},
		{"not authorized", send("devices/dev-2/t", 1, false, `1`), 0x87, ingest.ReasonNotAuthorized, false},
		{"topic too long", send("devices/dev-1/"+strings.Repeat("x", 40), 1, false, `1`), 0x90, ingest.ReasonTopicInvalid, false},
		{"topic too deep", send("devices/dev-1/a/b/c", 1, false, `1`), 0x90, ingest.ReasonTopicInvalid, false},
		{"retained 1", send("devices/dev-1/r1", 1, true, `{"value": 1}`), 0x00, "", true},
		{"retained 2", send("devices/dev-1/r2", 1, true, `{"value": 2}`), 0x00, "", true},
		{"retained over the limit", send("devices/dev-1/r3", 1, true, `{"value": 3}`), 0x97, ingest.ReasonOverQuota, false},
		{"retained topic replaced", send("devices/dev-1/r1", 1, true, `{"value": 4}`), 0x00, "", true},
	}
	stored := 0
	for _, cs := range cases {
		before := e.b.Refusals().Snapshot()
		if got := cs.send(); got != cs.code {
			t.Errorf("%s: code %#x, want %#x", cs.name, got, cs.code)
		}
		after := e.b.Refusals().Snapshot()
		for r, n := range after {
			want := before[r]
			if r == cs.reason {
				want++
			}
			if n != want {
				t.Errorf("%s: %s counted %d, want %d", cs.name, r, n, want)
			}
		}
		if cs.stored {
			stored++
		}
	}
	if n := len(e.records(t)); n != stored {
		t.Errorf("store holds %d records, want %d", n, stored)
	}
	if code, _ := c.publish(t, "devices/dev-1/t", 1, `{"value": 9}`); code != 0 {
		t.Errorf("connection unusable after refusals: %#x", code)
	}
}

// TestSubscribeReasonCodes: subscription limit (0x97), grant (0x87) and topic depth (0x8F)
// reach an MQTT 5 client's SUBACK — which also checks that mochi still lets OnSubscribed
// set them.
func TestSubscribeReasonCodes(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.MaxSubscriptionsPerClient = 3
		c.Broker.MaxTopicLevels = 4
	})
	c := e.user(t, "dev-1", "sub")
	got := c.subscribe(t, "devices/dev-1/a", "devices/dev-1/b", "devices/dev-2/c", "devices/dev-1/c", "devices/dev-1/d", "devices/dev-1/a/b/c")
	if s := fmtCodes(got); s != "0x1,0x1,0x87,0x1,0x97,0x8f" {
		t.Errorf("SUBACK %s, want 0x1,0x1,0x87,0x1,0x97,0x8f", s)
	}
	if s := fmtCodes(c.subscribe(t, "devices/dev-1/a")); s != "0x1" {
		t.Errorf("re-subscribing a held filter: %s", s)
	}
	if e.b.Refusals().Count(ReasonSubscription) != 1 {
		t.Error("subscription limit not counted")
	}
}

// TestConnectionLimits: max_connections_per_ip and max_clients refuse sockets at accept
// once logged-in connections hold the slots; closing one frees its slot.
func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.MaxConnectionsPerIP = 2
		c.Broker.MaxClients = 4
	})
	addr := e.addr["tcp"]
	n := 0
	login := func(src string) net.Conn {
		c := dialFrom(t, src, addr)
		n++
		if code := rawLogin(t, c, fmt.Sprintf("lim-%d", n), "dev-1", "dev-1-pw"); code != 0 {
			t.Fatalf("login from %s: %#x", src, code)
		}
		return c
	}
	a1 := login("127.0.0.1")
	login("127.0.0.1")
	if !closedWithin(dialFrom(t, "127.0.0.1", addr), 5*time.Second) {
		t.Error("third connection from one address accepted")
	}
	login("127.0.0.2")
	login("127.0.0.3")
	if !closedWithin(dialFrom(t, "127.0.0.4", addr), 5*time.Second) {
		t.Error("fifth connection accepted with max_clients 4")
	}
	a1.Close()
	testutil.Eventually(t, 10*time.Second, "slot freed", func() bool {
		c := dialFrom(t, "127.0.0.4", addr)
		c.Write(connectPacket("after", "dev-1", "dev-1-pw"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var ack [4]byte
		_, err := io.ReadFull(c, ack[:])
		return err == nil && ack[0] == 0x20 && ack[3] == 0
	})
	if n := e.b.Refusals().Count(ReasonConnLimit); n < 2 {
		t.Errorf("connection_limit counted %d", n)
	}
}

// TestConnectTimeout: a socket that sends no CONNECT (or half of one) is closed after
// connect_timeout; a logged-in client is not, its keepalive rules from then on.
func TestConnectTimeout(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.ConnectTimeout = conf.Duration(300 * time.Millisecond) })
	idle := dialFrom(t, "127.0.0.1", e.addr["tcp"])
	half := dialFrom(t, "127.0.0.1", e.addr["tcp"])
	half.Write(connectPacket("half", "dev-1", "dev-1-pw")[:10])
	tlsIdle := dialFrom(t, "127.0.0.1", e.addr["tls"]) // no TLS handshake at all
	ws, err := e.dial(t, "ws", nil)                    // WebSocket upgraded, then silent
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, c := range []struct {
		name string
		ok   bool
	}{{"idle", closedWithin(idle, 5*time.Second)}, {"half CONNECT", closedWithin(half, 5*time.Second)},
		{"TLS", closedWithin(tlsIdle, 5*time.Second)}, {"websocket", closedWithin(ws, 5*time.Second)}} {
		if !c.ok {
			t.Errorf("%s socket not closed after connect_timeout", c.name)
		}
	}
	testutil.Eventually(t, 10*time.Second, "timeouts counted", func() bool { return e.b.Refusals().Count(ReasonConnectTimeout) == 4 })
	good := e.user(t, "dev-1", "slow")
	time.Sleep(600 * time.Millisecond)
	if code, err := good.publish(t, "devices/dev-1/t", 1, `1`); code != 0 {
		t.Errorf("logged-in client cut by the CONNECT deadline: %#x %v", code, err)
	}
}

// TestPacketTooLarge: a CONNECT claiming 256 MiB is refused after its 5-byte header, with
// no allocation; a PUBLISH over max_packet_bytes closes the connection; MQTT 5 clients
// learn the limit in the CONNACK.
func TestPacketTooLarge(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.MaxPacketBytes = 1024 })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 20; i++ {
		c := dialFrom(t, "127.0.0.1", e.addr["tcp"])
		c.Write(hugeConnect)
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("256 MiB CONNECT not refused")
		}
		c.Close()
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("20 huge CONNECTs allocated %d MiB", grew>>20)
	}
	testutil.Eventually(t, 10*time.Second, "too_large counted", func() bool { return e.b.Refusals().Count(ingest.ReasonTooLarge) == 20 })

	conn, err := e.dial(t, "tcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, code, err := connect5(t, conn, login{clientID: "big", user: "dev-1", pass: "dev-1-pw"})
	if code != 0 {
		t.Fatalf("CONNACK %#x %v", code, err)
	}
	_, _ = c.publish(t, "devices/dev-1/t", 0, strings.Repeat("x", 2048))
	select {
	case <-c.c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after an oversized PUBLISH")
	}
	testutil.Eventually(t, 10*time.Second, "too_large counted", func() bool { return e.b.Refusals().Count(ingest.ReasonTooLarge) == 21 })
}

// TestConnackMaximumPacketSize: the limit is announced to MQTT 5 clients.
func TestConnackMaximumPacketSize(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.MaxPacketBytes = 2048 })
	conn, err := e.dial(t, "tcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: "mps", Username: "dev-1", UsernameFlag: true, Password: []byte("dev-1-pw"), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(&paho.Disconnect{})
	if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != 2048 {
		t.Errorf("CONNACK properties %+v: no Maximum Packet Size 2048", ca.Properties)
	}
}

// TestCloseUnblocksPendingSockets: shutting the broker down closes sockets that never sent
// a CONNECT and returns.
func TestCloseUnblocksPendingSockets(t *testing.T) {
	e := newEnv(t, nil)
	var conns []interface{ Close() error }
	for _, ln := range []string{"tcp", "tls", "ws"} {
		c := dialFrom(t, "127.0.0.1", e.addr[ln])
		conns = append(conns, c)
	}
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { e.b.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on sockets waiting for their CONNECT")
	}
	if err := e.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

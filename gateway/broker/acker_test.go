package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/testutil"
)

// Raw MQTT 5 packets, to see the acknowledgements exactly in the order they are written.

func connect5Packet(clientID, user, pass string) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, 5, 0x02|0x80|0x40, 0, 60, 0) // clean start, user, password; no properties
	body = appendString(body, clientID)
	body = appendString(body, user)
	body = appendString(body, pass)
	return append(appendLength([]byte{0x10}, len(body)), body...)
}

func publish5Packet(topic string, id uint16, payload string) []byte {
	body := appendString(nil, topic)
	body = binary.BigEndian.AppendUint16(body, id)
	body = append(body, 0) // no properties
	body = append(body, payload...)
	return append(appendLength([]byte{0x32}, len(body)), body...) // QoS 1
}

// readPacket reads one packet: its type nibble and body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return h >> 4, body, err
}

// TestAcksInOrder: one MQTT 5 connection sends 200 QoS 1 publishes without waiting, among
// them malformed ones (refused by ingest), ones outside its grants (refused by the guard)
// and ones dropped by config. Every PUBACK comes in the order of the PUBLISHes with the
// right code, the accepted ones are stored, and they shared fsyncs (the connection had
// many appends in the store at once).
func TestAcksInOrder(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Unrouted = "drop" })
	conn, err := e.dial(t, "tcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(connect5Packet("order", "dev-1", password("dev-1"))); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := readPacket(r); err != nil || typ != 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %d body % x err %v", typ, body, err)
	}

	const n = 200
	want := make([]byte, n+1)
	stored := 0
	var burst []byte
	for id := 1; id <= n; id++ {
		topic, payload := "devices/dev-1/t", fmt.Sprintf(`{"value": %d, "id": "o-%d"}`, id, id)
		switch {
		case id%10 == 0:
			payload, want[id] = `{"value": "x"}`, 0x99 // malformed
		case id%15 == 0:
			topic, want[id] = "devices/dev-2/t", 0x87 // outside dev-1's grants
		case id%17 == 0:
			topic = "devices/dev-1/a/b" // no route: dropped by config, acknowledged
		default:
			stored++
		}
		burst = append(burst, publish5Packet(topic, uint16(id), payload)...)
	}
	syncs := e.store.Stats().Syncs.Load()
	if _, err := conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		typ, body, err := readPacket(r)
		if err != nil {
			t.Fatalf("after %d PUBACKs: %v", i-1, err)
		}
		if typ != 4 {
			t.Fatalf("packet type %d, want PUBACK", typ)
		}
		id := int(binary.BigEndian.Uint16(body))
		code := byte(0)
		if len(body) > 2 {
			code = body[2]
		}
		if id != i || code != want[i] {
			t.Fatalf("PUBACK %d: packet id %d code %#x, want id %d code %#x", i, id, code, i, want[i])
		}
	}
	if got := len(e.records(t)); got != stored {
		t.Errorf("store holds %d records, want %d", got, stored)
	}
	if d := e.store.Stats().Syncs.Load() - syncs; d >= uint64(stored) {
		t.Errorf("%d fsyncs for %d messages of one connection: its appends were not pipelined", d, stored)
	}
}

// TestDeliveredAfterStored: what a device publishes reaches local subscribers with its QoS
// and MQTT 5 properties once stored, in order; what is refused does not.
func TestDeliveredAfterStored(t *testing.T) {
	e := newEnv(t, nil)
	sub := e.user(t, "reader", "sub")
	sub.subscribe(t, "devices/#")
	pub := e.user(t, "dev-1", "pub")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		p := &paho.Publish{
			Topic: "devices/dev-1/t", QoS: 1, Payload: []byte(fmt.Sprintf(`{"value": %d}`, i)),
			Properties: &paho.PublishProperties{ContentType: "application/json", User: paho.UserProperties{{Key: "n", Value: fmt.Sprint(i)}}},
		}
		if i == 10 {
			p.Payload = []byte(`{"value": "refused"}`)
		}
		if r, err := pub.c.Publish(ctx, p); r == nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i := 0; i < 20; i++ {
		if i == 10 {
			continue
		}
		m := sub.next(t)
		if got, want := string(m.Payload), fmt.Sprintf(`{"value": %d}`, i); got != want {
			t.Fatalf("delivery %d: %s, want %s", i, got, want)
		}
		if m.QoS != 1 || m.Properties == nil || m.Properties.ContentType != "application/json" || m.Properties.User.Get("n") != fmt.Sprint(i) {
			t.Fatalf("delivery %d lost its QoS or properties: QoS %d, %+v", i, m.QoS, m.Properties)
		}
	}
	sub.none(t, 200*time.Millisecond)
	if got := len(e.records(t)); got != 19 {
		t.Errorf("store holds %d records, want 19", got)
	}
}

// TestDeliveredToEverySubscriberKind: a stored publish reaches a shared subscription and
// an inline (in-process) one (the relay skips topics without subscribers, so it must see
// every kind); a publish on a topic nobody subscribes to is still stored and acknowledged.
func TestDeliveredToEverySubscriberKind(t *testing.T) {
	e := newEnv(t, nil)
	shared := e.user(t, "reader", "shared")
	shared.subscribe(t, "$share/g/devices/dev-1/t")
	inline := make(chan string, 4)
	if err := e.b.srv.Subscribe("devices/dev-1/t", 7, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		inline <- string(pk.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	pub := e.user(t, "dev-1", "pub")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range []string{"devices/dev-1/nobody", "devices/dev-1/t"} {
		if r, err := pub.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"value": 1}`)}); r == nil || r.ReasonCode != 0 {
			t.Fatalf("publish on %s: %v %v", topic, r, err)
		}
	}
	if m := shared.next(t); m.Topic != "devices/dev-1/t" {
		t.Errorf("shared subscription got %s", m.Topic)
	}
	select {
	case p := <-inline:
		if p != `{"value": 1}` {
			t.Errorf("inline subscription got %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("the inline subscription got nothing")
	}
	shared.none(t, 100*time.Millisecond)
	if got := len(e.records(t)); got != 2 {
		t.Errorf("store holds %d records, want 2", got)
	}
}

// TestAckerBounds: a connection has at most ackDepth answers waiting; the next push waits
// for room, answers run in order, and idle returns once all ran.
func TestAckerBounds(t *testing.T) {
	a := newAcker(1<<20, 1<<20)
	cl := &mqtt.Client{}
	release := make(chan struct{})
	var ran []int
	ctx := context.Background()
	for i := 0; i < ackDepth; i++ {
		if _, err := a.reserve(ctx, cl, 10); err != nil {
			t.Fatal(err)
		}
		a.push(cl, 10, nil, func() { <-release; ran = append(ran, i) })
	}
	var pushed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.reserve(ctx, cl, 10)
		a.push(cl, 10, nil, func() { ran = append(ran, ackDepth) })
		pushed.Store(true)
	}()
	time.Sleep(50 * time.Millisecond)
	if pushed.Load() {
		t.Fatalf("push beyond ackDepth (%d) did not wait", ackDepth)
	}
	if !a.busy(cl) {
		t.Fatal("busy is false with answers waiting")
	}
	close(release)
	<-done
	a.idle(cl)
	a.wait()
	if !pushed.Load() || a.busy(cl) {
		t.Fatalf("pushed %v busy %v after idle", pushed.Load(), a.busy(cl))
	}
	if len(ran) != ackDepth+1 {
		t.Fatalf("%d answers ran, want %d", len(ran), ackDepth+1)
	}
	for i, v := range ran {
		if v != i {
			t.Fatalf("answers ran in order %v", ran)
		}
	}

	// then waits behind a waiting answer.
	release = make(chan struct{})
	first := false
	a.push(cl, 0, nil, func() { <-release; first = true })
	var after bool
	a.then(cl, func() { after = first })
	close(release)
	a.idle(cl)
	if !after {
		t.Fatal("then ran before the answer queued ahead of it")
	}
	if _, err := a.reserve(ctx, cl, 1<<20); err != nil {
		t.Fatalf("budget not given back: %v", err)
	}
	ok := false
	a.then(cl, func() { ok = true }) // nothing waiting: now
	if !ok {
		t.Fatal("then with nothing waiting did not run at once")
	}
}

// writeLog is a net.Conn that records each Write.
type writeLog struct {
	net.Conn
	writes []string
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// TestCork: a corked connection holds writes and sends them as one, in order; past
// maxHeld it writes what it holds first; uncorked it writes at once.
func TestCork(t *testing.T) {
	w := &writeLog{}
	c := &limitedConn{Conn: w}
	c.cork()
	c.Write([]byte("a"))
	c.Write([]byte("b"))
	if len(w.writes) != 0 {
		t.Fatalf("corked connection wrote %q", w.writes)
	}
	c.uncork()
	c.Write([]byte("c"))
	big := strings.Repeat("x", maxHeld-1)
	c.cork()
	c.Write([]byte("d"))
	c.Write([]byte(big)) // fits exactly
	c.Write([]byte("e")) // does not: what is held goes first
	c.uncork()
	c.uncork() // nothing held: no empty write
	want := []string{"ab", "c", "d" + big, "e"}
	if !slices.Equal(w.writes, want) {
		t.Fatalf("writes %.20q, want %.20q", w.writes, want)
	}
}

// TestCloseWritesWhatACorkedConnectionHolds: the acker corks a connection while it writes
// a group's PUBACKs and runs the answers queued behind them; when one of those is a
// transient refusal, its disconnect closes the connection while it is corked. The held
// PUBACKs, which the acker took for written, must reach the client
// before the close. They were dropped, and under on_full: reject the clients resent
// readings stored long before, some after their records of arrival were given up, hence
// stored twice under new ids (the 10-minute soak, 374 readings).
func TestCloseWritesWhatACorkedConnectionHolds(t *testing.T) {
	client, server := tcpPair(t)
	c := &limitedConn{Conn: server, writeTimeout: time.Minute, closed: make(chan struct{})}
	pubacks := []byte{0x40, 2, 0, 1, 0x40, 2, 0, 2}
	c.cork()
	if _, err := c.Write(pubacks); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, pubacks) {
		t.Fatalf("client got % x before the close, want the held PUBACKs % x", got, pubacks)
	}
}

// TestCloseLingers: a connection the broker closes while its client still sends (a 3.1.1
// client disconnected for a transient refusal keeps pipelining publishes) ends with the
// client reading every answer and then the end of the stream, not a reset. A close with
// unread data resets the connection: the client's next write fails, and paho drops the
// connection with the PUBACKs it had received but not yet read, so it resends readings
// that were stored.
func TestCloseLingers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // closeAll closes it
	if err != nil {
		t.Fatal(err)
	}
	l := &limitedListener{Listener: ln, writeTimeout: time.Minute, refusals: &Refusals{}, conns: map[*limitedConn]struct{}{}}
	defer l.closeAll()
	client, raw := tcpPair(t)
	c := &limitedConn{Conn: raw, owner: l, writeTimeout: time.Minute, closed: make(chan struct{})}
	c.connected.Store(true)
	l.conns[c] = struct{}{}

	// The client has sent more than the broker read when it closes.
	publishes := bytes.Repeat([]byte{0x32, 6, 0, 1, 't', 0, 1, '1'}, 1000)
	if _, err := client.Write(publishes); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 8)
	if _, err := io.ReadFull(c, first); err != nil { // mochi read one publish
		t.Fatal(err)
	}
	pubacks := []byte{0x40, 2, 0, 1, 0x40, 2, 0, 2}
	if _, err := c.Write(pubacks); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(first); n != 0 || err != io.EOF {
		t.Errorf("read after Close: %d, %v; want io.EOF", n, err)
	}
	// The client writes on (its publishes are discarded), then reads.
	if _, err := client.Write(publishes); err != nil {
		t.Fatalf("client write after the broker's close: %v", err)
	}
	_ = client.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("client read: %v after % x (a reset, not the end of the stream)", err, got)
	}
	if !bytes.Equal(got, pubacks) {
		t.Fatalf("client got % x, want % x", got, pubacks)
	}
	client.Close() // the broker's side ends now, not at lingerTime
	testutil.Eventually(t, time.Minute, "the lingering close ended", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.conns) == 0
	})
}

// TestWhenDelivered: what waits for delivery runs once the client's host acknowledged every
// byte written (the store then gives the records of those publishes up first), and not
// while a client that stopped reading leaves PUBACKs unacknowledged: their records are
// kept, as a PUBACK lost with its connection may bring the publish again.
func TestWhenDelivered(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TIOCOUTQ: Linux only; elsewhere nothing is taken as delivered")
	}
	client, server := tcpPair(t)
	c := &limitedConn{Conn: server, writeTimeout: time.Minute, closed: make(chan struct{})}
	defer c.closeNow()
	var delivered atomic.Int32
	puback := []byte{0x40, 2, 0, 1}

	// The client reads: a PUBACK written is delivered at once or at a later write.
	if _, err := c.Write(puback); err != nil {
		t.Fatal(err)
	}
	c.whenDelivered(func() { delivered.Add(1) })
	testutil.Eventually(t, time.Minute, "a PUBACK the client read taken for delivered", func() bool {
		if delivered.Load() == 0 {
			_, _ = c.Write(puback) // the next answer's write checks again
		}
		return delivered.Load() == 1
	})

	// The client stops reading: fill its receive buffer and the socket's send buffer, so
	// that bytes stay unacknowledged.
	_ = server.(*net.TCPConn).SetWriteBuffer(4096)
	_ = c.Conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	filler := make([]byte, 64<<10)
	var written int64
	for {
		n, err := c.Conn.Write(filler)
		written += int64(n)
		if err != nil {
			break // the deadline: nothing more fits
		}
	}
	_ = c.Conn.SetWriteDeadline(time.Time{})
	c.whenDelivered(func() { delivered.Add(1) })
	if n := delivered.Load(); n != 1 {
		t.Fatalf("a PUBACK behind %d bytes the client has not taken was taken for delivered", written)
	}

	// The client reads everything: the next write finds it delivered.
	go func() { _, _ = io.Copy(io.Discard, client) }() // until the test closes it
	testutil.Eventually(t, time.Minute, "PUBACKs taken for delivered once the client read them", func() bool {
		if delivered.Load() < 2 {
			_, _ = c.Write(puback)
		}
		return delivered.Load() == 2
	})
}

// tcpPair returns the two ends of a TCP connection over loopback, closed with the test.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// TestLingeringCloseDelivers: a connection closed with answers its client has not yet
// taken (a transient refusal's disconnect) lingers; a client that reads them all and closes
// its side has them delivered, one that reads nothing has not.
func TestLingeringCloseDelivers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TIOCOUTQ: Linux only; elsewhere nothing is taken as delivered")
	}
	for _, reads := range []bool{true, false} {
		client, server := tcpPair(t)
		c := &limitedConn{Conn: server, writeTimeout: time.Minute, closed: make(chan struct{})}
		// A client that reads ends the linger when it closes, however slow the machine; one
		// that never reads is not delivered however long it lingers.
		c.lingerFor = map[bool]time.Duration{true: time.Minute, false: 100 * time.Millisecond}[reads]
		// A client not reading yet: bytes stay unacknowledged behind a full receive buffer.
		_ = server.(*net.TCPConn).SetWriteBuffer(4096)
		_ = c.Conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		filler := make([]byte, 64<<10)
		for {
			if _, err := c.Conn.Write(filler); err != nil {
				break // the deadline: nothing more fits
			}
		}
		_ = c.Conn.SetWriteDeadline(time.Time{})
		var delivered atomic.Int32
		c.whenDelivered(func() { delivered.Add(1) })
		if delivered.Load() != 0 {
			t.Fatal("a PUBACK behind bytes the client has not taken was taken for delivered")
		}
		done := make(chan struct{})
		go func() { c.linger(server.(*net.TCPConn)); close(done) }()
		if reads {
			go func() { _, _ = io.Copy(io.Discard, client); client.Close() }()
		}
		<-done // lingerFor at most
		if got := delivered.Load(); got != map[bool]int32{true: 1, false: 0}[reads] {
			t.Errorf("client reads %v: delivered %d times after the lingering close", reads, got)
		}
	}
}

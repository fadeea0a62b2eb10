package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	pahopackets "github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// payloadKind is how a device encodes its readings, and so how the gateway ids them.
type payloadKind int

const (
	withID    payloadKind = iota // JSON with the device's id and timestamp
	stamped                      // JSON without ts: the gateway stamps the arrival time
	number                       // a bare number: stamped too
	raw                          // an unrouted topic: forwarded raw, stamped
	malformed                    // a routed topic the payload does not fit: refused for good
)

// reading is one message a device published, and what the wire said of it.
type reading struct {
	dev     string
	seq     int
	kind    payloadKind
	topic   string
	payload string
	qos     byte
	key     string // how it is recognised upstream (series|value, or topic|payload)
	ts      int64  // the device's timestamp (withID), unix ms
	id      string // the device's id (withID)

	acked   atomic.Bool  // a PUBACK with a success code came back
	ackedAt atomic.Int64 // when (unix ms)
	refused atomic.Int32 // a PUBACK with this reason code ≥ 0x80 came back (MQTT 5)
	sends   atomic.Int32 // PUBLISH packets that carried it (resends included)
	// abandoned: the client gave it up (autopaho forgets a publish whose context ended
	// before its PUBACK, and resends it no more); never acknowledged, it may be missing.
	abandoned atomic.Bool

	traceMu sync.Mutex
	trace   []string // the wire's events for it, for a failure's report (at most maxTrace)
}

// maxTrace bounds a reading's trace: a reading refused for minutes is sent hundreds of
// times, and only the report of a failure reads it.
const maxTrace = 48

// note adds an event to r's trace: when, on which connection and run of the daemon.
func (r *reading) note(format string, args ...any) {
	r.traceMu.Lock()
	defer r.traceMu.Unlock()
	if len(r.trace) == maxTrace {
		r.trace = append(r.trace[:maxTrace/2], r.trace[maxTrace/2+1:]...) // keep the first and the last
	}
	r.trace = append(r.trace, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// history is r's trace, one event a line.
func (r *reading) history() string {
	r.traceMu.Lock()
	defer r.traceMu.Unlock()
	return strings.Join(r.trace, "\n    ")
}

// deviceSpec describes one simulated device.
type deviceSpec struct {
	name     string
	kind     payloadKind
	v5       bool
	clean    bool          // clean session: nothing is resent after a reconnect
	qos      byte          // 0 or 1
	every    time.Duration // publish interval
	oneByOne bool          // wait for each PUBACK before the next publish (in-order store)
	// badOneIn makes every n-th reading malformed (0: never).
	badOneIn int
	// size pads raw payloads to this many bytes (bulk data that fills the budget fast).
	size int
	// topic is where raw readings go (default raw/<name>; any unrouted topic is raw).
	topic string
	// sysTopic sends the malformed readings to $SYS/… instead (refused as an invalid topic).
	sysTopic bool
	// forge: the device's readings carry ids of another device's (forge's) future readings,
	// on its own topic (issue 21: a device must not make another's readings duplicates).
	forge string
}

// device runs one deviceSpec against the gateway's broker, keeping the ledger of every
// reading it published.
type device struct {
	spec deviceSpec
	num  int // makes values unique across devices
	addr string
	rng  *rand.Rand

	mu       sync.Mutex // guards readings and byPayload
	readings []*reading
	byKey    map[string]*reading // payload → reading (payloads are unique per device)

	connacks atomic.Int64 // CONNACKs with session present after a reconnect
	present  atomic.Int64
	conns    atomic.Int64  // connections made (events)
	epoch    *atomic.Int64 // the daemon's run number (daemon.epoch), for traces; may be nil
}

func newDevice(spec deviceSpec, num int, addr string, seed uint64) *device {
	return &device{spec: spec, num: num, addr: addr, rng: rand.New(rand.NewPCG(seed, uint64(num))), byKey: map[string]*reading{}}
}

// next makes the device's next reading. Event time for withID readings is logical (20 ms
// a reading from t0) with now and then a late one, so that windows close by data alone.
func (d *device) next(seq int, t0 int64) *reading {
	r := &reading{dev: d.spec.name, seq: seq, kind: d.spec.kind, qos: d.spec.qos}
	v := strconv.FormatFloat(float64(d.num*1_000_000+seq), 'f', -1, 64)
	if d.spec.badOneIn > 0 && seq%d.spec.badOneIn == 0 {
		r.kind = malformed
	}
	switch r.kind {
	case withID:
		r.topic = "dev/" + d.spec.name + "/id"
		r.ts = t0 + int64(seq)*20
		switch x := d.rng.IntN(100); {
		case x == 0:
			r.ts -= 30_000 // past the allowed lateness: dropped from windows, still forwarded
		case x < 4:
			r.ts -= 5_000 // late within the lateness: a LATE pane
		}
		r.id = fmt.Sprintf("%s:%06d", d.spec.name, seq)
		if d.spec.forge != "" {
			r.id = fmt.Sprintf("%s:%06d", d.spec.forge, seq+20) // ahead of the victim's
		}
		r.payload = fmt.Sprintf(`{"id":%q,"value":%s,"ts":%d}`, r.id, v, r.ts)
		r.key = d.spec.name + "/id|" + v
	case stamped:
		r.topic = "dev/" + d.spec.name + "/stamp"
		r.payload = `{"value":` + v + `}`
		r.key = d.spec.name + "/stamp|" + v
	case number:
		r.topic = "dev/" + d.spec.name + "/num"
		r.payload = v
		r.key = d.spec.name + "/num|" + v
	case raw:
		r.topic = "raw/" + d.spec.name
		if d.spec.topic != "" {
			r.topic = d.spec.topic
		}
		r.payload = fmt.Sprintf("raw %s %d", d.spec.name, seq)
		if pad := d.spec.size - len(r.payload); pad > 0 {
			r.payload += " " + strings.Repeat("x", pad-1)
		}
		r.key = r.topic + "|" + r.payload
	case malformed:
		r.topic = "dev/" + d.spec.name + "/num"
		if d.spec.sysTopic {
			r.topic = "$SYS/soak/" + d.spec.name
		}
		r.payload = fmt.Sprintf("warm %d", seq)
		r.key = "malformed|" + r.payload
	}
	d.mu.Lock()
	d.readings = append(d.readings, r)
	d.byKey[r.payload] = r
	d.mu.Unlock()
	return r
}

func (d *device) all() []*reading {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*reading(nil), d.readings...)
}

// connEvents is one connection's view of the wire: packet ids are per connection (a
// resend on a new connection reuses the id with the same payload).
type connEvents struct {
	d    *device
	conn int64 // the device's connection number, for traces
	mu   sync.Mutex
	pid  map[uint16]string // packet id → payload in flight
}

func (d *device) events() *connEvents {
	return &connEvents{d: d, conn: d.conns.Add(1), pid: map[uint16]string{}}
}

// daemonRun is the daemon's run number (starts and stops counted), for traces.
func (d *device) daemonRun() int64 {
	if d.epoch == nil {
		return 0
	}
	return d.epoch.Load()
}

func (e *connEvents) sent(pid uint16, qos byte, _ string, payload []byte) {
	e.d.mu.Lock()
	r := e.d.byKey[string(payload)]
	e.d.mu.Unlock()
	if r != nil {
		r.sends.Add(1)
		r.note("send pid %d conn %d daemon %d", pid, e.conn, e.d.daemonRun())
	}
	if qos == 0 {
		return
	}
	e.mu.Lock()
	e.pid[pid] = string(payload)
	e.mu.Unlock()
}

func (e *connEvents) acked(pid uint16, reason byte) {
	e.mu.Lock()
	p, ok := e.pid[pid]
	delete(e.pid, pid)
	e.mu.Unlock()
	if !ok {
		return
	}
	e.d.mu.Lock()
	r := e.d.byKey[p]
	e.d.mu.Unlock()
	if r == nil {
		return
	}
	r.note("puback %#x pid %d conn %d daemon %d", reason, pid, e.conn, e.d.daemonRun())
	if reason >= 0x80 {
		r.refused.Store(int32(reason))
		return
	}
	r.ackedAt.Store(time.Now().UnixMilli())
	r.acked.Store(true)
}

func (e *connEvents) connack(present bool, code byte) {
	if code == 0 {
		e.d.connacks.Add(1)
		if present {
			e.d.present.Add(1)
		}
	}
}

func (d *device) dial() (net.Conn, error) {
	c, err := net.DialTimeout("tcp", d.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, v5: d.spec.v5, ev: d.events()}, nil
}

// resends reports whether the device publishes a reading until it is acknowledged: a
// persistent session (the client resends after reconnecting), or one by one.
func (d *device) resends() bool { return !d.spec.clean || d.spec.oneByOne || d.spec.v5 }

// run publishes new readings until gen ends, calls stopped, then stays connected until
// conn ends (so that what is in flight is resent and answered). t0 is the base of event
// time (unix ms).
func (d *device) run(gen, conn context.Context, t0 int64, stopped func()) {
	if d.spec.v5 {
		d.run5(gen, conn, t0, stopped)
		return
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + d.addr).SetClientID("soak-" + d.spec.name).
		SetCleanSession(d.spec.clean).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(10 * time.Second).SetWriteTimeout(5 * time.Second).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return d.dial() })
	c := paho.NewClient(o)
	c.Connect() // retries in the background until the broker answers
	defer c.Disconnect(200)
	tick := time.NewTicker(d.spec.every)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-gen.Done():
			stopped()
			<-conn.Done()
			return
		case <-tick.C:
			if gen.Err() != nil { // both were ready: stop all the same
				continue
			}
		}
		r := d.next(seq, t0)
		tok := c.Publish(r.topic, r.qos, false, r.payload)
		if d.spec.oneByOne {
			// In order: the next reading leaves only once this one is acknowledged on the
			// wire (paho's token may complete without a PUBACK after a reconnect).
			for !r.acked.Load() && r.refused.Load() == 0 && conn.Err() == nil && gen.Err() == nil {
				tok.WaitTimeout(100 * time.Millisecond)
				if tok.Error() != nil { // dropped by paho (clean session): publish again
					tok = c.Publish(r.topic, r.qos, false, r.payload)
				}
			}
		}
	}
}

// run5 is an MQTT 5 device (paho.golang's autopaho with a session that outlives its
// connections, so what is in flight is resent with its packet id after a reconnect). It
// publishes one reading at a time; a reading refused with a transient code (0x97 buffer
// full) is published again later, and one with a device id also after a long silence.
func (d *device) run5(gen, conn context.Context, t0 int64, stopped func()) {
	u, _ := url.Parse("mqtt://" + d.addr)
	expiry := uint32(3600)
	if d.spec.clean {
		expiry = 0
	}
	cm, err := autopaho.NewConnection(conn, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 10, ConnectRetryDelay: 200 * time.Millisecond,
		ConnectTimeout: 5 * time.Second, CleanStartOnInitialConnection: d.spec.clean, SessionExpiryInterval: expiry,
		AttemptConnection: func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
			c, err := d.dial()
			if err != nil {
				return nil, err
			}
			return pahopackets.NewThreadSafeConn(c), nil
		},
		ClientConfig: paho5.ClientConfig{ClientID: "soak-" + d.spec.name, OnClientError: func(error) {}},
	})
	if err != nil {
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = cm.Disconnect(ctx)
	}()
	tick := time.NewTicker(d.spec.every)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-gen.Done():
			stopped()
			<-conn.Done()
			return
		case <-tick.C:
			if gen.Err() != nil { // both were ready: stop all the same
				continue
			}
		}
		r := d.next(seq, t0)
		for !r.acked.Load() && r.refused.Load() == 0 && conn.Err() == nil {
			if cm.AwaitConnection(conn) != nil {
				return
			}
			pctx, cancel := context.WithTimeout(conn, 10*time.Second)
			_, err := cm.Publish(pctx, &paho5.Publish{Topic: r.topic, QoS: r.qos, Payload: []byte(r.payload)})
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && !r.acked.Load() && r.refused.Load() == 0 {
				r.abandoned.Store(true)
			}
			if code := r.refused.Load(); transient(byte(code)) {
				// Not stored (buffer full, or the gateway unavailable): try again later.
				r.refused.Store(0)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			if err == nil || r.acked.Load() || r.refused.Load() != 0 {
				continue
			}
			if r.abandoned.Load() && r.kind != withID {
				break // gone from the client's session; publishing it anew would be a new reading
			}
			if r.sends.Load() == 0 || errors.Is(err, autopaho.ConnectionDownError) || errors.Is(err, session.ErrNoConnection) {
				// It never entered the client's session (the connection went as it was
				// published: paho checks for one before it stores the publish), so nothing
				// will resend it and the gateway never saw this copy: publish it again. A
				// reading refused before (0x97) was sent already, so its count of sends alone
				// does not tell (the soak: v6 waited for a resend that never came).
				time.Sleep(200 * time.Millisecond)
				continue
			}
			// The connection broke with the reading in flight: the session resends it after
			// the reconnect, with the same packet id. A reading with a device id is published
			// anew if that takes long (the gateway's dedup keeps one copy); a stamped one
			// never is (a new publish would be a new reading).
			// After the schedule the device stops waiting here: the final wait (soak.run)
			// and the checks account for the reading, and the device must say it stopped.
			wait := time.Now().Add(15 * time.Second)
			for !r.acked.Load() && r.refused.Load() == 0 && conn.Err() == nil && gen.Err() == nil && (r.kind != withID || time.Now().Before(wait)) {
				time.Sleep(20 * time.Millisecond)
			}
			if gen.Err() != nil && !r.acked.Load() && r.refused.Load() == 0 {
				break
			}
		}
	}
}

// slowReader subscribes to every device topic at QoS 1 and never reads its socket: the
// gateway must not let it hold up anyone else. It reconnects after being disconnected, and
// counts how often that happened.
func slowReader(ctx context.Context, addr string, disconnects *atomic.Int64) {
	connect := []byte{0x10, 0, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 9}
	connect = append(connect, "soak-slow"...)
	connect[1] = byte(len(connect) - 2)
	sub := []byte{0x82, 0, 0, 1, 0, 5, 'd', 'e', 'v', '/', '#', 1}
	sub[1] = byte(len(sub) - 2)
	for ctx.Err() == nil {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		_, _ = c.Write(connect)
		_, _ = c.Write(sub)
		// Never read: wait until the gateway closes the connection (a write to it fails
		// once the peer reset it) or the soak ends.
		for ctx.Err() == nil {
			time.Sleep(500 * time.Millisecond)
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte{0xc0, 0}); err != nil { // PINGREQ
				disconnects.Add(1)
				break
			}
		}
		c.Close()
	}
}

// transient reports whether an MQTT 5 reason code says "not now" rather than "never":
// quota exceeded (0x97, a full buffer), unspecified error (0x80), server busy (0x89) or
// unavailable (0x88).
func transient(code byte) bool {
	return code == 0x97 || code == 0x80 || code == 0x88 || code == 0x89
}

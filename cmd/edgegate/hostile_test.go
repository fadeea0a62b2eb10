package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// TestHostileClients runs the real daemon (built from this package, without the race
// detector, with the unit's GOMEMLIMIT) and attacks its broker as issue 21 did, one attack
// per subtest on a fresh daemon, while a well-behaved MQTT 5 device publishes at QoS 1 (at
// most 500 msg/s, half its rate limit) with ids of its own, from a process of its own (so
// that the attackers' goroutines do not delay it in this process's scheduler; they still
// share the machine's cores). For each attack it measures the
// device's publish→PUBACK latency alone and under attack, and the daemon's RSS before and
// at its peak during the attack, and checks what must hold whatever the machine's load:
//
//   - the honest devices with the right password log in and publish during the attack;
//   - every reading the device had acknowledged is stored (none lost to another device);
//   - the attack is answered as the README says (codes, bounds, counters);
//   - RSS stays well below the unit's MemoryHigh (192 MiB).
//
// The latency figures are logged and, with EDGEGATE_MEASURE=1 (longer phases), the p99
// under attack is held within 3× of the same run's baseline; on a loaded machine only a
// generous absolute bound applies. Figures: README "Security", BENCHMARKS.md:
//
//	EDGEGATE_MEASURE=1 go test -run TestHostileClients -v -timeout 30m ./cmd/edgegate
func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon for ~2 min; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads the daemon's RSS from /proc")
	}
	if os.Getenv("EDGEGATE_TEST_EXEC") != "" {
		t.Skip("a load and memory test: its figures mean nothing under an emulator (make test-arm)")
	}
	bin := buildDaemon(t)
	measure := os.Getenv("EDGEGATE_MEASURE") != ""
	under := 4 * time.Second
	if measure {
		under = 15 * time.Second
	}
	var rows []string
	for _, a := range hostileAttacks {
		t.Run(a.name, func(t *testing.T) {
			d := startHostileDaemon(t, bin)
			good := &honest{addr: d.addr, id: "good-1"}
			cpu0, t0 := d.cpu(), time.Now()
			base := good.run(t, 500, 0)
			if measure {
				base = append(base, good.run(t, 0, under)...)
			}
			cpuBase := (d.cpu() - cpu0).Seconds() / time.Since(t0).Seconds()
			rssBase := d.rss()

			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var peak atomic.Int64
			peak.Store(rssBase)
			wg.Add(1)
			go func() { // RSS sampler
				defer wg.Done()
				for ctx.Err() == nil {
					if r := d.rss(); r > peak.Load() {
						peak.Store(r)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			x := &attackRun{d: d, ctx: ctx, wg: &wg, good: good}
			a.start(t, x)
			time.Sleep(500 * time.Millisecond) // let the attack ramp up
			cpu1, t1 := d.cpu(), time.Now()
			end := time.Now().Add(under)
			var during sync.WaitGroup
			if a.during != nil {
				during.Add(1)
				go func() { defer during.Done(); a.during(t, x) }()
			}
			attacked := good.run(t, 0, time.Until(end))
			cpuAttack := (d.cpu() - cpu1).Seconds() / time.Since(t1).Seconds()
			during.Wait()
			x.metrics = d.metrics(t)
			stop()
			wg.Wait()
			exit := d.stop(t)
			_, goodStored := countStored(t, d.dataDir)

			bs, as := stats(base), stats(attacked)
			ratio := float64(as.p99) / float64(max(bs.p99, 1))
			row := fmt.Sprintf("%-27s p50 %5.2f → %5.2f ms, p99 %6.2f → %6.2f ms (%4.1fx), RSS %3d → %3d MiB, daemon CPU %3.0f%% → %3.0f%%",
				a.name, msOf(bs.p50), msOf(as.p50), msOf(bs.p99), msOf(as.p99), ratio, rssBase>>20, peak.Load()>>20, 100*cpuBase, 100*cpuAttack)
			rows = append(rows, row)
			t.Log(row)
			if a.after != nil {
				a.after(t, x)
			}
			if exit != 0 {
				t.Errorf("daemon exited %d after SIGTERM", exit)
			}
			if want := len(base) + len(attacked) + int(x.extra.Load()); goodStored != want {
				t.Errorf("%d of the good devices' %d acknowledged readings stored", goodStored, want)
			}
			if p := peak.Load(); p > 150<<20 {
				t.Errorf("RSS peaked at %d MiB under attack: too close to the unit's MemoryHigh (192 MiB)", p>>20)
			}
			if as.p99 > 2*time.Second {
				t.Errorf("good device p99 %v under attack: over the 2 s bound", as.p99)
			}
			if measure && ratio > 3 {
				t.Errorf("good device p99 %v under attack is %.1fx its baseline %v (EDGEGATE_MEASURE: at most 3x)", as.p99, ratio, bs.p99)
			}
		})
	}
	t.Logf("publish→PUBACK of a well-behaved device (QoS 1, fsync before each PUBACK), alone → under attack; daemon RSS before → peak:\n%s", strings.Join(rows, "\n"))
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// attackRun is one attack's state: the daemon, the context that ends the attack, the wait
// group of its goroutines, and what its checks need.
type attackRun struct {
	d       *hostileDaemon
	ctx     context.Context
	wg      *sync.WaitGroup
	good    *honest
	extra   atomic.Int64       // readings of the good devices acknowledged besides good.measure's
	metrics map[string]float64 // the daemon's /metrics at the end of the attack

	mu    sync.Mutex // guards notes
	notes map[string]int
}

func (x *attackRun) note(key string, n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.notes == nil {
		x.notes = map[string]int{}
	}
	x.notes[key] += n
}

func (x *attackRun) count(key string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.notes[key]
}

// goroutine runs fn until the attack ends.
func (x *attackRun) goroutine(fn func()) {
	x.wg.Add(1)
	go func() { defer x.wg.Done(); fn() }()
}

// attack is one of the hostile clients' attacks: start launches its goroutines (they run
// until x.ctx ends), during runs while the good device publishes under attack (checks that
// honest devices still get in), after checks the outcome once the daemon stopped.
type attack struct {
	name   string
	start  func(t *testing.T, x *attackRun)
	during func(t *testing.T, x *attackRun)
	after  func(t *testing.T, x *attackRun)
}

var hostileAttacks = []attack{
	{name: "floods (issue 16)", start: attackFloods, after: checkFloods},
	{name: "ws keep-alive (item 1)", start: attackWSKeepAlive, during: honestWSLogin, after: checkWSKeepAlive},
	{name: "retained wills (item 2)", start: attackRetainedWills, during: honestRetained, after: checkRetainedWills},
	{name: "offline sessions (item 3)", start: attackSessions, after: checkSessions},
	{name: "forged ids (item 4)", start: attackForgedIDs, after: checkForgedIDs},
	{name: "client id squat (item 5)", start: attackSquat, during: honestReconnects, after: checkSquat},
	{name: "wrong passwords (item 6)", start: attackWrongPasswords, during: honestFirstLogins, after: checkWrongPasswords},
	{name: "probes (item 7, ops host)", start: attackProbes, during: checkOpsHost, after: checkProbes},
	{name: "retained hog (item 8)", start: attackRetainedHog, during: honestRetained, after: checkRetainedHog},
	{name: "$SYS QoS 1 (low)", start: attackSys, after: checkSys},
}

// ─── issue 16: huge CONNECTs, silent sockets, floods ────────────────────────────────────

func attackFloods(t *testing.T, x *attackRun) {
	var huge hugeResult
	idle := make([]time.Duration, 500)
	var fl, fd floodResult
	x.goroutine(func() { huge = hugeConnects(x.ctx, x.d.addr, 50) })
	x.goroutine(func() { idleSockets(x.d.addr, idle) })
	x.goroutine(func() { flood(x.ctx, x.d.addr, 4, "flood-1", "devices/flood/temperature", 50000, &fl) })
	x.goroutine(func() { flood(x.ctx, x.d.addr, 5, "flood-2", "devices/flood/x/dropped", 50000, &fd) })
	t.Cleanup(func() {
		slices.Sort(idle)
		t.Logf("256 MiB CONNECTs: %d sent, %d closed by the daemon, slowest close %v", huge.sent, huge.closed, huge.slowest)
		t.Logf("500 silent sockets: all closed after %v..%v (connect_timeout %v; the oldest make room past max_pending_per_ip)", idle[0], idle[len(idle)-1], connectTimeout)
		t.Logf("flooders: %d and %d msgs written, cut off %d and %d times", fl.sent, fd.sent, fl.disconnects, fd.disconnects)
		if huge.sent == 0 || huge.closed != huge.sent || huge.slowest > 5*time.Second {
			t.Errorf("huge CONNECTs: %d of %d closed, slowest %v", huge.closed, huge.sent, huge.slowest)
		}
		if idle[0] < 0 || idle[len(idle)-1] > connectTimeout+10*time.Second {
			t.Errorf("silent sockets closed after %v..%v, want within about %v", idle[0], idle[len(idle)-1], connectTimeout)
		}
		if fd.disconnects == 0 {
			t.Error("the flooder on a dropped topic was never disconnected")
		}
	})
}

func checkFloods(t *testing.T, x *attackRun) {
	flooded, _ := countStored(t, x.d.dataDir)
	if flooded == 0 {
		t.Error("the flooder on a routed topic had nothing stored: it was not paced but cut off")
	}
}

// ─── item 1: WebSocket connections that never upgrade ───────────────────────────────────

// attackWSKeepAlive opens 63 sockets from each of 16 addresses on the WebSocket port that
// send an HTTP request every 1–2 s and never upgrade, each reopened a second after it is
// closed: more than max_clients (1000), as in issue 21 (requests every 5–8 s against a
// connect_timeout of 10 s there; 3 s here). It records how long the daemon let each live.
func attackWSKeepAlive(t *testing.T, x *attackRun) {
	for i := 0; i < 16*63; i++ {
		src := net.IPv4(127, 0, 2, byte(1+i%16))
		x.goroutine(func() {
			for x.ctx.Err() == nil {
				dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
				c, err := dl.DialContext(x.ctx, "tcp", x.d.wsAddr)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				t0 := time.Now()
				closed := make(chan struct{})
				go func() { io.Copy(io.Discard, c); close(closed) }()
			loop:
				for {
					fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
					select {
					case <-closed:
						break loop
					case <-x.ctx.Done():
						break loop
					case <-time.After(time.Second + rand.N(time.Second)):
					}
				}
				c.Close()
				<-closed
				if x.ctx.Err() == nil {
					x.note("ws-closed", 1)
					x.mu.Lock()
					x.notes["ws-longest"] = max(x.notes["ws-longest"], int(time.Since(t0)))
					x.mu.Unlock()
				}
				time.Sleep(time.Second) // and again
			}
		})
	}
}

// honestWSLogin: a device logs in over WebSocket, and another over TCP, during the attack.
func honestWSLogin(t *testing.T, x *attackRun) {
	time.Sleep(connectTimeout + time.Second) // every slot the attack could take is taken
	for i := 0; i < 3; i++ {
		wd := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		ws, _, err := wd.Dial("ws://"+x.d.wsAddr+"/mqtt", nil)
		if err != nil {
			t.Errorf("honest WebSocket device %d: %v", i, err)
			continue
		}
		c := paho.NewClient(paho.ClientConfig{Conn: &wsNetConn{ws: ws}, OnClientError: func(error) {}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("good-ws-%d", i), Username: "good", UsernameFlag: true,
			Password: []byte("good-pw"), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
		cancel()
		if err != nil || ca.ReasonCode != 0 {
			t.Errorf("honest WebSocket device %d refused: %v", i, err)
		} else {
			x.note("ws-honest", 1)
			_ = c.Disconnect(&paho.Disconnect{})
		}
		ws.Close()
		if tcp, err := tryDevice(x.d.addr, "good", fmt.Sprintf("good-tcp-%d", i)); err != nil {
			t.Errorf("honest TCP device %d: %v", i, err)
		} else {
			tcp.c.Disconnect(&paho.Disconnect{})
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func checkWSKeepAlive(t *testing.T, x *attackRun) {
	longest := time.Duration(x.count("ws-longest"))
	t.Logf("sockets on the WebSocket port closed %d times, the longest lived %v (connect_timeout %v); honest WebSocket logins %d of 3",
		x.count("ws-closed"), longest, connectTimeout, x.count("ws-honest"))
	if longest > connectTimeout+5*time.Second {
		t.Errorf("a socket that never upgraded lived %v, past connect_timeout %v", longest, connectTimeout)
	}
	if x.count("ws-closed") == 0 {
		t.Error("no socket of the attack was ever closed")
	}
}

// ─── item 2: retained wills ─────────────────────────────────────────────────────────────

// attackRetainedWills connects with unique client ids and a retained will, and drops the
// connection at once: half the wills of 60 kB, half of 3 kB, each on a new topic.
func attackRetainedWills(t *testing.T, x *attackRun) {
	var n atomic.Int64
	big := []byte(fmt.Sprintf(`{"value": 1, "pad": %q}`, strings.Repeat("x", 60000)))
	small := []byte(fmt.Sprintf(`{"value": 1, "pad": %q}`, strings.Repeat("x", 3000)))
	for g := 0; g < 4; g++ {
		x.goroutine(func() {
			for x.ctx.Err() == nil {
				i := n.Add(1)
				will := small
				if i%2 == 0 {
					will = big
				}
				code := rawConnect(x.d.addr, net.IPv4(127, 0, 3, byte(1+g)), connect3{clientID: fmt.Sprintf("will-%d", i), user: "flood", pass: "flood-pw",
					willTopic: fmt.Sprintf("devices/flood/w%d", i), willPayload: will, willRetain: true, willQoS: 1}, false)
				x.note(fmt.Sprintf("will-%d-%#x", len(will)/1000, code), 1)
				if code == 0xff {
					time.Sleep(dropped) // closed at accept (max_connect_rate_per_ip)
				}
			}
		})
	}
}

// honestRetained: a device retains a message during the attack.
func honestRetained(t *testing.T, x *attackRun) {
	time.Sleep(time.Second)
	c, err := tryDevice(x.d.addr, "good", "good-retain")
	if err != nil {
		t.Errorf("honest device during the attack: %v", err)
		return
	}
	defer c.c.Disconnect(&paho.Disconnect{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.c.Publish(ctx, &paho.Publish{Topic: "devices/good/status", QoS: 1, Retain: true, Payload: []byte(`{"value": 1, "id": "good-status"}`)})
	if r == nil || r.ReasonCode != 0 {
		t.Errorf("honest retained publish during the attack: %v %v", r, err)
		return
	}
	x.extra.Add(1)
}

func checkRetainedWills(t *testing.T, x *attackRun) {
	t.Logf("wills: %v; retained messages at the end %v (%v bytes), wills stored %v, refused %v",
		x.notes, x.metrics["edgegate_broker_retained_messages"], x.metrics["edgegate_broker_retained_bytes"],
		x.metrics[`edgegate_broker_wills_total{result="stored"}`], x.metrics[`edgegate_broker_wills_total{result="refused"}`])
	if x.count("will-60-0x0") > 0 {
		t.Error("a 60 kB will was accepted (max_will_bytes 4KiB)")
	}
	if n := x.metrics["edgegate_broker_retained_messages"]; n > 101 {
		t.Errorf("%v retained messages: over the attacker's max_retained_per_user (100) plus the honest one", n)
	}
	if x.metrics[`edgegate_broker_wills_total{result="stored"}`] == 0 {
		t.Error("no will was stored through ingest")
	}
}

// ─── item 3: offline persistent sessions ────────────────────────────────────────────────

// attackSessions opens 30 persistent sessions of one user subscribed at QoS 1 to its own
// topic, drops them, and publishes 60 kB messages on that topic.
func attackSessions(t *testing.T, x *attackRun) {
	for i := 0; i < 30; i++ {
		c, code := rawLogin(x.d.addr, net.IPv4(127, 0, 4, 1), connect3{clientID: fmt.Sprintf("sess-%d", i), user: "flood", pass: "flood-pw", persistent: true})
		x.note(fmt.Sprintf("session-%#x", code), 1)
		if code == 0 {
			rawSubscribe(c, "devices/flood/big")
		}
		if c != nil {
			c.Close()
		}
	}
	payload := []byte(fmt.Sprintf(`{"value": 1, "pad": %q}`, strings.Repeat("x", 60000)))
	x.goroutine(func() {
		p, err := tryDevice(x.d.addr, "flood", "flood-pub")
		if err != nil {
			t.Error(err)
			return
		}
		defer p.c.Disconnect(&paho.Disconnect{})
		for x.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(x.ctx, 10*time.Second)
			r, _ := p.c.Publish(ctx, &paho.Publish{Topic: "devices/flood/big", QoS: 1, Payload: payload})
			cancel()
			if r != nil && r.ReasonCode == 0 {
				x.note("published", 1)
			}
		}
	})
}

func checkSessions(t *testing.T, x *attackRun) {
	t.Logf("sessions: %v; %d messages of 60 kB published; queued at the end: %v messages, %v bytes; drops %v (session) %v (total)",
		x.notes, x.count("published"), x.metrics["edgegate_broker_queued_messages"], x.metrics["edgegate_broker_queued_bytes"],
		x.metrics[`edgegate_broker_queue_drops_total{limit="session"}`], x.metrics[`edgegate_broker_queue_drops_total{limit="total"}`])
	if n := x.count("session-0x0"); n != 8 {
		t.Errorf("%d persistent sessions of one user accepted, want max_sessions_per_user (8)", n)
	}
	if b := x.metrics["edgegate_broker_queued_bytes"]; b > 24<<20+64<<10 {
		t.Errorf("%v bytes queued, over max_queued_bytes (24MiB)", b)
	}
}

// ─── item 4: forged ids ─────────────────────────────────────────────────────────────────

// attackForgedIDs publishes, on the attacker's own topic, readings with the ids the good
// device will use, ahead of it.
func attackForgedIDs(t *testing.T, x *attackRun) {
	from := int(x.good.n.Load()) + 1
	x.goroutine(func() {
		p, err := tryDevice(x.d.addr, "flood", "forger")
		if err != nil {
			t.Error(err)
			return
		}
		defer p.c.Disconnect(&paho.Disconnect{})
		for i := from; i < from+20000 && x.ctx.Err() == nil; i++ {
			ctx, cancel := context.WithTimeout(x.ctx, 10*time.Second)
			r, _ := p.c.Publish(ctx, &paho.Publish{Topic: "devices/flood/temperature", QoS: 1,
				Payload: []byte(fmt.Sprintf(`{"value": -999, "id": "good-1:%06d"}`, i))})
			cancel()
			if r != nil && r.ReasonCode == 0 {
				x.note("forged", 1)
			}
		}
	})
}

func checkForgedIDs(t *testing.T, x *attackRun) {
	forged, _ := countStored(t, x.d.dataDir)
	t.Logf("%d readings with the good device's future ids published by the attacker, %d stored as its own", x.count("forged"), forged)
	if x.count("forged") == 0 {
		t.Error("the forger published nothing")
	}
}

// ─── item 5: client id squatting ────────────────────────────────────────────────────────

// attackSquat connects as another user with the good device's client id, persistent, over
// and over.
func attackSquat(t *testing.T, x *attackRun) {
	x.goroutine(func() {
		for x.ctx.Err() == nil {
			c, code := rawLogin(x.d.addr, net.IPv4(127, 0, 5, 1), connect3{clientID: "good-1", user: "flood", pass: "flood-pw", persistent: true})
			x.note(fmt.Sprintf("squat-%#x", code), 1)
			if c != nil {
				c.Close()
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// honestReconnects: the good device's twin drops and reconnects with its own client id,
// with the attacker racing for it.
func honestReconnects(t *testing.T, x *attackRun) {
	for i := 0; i < 5; i++ {
		c, err := tryDevice(x.d.addr, "good", "good-twin")
		if err != nil {
			t.Errorf("the twin's login %d during the attack: %v", i, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := c.c.Publish(ctx, &paho.Publish{Topic: "devices/good/twin", QoS: 1, Payload: []byte(fmt.Sprintf(`{"value": %d, "id": "twin-%d"}`, i, i))})
		cancel()
		if r == nil || r.ReasonCode != 0 {
			t.Errorf("the twin's publish %d: %v %v", i, r, err)
		} else {
			x.extra.Add(1)
		}
		c.c.Disconnect(&paho.Disconnect{})
		time.Sleep(200 * time.Millisecond)
	}
}

func checkSquat(t *testing.T, x *attackRun) {
	t.Logf("squatting attempts: %v", x.notes)
	if n := x.count("squat-0x0"); n > 0 {
		t.Errorf("another user connected %d times with the good device's client id", n)
	}
	if x.count("squat-0x5") == 0 {
		t.Error("no squatting attempt was refused with 0x05")
	}
}

// ─── item 6: wrong passwords ────────────────────────────────────────────────────────────

// attackWrongPasswords: 250 sockets from 4 addresses and 20 clients from 20 more retry
// wrong passwords (for a known user and made-up ones) as fast as they are answered.
func attackWrongPasswords(t *testing.T, x *attackRun) {
	for i := 0; i < 270; i++ {
		src := net.IPv4(127, 0, 6, byte(1+i%4))
		if i >= 250 {
			src = net.IPv4(127, 0, 6, byte(10+i-250))
		}
		x.goroutine(func() {
			for n := 0; x.ctx.Err() == nil; n++ {
				user := "good"
				if n%2 == 1 {
					user = fmt.Sprintf("guess-%d", n)
				}
				code := rawConnect(x.d.addr, src, connect3{clientID: fmt.Sprintf("pw-%d-%d", i, n), user: user, pass: "wrong"}, true)
				x.note(fmt.Sprintf("wrong-%#x", code), 1)
				if code == 0xff {
					time.Sleep(dropped) // closed at accept (max_connect_rate_per_ip)
				}
			}
		})
	}
}

// honestFirstLogins: three users who never logged in (no cached digest: every device after
// a restart) log in during the flood.
func honestFirstLogins(t *testing.T, x *attackRun) {
	time.Sleep(time.Second)
	for _, u := range []string{"first-1", "first-2", "first-3"} {
		t0 := time.Now()
		c, err := tryDevice(x.d.addr, u, u)
		if err != nil {
			t.Errorf("first login of %s during the flood: %v", u, err)
			continue
		}
		x.note("first-login-ms", int(time.Since(t0).Milliseconds()))
		c.c.Disconnect(&paho.Disconnect{})
	}
}

func checkWrongPasswords(t *testing.T, x *attackRun) {
	t.Logf("wrong logins answered: %v; first logins of 3 devices took %d ms in all; bcrypt checks %v clean, %v failing; sources backed off at the end %v",
		x.notes, x.count("first-login-ms"), x.metrics[`edgegate_broker_password_checks_total{kind="clean"}`],
		x.metrics[`edgegate_broker_password_checks_total{kind="failing"}`], x.metrics[`edgegate_broker_login_backoffs{of="source"}`])
	if x.metrics[`edgegate_ingest_refusals_total{reason="auth_backoff"}`] == 0 {
		t.Error("no wrong login was backed off")
	}
	if x.count("wrong-0x0") > 0 {
		t.Error("a wrong password was accepted")
	}
}

// ─── item 7: probing user names and grants; the ops Host header ─────────────────────────

// attackProbes sends CONNECTs with wrong passwords that, were anything decided before the
// password, would tell a known user's grants (a will to another device's topic) or its
// client ids; each from its own address, so that backoff does not answer for them.
func attackProbes(t *testing.T, x *attackRun) {
	x.goroutine(func() {
		for i := 0; x.ctx.Err() == nil; i++ {
			src := net.IPv4(127, 1, byte(i/250), byte(1+i%250))
			var c connect3
			switch i % 3 {
			case 0:
				c = connect3{clientID: fmt.Sprintf("probe-%d", i), user: "good", pass: "wrong", willTopic: "devices/flood/x", willPayload: []byte("1")}
			case 1:
				c = connect3{clientID: "good-1", user: "flood", pass: "wrong"}
			default:
				c = connect3{clientID: fmt.Sprintf("probe-%d", i), user: "nobody", pass: "wrong", willTopic: "devices/flood/x", willPayload: []byte("1")}
			}
			t0 := time.Now()
			code := rawConnect(x.d.addr, src, c, true)
			x.note(fmt.Sprintf("probe-%d-%#x", i%3, code), 1)
			x.note(fmt.Sprintf("probe-%d-us", i%3), int(time.Since(t0).Microseconds()))
		}
	})
}

// checkOpsHost: the ops server answers a request naming a host it does not serve (DNS
// rebinding) with 421, and one naming localhost.
func checkOpsHost(t *testing.T, x *attackRun) {
	for host, want := range map[string]int{"evil.example": 421, "localhost": 200, "127.0.0.1": 200} {
		req, _ := http.NewRequest("GET", "http://"+x.d.opsAddr+"/status", nil)
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			continue
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("/status with Host %s: %d, want %d", host, res.StatusCode, want)
		}
	}
}

func checkProbes(t *testing.T, x *attackRun) {
	kinds := []string{"known user, will to another's topic", "another's client id", "unknown user"}
	for k, name := range kinds {
		n := 0
		for key, v := range x.notes {
			if strings.HasPrefix(key, fmt.Sprintf("probe-%d-0x", k)) {
				n += v
				if key != fmt.Sprintf("probe-%d-0x4", k) {
					t.Errorf("probe %q answered %s %d times: want 0x04 (bad user name or password) only", name, strings.TrimPrefix(key, fmt.Sprintf("probe-%d-", k)), v)
				}
			}
		}
		if n > 0 {
			t.Logf("probe %q: %d answered, mean %.1f ms", name, n, float64(x.count(fmt.Sprintf("probe-%d-us", k)))/float64(n)/1000)
		}
	}
}

// ─── item 8: one device takes the retained quota ────────────────────────────────────────

// attackRetainedHog retains messages on 1000 topics of its own, at its rate, over 3.1.1,
// counting the PUBACKs it gets.
func attackRetainedHog(t *testing.T, x *attackRun) {
	x.goroutine(func() {
		c, code := rawLogin(x.d.addr, net.IPv4(127, 0, 7, 1), connect3{clientID: "hog", user: "flood", pass: "flood-pw"})
		if code != 0 {
			t.Errorf("hog login: %#x", code)
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for i := 1; i <= 1000 && x.ctx.Err() == nil; i++ {
			c.Write(publishPacketQoS1(fmt.Sprintf("devices/flood/r%d", i), uint16(i), true, []byte(`{"value": 1}`)))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if typ, _, err := readPacket(r); err != nil || typ != 4 {
				t.Errorf("hog: no PUBACK for retained publish %d (%v)", i, err)
				return
			}
			x.note("hog-acked", 1)
		}
	})
}

func checkRetainedHog(t *testing.T, x *attackRun) {
	t.Logf("hog: %d retained publishes acknowledged; retained at the end %v, over_quota refusals %v",
		x.count("hog-acked"), x.metrics["edgegate_broker_retained_messages"], x.metrics[`edgegate_ingest_refusals_total{reason="over_quota"}`])
	if n := x.metrics["edgegate_broker_retained_messages"]; n > 101 {
		t.Errorf("%v retained messages: the hog went past max_retained_per_user (100)", n)
	}
}

// ─── low: QoS 1 publishes to $SYS ───────────────────────────────────────────────────────

// attackSys sends QoS 1 publishes to $SYS/... over 3.1.1, 20 in flight, as a client with
// a window of 20 would: each must be answered or the window wedges.
func attackSys(t *testing.T, x *attackRun) {
	x.goroutine(func() {
		c, code := rawLogin(x.d.addr, net.IPv4(127, 0, 8, 1), connect3{clientID: "sys", user: "flood", pass: "flood-pw"})
		if code != 0 {
			t.Errorf("login: %#x", code)
			return
		}
		defer c.Close()
		acks := make(chan struct{}, 64)
		go func() {
			r := bufio.NewReader(c)
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				typ, _, err := readPacket(r)
				if err != nil {
					close(acks)
					return
				}
				if typ == 4 {
					acks <- struct{}{}
				}
			}
		}()
		inflight := 0
		for i := 1; x.ctx.Err() == nil; i++ {
			if inflight == 20 {
				if _, ok := <-acks; !ok {
					t.Error("$SYS publisher: connection closed")
					return
				}
				inflight--
				x.note("sys-acked", 1)
			}
			c.Write(publishPacketQoS1("$SYS/broker/x", uint16(i%65000+1), false, []byte("1")))
			inflight++
		}
	})
}

func checkSys(t *testing.T, x *attackRun) {
	t.Logf("$SYS QoS 1 publishes acknowledged: %d; topic_invalid refusals %v", x.count("sys-acked"), x.metrics[`edgegate_ingest_refusals_total{reason="topic_invalid"}`])
	if x.count("sys-acked") == 0 {
		t.Error("no QoS 1 publish to $SYS was answered: the client's window wedged")
	}
}

// ─── the daemon ─────────────────────────────────────────────────────────────────────────

// connectTimeout is the daemon's broker.connect_timeout in these tests.
const connectTimeout = 3 * time.Second

// dropped is how long an attacker's loop waits after the daemon closed its connection at
// accept before it connects again: without it, the loop in this process would be a SYN
// flood of the loopback interface, and measure the kernel (on the same two cores as the
// daemon and the honest device) more than the daemon.
const dropped = 100 * time.Millisecond

type hostileDaemon struct {
	cmd     *exec.Cmd
	addr    string
	wsAddr  string
	opsAddr string
	dataDir string
	done    chan struct{}
}

var builtDaemon struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// buildDaemon builds the daemon once per test binary run, without the race detector.
func buildDaemon(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the daemon")
	}
	builtDaemon.once.Do(func() {
		builtDaemon.dir, builtDaemon.err = os.MkdirTemp("", "edgegate-hostile-")
		if builtDaemon.err != nil {
			return
		}
		build := exec.Command(goBin, "build", "-o", filepath.Join(builtDaemon.dir, "edgegate"), ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		builtDaemon.out, builtDaemon.err = build.CombinedOutput()
	})
	if builtDaemon.err != nil {
		t.Fatalf("build: %v\n%s", builtDaemon.err, builtDaemon.out)
	}
	t.Cleanup(func() { os.RemoveAll(builtDaemon.dir) })
	return filepath.Join(builtDaemon.dir, "edgegate")
}

var hashes sync.Map // password → bcrypt hash (cost 10, as `edgegate passwd`)

func hashOf(t *testing.T, pw string) string {
	if h, ok := hashes.Load(pw); ok {
		return h.(string)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	hashes.Store(pw, string(h))
	return string(h)
}

// startHostileDaemon runs the daemon with the unit's GOMEMLIMIT on a fresh data directory:
// TCP and WebSocket listeners, the ops server, the good device's users and the attacker's.
func startHostileDaemon(t *testing.T, bin string) *hostileDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &hostileDaemon{addr: testutil.FreeAddr(t), wsAddr: testutil.FreeAddr(t), opsAddr: testutil.FreeAddr(t),
		dataDir: filepath.Join(dir, "data"), done: make(chan struct{})}
	users := ""
	for _, u := range []string{"good", "flood", "first-1", "first-2", "first-3"} {
		users += fmt.Sprintf("    - {username: %s, password_hash: %q, publish: [\"devices/{username}/#\"], subscribe: [\"devices/{username}/#\"]}\n", u, hashOf(t, u+"-pw"))
	}
	cfg := filepath.Join(dir, "edgegate.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
gateway: {id: hostile, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}, {type: ws, address: %q}]
  connect_timeout: %s
  flood_after: 2s
  users:
%s
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
unrouted: drop
ops: {log: {level: warn}, clock: {mode: trust}, listen: %q}
`, d.dataDir, d.addr, d.wsAddr, connectTimeout, users, d.opsAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "run", "-c", cfg)
	d.cmd.Env = append(os.Environ(), "GOMEMLIMIT=96MiB") // as systemd/edgegate.service
	d.cmd.Stderr = logf
	dieWithParent(d.cmd)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); logf.Close(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() || os.Getenv("EDGEGATE_HOSTILE_LOG") != "" {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		select {
		case <-d.done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("daemon exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not listening after 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// rss returns the daemon's resident set size in bytes (0 once it is gone).
func (d *hostileDaemon) rss() int64 {
	kib, _ := testutil.ProcField(d.cmd.Process.Pid, "status", "VmRSS")
	return kib << 10
}

// cpu returns the CPU time the daemon used so far (user + system).
func (d *hostileDaemon) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:])) // after "(comm) "
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // utime, field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // stime, field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ: 100 on Linux
}

// metrics scrapes the daemon's /metrics: value by series name with its labels.
func (d *hostileDaemon) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	res, err := http.Get("http://" + d.opsAddr + "/metrics")
	if err != nil {
		t.Errorf("metrics: %v", err)
		return nil
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (d *hostileDaemon) stop(t *testing.T) int {
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Error("daemon ignored SIGTERM for 20 s")
		return -1
	}
}

// ─── clients ────────────────────────────────────────────────────────────────────────────

// honest is the well-behaved device of TestHostileClients; each run is a process of its own
// (TestHonestDeviceProcess) that logs in, publishes and reports its latencies.
type honest struct {
	addr, id string
	n        atomic.Int64 // readings acknowledged so far (their ids count up)
}

// run publishes n readings, or for d, in a child process, and returns the latencies.
func (h *honest) run(t *testing.T, n int, d time.Duration) []time.Duration {
	t.Helper()
	out := filepath.Join(t.TempDir(), "latencies.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHonestDeviceProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGEGATE_HONEST="+strings.Join([]string{h.addr, h.id,
		strconv.FormatInt(h.n.Load(), 10), strconv.Itoa(n), d.String(), out}, " "))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("honest device: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r honestResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	h.n.Store(int64(r.N))
	return r.Latencies
}

type honestResult struct {
	Latencies []time.Duration
	N         int
}

// TestHonestDeviceProcess is the honest device's process (see honest.run), not a test.
func TestHonestDeviceProcess(t *testing.T) {
	args := strings.Fields(os.Getenv("EDGEGATE_HONEST"))
	if len(args) != 6 {
		t.Skip("the honest device of TestHostileClients, run by it")
	}
	from, _ := strconv.Atoi(args[2])
	n, _ := strconv.Atoi(args[3])
	d, _ := time.ParseDuration(args[4])
	dv := goodDevice(t, args[0], "good", args[1])
	dv.n = from
	end := time.Now().Add(d)
	lat := dv.measure(t, n, func() bool { return time.Now().Before(end) })
	b, _ := json.Marshal(honestResult{Latencies: lat, N: dv.n})
	if err := os.WriteFile(args[5], b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// device is a well-behaved MQTT 5 client, on its own source address.
type device struct {
	c  *paho.Client
	id string
	n  int // readings acknowledged (their ids count up)
}

// goodDevice logs in as user with clientID, or fails the test (on the test's goroutine).
func goodDevice(t *testing.T, addr, user, clientID string) *device {
	t.Helper()
	d, err := tryDevice(addr, user, clientID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.c.Disconnect(&paho.Disconnect{}) })
	return d
}

// tryDevice logs in as user (password user-pw) with clientID over MQTT 5 from 127.0.0.2.
func tryDevice(addr, user, clientID string) (*device, error) {
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	conn, err := dl.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, PacketTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(user + "-pw"), PasswordFlag: true, KeepAlive: 60, CleanStart: true})
	if err != nil {
		code := -1
		if ca != nil {
			code = int(ca.ReasonCode)
		}
		conn.Close()
		return nil, fmt.Errorf("%s (%s) refused: %w (CONNACK %#x)", clientID, user, err, code)
	}
	return &device{c: c, id: clientID}, nil
}

// measure publishes at QoS 1, one at a time, n messages or while more() holds, and returns
// each publish→PUBACK latency. Each reading has an id of the device's own: <client id>:n.
func (dv *device) measure(t *testing.T, n int, more func() bool) []time.Duration {
	t.Helper()
	var out []time.Duration
	// Well-behaved: at most 500 msg/s, half of max_rate_per_client, however fast the PUBACKs
	// come (back to back, a fast disk let it run over the rate and be refused).
	const every = 2 * time.Millisecond
	next := time.Now()
	for i := 0; (n > 0 && i < n) || (n == 0 && more()); i++ {
		time.Sleep(time.Until(next))
		next = time.Now().Add(every)
		p := &paho.Publish{Topic: "devices/good/temperature", QoS: 1, Payload: []byte(fmt.Sprintf(`{"value": %d, "id": "%s:%06d"}`, dv.n+1, dv.id, dv.n+1))}
		t0 := time.Now()
		r, err := dv.c.Publish(context.Background(), p)
		if err != nil || r.ReasonCode != 0 {
			code := -1
			if r != nil {
				code = int(r.ReasonCode)
			}
			t.Fatalf("good device publish %d: %v (reason code %#x)", dv.n+1, err, code)
		}
		dv.n++
		out = append(out, time.Since(t0))
	}
	return out
}

type latency struct{ p50, p99, max time.Duration }

func stats(d []time.Duration) latency {
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return latency{q(0.50), q(0.99), s[len(s)-1]}
}

// wsNetConn carries MQTT in binary WebSocket messages, for paho.
type wsNetConn struct {
	ws *websocket.Conn
	r  io.Reader
	mu sync.Mutex // paho writes from several goroutines; a WebSocket takes one writer
}

func (c *wsNetConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsNetConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsNetConn) Close() error                       { return c.ws.Close() }
func (c *wsNetConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsNetConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsNetConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsNetConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsNetConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// Raw MQTT 3.1.1, for clients no library would let misbehave.

func mqttString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func mqttLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		if n /= 128; n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func connectPacket(id, user, pass string) []byte {
	return connect3{clientID: id, user: user, pass: pass}.packet()
}

// connect3 is a raw MQTT 3.1.1 CONNECT (keepalive 60 s).
type connect3 struct {
	clientID, user, pass string
	persistent           bool // clean session off
	willTopic            string
	willPayload          []byte
	willRetain           bool
	willQoS              byte
}

func (c connect3) packet() []byte {
	body := mqttString(nil, "MQTT")
	var flags byte
	if !c.persistent {
		flags |= 0x02
	}
	if c.willTopic != "" {
		flags |= 0x04 | c.willQoS<<3
		if c.willRetain {
			flags |= 0x20
		}
	}
	if c.user != "" {
		flags |= 0x80 | 0x40
	}
	body = append(body, 4, flags, 0, 60)
	body = mqttString(body, c.clientID)
	if c.willTopic != "" {
		body = mqttString(body, c.willTopic)
		body = mqttString(body, string(c.willPayload))
	}
	if c.user != "" {
		body = mqttString(body, c.user)
		body = mqttString(body, c.pass)
	}
	return append(mqttLength([]byte{0x10}, len(body)), body...)
}

// rawLogin sends a CONNECT from src and returns the open connection (nil when the
// CONNACK did not come) and its return code (0xff: none).
func rawLogin(addr string, src net.IP, c connect3) (net.Conn, byte) {
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	conn, err := dl.Dial("tcp", addr)
	if err != nil {
		return nil, 0xff
	}
	conn.Write(c.packet())
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil || ack[0] != 0x20 {
		conn.Close()
		return nil, 0xff
	}
	conn.SetReadDeadline(time.Time{})
	return conn, ack[3]
}

// rawConnect logs in and drops the connection at once (without DISCONNECT: a will fires);
// graceful sends a DISCONNECT first.
func rawConnect(addr string, src net.IP, c connect3, graceful bool) byte {
	conn, code := rawLogin(addr, src, c)
	if conn != nil {
		if graceful {
			conn.Write([]byte{0xe0, 0})
		}
		conn.Close()
	}
	return code
}

// rawSubscribe subscribes a raw connection to filter at QoS 1.
func rawSubscribe(c net.Conn, filter string) {
	sub := binary.BigEndian.AppendUint16(nil, 1)
	sub = mqttString(sub, filter)
	sub = append(sub, 1)
	c.Write(append(mqttLength([]byte{0x82}, len(sub)), sub...))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var suback [5]byte
	io.ReadFull(c, suback[:])
	c.SetReadDeadline(time.Time{})
}

func publishPacket(topic string, payload []byte) []byte {
	body := append(mqttString(nil, topic), payload...)
	return append(mqttLength([]byte{0x30}, len(body)), body...)
}

func publishPacketQoS1(topic string, id uint16, retain bool, payload []byte) []byte {
	h := byte(0x32)
	if retain {
		h |= 1
	}
	body := binary.BigEndian.AppendUint16(mqttString(nil, topic), id)
	body = append(body, payload...)
	return append(mqttLength([]byte{h}, len(body)), body...)
}

// readPacket reads one packet: its type and body.
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

type hugeResult struct {
	sent, closed int
	slowest      time.Duration
}

// hugeConnects sends CONNECT headers claiming 268,435,455 bytes (the most MQTT can encode)
// and checks that the daemon hangs up at once instead of reading or allocating them.
func hugeConnects(ctx context.Context, addr string, n int) hugeResult {
	var r hugeResult
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}, Timeout: 5 * time.Second}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c, err := dl.Dial("tcp", addr)
		if err != nil {
			continue
		}
		r.sent++
		t0 := time.Now()
		c.Write([]byte{0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 0xc2})
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err == nil || !isTimeout(err) {
			r.closed++
			r.slowest = max(r.slowest, time.Since(t0))
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// idleSockets opens len(lived) sockets from 127.0.1.1..20 that never send a byte and
// records how long the daemon let each live.
func idleSockets(addr string, lived []time.Duration) {
	var wg sync.WaitGroup
	for i := range lived {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%20))}, Timeout: 5 * time.Second}
			c, err := dl.Dial("tcp", addr)
			if err != nil {
				lived[i] = -1
				return
			}
			defer c.Close()
			t0 := time.Now()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			io.Copy(io.Discard, c)
			lived[i] = time.Since(t0)
		}()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	wg.Wait()
}

type floodResult struct {
	start             atomic.Int64 // unix ns
	sent, disconnects int
	duration          time.Duration
}

// flood logs in as user flood from 127.0.0.<src> and writes QoS 0 publishes on topic at
// rate msg/s, in chunks every millisecond, until ctx ends; when the daemon cuts it off it
// reconnects after 20 ms.
func flood(ctx context.Context, addr string, src byte, clientID, topic string, rate int, r *floodResult) {
	const chunk = 50
	var batch []byte
	for i := 0; i < chunk; i++ {
		batch = append(batch, publishPacket(topic, []byte(fmt.Sprintf(`{"value": %d}`, i)))...)
	}
	period := time.Second * chunk / time.Duration(rate)
	t0 := time.Now()
	r.start.Store(t0.UnixNano())
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, src)}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := dl.Dial("tcp", addr)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		c.Write(connectPacket(clientID, "flood", "flood-pw"))
		go io.Copy(io.Discard, c) // CONNACK and whatever follows
		tick := time.NewTicker(period)
		for ctx.Err() == nil {
			<-tick.C
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(batch); err != nil {
				r.disconnects++
				break
			}
			r.sent += chunk
		}
		tick.Stop()
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	r.duration = time.Since(t0)
}

// countStored opens the stopped daemon's buffer and counts the readings of each device.
func countStored(t *testing.T, dataDir string) (flood, good int) {
	t.Helper()
	st, err := buffer.Open(buffer.Options{Dir: filepath.Join(dataDir, "buffer"), Logger: slog.New(slog.DiscardHandler), Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = st.Read(logs.Raw, 0, 0, func(_ uint64, v []byte) error {
		var r record.Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(r.Series, "flood/"):
			flood++
		case strings.HasPrefix(r.Series, "good/"):
			good++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return flood, good
}

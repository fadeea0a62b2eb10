package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/internal/timesync"
	"github.com/edgegate/edgegate/record"
)

// Issue 16, item 3: devices whose readings the gateway stamps on arrival (here bare numbers)
// publish at QoS 1 on persistent sessions while the daemon is killed -9 and restarted, over
// a link whose answers lag (so PUBACKs of stored readings are lost at every kill, and the
// clients send those readings again when they reconnect). Every reading must be stored
// once: one record per value, no value under two ids.

const resendConfig = `gateway: {id: gw-resend, data_dir: "%[1]s/data"}
broker:
  listeners: [{type: tcp, address: "%[2]s"}]
  allow_anonymous: true
  max_rate_per_client: 100000
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
ops: {log: {level: warn}, listen: "off", clock: {mode: trust}}
`

const (
	resendReadings = 300
	resendKills    = 3
	resendInflight = 20
	linkLag        = 100 * time.Millisecond
)

// publisher starts a client that publishes readings 0 … n-1 to addr and counts its
// acknowledgements in acked; done yields nil once each was acknowledged or failed.
type publisher func(t *testing.T, addr string, n int, acked *pubCount) (done <-chan error)

// pubCount counts a publisher's acknowledged readings, and keeps those whose publish
// failed at the client (paho fails a token whose write hit the kill; it may still resend
// the message from its store): such a reading may be missing, never doubled.
type pubCount struct {
	atomic.Int64
	mu     sync.Mutex
	failed map[int]error
}

func (c *pubCount) fail(v int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = map[int]error{}
	}
	c.failed[v] = err
}

func TestResendAcrossKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the daemon")
	}
	t.Run("paho", func(t *testing.T) { resendAcrossKills(t, pahoPublisher(false)) })
	// paho's default: a clean session, over which it still resends what it had in flight,
	// marked DUP.
	t.Run("paho-clean", func(t *testing.T) { resendAcrossKills(t, pahoPublisher(true)) })
	for _, v := range []int{4, 5} {
		t.Run(fmt.Sprintf("mqtt.js-v%d", v), func(t *testing.T) { resendAcrossKills(t, mqttjsPublisher(t, v)) })
	}
}

func resendAcrossKills(t *testing.T, pub publisher) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(resendConfig, dir, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &e2eDaemon{t: t, cfg: cfg, addr: addr, logPath: filepath.Join(dir, "daemon.log")}
	d.start()
	proxy := startLagProxy(t, addr, linkLag)
	var acked pubCount
	done := pub(t, proxy.addr, resendReadings, &acked)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	for k := 1; k <= resendKills; k++ {
		mark := int64(k * resendReadings / (resendKills + 1))
		deadline := time.Now().Add(60 * time.Second)
		for acked.Load() < mark {
			select {
			case err := <-done:
				t.Fatalf("the client finished before kill %d: %v", k, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d readings acknowledged after 60 s", acked.Load(), resendReadings)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.Int64N(int64(50 * time.Millisecond))))
		d.kill()
		t.Logf("kill %d after %d readings acknowledged", k, acked.Load())
		d.start()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("%d of %d readings acknowledged after 120 s", acked.Load(), resendReadings)
	}
	d.stop()
	proxy.close()

	byValue, ids := storedReadings(t, filepath.Join(dir, "data", "buffer"))
	var missing, doubled []string
	for v := range resendReadings {
		switch n := len(byValue[float64(v)]); {
		case n == 0 && acked.failed[v] != nil:
			t.Logf("reading %d: its publish failed at the client (%v) and it was not stored", v, acked.failed[v])
		case n == 0:
			missing = append(missing, strconv.Itoa(v))
		case n > 1:
			doubled = append(doubled, fmt.Sprintf("%d (ids %v)", v, byValue[float64(v)]))
		}
	}
	if len(missing) > 0 || len(doubled) > 0 || ids != resendReadings-len(acked.failed)+failedButStored(byValue, acked.failed) {
		t.Fatalf("%d readings published; %d ids stored; missing %v; stored more than once: %v", resendReadings, ids, missing, doubled)
	}
}

// storedReadings opens the stopped daemon's store and returns the ids of the raw log's
// readings by value, and the number of distinct ids.
func storedReadings(t *testing.T, dir string) (map[float64][]string, int) {
	t.Helper()
	s, err := buffer.Open(buffer.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	byValue := map[float64][]string{}
	ids := map[string]bool{}
	_, err = s.Read(logs.Raw, 0, 0, func(_ uint64, v []byte) error {
		var r struct {
			ID    string  `json:"id"`
			Value float64 `json:"value"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		byValue[r.Value] = append(byValue[r.Value], r.ID)
		ids[r.ID] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byValue, len(ids)
}

// pahoPublisher is eclipse/paho.mqtt.golang (MQTT 3.1.1) on a persistent session
// (CleanSession false), reconnecting by itself; it resends with DUP set.
func pahoPublisher(clean bool) publisher {
	return func(t *testing.T, addr string, n int, acked *pubCount) <-chan error {
		return pahoPublish(t, addr, n, acked, clean)
	}
}

func pahoPublish(t *testing.T, addr string, n int, acked *pubCount, clean bool) <-chan error {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("paho-dev").SetCleanSession(clean).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).SetConnectTimeout(2 * time.Second).SetWriteTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	done := make(chan error, 1)
	go func() {
		defer c.Disconnect(250)
		var window []paho.Token
		var values []int
		wait := func() error {
			if !window[0].WaitTimeout(60 * time.Second) {
				return errors.New("paho: no PUBACK within 60 s")
			}
			if err := window[0].Error(); err != nil {
				acked.fail(values[0], err)
			} else {
				acked.Add(1)
			}
			window, values = window[1:], values[1:]
			return nil
		}
		for i := 0; i < n; i++ {
			window = append(window, c.Publish("devices/paho/temperature", 1, false, strconv.Itoa(i)))
			values = append(values, i)
			for len(window) >= resendInflight {
				if err := wait(); err != nil {
					done <- err
					return
				}
			}
		}
		for len(window) > 0 {
			if err := wait(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// mqttjsPublisher is MQTT.js (npm mqtt 5.16) on a persistent session (clean: false; MQTT 5
// with a session expiry), reconnecting by itself; it resends without DUP. The test is
// skipped when node or the package is missing (.ci/run installs it).
func mqttjsPublisher(t *testing.T, version int) publisher {
	return func(t *testing.T, addr string, n int, acked *pubCount) <-chan error {
		dir, err := filepath.Abs(filepath.Join("testdata", "mqttjs"))
		if err != nil {
			t.Fatal(err)
		}
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("MQTT.js needs node, which is not installed")
		}
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); err != nil {
			t.Skipf("MQTT.js is not installed: run `npm ci --prefix %s`", dir)
		}
		cmd := exec.Command(node, filepath.Join(dir, "publish.js"), "mqtt://"+addr, fmt.Sprintf("mqttjs-v%d", version),
			"devices/mqttjs/temperature", strconv.Itoa(n), strconv.Itoa(resendInflight), strconv.Itoa(version))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
			}
		})
		done := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
					if v, err := strconv.Atoi(a); err == nil {
						acked.Store(int64(v))
					}
				}
			}
			if err := cmd.Wait(); err != nil {
				done <- fmt.Errorf("MQTT.js: %v: %s", err, stderr.String())
				return
			}
			done <- nil
		}()
		return done
	}
}

// lagProxy forwards TCP connections to target: what a client sends goes on at once, what
// the daemon answers after lag, as on a slow link. When the daemon's side closes, the
// client's is closed at once and the answers still on their way are lost.
type lagProxy struct {
	addr string
	ln   net.Listener
	lag  time.Duration
	wg   sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
}

func startLagProxy(t *testing.T, target string, lag time.Duration) *lagProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lagProxy{addr: ln.Addr().String(), ln: ln, lag: lag, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c, target) }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *lagProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *lagProxy) serve(client net.Conn, target string) {
	defer client.Close()
	up, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		return // the daemon is down: the client retries
	}
	defer up.Close()
	p.track(client, true)
	p.track(up, true)
	defer p.track(client, false)
	defer p.track(up, false)
	type chunk struct {
		at time.Time
		b  []byte
	}
	answers := make(chan chunk, 4096)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client → daemon, at once
		defer wg.Done()
		io.Copy(up, client)
		up.Close()
	}()
	go func() { // daemon → client, after the lag
		defer wg.Done()
		for c := range answers {
			time.Sleep(time.Until(c.at.Add(p.lag)))
			if _, err := client.Write(c.b); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			answers <- chunk{time.Now(), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	client.Close() // the answers still queued are lost with the connection
	close(answers)
	wg.Wait()
}

func (p *lagProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// rawSession is a raw MQTT 3.1.1 client: it controls the clean flag, packet ids and DUP.
type rawSession struct {
	c net.Conn
	r *bufio.Reader
}

func mqttPacket(h byte, body []byte) []byte { return append(mqttLength([]byte{h}, len(body)), body...) }

func dialRaw(t *testing.T, addr, clientID string, clean bool) *rawSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := append(mqttString(nil, "MQTT"), 4, flags, 0, 60)
	s := &rawSession{c: c, r: bufio.NewReader(c)}
	s.send(t, mqttPacket(0x10, mqttString(body, clientID)))
	if typ, b := s.read(t); typ != 0x20 || len(b) != 2 || b[1] != 0 {
		t.Fatalf("CONNACK expected: %#x % x", typ, b)
	}
	return s
}

func (s *rawSession) send(t *testing.T, b []byte) {
	t.Helper()
	s.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (s *rawSession) read(t *testing.T) (byte, []byte) {
	t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := s.r.ReadByte()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	n, mult := 0, 1
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(s.r, body); err != nil {
		t.Fatalf("read: %v", err)
	}
	return h & 0xf0, body
}

// publish sends a QoS 1 PUBLISH without DUP and waits for its PUBACK.
func (s *rawSession) publish(t *testing.T, pid uint16, topic, payload string) {
	t.Helper()
	body := binary.BigEndian.AppendUint16(mqttString(nil, topic), pid)
	s.send(t, mqttPacket(0x32, append(body, payload...)))
	if typ, b := s.read(t); typ != 0x40 || binary.BigEndian.Uint16(b) != pid {
		t.Fatalf("PUBACK for %d expected: %#x % x", pid, typ, b)
	}
}

// fakeSync is a time source the test synchronises; fakeMono a monotonic clock it moves.
type fakeSync struct{ synced atomic.Bool }

func (s *fakeSync) Synced() (bool, error) { return s.synced.Load(), nil }

type fakeMono struct{ d atomic.Int64 }

func (m *fakeMono) now() time.Duration { return time.Duration(m.d.Load()) }

// A reading stamped while the clock is not synchronised goes to the hold log. Resent after
// a lost PUBACK and a restart of the daemon, still before the sync, it gets the id of the
// held one and is not held twice: once the clock syncs, one reading goes upstream, at its
// true time.
func TestResendOfAHeldReadingStoredOnce(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	out := filepath.Join(dir, "up.jsonl")
	path := filepath.Join(dir, "edgegate.yaml")
	err := os.WriteFile(path, []byte(fmt.Sprintf(`gateway: {id: gw-held, data_dir: %q}
broker: {listeners: [{type: tcp, address: %q}], allow_anonymous: true}
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
uplinks:
  - {name: archive, type: file, path: %q, batch: {max_records: 1}}
ops: {log: {level: warn}, listen: "off"}
`, filepath.Join(dir, "data"), addr, out)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	src, mono := &fakeSync{}, &fakeMono{}
	mono.d.Store(int64(10 * time.Second))          // the board booted 10 s ago
	kwall := clock.NewFake(time.Unix(10, 0).UTC()) // at "1970", as the keeper reads it
	wall := clock.NewFake(time.Unix(10, 0).UTC())  // the same, for the gateway
	run := func() *gatewaytest.Running {
		k, err := timesync.New(timesync.Options{Floor: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Source: src, Mono: mono.now, Boot: "boot-1", Clock: kwall})
		if err != nil {
			t.Fatal(err)
		}
		return gatewaytest.Start(t, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler), Clock: wall, TimeKeeper: k, FlushTimeout: 2 * time.Second})
	}
	g := run()
	c := dialRaw(t, addr, "held-dev", false)
	c.publish(t, 5, "devices/held-dev/temperature", "21.5")
	if n := g.G.Status().Clock.Held; n != 1 {
		t.Fatalf("%d readings held, want 1", n)
	}
	c.c.Close() // the PUBACK is "lost"
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	mono.d.Add(int64(5 * time.Second)) // no check runs: the gateway is stopped
	kwall.Advance(5 * time.Second)
	wall.Advance(5 * time.Second)
	g = run()
	c = dialRaw(t, addr, "held-dev", false)
	c.publish(t, 5, "devices/held-dev/temperature", "21.5") // resent without DUP, as MQTT.js does
	if n := g.G.Status().Clock.Held; n != 1 {
		t.Fatalf("%d readings held after the resend, want 1", n)
	}
	// NTP steps the clock, 15 s after boot: the held reading, taken 10 s after boot, is
	// corrected to 5 s before and sent, once. The keeper's clocks stand still from then on;
	// only the gateway's moves, to wake the holder. Moving the keeper's wall and monotonic
	// clocks one after the other while the holder checked gave it a torn pair, and a
	// correction a second off, on a loaded machine (as TestClockHeldThenCorrected).
	trueTime := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	kwall.Set(trueTime)
	src.synced.Store(true)
	wall.Set(trueTime)
	testutil.Eventually(t, 20*time.Second, "the hold log released", func() bool {
		wall.Advance(time.Second) // the holder checks the clock every second
		st := g.G.Status().Clock
		return st.Held == 0 && st.Corrected > 0
	})
	if n := g.G.Status().Clock.Corrected; n != 1 {
		t.Fatalf("%d held readings released, want 1", n)
	}
	var got []record.Record
	testutil.Eventually(t, 20*time.Second, "the released reading upstream", func() bool {
		got = fileUplinkRecords(t, out)
		return len(got) > 0
	})
	if len(got) != 1 || got[0].Value != 21.5 || !got[0].TS.Equal(trueTime.Add(-5*time.Second)) {
		t.Fatalf("upstream got %+v, want the reading once, at its true time", got)
	}
}

// fileUplinkRecords reads every record a file uplink wrote.
func fileUplinkRecords(t *testing.T, path string) []record.Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []record.Record
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" {
			_, recs := testutil.DecodeBatch(t, []byte(line))
			out = append(out, recs...)
		}
	}
	return out
}

// A device on clean sessions (paho, CleanSession true, a new client per reading: its
// packet ids start at 1 each time) that sends the same number has every reading stored.
func TestCleanSessionDeviceRepeatsStored(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	path := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(resendConfig, dir, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	wall := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	g := gatewaytest.Start(t, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler), Clock: wall})
	for range 2 {
		c := testutil.Paho(t, addr, "battery-dev")
		if tok := c.Publish("devices/battery-dev/temperature", 1, false, "21.5"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		c.Disconnect(100)
		wall.Advance(5 * time.Minute)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	byValue, ids := storedReadings(t, filepath.Join(dir, "data", "buffer"))
	if len(byValue[21.5]) != 2 || ids != 2 {
		t.Fatalf("stored %v (%d ids), want the reading twice", byValue, ids)
	}
}

// failedButStored returns how many of the values in failed were stored all the same.
func failedButStored(byValue map[float64][]string, failed map[int]error) int {
	n := 0
	for v := range failed {
		if len(byValue[float64(v)]) > 0 {
			n++
		}
	}
	return n
}

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/broker"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// TestHostileClients runs the real daemon (built from this package, without the race
// detector) and attacks its broker while a well-behaved MQTT 5 device publishes at QoS 1:
//
//   - 50 CONNECTs claiming a 256 MiB remaining length,
//   - 500 sockets that never send a CONNECT, from 20 loopback addresses,
//   - two clients flooding QoS 0 publishes at 50,000 msg/s each, reconnecting whenever they
//     are cut off: one on a routed topic (each message is appended durably), one on a topic
//     no route takes (dropped at once). Both are read at their max_rate_per_client (TCP
//     backpressure) and disconnected as floods after flood_after (2 s here) without a pause.
//
// It measures the daemon's RSS (from /proc) and the good device's publish→PUBACK latency,
// alone first and then under attack, and asserts only generous bounds; the figures are
// logged (go test -v -run TestHostileClients ./cmd/edgegate).
func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon for ~20 s; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads the daemon's RSS from /proc")
	}
	if os.Getenv("EDGEGATE_TEST_EXEC") != "" {
		t.Skip("a load and memory test: its figures mean nothing under an emulator (make test-arm)")
	}
	d := startHostileDaemon(t)

	good := goodDevice(t, d.addr)
	base := good.measure(t, 500, nil)
	rssBase := d.rss()

	const connectTimeout = 3 * time.Second
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var peak atomic.Int64
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

	var huge hugeResult
	wg.Add(1)
	go func() { defer wg.Done(); huge = hugeConnects(ctx, d.addr, 50) }()

	idle := make([]time.Duration, 500) // how long each idle socket lived
	wg.Add(1)
	go func() { defer wg.Done(); idleSockets(d.addr, idle) }()

	var fl, fd floodResult
	wg.Add(2)
	go func() { defer wg.Done(); flood(ctx, d.addr, 4, "flood-1", "devices/flood/temperature", 50000, &fl) }()
	go func() { defer wg.Done(); flood(ctx, d.addr, 5, "flood-2", "devices/flood/x/dropped", 50000, &fd) }()

	time.Sleep(200 * time.Millisecond) // let the attacks ramp up
	attacked := good.measure(t, 0, func() bool { return fl.elapsed() < 8*time.Second })
	stop()
	wg.Wait()
	rssAfter := d.rss()
	exit := d.stop(t)
	flooded, goodStored := countStored(t, d.dataDir)

	bs, as := stats(base), stats(attacked)
	t.Logf("well-behaved device, publish→PUBACK at QoS 1 (fsync before each PUBACK):")
	t.Logf("  alone:        n=%d p50=%v p99=%v max=%v", len(base), bs.p50, bs.p99, bs.max)
	t.Logf("  under attack: n=%d p50=%v p99=%v max=%v  (p99 ratio %.1fx)", len(attacked), as.p50, as.p99, as.max, float64(as.p99)/float64(max(bs.p99, 1)))
	t.Logf("daemon RSS: %d MiB before the attacks, peak %d MiB during, %d MiB after", rssBase>>20, peak.Load()>>20, rssAfter>>20)
	t.Logf("256 MiB CONNECTs: %d sent, %d closed by the daemon, slowest close %v", huge.sent, huge.closed, huge.slowest)
	slices.Sort(idle)
	t.Logf("500 silent sockets: all closed after %v..%v (connect_timeout %v)", idle[0], idle[len(idle)-1], connectTimeout)
	t.Logf("flooder on a routed topic: %d msgs written in %v (%.0f msg/s), cut off %d times, %d readings stored (max_rate_per_client 1000/s)",
		fl.sent, fl.duration.Round(time.Millisecond), float64(fl.sent)/fl.duration.Seconds(), fl.disconnects, flooded)
	t.Logf("flooder on a dropped topic: %d msgs written in %v (%.0f msg/s), cut off %d times",
		fd.sent, fd.duration.Round(time.Millisecond), float64(fd.sent)/fd.duration.Seconds(), fd.disconnects)

	if exit != 0 {
		t.Errorf("daemon exited %d after SIGTERM", exit)
	}
	if goodStored != len(base)+len(attacked) {
		t.Errorf("%d of the good device's %d acknowledged readings stored", goodStored, len(base)+len(attacked))
	}
	if as.p99 > 2*time.Second {
		t.Errorf("good device p99 %v under attack: over the 2 s bound", as.p99)
	}
	if grew := peak.Load() - rssBase; grew > 100<<20 {
		t.Errorf("RSS grew by %d MiB under attack", grew>>20)
	}
	if huge.sent == 0 || huge.closed != huge.sent || huge.slowest > 5*time.Second {
		t.Errorf("huge CONNECTs: %d of %d closed, slowest %v", huge.closed, huge.sent, huge.slowest)
	}
	if idle[0] < connectTimeout/2 || idle[len(idle)-1] > connectTimeout+10*time.Second {
		t.Errorf("silent sockets closed after %v..%v, want about %v", idle[0], idle[len(idle)-1], connectTimeout)
	}
	if fd.disconnects == 0 {
		t.Error("the flooder on a dropped topic was never disconnected")
	}
	if limit := int(1000*fl.duration.Seconds()) + 1000 + 500; flooded > limit {
		t.Errorf("%d flood readings stored, over rate × time + burst (%d)", flooded, limit)
	}
}

type hostileDaemon struct {
	cmd     *exec.Cmd
	addr    string
	dataDir string
	done    chan struct{}
}

func startHostileDaemon(t *testing.T) *hostileDaemon {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the daemon")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgegate")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr := testutil.FreeAddr(t)
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	d := &hostileDaemon{addr: addr, dataDir: filepath.Join(dir, "data"), done: make(chan struct{})}
	cfg := filepath.Join(dir, "edgegate.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`
gateway: {id: hostile, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  connect_timeout: 3s
  flood_after: 2s
  users:
    - {username: good, password_hash: %q, publish: ["devices/{username}/#"]}
    - {username: flood, password_hash: %q, publish: ["devices/{username}/#"]}
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
unrouted: drop
ops: {log: {level: warn}, clock: {mode: trust}, listen: "off"}
`, d.dataDir, addr, hash("good-pw"), hash("flood-pw"))), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "run", "-c", cfg)
	d.cmd.Stderr = logf
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
		c, err := net.DialTimeout("tcp", addr, time.Second)
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

// device is the well-behaved MQTT 5 client, on its own source address.
type device struct {
	c *paho.Client
	n int
}

func goodDevice(t *testing.T, addr string) *device {
	t.Helper()
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	conn, err := dl.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}, PacketTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "good-1", Username: "good", UsernameFlag: true,
		Password: []byte("good-pw"), PasswordFlag: true, KeepAlive: 60, CleanStart: true}); err != nil {
		t.Fatalf("good device: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return &device{c: c}
}

// measure publishes at QoS 1, one at a time, n messages or while more() holds, and returns
// each publish→PUBACK latency.
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
		dv.n++
		p := &paho.Publish{Topic: "devices/good/temperature", QoS: 1, Payload: []byte(fmt.Sprintf(`{"value": %d}`, dv.n))}
		t0 := time.Now()
		r, err := dv.c.Publish(context.Background(), p)
		if err != nil || r.ReasonCode != 0 {
			code := -1
			if r != nil {
				code = int(r.ReasonCode)
			}
			t.Fatalf("good device publish %d: %v (reason code %#x)", dv.n, err, code)
		}
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
	body := mqttString(nil, "MQTT")
	body = append(body, 4, 0xc2, 0, 60)
	body = mqttString(mqttString(mqttString(body, id), user), pass)
	return append(mqttLength([]byte{0x10}, len(body)), body...)
}

func publishPacket(topic string, payload []byte) []byte {
	body := append(mqttString(nil, topic), payload...)
	return append(mqttLength([]byte{0x30}, len(body)), body...)
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

func (f *floodResult) elapsed() time.Duration {
	s := f.start.Load()
	if s == 0 {
		return 0
	}
	return time.Duration(time.Now().UnixNano() - s)
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
	_, err = st.Read(broker.RawLog, 0, 0, func(_ uint64, v []byte) error {
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

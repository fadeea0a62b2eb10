// Package testutil holds what edgegate's tests share: real upstream brokers (an in-process
// mochi and Debian's mosquitto), paho clients, and collectors of uplink batches.
package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/record"
)

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		// The kernel may give a port just closed again: a test asking for two addresses
		// (two listeners of one config) then got the same one twice.
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
	t.Fatal("no free port not handed out before in 100 tries")
	return ""
}

// handedOut holds the addresses FreeAddr gave in this process.
var handedOut sync.Map

// Mochi is an in-process upstream broker that records every message published to it.
type Mochi struct {
	Server *mqtt.Server
	addr   string
	mu     sync.Mutex
	msgs   []Message
}

// Message is one message an upstream received.
type Message struct {
	Topic   string
	Payload []byte
	At      time.Time // when it arrived (Upstream only)
}

// StartMochi starts an anonymous mochi broker on addr ("127.0.0.1:0" for any port).
func StartMochi(t testing.TB, addr string) *Mochi {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("up", ln)); err != nil {
		t.Fatal(err)
	}
	m := &Mochi{Server: srv, addr: ln.Addr().String()}
	if err := srv.Subscribe("#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if strings.HasPrefix(pk.TopicName, "$") {
			return
		}
		m.mu.Lock()
		m.msgs = append(m.msgs, Message{Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...)})
		m.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Addr is the broker's host:port.
func (m *Mochi) Addr() string { return m.addr }

// URL is the broker's tcp:// URL.
func (m *Mochi) URL() string { return "tcp://" + m.addr }

// Messages returns a copy of what was received so far.
func (m *Mochi) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.msgs...)
}

var closeOnce sync.Map

// Close stops the broker (safe to call twice, unlike mochi's Close).
func (m *Mochi) Close() {
	if _, loaded := closeOnce.LoadOrStore(m, true); !loaded {
		m.Server.Close()
	}
}

// MosquittoPath returns Debian's mosquitto binary, or skips the test with a clear message.
func MosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed, but CI must run this test (.ci/run installs it)")
	}
	t.Skip("mosquitto not installed: apt-get install mosquitto to run this integration test")
	return ""
}

// Mosquitto is a running mosquitto process.
type Mosquitto struct {
	Addr string
	cmd  *exec.Cmd
	conf string
	path string
	// Extra replaces "allow_anonymous true" as the configuration of the listener on Addr
	// (per_listener_settings is on); it may open more listeners after it.
	Extra string
}

// StartMosquitto starts mosquitto on a free loopback port, anonymous, persistence off.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	return StartMosquittoWith(t, "")
}

// StartMosquittoWith starts mosquitto like StartMosquitto, with extra as the configuration
// of its listener (e.g. cafile, certfile, keyfile, require_certificate, password_file).
func StartMosquittoWith(t testing.TB, extra string) *Mosquitto {
	t.Helper()
	m := &Mosquitto{path: MosquittoPath(t), Addr: FreeAddr(t), Extra: extra}
	m.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	m.Start(t)
	t.Cleanup(m.Stop)
	return m
}

// Start (re)starts the process on the same port.
func (m *Mosquitto) Start(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(m.Addr)
	listener := m.Extra
	if listener == "" {
		listener = "allow_anonymous true"
	}
	conf := fmt.Sprintf("per_listener_settings true\npersistence false\nmax_inflight_messages 100\nlistener %s 127.0.0.1\n%s\n", port, listener)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(m.path, "-c", m.conf)
	var out bytes.Buffer
	m.cmd.Stdout, m.cmd.Stderr = &out, &out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", m.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.Stop()
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", m.Addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the process and waits for it.
func (m *Mosquitto) Stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

// Paho connects a paho client (MQTT 3.1.1) to addr and disconnects it at cleanup.
func Paho(t testing.TB, addr, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// Collector subscribes to a broker with paho and keeps every message.
type Collector struct {
	mu   sync.Mutex
	msgs []Message
}

// Collect subscribes to filter on addr.
func Collect(t testing.TB, addr, filter string) *Collector {
	t.Helper()
	c := &Collector{}
	cl := Paho(t, addr, fmt.Sprintf("collector-%d", time.Now().UnixNano()))
	tok := cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...)})
		c.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c
}

// Messages returns a copy of what was received so far.
func (c *Collector) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.msgs...)
}

// Batch is a decoded SPEC §3.3 batch.
type Batch struct {
	V       int               `json:"v"`
	Gateway string            `json:"gateway"`
	Batch   string            `json:"batch"`
	Kind    string            `json:"kind"`
	Records []json.RawMessage `json:"records"`
}

// DecodeBatch parses a batch and its records, failing the test on malformed JSON.
func DecodeBatch(t testing.TB, payload []byte) (Batch, []record.Record) {
	t.Helper()
	var b Batch
	if err := json.Unmarshal(payload, &b); err != nil {
		t.Fatalf("batch is not JSON: %v: %s", err, payload)
	}
	recs := make([]record.Record, len(b.Records))
	for i, raw := range b.Records {
		if err := json.Unmarshal(raw, &recs[i]); err != nil {
			t.Fatalf("record %d: %v: %s", i, err, raw)
		}
	}
	return b, recs
}

// Eventually polls cond every 20 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BinCommand runs a binary a test built for the target (GOARCH): through the emulator
// EDGEGATE_TEST_EXEC names under `make test-arm`, directly otherwise.
func BinCommand(bin string, args ...string) *exec.Cmd {
	if w := os.Getenv("EDGEGATE_TEST_EXEC"); w != "" {
		return exec.Command(w, append([]string{bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

// SelfCommand runs the test binary itself (for tests that need a child process). Under
// `make test-arm` the binary is arm64 and the machine has no binfmt handler for it, so
// EDGEGATE_TEST_EXEC names the emulator to run it with (qemu-aarch64-static).
func SelfCommand(args ...string) *exec.Cmd {
	if w := os.Getenv("EDGEGATE_TEST_EXEC"); w != "" {
		return exec.Command(w, append([]string{os.Args[0]}, args...)...)
	}
	return exec.Command(os.Args[0], args...)
}

// SyncBuffer is a bytes.Buffer safe for a writer (a logger) and a reader at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StalledServer accepts TCP connections on loopback and never reads or answers them (an
// upstream that hangs); it returns its address. Everything closes with the test.
func StalledServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

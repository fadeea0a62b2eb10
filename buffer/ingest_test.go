package buffer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/broker"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
)

// writeConfig writes a gateway config with its broker on addr and data in dir.
func writeConfig(t *testing.T, dir, addr, extra string) string {
	t.Helper()
	y := fmt.Sprintf(`
gateway: {id: gw-buffer-test, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
  max_rate_per_client: 1000000
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
ops: {log: {level: warn}, listen: "off", clock: {mode: trust}}
%s`, dir, addr, extra)
	p := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startGateway runs the real gateway in-process; stop returns once it has stopped.
func startGateway(t *testing.T, path string) (g *gateway.Gateway, stop func()) {
	t.Helper()
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := gatewaytest.Start(t, cfg, gateway.Options{Logger: log})
	return r.G, func() {
		if err := r.Stop(); err != nil {
			t.Errorf("gateway: %v", err)
		}
	}
}

func pahoClient(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func publishAll(t *testing.T, c paho.Client, topic string, payloads []string) {
	t.Helper()
	toks := make([]paho.Token, len(payloads))
	for i, p := range payloads {
		toks[i] = c.Publish(topic, 1, false, p)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %q: %v", payloads[i], tok.Error())
		}
	}
}

// rawIDs opens the stopped gateway's store and returns how often each record id is in
// the raw log.
func rawIDs(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	s, err := buffer.Open(buffer.Options{Dir: filepath.Join(dataDir, "buffer")})
	if err != nil {
		t.Fatalf("the store does not open cleanly: %v", err)
	}
	defer s.Close()
	if lost := s.Lost(); len(lost) > 0 {
		t.Fatalf("recovery lost committed entries: %v", lost)
	}
	ids := map[string]int{}
	_, err = s.Read(logs.Raw, 0, 0, func(_ uint64, v []byte) error {
		var r struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("raw entry %q: %w", v, err)
		}
		ids[r.ID]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestDedupAcrossConnectionsAndRestart(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, addr, "")
	payloads := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf(`{"value": %d, "id": "dev-1:%04d"}`, i, i))
		}
		return out
	}
	g, stop := startGateway(t, path)
	// Two connections send the same 40 readings at the same time.
	var wg sync.WaitGroup
	for _, id := range []string{"dev-1-a", "dev-1-b"} {
		c := pahoClient(t, addr, id)
		wg.Add(1)
		go func() { defer wg.Done(); publishAll(t, c, "devices/dev-1/temperature", payloads(0, 40)) }()
	}
	wg.Wait()
	if d := g.IngestStats().Dups.Load(); d != 40 {
		t.Fatalf("duplicates seen = %d, want 40", d)
	}
	stop()
	// A new process: the ids are remembered on disk.
	g, stop = startGateway(t, path)
	publishAll(t, pahoClient(t, addr, "dev-1-c"), "devices/dev-1/temperature", payloads(30, 50))
	if d := g.IngestStats().Dups.Load(); d != 10 {
		t.Fatalf("duplicates after restart = %d, want 10", d)
	}
	stop()
	ids := rawIDs(t, dir)
	if len(ids) != 50 {
		t.Fatalf("%d distinct ids stored, want 50", len(ids))
	}
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("%s stored %d times", id, n)
		}
	}
}

// A device whose PUBACK was lost resends with DUP set and the same packet id, possibly on a
// new connection and to a restarted gateway: the reading is acknowledged, and stored once.
func TestDupResendAfterLostPUBACK(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("mqtt-v%d", version), func(t *testing.T) {
			dir := t.TempDir()
			addr := testutil.FreeAddr(t)
			path := writeConfig(t, dir, addr, "")
			_, stop := startGateway(t, path)
			// No device id: the record id is the hash of series, ts and value.
			const payload = `{"value": 21.5, "ts": 1764158400123}`
			c := dialMQTT(t, addr, "dev-2", version)
			c.publish(7, false, "devices/dev-2/temperature", payload)
			if _, ok := c.puback(7, 5*time.Second); !ok {
				t.Fatal("no PUBACK for the first send")
			}
			c.conn.Close() // the PUBACK is "lost": the device never saw it
			c = dialMQTT(t, addr, "dev-2", version)
			c.publish(7, true, "devices/dev-2/temperature", payload)
			if code, ok := c.puback(7, 5*time.Second); !ok || code != 0 {
				t.Fatalf("DUP resend: PUBACK %v, code %#x; want an acknowledgement with success", ok, code)
			}
			c.conn.Close()
			stop()
			_, stop = startGateway(t, path)
			c = dialMQTT(t, addr, "dev-2", version)
			c.publish(9, true, "devices/dev-2/temperature", payload)
			if code, ok := c.puback(9, 5*time.Second); !ok || code != 0 {
				t.Fatalf("DUP resend after a restart: PUBACK %v, code %#x", ok, code)
			}
			c.conn.Close()
			stop()
			ids := rawIDs(t, dir)
			if len(ids) != 1 {
				t.Fatalf("stored %v, want one reading once", ids)
			}
			for id, n := range ids {
				if n != 1 {
					t.Fatalf("%s stored %d times", id, n)
				}
			}
		})
	}
}

// With on_full: reject and no room, MQTT 5 publishers get PUBACK reason 0x97 (quota
// exceeded) and MQTT 3.1.1 publishers get no PUBACK and are disconnected, so they resend
// after reconnecting (SPEC §2, DESIGN invariant 1). Each refusal is counted.
func TestRejectWhenFullAtTheBroker(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := buffer.Open(buffer.Options{
		Dir: dir, OnFull: buffer.Reject, ReserveFree: 64 << 20, Logger: log,
		StatFS: func(string) (buffer.FSInfo, error) { return buffer.FSInfo{Avail: 1 << 20}, nil }, // a full disk
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	addr, hook := brokerOnStore(t, store, log)

	v5 := dialMQTT(t, addr, "dev-5", 5)
	v5.publish(1, false, "devices/dev-5/temperature", `{"value": 1}`)
	if code, ok := v5.puback(1, 5*time.Second); !ok || code != 0x97 {
		t.Fatalf("MQTT 5: PUBACK %v with reason %#x, want 0x97", ok, code)
	}
	v4 := dialMQTT(t, addr, "dev-4", 4)
	v4.publish(1, false, "devices/dev-4/temperature", `{"value": 1}`)
	// No PUBACK; the connection is closed (mochi says so with a DISCONNECT first, which
	// 3.1.1 does not define but clients ignore).
	for {
		typ, _ := v4.read(3 * time.Second)
		if typ == 0 {
			break
		}
		if typ != packets.Disconnect {
			t.Fatalf("MQTT 3.1.1: got packet type %d, want no PUBACK and a closed connection", typ)
		}
	}
	v4.conn.Write([]byte{0xc0, 0}) // PINGREQ
	if typ, _ := v4.read(time.Second); typ != 0 {
		t.Fatal("MQTT 3.1.1: the connection is still up after a refusal")
	}
	st := store.Stats()
	if st.Rejected.Load() != 2 || st.RejectedAppends.Load() != 2 || st.Appended.Load() != 0 {
		t.Fatalf("rejected %d in %d appends, appended %d; want 2, 2, 0", st.Rejected.Load(), st.RejectedAppends.Load(), st.Appended.Load())
	}
	if n := hook.Stats().StoreErr.Load(); n != 2 {
		t.Fatalf("ingest counted %d refusals, want 2", n)
	}
}

// brokerOnStore starts a broker on a free address that ingests devices/+device/+metric
// into store, closed with the test.
func brokerOnStore(t *testing.T, store *buffer.Store, log *slog.Logger) (addr string, hook *broker.IngestHook) {
	t.Helper()
	router, err := ingest.NewRouter([]config.Route{{Topic: "devices/+device/+metric", Format: "json", Series: "{device}/{metric}"}}, "forward")
	if err != nil {
		t.Fatal(err)
	}
	addr = testutil.FreeAddr(t)
	cfg, err := gatewaytest.Parse("test.yaml", []byte(fmt.Sprintf(
		"gateway: {id: gw}\nbroker: {allow_anonymous: true, listeners: [{type: tcp, address: %q}]}\n", addr)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(cfg.Broker, broker.IngestOptions{Ctx: context.Background(), Router: router, Store: store, Clock: clock.Real{}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return addr, b.Ingest()
}

// A resend of a reading stored already is acknowledged by a full buffer (on_full: reject):
// it stores nothing. Answered 0x97, an MQTT 5 device publishes the reading anew, and one
// stamped on arrival was then stored a second time under a new id (the soak).
func TestResendAcknowledgedWhenFullAtTheBroker(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var avail atomic.Uint64
	avail.Store(1 << 40)
	store, err := buffer.Open(buffer.Options{
		Dir: dir, OnFull: buffer.Reject, ReserveFree: 64 << 20, Logger: log, DedupTTL: time.Hour,
		StatFS: func(string) (buffer.FSInfo, error) { return buffer.FSInfo{Avail: avail.Load()}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	addr, _ := brokerOnStore(t, store, log)

	const topic, reading = "devices/dev-6/temperature", `{"value": 2}` // stamped on arrival
	c := dialMQTT(t, addr, "dev-6", 5)
	c.publish(3, false, topic, reading)
	if code, ok := c.puback(3, 5*time.Second); !ok || code != 0 {
		t.Fatalf("first copy: PUBACK %v, code %#x; want it stored", ok, code)
	}
	avail.Store(1 << 20) // the disk fills up
	deadline := time.Now().Add(30 * time.Second)
	for pid := uint16(10); ; pid++ { // until the buffer measures it: a new reading is refused
		c.publish(pid, false, topic, fmt.Sprintf(`{"value": %d}`, 100+pid))
		code, ok := c.puback(pid, 5*time.Second)
		if !ok {
			t.Fatalf("no PUBACK for packet %d", pid)
		}
		if code == 0x97 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the buffer never took the disk for full")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.publish(3, true, topic, reading) // its PUBACK was lost: the resend, DUP
	if code, ok := c.puback(3, 5*time.Second); !ok || code != 0 {
		t.Fatalf("resend of the stored reading on a full buffer: PUBACK %v, code %#x; want success", ok, code)
	}
	var copies int
	if _, err := store.Read(logs.Raw, 0, 0, func(_ uint64, v []byte) error {
		var r struct{ Value float64 }
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if r.Value == 2 {
			copies++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if copies != 1 {
		t.Fatalf("the reading is stored %d times, want once", copies)
	}
}

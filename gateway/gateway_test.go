package gateway_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// childEnv names the config file a re-executed test binary runs the gateway on (crash tests).
const childEnv = "EDGEGATE_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(gatewaytest.Child(path, gateway.Options{}))
	}
	// Every goroutine a gateway starts must be gone when the tests end (Run, Close).
	goleak.VerifyTestMain(m,
		// Badger's and ristretto's package-level goroutines outlive every DB.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
	)
}

// writeConfig writes a gateway config for a test: broker on brokerAddr, data in dir, and
// the given extra YAML (routes, uplinks...).
func writeConfig(t testing.TB, dir, brokerAddr, extra string) string {
	t.Helper()
	y := fmt.Sprintf(`
gateway: {id: gw-test, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}", labels: {site: lab}}
  - {topic: "plain/+device", format: number, series: "{device}/value", unit: V}
ops: {log: {level: warn}}
%s`, dir, brokerAddr, extra)
	p := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type running struct {
	g    *gateway.Gateway
	stop func() error
}

func start(t testing.TB, path string, clk clock.Clock) *running {
	t.Helper()
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g := gatewaytest.Start(t, cfg, gateway.Options{Logger: testLogger(t), Clock: clk, FlushTimeout: 2 * time.Second})
	return &running{g: g.G, stop: g.Stop}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// upstreamRecords decodes every batch the upstream got, checking the envelope.
func upstreamRecords(t *testing.T, msgs []testutil.Message) []record.Record {
	t.Helper()
	var out []record.Record
	for _, m := range msgs {
		if m.Topic != "edgegate/gw-test/records" {
			t.Fatalf("batch on topic %q, want edgegate/gw-test/records", m.Topic)
		}
		b, recs := testutil.DecodeBatch(t, m.Payload)
		if b.V != 1 || b.Gateway != "gw-test" || b.Kind != "records" || len(b.Batch) != 32 {
			t.Fatalf("bad envelope: %+v", b)
		}
		out = append(out, recs...)
	}
	return out
}

func byID(recs []record.Record) map[string]record.Record {
	m := map[string]record.Record{}
	for _, r := range recs {
		m[r.ID] = r
	}
	return m
}

// checkEndToEnd publishes readings of every supported form and checks what the upstream
// received, field by field.
func checkEndToEnd(t *testing.T, brokerAddr string, received func() []testutil.Message) {
	c := testutil.Paho(t, brokerAddr, "device-1")
	publish(t, c, "devices/d1/temperature", 1, `{"value": 21.5, "ts": 1764158400123, "id": "d1:000001"}`)
	publish(t, c, "devices/d2/humidity", 0, `{"value": 40, "ts": "2026-11-26T12:00:00.5Z", "unit": "%RH"}`)
	publish(t, c, "plain/p1", 1, `3.25`)
	publish(t, c, "other/topic", 1, `not json at all`)
	// A resend of the first reading (same device id): acknowledged, stored once.
	publish(t, c, "devices/d1/temperature", 1, `{"value": 21.5, "ts": 1764158400123, "id": "d1:000001"}`)
	// A reading without id twice: the hash id makes the second a duplicate too.
	publish(t, c, "devices/d3/temperature", 1, `{"value": 19, "ts": 1764158400000}`)
	publish(t, c, "devices/d3/temperature", 1, `{"value": 19, "ts": 1764158400000}`)

	var recs []record.Record
	testutil.Eventually(t, 15*time.Second, "5 records upstream", func() bool {
		recs = upstreamRecords(t, received())
		return len(recs) >= 5
	})
	time.Sleep(300 * time.Millisecond) // anything extra (a duplicate) would show up now
	recs = upstreamRecords(t, received())
	if len(recs) != 5 {
		t.Fatalf("upstream got %d records, want 5 (duplicates must be dropped): %+v", len(recs), recs)
	}
	ids := byID(recs)
	r1, ok := ids["d1:000001"]
	if !ok {
		t.Fatalf("record d1:000001 missing: %+v", recs)
	}
	if r1.Series != "d1/temperature" || r1.Value != 21.5 || r1.TS.UnixMilli() != 1764158400123 || r1.Topic != "devices/d1/temperature" || r1.Labels["site"] != "lab" {
		t.Errorf("d1 record = %+v", r1)
	}
	found := map[string]record.Record{}
	for _, r := range recs {
		found[r.Series+"|"+r.Topic] = r
	}
	r2 := found["d2/humidity|devices/d2/humidity"]
	if r2.Value != 40 || r2.Unit != "%RH" || !r2.TS.Equal(time.Date(2026, 11, 26, 12, 0, 0, 500e6, time.UTC)) {
		t.Errorf("d2 record = %+v", r2)
	}
	if r2.ID != record.HashID("d2/humidity", r2.TS, 40) {
		t.Errorf("d2 id %q is not the hash of (series, ts, value)", r2.ID)
	}
	r3 := found["p1/value|plain/p1"]
	if r3.Value != 3.25 || r3.Unit != "V" || time.Since(r3.TS) > time.Minute {
		t.Errorf("bare number record = %+v", r3)
	}
	raw := found["|other/topic"]
	if !raw.Raw || string(raw.Payload) != "not json at all" {
		t.Errorf("unrouted message not forwarded raw: %+v", raw)
	}
	if r := found["d3/temperature|devices/d3/temperature"]; r.Value != 19 {
		t.Errorf("d3 record = %+v", r)
	}
}

func TestEndToEndToMochi(t *testing.T) {
	up := testutil.StartMochi(t, "127.0.0.1:0")
	dir := t.TempDir()
	path := writeConfig(t, dir, "127.0.0.1:0", fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: 100ms}}
  - {name: archive, type: file, path: %q, batch: {linger: 100ms}}
`, up.URL(), filepath.Join(dir, "archive.jsonl")))
	r := start(t, path, clock.Real{})
	checkEndToEnd(t, r.g.BrokerAddrs()[0], up.Messages)

	// The file uplink wrote the same records, one batch per line.
	data, err := os.ReadFile(filepath.Join(dir, "archive.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		_, recs := testutil.DecodeBatch(t, []byte(line))
		n += len(recs)
	}
	if n != 5 {
		t.Errorf("archive file holds %d records, want 5", n)
	}
}

func TestEndToEndToMosquitto(t *testing.T) {
	mq := testutil.StartMosquitto(t)
	got := testutil.Collect(t, mq.Addr, "edgegate/#")
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: "tcp://%s", batch: {linger: 100ms}}
`, mq.Addr))
	r := start(t, path, clock.Real{})
	checkEndToEnd(t, r.g.BrokerAddrs()[0], got.Messages)
}

func TestMalformedIsRefusedNotStored(t *testing.T) {
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", "")
	r := start(t, path, clock.Real{})
	c := testutil.Paho(t, r.g.BrokerAddrs()[0], "bad-device")
	// QoS 0: nothing to refuse with, but it must not be stored.
	publish(t, c, "devices/d1/temperature", 0, `{"value": "warm"}`)
	// QoS 1 on 3.1.1: refused for good, so acknowledged (SPEC §2: a withheld PUBACK would
	// fill the client's in-flight window) and kept in the refused log; the connection stays up.
	tok := c.Publish("devices/d1/temperature", 1, false, `{"temp": "warm"}`) // no numeric field
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Errorf("a malformed QoS 1 publish was not acknowledged (err %v)", tok.Error())
	}
	publish(t, c, "devices/d1/temperature", 1, `{"value": 1}`)
	if !c.IsConnectionOpen() {
		t.Error("connection closed after a malformed publish")
	}
	st := r.g.IngestStats()
	testutil.Eventually(t, 5*time.Second, "malformed count", func() bool { return st.Malformed.Load() == 2 })
	if last, _ := r.g.Store().LastSeq("raw"); last != 1 {
		t.Errorf("raw log holds %d entries, want only the good one", last)
	}
	testutil.Eventually(t, 5*time.Second, "both kept in the refused log", func() bool {
		n, _ := r.g.Store().Count("refused")
		return n == 2
	})
}

func TestSimSensorReadingsFlowThroughIngest(t *testing.T) {
	up := testutil.StartMochi(t, "127.0.0.1:0")
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
sensors:
  - {name: s1, driver: sim, interval: 50ms, sim: {kind: random_walk, min: 0, max: 10, seed: 7, metric: temperature, unit: Cel}}
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: 50ms}}
`, up.URL()))
	r := start(t, path, clock.Real{})
	local := testutil.Collect(t, r.g.BrokerAddrs()[0], "sensors/#")
	testutil.Eventually(t, 10*time.Second, "sim readings upstream and locally", func() bool {
		return len(upstreamRecords(t, up.Messages())) >= 3 && len(local.Messages()) >= 3
	})
	for _, rec := range upstreamRecords(t, up.Messages()) {
		if rec.Series != "s1/temperature" || rec.Topic != "sensors/s1/temperature" || rec.Unit != "Cel" || rec.Value < 0 || rec.Value > 10 {
			t.Fatalf("sim record = %+v", rec)
		}
	}
}

// TestCrashKill9 runs the gateway in a child process, kills it with SIGKILL while a client
// publishes QoS 1 readings with ids, restarts it, and checks that every reading the client
// saw acknowledged reaches the upstream.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	up := testutil.StartMochi(t, "127.0.0.1:0")
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, addr, fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: 20ms, max_records: 50}}
`, up.URL()))
	startChild := func() *exec.Cmd {
		cmd := testutil.SelfCommand("-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = testWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	acked := map[string]bool{}
	seq := 0
	for round := 0; round < 3; round++ {
		cmd := startChild()
		var c paho.Client
		testutil.Eventually(t, 10*time.Second, "child broker up", func() bool {
			o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("crash-dev").SetAutoReconnect(false)
			c = paho.NewClient(o)
			tok := c.Connect()
			return tok.WaitTimeout(time.Second) && tok.Error() == nil
		})
		killAt := time.Now().Add(time.Duration(300+round*150) * time.Millisecond)
		type pending struct {
			id  string
			tok paho.Token
		}
		var inflight []pending
		for time.Now().Before(killAt) {
			seq++
			id := fmt.Sprintf("crash:%06d", seq)
			tok := c.Publish("devices/c1/temperature", 1, false, fmt.Sprintf(`{"value": %d, "id": %q}`, seq, id))
			inflight = append(inflight, pending{id, tok})
			if len(inflight) >= 20 {
				for _, p := range inflight {
					if p.tok.WaitTimeout(5*time.Second) && p.tok.Error() == nil {
						acked[p.id] = true
					}
				}
				inflight = inflight[:0]
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		for _, p := range inflight {
			if p.tok.WaitTimeout(2*time.Second) && p.tok.Error() == nil {
				acked[p.id] = true
			}
		}
		c.Disconnect(0)
	}
	if len(acked) < 50 {
		t.Fatalf("only %d publishes were acknowledged; the test did not exercise much", len(acked))
	}
	// A last, clean run delivers the backlog.
	cmd := startChild()
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()
	var missing []string
	testutil.Eventually(t, 30*time.Second, "every acknowledged id upstream", func() bool {
		ids := byID(upstreamRecords(t, up.Messages()))
		missing = missing[:0]
		for id := range acked {
			if _, ok := ids[id]; !ok {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	})
	t.Logf("%d acknowledged readings over 3 kills, all delivered", len(acked))
}

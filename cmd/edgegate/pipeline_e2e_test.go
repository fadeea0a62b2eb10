package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/record"
)

// e2eConfig has three pipelines, one per window kind, with lateness, over device
// readings; idle is off so the daemon is deterministic (processing time plays no part).
const e2eConfig = `gateway: {id: gw-e2e, data_dir: "%[1]s/data"}
broker:
  listeners: [{type: tcp, address: "%[2]s"}]
  allow_anonymous: true
routes:
  - topic: "devices/+device/+metric"
    format: json
    series: "{device}/{metric}"
pipelines:
  - name: tumble
    input: "devices/+/temperature"
    window: {type: tumbling, size: 10s}
    aggregates: [count, sum, min, max, mean, first, last, stddev]
    out_of_order: 2s
    allowed_lateness: 5s
    idle: 0s
  - name: slide
    window: {type: sliding, size: 30s, every: 10s}
    aggregates: [count, mean]
    out_of_order: 3s
    idle: 0s
  - name: sess
    input: "devices/#"
    window: {type: session, gap: 5s}
    aggregates: [count, sum, first, last]
    out_of_order: 2s
    allowed_lateness: 20s
    accumulation: discarding
    idle: 0s
uplinks:
  - name: archive
    type: file
    path: "%[1]s/upstream.jsonl"
    batch: {max_records: 50, linger: 20ms}
  - name: tumble-only
    type: file
    path: "%[1]s/tumble-only.jsonl"
    forward: ["agg/tumble"]
    batch: {max_records: 50, linger: 20ms}
ops: {log: {level: warn}, listen: "off"}
`

func writeE2EConfig(t *testing.T, dir, addr string) string {
	t.Helper()
	p := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(e2eConfig, dir, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type devReading struct {
	topic, payload, id string
}

// e2eStream is n device readings in publish order: event time moves forward with jitter,
// some readings are a little late, a few too late; two metrics, five devices.
func e2eStream(seed uint64, n int) []devReading {
	r := rand.New(rand.NewPCG(seed, 42))
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixMilli()
	var out []devReading
	now := t0
	for i := 0; i < n; i++ {
		now += r.Int64N(400)
		ts := now - r.Int64N(2500)
		switch r.IntN(40) {
		case 0:
			ts = now - 9000 // late, within lateness for some pipelines
		case 1:
			ts = now - 60000 // too late everywhere
		}
		if r.IntN(200) == 0 {
			now += 20000 // a silence that closes sessions
		}
		dev := fmt.Sprintf("d%d", r.IntN(5))
		metric := "temperature"
		if r.IntN(3) == 0 {
			metric = "humidity"
		}
		id := fmt.Sprintf("%s-%d", dev, i)
		v := float64(r.IntN(4000))/16 - 50
		out = append(out, devReading{
			topic:   "devices/" + dev + "/" + metric,
			payload: fmt.Sprintf(`{"id":%q,"value":%s,"ts":%d}`, id, strconv.FormatFloat(v, 'g', -1, 64), ts),
			id:      id,
		})
	}
	return out
}

func publishQoS1(c paho.Client, topic, payload string) error {
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("no PUBACK within 10s")
	}
	return tok.Error()
}

// byPipeline splits pane JSON lines by their pipeline, keeping order.
func byPipeline(t *testing.T, lines []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, l := range lines {
		name := record.PipelineOf([]byte(l))
		if name == "" {
			t.Fatalf("not a pane: %s", l)
		}
		out[name] = append(out[name], l)
	}
	return out
}

// eachUpstream calls fn for every record of the file uplink's batches, in file order, with
// its batch's kind and its id. A line that does not parse (torn by a kill during a write)
// is skipped: that batch is sent again. A missing file has no records.
func eachUpstream(t *testing.T, path string, fn func(kind, id string, r json.RawMessage)) {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var b struct {
			Kind    string            `json:"kind"`
			Records []json.RawMessage `json:"records"`
		}
		if json.Unmarshal(sc.Bytes(), &b) != nil {
			continue
		}
		for _, r := range b.Records {
			var id struct{ ID string }
			if err := json.Unmarshal(r, &id); err != nil {
				t.Fatal(err)
			}
			fn(b.Kind, id.ID, r)
		}
	}
}

// upstreamPanes returns every pane upstream by id (failing on an id seen with two
// contents) and every record id.
func upstreamPanes(t *testing.T, path string) (panes map[string]string, records map[string]bool) {
	t.Helper()
	panes, records = map[string]string{}, map[string]bool{}
	eachUpstream(t, path, func(kind, id string, r json.RawMessage) {
		if kind == "records" {
			records[id] = true
			return
		}
		if old, ok := panes[id]; ok && old != string(r) {
			t.Fatalf("pane %s upstream twice with different content:\n%s\n%s", id, old, r)
		}
		panes[id] = string(r)
	})
	return
}

// replayLines runs the records (SPEC §3.1 JSON, arrival order) through replay and
// returns the panes a live daemon emits for them: all but those the end of input fires.
func replayLines(t *testing.T, cfgPath string, records []string) []string {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(records, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("", "replay", "-c", cfgPath, "--input", in)
	if code != exitOK {
		t.Fatalf("replay exit %d: %s", code, errs)
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}

// TestLiveEqualsReplay feeds the daemon through MQTT and checks that its panes — in the
// aggregate log, on the local output topics and upstream — are the panes `edgegate replay`
// computes over the same records in the same order: same ids, same contents.
func TestLiveEqualsReplay(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeE2EConfig(t, dir, "127.0.0.1:0")
	cfg, err := gatewaytest.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	run := gatewaytest.Start(t, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler)})
	g := run.G
	addr := g.BrokerAddrs()[0]

	var mu sync.Mutex
	local := map[string][]string{} // topic → payloads
	sub := testutil.Paho(t, addr, "local-sub")
	if tok := sub.Subscribe("agg/#", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		local[m.Topic()] = append(local[m.Topic()], string(m.Payload()))
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	stream := e2eStream(1, 600)
	pub := testutil.Paho(t, addr, "dev-pub")
	for _, r := range stream {
		if err := publishQoS1(pub, r.topic, r.payload); err != nil {
			t.Fatal(err)
		}
	}
	last, _ := g.Store().LastSeq("raw")
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range g.Pipelines() {
		for p.Stats().Position.Load() <= last {
			if time.Now().After(deadline) {
				t.Fatalf("pipeline %s stuck at %d of %d", p.Name(), p.Stats().Position.Load(), last)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if last != uint64(len(stream)) {
		t.Fatalf("raw log ends at %d, %d readings were published", last, len(stream))
	}
	watermarks := map[string]int64{}
	tooLate := map[string]uint64{}
	for _, p := range g.Pipelines() {
		watermarks[p.Name()] = p.Stats().Watermark.Load()
		tooLate[p.Name()] = p.Stats().TooLate.Load()
	}
	nagg, _ := g.Store().LastSeq("agg")
	// /status reports each pipeline: panes by timing, late drops, watermark, last panes.
	var total uint64
	for _, ps := range g.Status().Pipelines {
		for _, n := range ps.Panes {
			total += n
		}
		if ps.LateDropped != tooLate[ps.Name] || ps.Watermark == nil || ps.Watermark.UnixMilli() != watermarks[ps.Name] || len(ps.LastPanes) == 0 {
			t.Fatalf("status of %s: %+v", ps.Name, ps)
		}
	}
	if total != nagg {
		t.Fatalf("status counts %d panes, the aggregate log has %d", total, nagg)
	}
	// Local subscribers get every pane (compared below) and late record.
	deadline = time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(local["agg/tumble"]) + len(local["agg/slide"]) + len(local["agg/sess"])
		mu.Unlock()
		if uint64(n) >= nagg || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A clean stop flushes the uplink: every record and pane is upstream, in log order
	// (the logs themselves are trimmed once delivered).
	if err := run.Stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	up := filepath.Join(dir, "upstream.jsonl")
	raw := upstreamRecords(t, up)
	agg := upstreamPaneLines(t, up)
	if len(raw) != len(stream) || uint64(len(agg)) != nagg {
		t.Fatalf("upstream: %d records of %d, %d panes of %d", len(raw), len(stream), len(agg), nagg)
	}

	live := byPipeline(t, agg)
	want := byPipeline(t, replayLines(t, cfgPath, raw))
	for _, name := range []string{"tumble", "slide", "sess"} {
		l, w := live[name], want[name]
		if len(l) == 0 || len(l) > len(w) {
			t.Fatalf("%s: %d live panes, replay has %d", name, len(l), len(w))
		}
		for i := range l {
			if l[i] != w[i] {
				t.Fatalf("%s pane %d:\n live   %s\n replay %s", name, i, l[i], w[i])
			}
		}
		// What replay adds is the end of input: ON_TIME panes of windows the live
		// watermark has not passed.
		for _, extra := range w[len(l):] {
			p, _ := record.DecodePane([]byte(extra))
			if p.Pane.Timing != "ON_TIME" || ms(t, p.End) <= watermarks[name] {
				t.Fatalf("%s: replay pane missing live: %s (live W %d)", name, extra, watermarks[name])
			}
		}
	}
	if tooLate["tumble"] == 0 {
		t.Fatal("the stream was meant to have records too late")
	}
	// An uplink's forward filters select panes by their pipeline's output topic.
	only := filepath.Join(dir, "tumble-only.jsonl")
	if got := upstreamPaneLines(t, only); strings.Join(got, "\n") != strings.Join(live["tumble"], "\n") {
		t.Fatalf("tumble-only uplink: %d panes, pipeline tumble emitted %d", len(got), len(live["tumble"]))
	}
	if recs := upstreamRecords(t, only); len(recs) != 0 {
		t.Fatalf("tumble-only uplink sent %d records", len(recs))
	}

	mu.Lock()
	for name, l := range live {
		if got := local["agg/"+name]; strings.Join(got, "\n") != strings.Join(l, "\n") {
			t.Errorf("agg/%s: %d panes received locally, %d in the log", name, len(got), len(l))
		}
		if got := uint64(len(local["agg/"+name+"/late"])); got != tooLate[name] {
			t.Errorf("agg/%s/late: %d records, the pipeline dropped %d", name, got, tooLate[name])
		}
	}
	mu.Unlock()
}

type e2eDaemon struct {
	t       *testing.T
	cfg     string
	addr    string
	logPath string
	proc    *proc
}

// proc is one daemon process; done is closed once it exited (err is then set).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (d *e2eDaemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer logf.Close()
	p := &proc{cmd: testutil.SelfCommand("run", "-c", d.cfg), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), mainEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	// Whatever happens to the test, the process does not outlive it.
	d.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	d.proc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(d.logPath)
			d.t.Fatalf("daemon exited at start: %v\n%s", p.err, log)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon does not listen on %s", d.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *e2eDaemon) kill() {
	d.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-d.proc.done
}

func (d *e2eDaemon) stop() {
	d.t.Helper()
	p := d.proc
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			log, _ := os.ReadFile(d.logPath)
			d.t.Fatalf("daemon stopped with %v\n%s", p.err, log)
		}
	case <-time.After(30 * time.Second):
		d.t.Fatal("daemon did not stop on SIGTERM")
	}
}

// feed publishes the stream in order, QoS 1, one at a time. When killAt ≥ 0, the daemon is
// SIGKILLed from another goroutine once reading killAt is acknowledged, at a random moment
// of what follows (publishes, pipeline steps, uplink sends in flight); the reading whose
// publish failed is sent again to the restarted daemon, as a device would.
func feed(t *testing.T, d *e2eDaemon, stream []devReading, killAt int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 3))
	c := testutil.Paho(t, d.addr, "dev")
	killed := make(chan struct{})
	restarted := false
	armed := false
	for i := 0; i < len(stream); {
		if err := publishQoS1(c, stream[i].topic, stream[i].payload); err != nil {
			if killAt < 0 || restarted {
				t.Fatalf("publish %d: %v", i, err)
			}
			<-killed
			t.Logf("daemon killed after reading %d was acknowledged; publishing reading %d failed: %v", killAt, i, err)
			c.Disconnect(0)
			d.start()
			restarted = true
			c = testutil.Paho(t, d.addr, "dev")
			continue // the same reading again: a duplicate id if it was stored
		}
		if i == killAt && !armed {
			armed = true
			delay := time.Duration(r.Int64N(int64(30 * time.Millisecond)))
			go func() { time.Sleep(delay); d.kill(); close(killed) }()
		}
		i++
	}
	if killAt >= 0 && !restarted {
		<-killed
		t.Logf("daemon killed after the last reading was acknowledged")
		d.start()
	}
	c.Disconnect(250)
}

// upstreamRecords returns the records upstream in arrival order: the uplink sends the
// raw log in order, and a batch sent again after a crash repeats records already seen.
func upstreamRecords(t *testing.T, path string) []string {
	return upstreamFirstSeen(t, path, "records")
}

// upstreamPaneLines returns the panes upstream in the order they were first sent.
func upstreamPaneLines(t *testing.T, path string) []string {
	return upstreamFirstSeen(t, path, "aggregates")
}

// upstreamFirstSeen returns the records of the file uplink's batches of that kind, each id
// once, in the order first sent.
func upstreamFirstSeen(t *testing.T, path, kind string) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	eachUpstream(t, path, func(k, id string, r json.RawMessage) {
		if k == kind && !seen[id] {
			seen[id] = true
			out = append(out, string(r))
		}
	})
	return out
}

// livePanes is the oracle: what the daemon's pipelines emit for records in this order
// (replay's core, without the end of input).
func livePanes(t *testing.T, cfgPath string, records []string) map[string]string {
	t.Helper()
	cfg, err := gatewaytest.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var specs []pipeline.Spec
	for _, pc := range cfg.Pipelines {
		s, err := pipeline.SpecFromConfig(pc)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	rp, err := pipeline.NewReplay(specs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range records {
		err := rp.Record([]byte(r), func(b []byte) error {
			p, err := record.DecodePane(b)
			if err != nil {
				return err
			}
			out[p.ID] = string(b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestCrashRestart SIGKILLs the daemon mid-stream, restarts it and finishes the stream:
// the panes upstream, deduplicated by id, are exactly an uninterrupted run's (and what
// replay computes), and no id ever arrives with two contents (upstreamPanes checks).
func TestCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns daemons")
	}
	stream := e2eStream(7, 1000)
	runOnce := func(killAt int, seed uint64) map[string]string {
		dir := t.TempDir()
		d := &e2eDaemon{t: t, addr: testutil.FreeAddr(t), logPath: filepath.Join(dir, "daemon.log")}
		d.cfg = writeE2EConfig(t, dir, d.addr)
		up := filepath.Join(dir, "upstream.jsonl")
		d.start()
		feed(t, d, stream, killAt, seed)
		// Every record upstream, in arrival order, then every pane they make.
		deadline := time.Now().Add(60 * time.Second)
		var recs []string
		for {
			if recs = upstreamRecords(t, up); len(recs) >= len(stream) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill at %d: %d records upstream of %d", killAt, len(recs), len(stream))
			}
			time.Sleep(50 * time.Millisecond)
		}
		want := livePanes(t, d.cfg, recs)
		for {
			panes, _ := upstreamPanes(t, up)
			if len(panes) >= len(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill at %d: %d panes upstream of %d", killAt, len(panes), len(want))
			}
			time.Sleep(50 * time.Millisecond)
		}
		d.stop()
		panes, records := upstreamPanes(t, up)
		if len(records) != len(stream) {
			t.Fatalf("kill at %d: %d distinct records upstream, %d published", killAt, len(records), len(stream))
		}
		if len(panes) != len(want) {
			t.Fatalf("kill at %d: %d panes upstream, replay says %d", killAt, len(panes), len(want))
		}
		for id, p := range want {
			if panes[id] != p {
				t.Fatalf("kill at %d: pane %s\n upstream %s\n replay   %s", killAt, id, panes[id], p)
			}
		}
		return panes
	}
	clean := runOnce(-1, 0)
	for i, killAt := range []int{300, 700} {
		crashed := runOnce(killAt, uint64(i))
		if len(crashed) != len(clean) {
			t.Fatalf("kill at %d: %d panes upstream, uninterrupted run %d", killAt, len(crashed), len(clean))
		}
		for id, p := range clean {
			if crashed[id] != p {
				t.Fatalf("kill at %d: pane %s\n crashed %s\n clean   %s", killAt, id, crashed[id], p)
			}
		}
	}
}

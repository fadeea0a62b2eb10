package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/cloud/beam/internal/edgebin"
	"github.com/edgegate/edgegate/cloud/beam/internal/prismrace"
	"github.com/edgegate/edgegate/cloud/beam/wire"
)

var edgegate, fleetBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleet-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	edgegate, err = edgebin.Build(dir)
	if err == nil {
		fleetBin = filepath.Join(dir, "fleet")
		var out []byte
		if out, err = exec.Command("go", "build", "-o", fleetBin, ".").CombinedOutput(); err != nil {
			err = fmt.Errorf("go build ./cmd/fleet: %w\n%s", err, out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// gateway is one edgegate daemon run with a file uplink.
type gateway struct {
	id, dir, file string
	port          int
	cmd           *exec.Cmd
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newGateway writes the config of a daemon: a broker on a free port open to anonymous
// clients, readings routed per site and device, a 10 s pipeline, and a file uplink.
// dedupTTL 0 turns the daemon's own ingest dedup off.
func newGateway(t *testing.T, dir, id, dedupTTL string) *gateway {
	g := &gateway{id: id, dir: filepath.Join(dir, id), file: filepath.Join(dir, id+".jsonl"), port: freePort(t)}
	cfg := fmt.Sprintf(`gateway: {id: %s, data_dir: %s}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:%d"}]
  allow_anonymous: true
routes:
  - topic: "sites/+site/+device/+metric"
    format: json
    series: "{device}/{metric}"
    labels: {site: "{site}"}
unrouted: forward
dedup: {ttl: %s}
pipelines:
  - name: gw-10s
    input: "sites/#"
    window: {type: tumbling, size: 10s}
    aggregates: [count, mean]
    out_of_order: 2s
    idle: 1s
uplinks:
  - name: archive
    type: file
    path: %s
    batch: {max_records: 20, linger: 200ms}
ops: {listen: "off", log: {level: warn}, clock: {mode: trust}}
`, id, g.dir, g.port, dedupTTL, g.file)
	if err := os.WriteFile(g.dir+".yaml", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return g
}

// start runs the daemon and waits until its broker accepts connections.
func (g *gateway) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(g.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(edgegate, "run", "-c", g.dir+".yaml")
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(g.dir + ".log")
			t.Fatalf("%s: broker not listening after 60 s: %v\n%s", g.id, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop signals the daemon and waits for it to exit.
func (g *gateway) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := g.cmd.Wait()
	if sig == syscall.SIGTERM && err != nil {
		log, _ := os.ReadFile(g.dir + ".log")
		t.Fatalf("%s: exit after SIGTERM: %v\n%s", g.id, err, log)
	}
}

// reading is one device message.
type reading struct {
	topic   string
	payload string
}

// readings makes n readings of a device at site, 2 s apart from base (Unix ms), with the
// device's own ids when withIDs, else none (edgegate then hashes series, ts and value).
func readings(site, device string, base int64, n int, withIDs bool) []reading {
	var rs []reading
	for i := range n {
		ts := base + int64(i)*2000
		v := float64((i*37+len(device)*11)%160-40) / 4
		id := ""
		if withIDs {
			id = fmt.Sprintf(`,"id":"%s:%04d"`, device, i)
		}
		rs = append(rs, reading{
			topic:   fmt.Sprintf("sites/%s/%s/temperature", site, device),
			payload: fmt.Sprintf(`{"value":%s,"ts":%d%s}`, wire.FormatFloat(v), ts, id),
		})
	}
	return rs
}

// interleave merges the devices' readings as they would arrive: in turn, so in event
// time order (each list is in order, and their times interleave).
func interleave(lists ...[]reading) []reading {
	var out []reading
	for i := 0; ; i++ {
		n := len(out)
		for _, l := range lists {
			if i < len(l) {
				out = append(out, l[i])
			}
		}
		if len(out) == n {
			return out
		}
	}
}

// publish sends readings at QoS 1, each acknowledged (so stored) before the next.
func publish(t *testing.T, g *gateway, rs []reading) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", g.port)).
		SetClientID(fmt.Sprintf("test-%s-%d", g.id, time.Now().UnixNano())).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", g.id, tok.Error())
	}
	defer c.Disconnect(250)
	for _, r := range rs {
		if tok := c.Publish(r.topic, 1, false, r.payload); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: publish %s: %v", g.id, r.payload, tok.Error())
		}
	}
}

// batchLine is one line of a file uplink.
type batchLine struct {
	gateway, kind string
	items         []json.RawMessage
}

func readFile(t *testing.T, path string) []batchLine {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []batchLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		b, err := wire.DecodeBatch(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, batchLine{b.Gateway, b.Kind, b.Items})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// recordCount returns how many readings (records with a value) the file holds.
func recordCount(t *testing.T, path string) int {
	n := 0
	for _, b := range readFile(t, path) {
		if b.kind != wire.KindRecords {
			continue
		}
		for _, it := range b.items {
			if r, err := wire.DecodeRecord(it); err == nil && !r.Raw {
				n++
			}
		}
	}
	return n
}

// waitRecords waits until the gateway's file holds at least n readings.
func waitRecords(t *testing.T, g *gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for recordCount(t, g.file) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d readings in %s after 90 s, want %d", g.id, recordCount(t, g.file), g.file, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFleetOverTwoGateways runs two real edgegate daemons with file uplinks, publishes
// readings into each (a device both hear, resends one daemon stores twice, a kill -9 and
// restart), runs the fleet job on their files on Prism, and checks its panes against a
// plain computation from the deduplicated records.
func TestFleetOverTwoGateways(t *testing.T) {
	dir := t.TempDir()
	a := newGateway(t, dir, "gw-a", "24h")
	b := newGateway(t, dir, "gw-b", "0") // no ingest dedup: resends reach the uplink
	base := time.Now().Add(-3*time.Minute).Truncate(10*time.Second).UnixMilli() + 500

	a1 := readings("north", "a1", base, 30, true)
	a2 := readings("north", "a2", base+700, 30, false)
	b1 := readings("south", "b1", base+300, 30, true)
	b2 := readings("south", "b2", base+1100, 30, false)
	s1 := readings("north", "s1", base+200, 30, false) // heard by both gateways
	rawMsg := []reading{{"unrouted/thing", "hello"}}

	a.start(t)
	b.start(t)
	defer func() {
		for _, g := range []*gateway{a, b} {
			if g.cmd.ProcessState == nil {
				g.cmd.Process.Kill()
				g.cmd.Wait()
			}
		}
	}()
	publish(t, a, slices.Concat(interleave(a1[:15], a2[:15], s1[:15]), rawMsg))
	publish(t, b, interleave(b1, b2, s1))
	waitRecords(t, a, 45)
	// gw-a dies without flushing after taking more readings, and comes back: what was
	// acknowledged but not yet sent goes out after the restart (and what was sent but not
	// committed, again).
	publish(t, a, interleave(a1[15:], a2[15:], s1[15:]))
	a.stop(t, syscall.SIGKILL)
	a.start(t)
	publish(t, a, a1[:5])  // resends gw-a's own dedup drops at ingest
	publish(t, b, b1[:10]) // resends gw-b stores again (dedup off)
	waitRecords(t, a, 90)
	waitRecords(t, b, 100)
	time.Sleep(2 * time.Second) // idle: the daemons' windows close and their panes go out
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)

	in := collect(t, a.file, b.file)
	t.Logf("input: %d readings (%d distinct ids), %d raw, %d gateway panes %v (%d distinct per gateway, %d ids used by both gateways)",
		in.readings, len(in.distinct), in.raw, in.panes, in.panesBy, len(in.distinctPanes), in.sharedPaneIDs)
	if in.readings == len(in.distinct) {
		t.Fatal("the input holds no duplicate reading: the test would prove nothing")
	}
	// Both gateways aggregate device s1 in the same pipeline: SPEC §3.2's pane id (a hash of
	// pipeline, key, bounds and index) gives their panes the same ids, which is why the job
	// keys gateway panes by gateway and id. If ids ever name the gateway, this changes.
	if in.sharedPaneIDs == 0 {
		t.Error("no pane id is used by both gateways: did SPEC §3.2 put the gateway in pane ids? Then gateway panes can be deduplicated by id alone")
	}

	for _, run := range []struct {
		name, spec, groupBy string
	}{
		{"tumbling-series", "{window: {type: tumbling, size: 10s}, aggregates: [count, sum, min, max, mean, first, last, stddev]}", "series"},
		{"sliding-site", "{window: {type: sliding, size: 20s, every: 10s}, aggregates: [count, sum, min, max, mean, first, last, stddev], accumulation: discarding}", "label:site"},
	} {
		t.Run(run.name, func(t *testing.T) {
			out := filepath.Join(dir, run.name+".jsonl")
			panesOut := filepath.Join(dir, run.name+"-panes.jsonl")
			var stderr []byte
			var took time.Duration
			for attempt := 1; ; attempt++ {
				os.Remove(out)
				os.Remove(panesOut)
				cmd := exec.Command(fleetBin, "--input", filepath.Join(dir, "gw-*.jsonl"), "--output", out,
					"--panes_output", panesOut, "--spec", run.spec, "--group_by", run.groupBy, "--name", "fleet")
				start := time.Now()
				var err error
				stderr, err = cmd.CombinedOutput()
				took = time.Since(start)
				if err == nil {
					break
				}
				if !prismrace.Is(string(stderr)) || attempt == prismrace.Attempts {
					t.Fatalf("fleet: %v\n%s", err, stderr)
				}
				t.Log("Prism crashed in its progress race; running the job again")
			}
			metrics := parseMetrics(t, string(stderr))
			t.Logf("fleet job on the test input: %v wall (%s)", took.Round(time.Millisecond), summary(string(stderr)))

			// No duplicate survives, and the metric counts every one dropped.
			wantDup := in.readings - len(in.distinct) + in.panes - len(in.distinctPanes)
			if metrics["duplicates"] != int64(wantDup) || metrics["records"] != int64(len(in.distinct)) ||
				metrics["gateway_panes"] != int64(len(in.distinctPanes)) || metrics["raw_records"] != int64(in.raw) {
				t.Errorf("metrics %v: want duplicates %d, records %d, gateway_panes %d, raw_records %d",
					metrics, wantDup, len(in.distinct), len(in.distinctPanes), in.raw)
			}
			gwPanes := readPanes(t, panesOut)
			perGateway := map[string]bool{}
			for _, p := range gwPanes {
				k := p.Gateway + "\x00" + p.ID
				if perGateway[k] {
					t.Errorf("gateway pane %s of %s twice", p.ID, p.Gateway)
				}
				perGateway[k] = true
				if !in.distinctPanes[k] {
					t.Errorf("gateway pane %s of %s is not in the input", p.ID, p.Gateway)
				}
			}
			if len(perGateway) != len(in.distinctPanes) {
				t.Errorf("%d gateway panes out, want %d (one per gateway and id)", len(perGateway), len(in.distinctPanes))
			}

			spec := specOf(t, run.spec)
			want := recompute(in.distinct, spec, run.groupBy)
			got := readPanes(t, out)
			ids := map[string]bool{}
			for _, p := range got {
				if ids[p.ID] {
					t.Errorf("fleet pane id %s twice", p.ID)
				}
				ids[p.ID] = true
			}
			compareFleet(t, got, want)
			total := int64(0)
			for _, p := range got {
				total += p.Count
			}
			t.Logf("%d fleet panes, %d readings in them", len(got), total)
		})
	}
}

// input is what the gateways' files hold.
type gatewayInput struct {
	readings, raw, panes int
	distinct             map[string]wire.Record // by id, the first seen
	distinctPanes        map[string]bool        // gateway + "\x00" + pane id
	sharedPaneIDs        int                    // pane ids both gateways used
	panesBy              map[string]int         // panes per gateway
}

func collect(t *testing.T, files ...string) gatewayInput {
	t.Helper()
	in := gatewayInput{distinct: map[string]wire.Record{}, distinctPanes: map[string]bool{}, panesBy: map[string]int{}}
	paneGateways := map[string]map[string]bool{}
	for _, f := range files {
		for _, b := range readFile(t, f) {
			for _, it := range b.items {
				if b.kind == wire.KindAggregates {
					p, err := wire.DecodePane(it)
					if err != nil {
						t.Fatal(err)
					}
					in.panes++
					in.panesBy[b.gateway]++
					in.distinctPanes[b.gateway+"\x00"+p.ID] = true
					if paneGateways[p.ID] == nil {
						paneGateways[p.ID] = map[string]bool{}
					}
					paneGateways[p.ID][b.gateway] = true
					continue
				}
				r, err := wire.DecodeRecord(it)
				if err != nil {
					t.Fatal(err)
				}
				if r.Raw {
					in.raw++
					continue
				}
				in.readings++
				if first, ok := in.distinct[r.ID]; ok {
					// A duplicate must be the same reading, whichever gateway sent it.
					if first.Series != r.Series || first.TS != r.TS || *first.Value != *r.Value || first.Labels["site"] != r.Labels["site"] {
						t.Errorf("id %s names two readings: %+v and %+v", r.ID, first, *r)
					}
					continue
				}
				in.distinct[r.ID] = *r
			}
		}
	}
	for _, gws := range paneGateways {
		if len(gws) > 1 {
			in.sharedPaneIDs++
		}
	}
	return in
}

var metricRE = regexp.MustCompile(`(\w+)=(\d+)`)

// parseMetrics reads the counters the fleet command prints when done.
func parseMetrics(t *testing.T, out string) map[string]int64 {
	t.Helper()
	line := summary(out)
	if line == "" {
		t.Fatalf("no summary line in the fleet output:\n%s", out)
	}
	m := map[string]int64{}
	for _, kv := range metricRE.FindAllStringSubmatch(line, -1) {
		n, _ := strconv.ParseInt(kv[2], 10, 64)
		m[kv[1]] = n
	}
	return m
}

func summary(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fleet: done in ") {
			return strings.TrimPrefix(l, "fleet: ")
		}
	}
	return ""
}

// outPane is a pane the job wrote: a fleet pane, or a gateway pane with its gateway.
type outPane struct {
	wire.Pane
	Gateway string `json:"gateway"`
}

func readPanes(t *testing.T, path string) []outPane {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ps []outPane
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var p outPane
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("%s: %v: %s", path, err, l)
		}
		ps = append(ps, p)
	}
	return ps
}

// fleetSpec is the little the recomputation needs of a spec.
type fleetSpec struct {
	size, every int64 // ms; every == size for tumbling
}

func specOf(t *testing.T, yaml string) fleetSpec {
	size := regexp.MustCompile(`size: (\w+)`).FindStringSubmatch(yaml)
	every := regexp.MustCompile(`every: (\w+)`).FindStringSubmatch(yaml)
	d := func(s string) int64 {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return v.Milliseconds()
	}
	s := fleetSpec{size: d(size[1])}
	s.every = s.size
	if every != nil {
		s.every = d(every[1])
	}
	return s
}

// want is a fleet pane computed the plain way: the readings of its window, in a list.
type want struct {
	key        string
	start, end int64
	values     []wire.Record
}

// recompute windows the distinct readings directly: each reading goes to every window
// [s, s+size) with s a multiple of every and s ≤ ts < s+size, under its series or site.
func recompute(rs map[string]wire.Record, spec fleetSpec, groupBy string) map[string]*want {
	out := map[string]*want{}
	for _, r := range rs {
		key := r.Series
		if groupBy != "series" {
			key = r.Labels[strings.TrimPrefix(groupBy, "label:")]
		}
		ts, _ := wire.ParseTime(r.TS)
		last := ts - ((ts%spec.every)+spec.every)%spec.every
		for s := last; s > ts-spec.size; s -= spec.every {
			k := fmt.Sprintf("%s|%d|%d", key, s, s+spec.size)
			if out[k] == nil {
				out[k] = &want{key: key, start: s, end: s + spec.size}
			}
			out[k].values = append(out[k].values, r)
		}
	}
	return out
}

// rank orders readings of equal ts as the job does: by a hash of the id.
func rank(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64() >> 1
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// compareFleet checks the job's panes against the recomputation: one ON_TIME pane per
// window (the input is bounded: the watermark passes every window once, at the end), and
// every aggregate from its definition.
func compareFleet(t *testing.T, got []outPane, wants map[string]*want) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range got {
		start, _ := wire.ParseTime(p.Start)
		end, _ := wire.ParseTime(p.End)
		k := fmt.Sprintf("%s|%d|%d", p.Key, start, end)
		w := wants[k]
		if w == nil {
			t.Errorf("fleet pane %s [%s, %s) count %d: no such window in the recomputation", p.Key, p.Start, p.End, p.Count)
			continue
		}
		if seen[k] {
			t.Errorf("window %s fired twice", k)
		}
		seen[k] = true
		if p.Pane.Pane != (wire.PaneInfo{Index: 0, Timing: "ON_TIME"}) {
			t.Errorf("%s: pane %+v, want index 0 ON_TIME", k, p.Pane.Pane)
		}
		vs := slices.Clone(w.values)
		slices.SortFunc(vs, func(a, b wire.Record) int {
			ta, _ := wire.ParseTime(a.TS)
			tb, _ := wire.ParseTime(b.TS)
			return cmp.Or(cmp.Compare(ta, tb), cmp.Compare(rank(a.ID), rank(b.ID)))
		})
		var sum, ss float64
		mn, mx := math.Inf(1), math.Inf(-1)
		for _, v := range vs {
			sum += *v.Value
			mn, mx = math.Min(mn, *v.Value), math.Max(mx, *v.Value)
		}
		n := float64(len(vs))
		mean := sum / n
		for _, v := range vs {
			ss += (*v.Value - mean) * (*v.Value - mean)
		}
		checks := []struct {
			name string
			got  *float64
			want float64
		}{
			{"sum", p.Sum, sum}, {"min", p.Min, mn}, {"max", p.Max, mx}, {"mean", p.Mean, mean},
			{"first", p.First, *vs[0].Value}, {"last", p.Last, *vs[len(vs)-1].Value}, {"stddev", p.Stddev, math.Sqrt(ss / n)},
		}
		if p.Count != int64(len(vs)) {
			t.Errorf("%s: count %d, want %d", k, p.Count, len(vs))
		}
		for _, c := range checks {
			if c.got == nil || !near(*c.got, c.want) {
				t.Errorf("%s: %s %v, want %v", k, c.name, c.got, c.want)
			}
		}
	}
	for k := range wants {
		if !seen[k] {
			t.Errorf("window %s: no fleet pane", k)
		}
	}
}

// TestDataflowDryRun translates the streaming job for Dataflow without submitting it (the
// runner's --dry_run needs no credentials): Pub/Sub in with the id attribute, the stateful
// dedup, Pub/Sub out, a streaming job. It was not run against Google Cloud.
func TestDataflowDryRun(t *testing.T) {
	out, err := exec.Command(fleetBin, "--runner", "dataflow", "--dry_run",
		"--project", "my-project", "--region", "europe-west1",
		"--staging_location", "gs://my-bucket/staging", "--temp_location", "gs://my-bucket/tmp",
		"--subscription", "edgegate-records-fleet", "--output_topic", "edgegate-fleet",
		"--spec", "{window: {type: sliding, size: 5m, every: 1m}, aggregates: [count, mean], allowed_lateness: 1h}",
		"--group_by", "label:site").CombinedOutput()
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	for _, want := range []string{
		`beam:transform:pubsub_read:v1`,
		`projects/my-project/subscriptions/edgegate-records-fleet`,
		`beam:transform:pubsub_write:v1`,
		`projects/my-project/topics/edgegate-fleet`,
		`beam:requirement:pardo:stateful:v1`,
		`beam:window_fn:sliding_windows:v1`,
		`JOB_TYPE_STREAMING`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry run: no %s in the job", want)
		}
	}
}

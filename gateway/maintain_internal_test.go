package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/filesink"
)

// testConfig parses a config with data in dir, an anonymous broker on a free loopback
// port, and the given sections.
func testConfig(t *testing.T, dir, sections string) *config.Config {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`gateway: {id: gw, data_dir: %q}
broker: {allow_anonymous: true, listeners: [{type: tcp, address: "127.0.0.1:0"}]}
`, dir)+sections), config.Registry{Sinks: []uplink.SinkType{filesink.Type()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newTestGateway builds (does not run) a gateway on cfg, logging nowhere; its store closes
// with the test.
func newTestGateway(t *testing.T, cfg *config.Config, opts Options) *Gateway {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.store.Close() })
	return g
}

// TestTrimWaitsForPipelines: raw records an uplink has sent stay until every pipeline has
// processed them too; panes stay until every uplink has sent them.
func TestTrimWaitsForPipelines(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Unix(1e9, 0))
	g := newTestGateway(t, testConfig(t, dir, fmt.Sprintf(`
pipelines:
  - name: p1
    window: {type: tumbling, size: 1m}
uplinks:
  - name: up
    type: file
    path: %q
`, filepath.Join(dir, "up.jsonl"))), Options{Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.store.Maintain(ctx) }()
	defer func() { cancel(); <-done }()

	st := g.store
	for _, log := range []string{"raw", "agg"} {
		if _, err := st.Append(ctx, log, []buffer.Entry{{Value: []byte("1")}, {Value: []byte("2")}, {Value: []byte("3")}}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(log string) int {
		n := 0
		st.Read(log, 0, 0, func(uint64, []byte) error { n++; return nil })
		return n
	}
	tick := func() {
		// the store's maintenance sleeps on the fake clock; one period runs one trim.
		for clk.Timers() == 0 {
			time.Sleep(time.Millisecond)
		}
		clk.Advance(10 * time.Second)
		for clk.Timers() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Commit(ctx, "raw", "up", 4))
	must(st.Commit(ctx, "raw", pipeline.ConsumerName("p1"), 2))
	tick()
	if n := count("raw"); n != 2 {
		t.Fatalf("raw: %d entries left, want 2 (the pipeline is at 2)", n)
	}
	must(st.Commit(ctx, "raw", pipeline.ConsumerName("p1"), 4))
	must(st.Commit(ctx, "agg", "up", 3))
	tick()
	if n, m := count("raw"), count("agg"); n != 0 || m != 1 {
		t.Fatalf("raw %d, agg %d entries left; want 0 and 1", n, m)
	}
}

// TestReloadPipelineOutput: SIGHUP's reload moves a pipeline's output topic (its panes,
// its late topic and the uplinks' forward filters follow); other pipeline changes wait
// for a restart.
func TestReloadPipelineOutput(t *testing.T) {
	dir := t.TempDir()
	conf := func(output, size string) *config.Config {
		return testConfig(t, dir, fmt.Sprintf(`
pipelines:
  - name: p1
    window: {type: tumbling, size: %s}
    output: %s
`, size, output))
	}
	g := newTestGateway(t, conf("agg/a", "1m"), Options{})
	res, err := g.Reload(conf("agg/b", "1m"))
	if err != nil || fmt.Sprint(res.Applied) != "[pipelines[p1].output]" || len(res.NeedRestart) != 0 {
		t.Fatalf("reload: %+v %v", res, err)
	}
	if g.pipelines[0].Output() != "agg/b" || (*g.outputs.Load())["p1"] != "agg/b" {
		t.Fatalf("output %q, uplinks see %q", g.pipelines[0].Output(), (*g.outputs.Load())["p1"])
	}
	res, err = g.Reload(conf("agg/b", "2m"))
	if err != nil || len(res.Applied) != 0 || fmt.Sprint(res.NeedRestart) != "[pipelines[p1]]" {
		t.Fatalf("reload of the window: %+v %v", res, err)
	}
	st := g.pipelineStatus()
	if len(st) != 1 || st[0].Name != "p1" || st[0].Watermark != nil || st[0].Panes["ON_TIME"] != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestPipelineWatchdogProbe: the watchdog's pipeline probe fails only when input waits
// and the pipeline neither committed nor failed a step since the previous check.
func TestPipelineWatchdogProbe(t *testing.T) {
	g := newTestGateway(t, testConfig(t, t.TempDir(), `
pipelines:
  - name: p1
    window: {type: tumbling, size: 1m}
`), Options{})
	var probe func(context.Context) error
	for _, p := range g.Probes() {
		if p.Name == "pipeline/p1" {
			probe = p.Check
		}
	}
	if probe == nil {
		t.Fatal("no watchdog probe for pipeline p1")
	}
	ctx := context.Background()
	// Idle: nothing to process is not a stall.
	for range 2 {
		if err := probe(ctx); err != nil {
			t.Fatalf("idle pipeline: %v", err)
		}
	}
	// Input waits and the runner (not started: as if hung) does not move.
	rec := []byte(`{"id":"a","topic":"t","series":"s","ts":"2026-11-26T12:00:00.000Z","value":1}`)
	if _, err := g.store.Append(ctx, "raw", []buffer.Entry{{Value: rec}}); err != nil {
		t.Fatal(err)
	}
	if err := probe(ctx); err == nil {
		t.Fatal("a pipeline with waiting input and no progress passed the probe")
	}
	// Once it runs and commits, it passes again.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.pipelines[0].Run(rctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 10*time.Second, "the pipeline to commit", func() bool {
		return g.pipelines[0].Stats().Commits.Load() > 0
	})
	if err := probe(ctx); err != nil {
		t.Fatalf("after progress: %v", err)
	}
	if err := probe(ctx); err != nil {
		t.Fatalf("caught up, nothing waits: %v", err)
	}
}

// TestReloadRenamedOrAddedPipeline: a reload cannot rename, add or remove a pipeline; it
// says so and applies nothing of it.
func TestReloadRenamedOrAddedPipeline(t *testing.T) {
	dir := t.TempDir()
	pipelines := func(names ...string) *config.Config {
		s := "pipelines:\n"
		for _, n := range names {
			s += fmt.Sprintf("  - {name: %s, window: {type: tumbling, size: 1m}}\n", n)
		}
		return testConfig(t, dir, s)
	}
	g := newTestGateway(t, pipelines("p1"), Options{})
	for _, tc := range []struct {
		next []string
		want string
	}{
		{[]string{"p2"}, "[pipelines[0].name]"},
		{[]string{"p1", "p2"}, "[pipelines (added or removed)]"},
		{[]string{"p1"}, "[]"},
	} {
		res, err := g.Reload(pipelines(tc.next...))
		if err != nil || len(res.Applied) != 0 || fmt.Sprint(res.NeedRestart) != tc.want {
			t.Errorf("reload to %v: %+v %v, want NeedRestart %s", tc.next, res, err, tc.want)
		}
	}
}

package config

import (
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
)

const pipelineBase = `gateway: {id: gw-1, data_dir: /tmp/x}
broker: {allow_anonymous: true}
routes:
  - topic: "devices/+device/+metric"
    series: "{device}/{metric}"
sensors:
  - name: sim-1
    driver: sim
    topic: "sensors/{name}/{metric}"
pipelines:
`

func TestPipelinesValid(t *testing.T) {
	c, err := Parse("p.yaml", []byte(pipelineBase+`  - name: climate-1m
    input: "sensors/+/temperature"
    window: {type: tumbling, size: 1m}
    aggregates: [count, mean, min, max]
    out_of_order: 10s
    idle: 1m
    allowed_lateness: 1h
    early: 0s
    accumulation: accumulating
    output: "agg/climate-1m"
  - name: slide
    window: {type: sliding, size: 5m, every: 1m}
    accumulation: discarding
  - name: sess
    input: "devices/#"
    window: {type: session, gap: 30s}
    aggregates: [stddev, first, last, sum]
`), full)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pipelines
	if len(p) != 3 || p[0].Window.Size.D() != time.Minute || p[0].AllowedLateness.D() != time.Hour {
		t.Fatalf("decoded %+v", p)
	}
	// Defaults.
	if p[1].Input != "#" || p[1].OutputTopic() != "agg/slide" || p[1].LateTopic() != "agg/slide/late" ||
		p[1].OutOfOrder.D() != 10*time.Second || p[1].Idle.D() != time.Minute || p[1].AllowedLateness != 0 ||
		strings.Join(p[1].Aggregates, ",") != "count,mean,min,max" || p[1].MaxOpenWindows != 100000 {
		t.Fatalf("defaults %+v", p[1])
	}
}

func TestPipelinesInvalid(t *testing.T) {
	cases := []struct {
		yaml string
		want []string // each a substring of one error, in file order
	}{
		{`  - name: a
    window: {type: tumbling}
`, []string{"p.yaml:12:13: pipelines[0].window: a tumbling window needs a size > 0"}},
		{`  - name: a
    window: {type: sliding, size: 5m, every: 2m}
`, []string{"p.yaml:12:35: pipelines[0].window.size 5m0s must be a multiple of every 2m0s"}},
		{`  - name: a
    window: {type: sliding, size: 5m}
`, []string{"pipelines[0].window: a sliding window needs every > 0"}},
		{`  - name: a
    window: {type: sliding, size: 1h, every: 1s}
`, []string{"pipelines[0].window: size/every = 3600 windows per record; at most 1000"}},
		{`  - name: a
    window: {type: session}
`, []string{"p.yaml:12:13: pipelines[0].window: a session window needs a gap > 0"}},
		{`  - name: a
    window: {type: session, gap: 1m, size: 1m}
`, []string{"p.yaml:12:44: pipelines[0].window.size: not used by a session window"}},
		{`  - name: a
    window: {type: tumbling, size: 1m, gap: 1s}
`, []string{"pipelines[0].window.gap: not used by a tumbling window"}},
		{`  - name: a
    window: {type: hopping, size: 1m}
`, []string{"p.yaml:12:20: pipelines[0].window.type \"hopping\": expected tumbling, sliding or session"}},
		{`  - name: a
    window: {type: tumbling, size: 1500us}
`, []string{"pipelines[0].window.size 1.5ms: event-time durations are whole milliseconds"}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
    aggregates: [mean, median, mean]
`, []string{
			"p.yaml:13:24: pipelines[0].aggregates[1] \"median\": unknown aggregate (known: count, sum, min, max, mean, first, last, stddev)",
			"p.yaml:13:32: pipelines[0].aggregates[2] \"mean\" is listed twice",
		}},
		{`  - name: a
    input: "sensors/+x/#"
    window: {type: tumbling, size: 1m}
`, []string{"p.yaml:12:12: pipelines[0].input: topic filter \"sensors/+x/#\": a wildcard must fill a whole level"}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
    accumulation: both
    early: 1ms
    max_open_windows: 0
`, []string{
			"pipelines[0].accumulation \"both\": expected accumulating or discarding",
			"pipelines[0].early 1ms: at least 100ms",
			"pipelines[0].max_open_windows 0: must be at least 1",
		}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
  - name: a
    window: {type: tumbling, size: 1m}
    output: agg/a/late
`, []string{
			"p.yaml:13:11: pipelines[1].name \"a\" is also the name of pipelines[0]",
			"p.yaml:15:13: pipelines[1].output: the output \"agg/a/late\" is also the late topic of pipelines[0]",
		}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
    output: devices/x/y
  - name: b
    window: {type: tumbling, size: 1m}
    output: sensors/sim-1/agg
  - name: c
    window: {type: tumbling, size: 1m}
    output: agg/+
`, []string{
			"p.yaml:13:13: pipelines[0].output: the output \"devices/x/y\" matches routes[0].topic \"devices/+device/+metric\"",
			"p.yaml:16:13: pipelines[1].output: the output \"sensors/sim-1/agg\" is a topic of sensors[0] \"sim-1\"",
			"p.yaml:19:13: pipelines[2].output: topic \"agg/+\" contains a wildcard",
		}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
    windw: {}
`, []string{"p.yaml:13:5: pipelines[0]: unknown key \"windw\""}},
		{`  - name: a
    window: {type: tumbling, size: 1m}
    output: devices/x
`, []string{"the late topic \"devices/x/late\" matches routes[0].topic"}},
	}
	for i, tc := range cases {
		_, err := Parse("p.yaml", []byte(pipelineBase+tc.yaml), full)
		if err == nil {
			t.Errorf("case %d: no error, want %q", i, tc.want)
			continue
		}
		es, ok := err.(conf.Errors)
		if !ok {
			t.Errorf("case %d: %T %v", i, err, err)
			continue
		}
		if len(es) != len(tc.want) {
			t.Errorf("case %d: %d errors, want %d:\n%v", i, len(es), len(tc.want), err)
			continue
		}
		for j, w := range tc.want {
			if !strings.Contains(es[j].Error(), w) {
				t.Errorf("case %d error %d:\n got %s\nwant …%s…", i, j, es[j], w)
			}
		}
	}
}

package fleet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"

	"github.com/edgegate/edgegate/cloud/beam/internal/prismrace"
	"github.com/edgegate/edgegate/cloud/beam/winspec"
)

func TestMain(m *testing.M) {
	beamlog.LogLevel = "warn"
	beam.Init()
	os.Exit(m.Run())
}

func record(id, series, site, ts string, v float64) string {
	b, _ := json.Marshal(map[string]any{"id": id, "topic": "sites/" + site + "/" + series, "series": series, "ts": ts, "value": v, "labels": map[string]string{"site": site}})
	return string(b)
}

const pane = `{"id":"p-1","pipeline":"gw-10s","key":"s1/t","start":"2026-11-26T12:00:00.000Z","end":"2026-11-26T12:00:10.000Z","count":1,"pane":{"index":0,"timing":"ON_TIME"}}`

// TestMessages runs the job over Pub/Sub messages as the pubsub uplink publishes them (one
// record or pane each, kind and gateway in the attributes) and a whole batch, on Prism:
// a record sent twice or by two gateways counts once; the same pane id from two gateways
// is two panes; what does not decode is counted and skipped.
func TestMessages(t *testing.T) {
	msg := func(data, kind, gw string) *pb.PubsubMessage {
		return &pb.PubsubMessage{Data: []byte(data), Attributes: map[string]string{"kind": kind, "gateway": gw}}
	}
	r1 := record("s1:1", "s1/t", "north", "2026-11-26T12:00:01.000Z", 1)
	r2 := record("s1:2", "s1/t", "north", "2026-11-26T12:00:02.000Z", 2)
	r3 := record("b1:1", "b1/t", "south", "2026-11-26T12:00:03.000Z", 4)
	msgs := []*pb.PubsubMessage{
		msg(r1, "records", "gw-a"),
		msg(r1, "records", "gw-b"), // heard by both gateways
		msg(r2, "records", "gw-a"),
		msg(r2, "records", "gw-a"), // sent again
		msg(pane, "aggregates", "gw-a"),
		msg(pane, "aggregates", "gw-b"), // the same id, another gateway's pane
		msg(pane, "aggregates", "gw-b"), // sent again
		{Data: []byte(`{"v":1,"gateway":"gw-b","batch":"x","kind":"records","records":[` + r3 + "," + r1 + `]}`)},
		msg(r3, "", "gw-b"),         // no kind: not ours
		msg("{", "records", "gw-b"), // not JSON
	}
	spec, err := winspec.Parse([]byte("{window: {type: tumbling, size: 10s}, aggregates: [count, sum]}"))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Name: "fleet", Spec: spec, GroupBy: "label:site", DedupTTL: time.Hour}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var res beam.PipelineResult
	for attempt := 1; ; attempt++ {
		dir = t.TempDir()
		p, s := beam.NewPipelineWithRoot()
		fleetPanes, gwPanes := BuildMessages(s, beam.CreateList(s, msgs), o)
		WriteFile(s, filepath.Join(dir, "fleet.jsonl"), fleetPanes)
		WriteFile(s, filepath.Join(dir, "panes.jsonl"), gwPanes)
		if res, err = prism.Execute(context.Background(), p); err == nil {
			break
		}
		if !prismrace.Is(err.Error()) || attempt == prismrace.Attempts {
			t.Fatal(err)
		}
		t.Log("Prism crashed in its progress race; running the job again")
	}
	sums := map[string]int64{}
	for _, c := range res.Metrics().AllMetrics().Counters() {
		sums[c.Key.Name] += c.Result()
	}
	if want := map[string]int64{MetricRecords: 3, MetricPanes: 2, MetricDuplicates: 4, MetricBad: 2}; !sameCounts(sums, want) {
		t.Errorf("metrics %v, want %v", sums, want)
	}
	lines := func(name string) []string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		l := strings.Split(strings.TrimSpace(string(b)), "\n")
		slices.Sort(l)
		return l
	}
	got := strings.Join(lines("fleet.jsonl"), "\n")
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, `"key":"north","start":"2026-11-26T12:00:00.000Z","end":"2026-11-26T12:00:10.000Z","count":2,"sum":3`) ||
		!strings.Contains(got, `"key":"south","start":"2026-11-26T12:00:00.000Z","end":"2026-11-26T12:00:10.000Z","count":1,"sum":4`) {
		t.Errorf("fleet panes:\n%s", got)
	}
	gw := lines("panes.jsonl")
	if len(gw) != 2 || !strings.HasPrefix(gw[0], `{"gateway":"gw-a","id":"p-1"`) || !strings.HasPrefix(gw[1], `{"gateway":"gw-b","id":"p-1"`) {
		t.Errorf("gateway panes:\n%s", strings.Join(gw, "\n"))
	}
}

func sameCounts(got, want map[string]int64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestOptionsValidate(t *testing.T) {
	ok := Options{Name: "fleet", GroupBy: "series", DedupTTL: time.Hour}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{GroupBy: "series", DedupTTL: time.Hour},
		{Name: "f", GroupBy: "site", DedupTTL: time.Hour},
		{Name: "f", GroupBy: "label:", DedupTTL: time.Hour},
		{Name: "f", GroupBy: "series"},
	} {
		if o.Validate() == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// docMetrics parses the table under "## Every metric" in docs/metrics.md: name →
// "type|labels".
func docMetrics(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Every metric"
			continue
		}
		if !in || !strings.HasPrefix(l, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("docs/metrics.md: metrics row with %d cells: %q", len(cells), l)
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		var labels []string
		for _, s := range strings.Split(cells[2], ",") {
			if s = strings.TrimSpace(s); s != "" {
				labels = append(labels, s)
			}
		}
		if _, dup := out[name]; dup {
			t.Errorf("docs/metrics.md lists %s twice", name)
		}
		out[name] = strings.TrimSpace(cells[1]) + "|" + strings.Join(labels, ",")
	}
	if len(out) == 0 {
		t.Fatal(`no metrics table under "## Every metric" in docs/metrics.md`)
	}
	return out
}

// TestMetricsMatchDocs keeps the docs and the binary in step: the table of docs/metrics.md lists
// exactly the families a gateway declares, with their types and labels, and a scrape of a
// running gateway exposes only documented families, with the documented types.
func TestMetricsMatchDocs(t *testing.T) {
	doc := docMetrics(t)
	declared := map[string]string{}
	for _, d := range append(append([]ops.Desc(nil), gateway.Metrics...), ops.RuntimeMetrics...) {
		declared[d.Name] = string(d.Type) + "|" + strings.Join(d.Labels, ",")
	}
	var missing, extra, differ []string
	for n, v := range declared {
		if dv, ok := doc[n]; !ok {
			missing = append(missing, n)
		} else if dv != v {
			differ = append(differ, n+": docs/metrics.md "+dv+", code "+v)
		}
	}
	for n := range doc {
		if _, ok := declared[n]; !ok {
			extra = append(extra, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, n := range missing {
		t.Errorf("metric %s is not in the table of docs/metrics.md", n)
	}
	for _, n := range extra {
		t.Errorf("docs/metrics.md lists %s, which the code does not declare", n)
	}
	for _, d := range differ {
		t.Errorf("type or labels differ: %s", d)
	}
	for n := range declared {
		if !strings.HasPrefix(n, "edgegate_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			t.Errorf("%s: want the edgegate_ prefix", n)
		}
	}

	// A live scrape.
	dir := t.TempDir()
	broker := testutil.FreeAddr(t)
	path := writeConfig(t, dir, broker, `
sensors:
  - {name: sim-1, driver: sim, interval: 50ms, topic: "sensors/{name}/temperature"}
uplinks:
  - {name: archive, type: file, path: `+filepath.Join(dir, "up.jsonl")+`, batch: {linger: 50ms}}
`)
	r := start(t, path, clock.Real{})
	c := testutil.Paho(t, broker, "doc-pub")
	publish(t, c, "devices/d1/temperature", 1, `{"value": 1}`)
	publish(t, c, "devices/d1/temperature", 0, `not json`) // refused, kept in the refused log
	reg := ops.NewRegistry()
	r.g.Register(reg)
	testutil.Eventually(t, 10*time.Second, "an uplink batch and the refusal", func() bool {
		return r.g.Uplinks()[0].Stats().Batches.Load() > 0 && len(r.g.Status().Ingest.Refusals) > 0
	})
	var b bytes.Buffer
	if err := reg.Write(&b); err != nil {
		t.Fatal(err)
	}
	fams := testutil.ParseText(t, b.String())
	for n, f := range fams {
		dv, ok := doc[n]
		if !ok {
			t.Errorf("scrape exposes %s, not in docs/metrics.md", n)
			continue
		}
		if typ := strings.SplitN(dv, "|", 2)[0]; typ != f.Type {
			t.Errorf("%s: scraped type %s, docs/metrics.md %s", n, f.Type, typ)
		}
	}
	// Figures of what happened above.
	checks := map[string]map[string]float64{
		"edgegate_ingest_messages_total": {`{source="mqtt",outcome="stored"}`: 1, `{source="mqtt",outcome="refused"}`: 1},
		"edgegate_ingest_refusals_total": {`{reason="malformed"}`: 1},
		"edgegate_ready":                 {``: 1},
		"edgegate_uplink_connected":      {`{uplink="archive"}`: 1},
		"edgegate_sensor_up":             {`{sensor="sim-1"}`: 1},
	}
	for fam, want := range checks {
		for labels, v := range want {
			if got := fams[fam].Samples[labels]; got != v {
				t.Errorf("%s%s = %v, want %v", fam, labels, got, v)
			}
		}
	}
	if fams["edgegate_ingest_messages_total"].Samples[`{source="sensor",outcome="stored"}`] < 1 {
		t.Error("no sensor message counted as stored")
	}
}

// TestReadinessAndWatchdogProbes: ready only between start and stop; the probes pass on an
// idle gateway (the store probe writes) and the store probe fails once the store is closed.
func TestReadinessAndWatchdogProbes(t *testing.T) {
	dir := t.TempDir()
	r := start(t, writeConfig(t, dir, testutil.FreeAddr(t), ""), clock.Real{})
	for _, c := range r.g.Checks() {
		if !c.OK {
			t.Errorf("check %s not ok while running: %s", c.Name, c.Detail)
		}
	}
	ctx := context.Background()
	for round := 0; round < 2; round++ { // the second round sees no write group since the first
		for _, p := range r.g.Probes() {
			if err := p.Check(ctx); err != nil {
				t.Errorf("round %d: probe %s: %v", round, p.Name, err)
			}
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	ok := true
	for _, c := range r.g.Checks() {
		ok = ok && c.OK
	}
	if ok {
		t.Error("ready after stop")
	}
	for _, p := range r.g.Probes() {
		if p.Name == gateway.ProbeStore {
			if err := p.Check(ctx); err == nil {
				t.Error("store probe passes on a closed store")
			}
		}
	}
}

package doctest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Grafana dashboard, as far as the test reads it.
type dashboard struct {
	Title, UID    string
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
			Datasource *datasourceRef
		}
	}
	Panels []panel
}

type datasourceRef struct{ Type, UID string }

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource *datasourceRef
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID        string `json:"refId"`
		Expr         string
		LegendFormat string `json:"legendFormat"`
		Datasource   *datasourceRef
	}
	Panels []panel // a collapsed row's
}

const dashboardPath = "docs/grafana/edgegate.json"

// TestGrafanaDashboard: docs/grafana/edgegate.json is a dashboard Grafana can import and
// that shows only what the daemon exports: every query uses metrics and labels of the table
// of docs/metrics.md (which gateway's TestMetricsMatchDocs holds to the daemon), every
// legend only labels its query's result has; its panels query the data source variable,
// filter by the gateway variable, have unique ids and do not overlap.
func TestGrafanaDashboard(t *testing.T) {
	doc := docMetrics(t)
	b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(dashboardPath)))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
		t.Errorf("%s: title %q, uid %q, schemaVersion %d: want a title, a uid and a current schema", dashboardPath, d.Title, d.UID, d.SchemaVersion)
	}

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
		}
		// label_values(METRIC, LABEL)
		inner, ok := strings.CutPrefix(q.Query, "label_values(")
		metric, label, ok2 := strings.Cut(strings.TrimSuffix(inner, ")"), ",")
		if !ok || !ok2 {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
			continue
		}
		for _, pr := range checkQuery(doc, strings.TrimSpace(metric), "{{"+strings.TrimSpace(label)+"}}") {
			t.Errorf("variable %s: %s", v.Name, pr)
		}
	}
	for _, v := range []string{"datasource", "instance"} {
		if !vars[v] {
			t.Errorf("%s: no $%s variable", dashboardPath, v)
		}
	}

	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]string{}
	used := map[[2]int]string{} // grid cell → panel
	queries, metrics := 0, map[string]bool{}
	for _, p := range all {
		at := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("%s: id used by %s too (or 0)", at, other)
		}
		ids[p.ID] = at
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", at, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := used[[2]int{x, y}]; ok {
					t.Errorf("%s overlaps %s at column %d, row %d", at, other, x, y)
					x, y = g.X+g.W, g.Y+g.H // once per pair
					continue
				}
				used[[2]int{x, y}] = at
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("%s: want a title and at least one query", at)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: data source %+v, want the ${datasource} variable", at, p.Datasource)
		}
		for _, q := range p.Targets {
			at := at + " query " + q.RefID
			queries++
			if q.Datasource != nil && q.Datasource.UID != "${datasource}" {
				t.Errorf("%s: data source %+v, want the ${datasource} variable", at, q.Datasource)
			}
			if !strings.Contains(q.Expr, `instance=~"$instance"`) {
				t.Errorf("%s: %s does not filter by the $instance variable", at, q.Expr)
			}
			for _, pr := range checkQuery(doc, q.Expr, q.LegendFormat) {
				t.Errorf("%s: %s: %s", at, q.Expr, pr)
			}
			r, _ := scanPromQL(q.Expr)
			for _, m := range r.Metrics {
				metrics[m] = true
			}
		}
	}
	if queries < 10 {
		t.Fatalf("%s: only %d queries: is the panel reader broken?", dashboardPath, queries)
	}
	t.Logf("%d panels, %d queries over %d of the %d documented metrics", len(all), queries, len(metrics), len(doc))
}

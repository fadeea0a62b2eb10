package pipeline

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/record"
)

func TestSpecFromConfigKinds(t *testing.T) {
	d := func(s int) conf.Duration { return conf.Duration(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		typ  string
		want Kind
	}{{"tumbling", Tumbling}, {"sliding", Sliding}, {"session", Session}, {"hopping", 0}} {
		p := Config{Name: "p", Window: Window{Type: tc.typ, Size: d(30), Every: d(10), Gap: d(5)}}
		s, err := SpecFromConfig(p)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("%s: no error", tc.typ)
			}
			continue
		}
		if err != nil || s.Kind != tc.want || s.Kind.String() != tc.typ {
			t.Errorf("%s: kind %v, err %v; want %v", tc.typ, s.Kind, err, tc.want)
		}
	}
}

// TestAggNamesMatchConfig: the aggregates config validation accepts are the ones a pane can
// carry, in the same order (a name config knows and the pipeline does not would pass
// validation and stop the daemon at start).
func TestAggNamesMatchConfig(t *testing.T) {
	names := []string{"count"}
	for _, an := range aggNames {
		names = append(names, an.name)
	}
	if !slices.Equal(names, Aggregates) {
		t.Fatalf("pipeline aggregates %q, config %q", names, Aggregates)
	}
	if _, err := ParseAggs(Aggregates); err != nil {
		t.Fatal(err)
	}
}

// TestEncoderAggregates: each aggregate a pipeline asks for is in its pane, with its value.
func TestEncoderAggregates(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, Aggs: AggSum | AggMin | AggMax | AggMean | AggFirst | AggLast | AggStddev})
	for i, v := range []float64{2, 1, 4} {
		c.Step(&Input{Series: "k", TS: sec(float64(3 - i)), Value: v}) // first by ts: 4, last: 2
	}
	c.Finish()
	p, err := record.DecodePane(NewEncoder(&c.spec).AppendJSON(nil, &c.Panes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	mean := 7.0 / 3
	sd := math.Sqrt(((2-mean)*(2-mean) + (1-mean)*(1-mean) + (4-mean)*(4-mean)) / 3)
	for _, f := range []struct {
		name string
		got  *float64
		want float64
	}{{"sum", p.Sum, 7}, {"min", p.Min, 1}, {"max", p.Max, 4}, {"mean", p.Mean, mean},
		{"first", p.First, 4}, {"last", p.Last, 2}, {"stddev", p.Stddev, sd}} {
		if f.got == nil || !near(*f.got, f.want) {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if p.Count != 3 {
		t.Errorf("count %d", p.Count)
	}
}

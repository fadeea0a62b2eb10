package pipeline

import (
	"slices"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

func TestSpecFromConfigKinds(t *testing.T) {
	d := func(s int) config.Duration { return config.Duration(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		typ  string
		want Kind
	}{{"tumbling", Tumbling}, {"sliding", Sliding}, {"session", Session}, {"hopping", 0}} {
		p := config.Pipeline{Name: "p", Window: config.Window{Type: tc.typ, Size: d(30), Every: d(10), Gap: d(5)}}
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
	if !slices.Equal(names, config.Aggregates) {
		t.Fatalf("pipeline aggregates %q, config %q", names, config.Aggregates)
	}
	if _, err := ParseAggs(config.Aggregates); err != nil {
		t.Fatal(err)
	}
}

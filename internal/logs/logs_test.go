package logs

import (
	"reflect"
	"slices"
	"testing"
)

// TestSchema pins the schema the buffer is opened with: a rename or a new log shows here,
// with what it changes for drop_oldest and trimming.
func TestSchema(t *testing.T) {
	seen := map[string]bool{}
	for _, l := range Schema {
		if l.Name == "" || seen[l.Name] {
			t.Errorf("log %q: empty or listed twice", l.Name)
		}
		seen[l.Name] = true
	}
	// The bulk log is the one every reading goes to, read by uplinks and pipelines: were it
	// another, or not in the schema, the buffer would key the readings with the small logs
	// and every compaction would rewrite the backlog (write amplification).
	i := slices.IndexFunc(Schema, func(l Log) bool { return l.Name == Bulk })
	if Bulk != Raw || i < 0 || Schema[i].Readers != Uplinks|Pipelines {
		t.Errorf("bulk log %q: want the raw log %q, read by uplinks and pipelines", Bulk, Raw)
	}
	for _, c := range []struct {
		name      string
		got, want []string
	}{
		{"listed", Listed(), []string{"raw", "agg", "hold", "refused"}},
		{"expendable", Expendable(), nil},
		{"precious", Precious(), []string{"deadletter", "hold", "agg"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
	got := Consumers([]string{"up1", "up2"}, []string{"pipeline/p"})
	want := map[string][]string{"raw": {"up1", "up2", "pipeline/p"}, "agg": {"up1", "up2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("consumers: %v, want %v", got, want)
	}
	if got := Consumers(nil, nil); len(got["raw"]) != 0 || len(got["agg"]) != 0 || len(got) != 2 {
		t.Errorf("consumers of a gateway without uplinks or pipelines: %v", got)
	}
}

package record

import (
	"math"
	"testing"
)

// TestAppendPane: the §3.2 form, keys in order; an aggregate of no data is null except the
// sum (0), and a value with no JSON number is null.
func TestAppendPane(t *testing.T) {
	e := NewPaneEncoder("p1", []string{"sum", "mean", "max"})
	p := Pane{Key: "k", Start: 0, End: 60000, Index: 2, Timing: "LATE", Count: 3, Values: []float64{6, 2, math.Inf(1)}}
	got := string(e.AppendPane(nil, &p))
	want := `{"id":"` + PaneID("p1", "k", 0, 60000, 2) + `","pipeline":"p1","key":"k","start":"1970-01-01T00:00:00.000Z","end":"1970-01-01T00:01:00.000Z","count":3,"sum":6.0,"mean":2.0,"max":null,"pane":{"index":2,"timing":"LATE"}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	p.Count, p.Values = 0, []float64{0, 0, 0}
	dp, err := DecodePane(e.AppendPane(nil, &p))
	if err != nil || dp.Sum == nil || *dp.Sum != 0 || dp.Mean != nil || dp.Max != nil || dp.Min != nil {
		t.Errorf("empty pane decoded as %+v, %v", dp, err)
	}
	if PipelineOf([]byte(got)) != "p1" {
		t.Errorf("PipelineOf = %q", PipelineOf([]byte(got)))
	}
}

func TestAppendPaneAllocs(t *testing.T) {
	e := NewPaneEncoder("p1", []string{"sum", "mean"})
	p := Pane{Key: "k", End: 60000, Timing: "ON_TIME", Count: 1, Values: []float64{1, 1}}
	buf := e.AppendPane(nil, &p)
	if n := testing.AllocsPerRun(100, func() { buf = e.AppendPane(buf[:0], &p) }); n != 0 {
		t.Fatalf("%v allocs per pane", n)
	}
}

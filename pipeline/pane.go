package pipeline

import "github.com/edgegate/edgegate/record"

// Encoder writes a pipeline's panes through record.PaneEncoder (the wire form is record's):
// it hands over the aggregates the pipeline asks for, read from each pane's running state.
// It reuses its buffers: not safe for concurrent use.
type Encoder struct {
	enc    *record.PaneEncoder
	value  []func(*aggState) float64 // of each aggregate asked for, in the JSON's order
	values []float64
}

// NewEncoder returns the encoder of a pipeline's panes.
func NewEncoder(s *Spec) *Encoder {
	e := &Encoder{}
	var names []string
	for _, an := range aggNames {
		if s.Aggs&an.agg != 0 {
			names = append(names, an.name)
			e.value = append(e.value, an.value)
		}
	}
	e.enc = record.NewPaneEncoder(s.Name, names)
	e.values = make([]float64, len(names))
	return e
}

// AppendJSON appends p's JSON to dst: count and the aggregates the pipeline asks for.
func (e *Encoder) AppendJSON(dst []byte, p *Pane) []byte {
	for i, v := range e.value {
		e.values[i] = v(&p.agg)
	}
	return e.enc.AppendPane(dst, &record.Pane{
		Key: p.Key, Start: p.Start, End: p.End, Index: p.Index, Timing: p.Timing.String(),
		Count: p.agg.count, Values: e.values,
	})
}

package pipeline

import (
	"fmt"

	"github.com/edgegate/edgegate/record"
)

// Replay runs pipelines in batch over records in arrival order (SPEC §1 `edgegate
// replay`): the same core and the same record parser as the daemon, with no processing
// time (idle and early never apply) and the watermark advanced to +∞ by Finish.
type Replay struct {
	cores  []*Core
	bounds []commitBound
	encs   []*Encoder
	buf    []byte
	in     Input
}

// NewReplay builds a replay of specs, in the order their panes are written when one record
// makes several pipelines fire.
func NewReplay(specs []Spec) (*Replay, error) {
	r := &Replay{}
	for _, s := range specs {
		s.Idle, s.Early = 0, 0
		c, err := NewCore(s)
		if err != nil {
			return nil, err
		}
		r.cores = append(r.cores, c)
		r.bounds = append(r.bounds, newCommitBound(&s))
		r.encs = append(r.encs, NewEncoder(&s))
	}
	return r, nil
}

// Record applies one record (its SPEC §3.1 JSON) to every pipeline and calls emit with the
// JSON of each pane it fires, in emission order; emit must not keep the slice.
func (r *Replay) Record(b []byte, emit func(pane []byte) error) error {
	reading, err := record.ParseReading(b, &r.in)
	if err != nil {
		return fmt.Errorf("not a record: %w", err)
	}
	if !reading {
		return nil
	}
	for i, c := range r.cores {
		if c.match(r.in.Topic) && r.bounds[i].tooBig(r.in.Series) {
			c.stats.Oversized++ // as the runner does: the same panes
			continue
		}
		c.Step(&r.in)
		c.Fire(-1)
		if err := r.flush(i, emit); err != nil {
			return err
		}
	}
	return nil
}

// Finish advances every watermark to +∞ and emits what fires.
func (r *Replay) Finish(emit func(pane []byte) error) error {
	for i, c := range r.cores {
		c.Finish()
		if err := r.flush(i, emit); err != nil {
			return err
		}
	}
	return nil
}

// Counters returns each pipeline's counters, in spec order.
func (r *Replay) Counters() []Counters {
	out := make([]Counters, len(r.cores))
	for i, c := range r.cores {
		out[i] = c.Counters()
	}
	return out
}

func (r *Replay) flush(i int, emit func([]byte) error) error {
	c := r.cores[i]
	defer c.ClearPanes()
	for j := range c.panes {
		r.buf = r.encs[i].AppendJSON(r.buf[:0], &c.panes[j])
		if err := emit(r.buf); err != nil {
			return err
		}
	}
	return nil
}

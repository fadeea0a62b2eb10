package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// PaneID is the deterministic id of a pane (SPEC §3.2): a hash of (pipeline, key, start,
// end, pane index), so a pane re-sent keeps its id and two different panes never share one.
func PaneID(pipeline, key string, start, end, index int64) string {
	id, _ := appendPaneID(nil, nil, pipeline, key, start, end, index)
	return string(id)
}

// appendPaneID appends the id to dst, hashing in scratch; it returns both, grown.
func appendPaneID(dst, scratch []byte, pipeline, key string, start, end, index int64) ([]byte, []byte) {
	b := append(scratch[:0], pipeline...)
	b = append(b, 0)
	b = append(b, key...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	b = binary.BigEndian.AppendUint64(b, uint64(index))
	sum := sha256.Sum256(b)
	dst = append(dst, "p-"...)
	return hex.AppendEncode(dst, sum[:16]), b
}

// Pane is what one pane's JSON carries (SPEC §3.2), as its producer hands it to a
// PaneEncoder: Values[i] is the value of the encoder's i-th aggregate.
type Pane struct {
	Key        string
	Start, End int64 // Unix ms, [Start, End)
	Index      int64
	Timing     string // EARLY, ON_TIME or LATE
	Count      int64
	Values     []float64
}

// PaneEncoder writes the panes of one pipeline in their SPEC §3.2 JSON form. It reuses its
// buffers: not safe for concurrent use.
type PaneEncoder struct {
	pipeline string
	quoted   []byte   // the pipeline's name as a JSON string
	keys     [][]byte // `,"<aggregate>":` for each aggregate, in order
	sum      int      // index of "sum" in keys, or -1
	scratch  []byte
}

// NewPaneEncoder returns the encoder of a pipeline's panes, which carry count and the
// named aggregates, in that order.
func NewPaneEncoder(pipeline string, aggregates []string) *PaneEncoder {
	e := &PaneEncoder{pipeline: pipeline, quoted: AppendString(nil, pipeline), sum: -1}
	for i, a := range aggregates {
		e.keys = append(e.keys, []byte(`,"`+a+`":`))
		if a == "sum" {
			e.sum = i
		}
	}
	return e
}

// AppendPane appends p's JSON to dst. Keys come in a fixed order. An aggregate of no data
// (a discarding pane after an early one) or with no JSON number (an overflowed sum) is
// null; the sum of no data is 0.
func (e *PaneEncoder) AppendPane(dst []byte, p *Pane) []byte {
	dst = append(dst, `{"id":"`...)
	dst, e.scratch = appendPaneID(dst, e.scratch, e.pipeline, p.Key, p.Start, p.End, p.Index)
	dst = append(dst, `","pipeline":`...)
	dst = append(dst, e.quoted...)
	dst = append(dst, `,"key":`...)
	dst = AppendString(dst, p.Key)
	dst = append(dst, `,"start":"`...)
	dst = time.UnixMilli(p.Start).UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, `","end":"`...)
	dst = time.UnixMilli(p.End).UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, `","count":`...)
	dst = strconv.AppendInt(dst, p.Count, 10)
	for i, k := range e.keys {
		dst = append(dst, k...)
		v := p.Values[i]
		if (p.Count == 0 && i != e.sum) || math.IsNaN(v) || math.IsInf(v, 0) {
			dst = append(dst, "null"...)
		} else {
			dst = AppendFloat(dst, v)
		}
	}
	dst = append(dst, `,"pane":{"index":`...)
	dst = strconv.AppendInt(dst, p.Index, 10)
	dst = append(dst, `,"timing":"`...)
	dst = append(dst, p.Timing...)
	return append(dst, `"}}`...)
}

// PaneJSON is a decoded pane, for consumers and tests. Aggregates the pipeline does not
// ask for are nil.
type PaneJSON struct {
	ID       string   `json:"id"`
	Pipeline string   `json:"pipeline"`
	Key      string   `json:"key"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Count    int64    `json:"count"`
	Sum      *float64 `json:"sum,omitempty"`
	Min      *float64 `json:"min,omitempty"`
	Max      *float64 `json:"max,omitempty"`
	Mean     *float64 `json:"mean,omitempty"`
	First    *float64 `json:"first,omitempty"`
	Last     *float64 `json:"last,omitempty"`
	Stddev   *float64 `json:"stddev,omitempty"`
	Pane     struct {
		Index  int64  `json:"index"`
		Timing string `json:"timing"`
	} `json:"pane"`
}

// DecodePane reads a pane's JSON.
func DecodePane(b []byte) (*PaneJSON, error) {
	var p PaneJSON
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PipelineOf returns the "pipeline" of a stored pane ("" when b is not one): uplinks map
// it to the pipeline's output topic for their forward filters.
func PipelineOf(b []byte) string {
	var p struct {
		Pipeline string `json:"pipeline"`
	}
	if json.Unmarshal(b, &p) != nil {
		return ""
	}
	return p.Pipeline
}

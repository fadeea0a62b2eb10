// Package wire reads and writes edgegate's cloud wire formats (SPEC §3): records, panes and
// batches. It is written against the SPEC, not imported from the daemon, so the cloud
// module never depends on the daemon's packages or their dependencies.
package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// TimeLayout is edgegate's timestamp form: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Record is a reading (SPEC §3.1). A raw forwarded message has a payload and no value:
// Raw is set and Value is zero.
type Record struct {
	ID     string            `json:"id"`
	Topic  string            `json:"topic"`
	Series string            `json:"series,omitempty"`
	TS     string            `json:"ts"`
	Value  *float64          `json:"value,omitempty"`
	Unit   string            `json:"unit,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Raw is true for an unrouted message forwarded as is ("payload" or "payload_b64").
	Raw bool `json:"-"`
}

// PaneInfo is a pane's firing (SPEC §3.2).
type PaneInfo struct {
	Index  int64  `json:"index"`
	Timing string `json:"timing"`
}

// Pane is one firing of a window (SPEC §3.2). Aggregates the pipeline did not ask for are nil,
// and so is an aggregate of no data.
type Pane struct {
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
	Pane     PaneInfo `json:"pane"`
}

// Batch is one uplink message (SPEC §3.3); Items are its records or panes, undecoded.
type Batch struct {
	V       int               `json:"v"`
	Gateway string            `json:"gateway"`
	Batch   string            `json:"batch"`
	Kind    string            `json:"kind"`
	Items   []json.RawMessage `json:"records"`
}

// Batch kinds.
const (
	KindRecords    = "records"
	KindAggregates = "aggregates"
)

// ParseTime reads an edgegate timestamp (RFC 3339) as Unix milliseconds, the precision of
// windows.
func ParseTime(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}

// FormatTime writes Unix milliseconds in edgegate's form.
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(TimeLayout)
}

// DecodeBatch reads a batch and checks its envelope.
func DecodeBatch(b []byte) (*Batch, error) {
	var bt Batch
	if err := json.Unmarshal(b, &bt); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if bt.V != 1 {
		return nil, fmt.Errorf("decode batch %q: version %d, want 1", bt.Batch, bt.V)
	}
	if bt.Kind != KindRecords && bt.Kind != KindAggregates {
		return nil, fmt.Errorf("decode batch %q: kind %q, want records or aggregates", bt.Batch, bt.Kind)
	}
	return &bt, nil
}

// DecodeRecord reads a record. A raw message (no value, a payload) decodes with Raw set.
func DecodeRecord(b []byte) (*Record, error) {
	var r struct {
		Record
		Payload    *string `json:"payload"`
		PayloadB64 *string `json:"payload_b64"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	rec := r.Record
	if rec.ID == "" {
		return nil, errors.New("decode record: no id")
	}
	if _, err := ParseTime(rec.TS); err != nil {
		return nil, fmt.Errorf("decode record %q: ts: %w", rec.ID, err)
	}
	switch {
	case rec.Value != nil:
	case r.Payload != nil || r.PayloadB64 != nil:
		rec.Raw = true
	default:
		return nil, fmt.Errorf("decode record %q: neither value nor payload", rec.ID)
	}
	return &rec, nil
}

// DecodePane reads a pane.
func DecodePane(b []byte) (*Pane, error) {
	var p Pane
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode pane: %w", err)
	}
	if p.ID == "" {
		return nil, errors.New("decode pane: no id")
	}
	return &p, nil
}

// PaneID is the deterministic id of a pane (SPEC §3.2): a hash of (pipeline, key, start,
// end, index), start and end in Unix ms. It is edgegate's own function, so the conformance
// suite checks it against `edgegate replay`.
func PaneID(pipeline, key string, start, end, index int64) string {
	b := append([]byte(pipeline), 0)
	b = append(b, key...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	b = binary.BigEndian.AppendUint64(b, uint64(index))
	sum := sha256.Sum256(b)
	return "p-" + hex.EncodeToString(sum[:16])
}

// Aggregates lists the aggregate names a pane may carry, in the order panes carry them.
var Aggregates = []string{"count", "sum", "min", "max", "mean", "first", "last", "stddev"}

// FormatFloat writes a float as edgegate does: integral values with ".0", others in the
// shortest form that reads back exactly.
func FormatFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64) + ".0"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

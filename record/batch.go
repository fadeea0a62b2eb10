package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Kind says what a batch holds.
type Kind string

// The two kinds of batch (SPEC §3.3).
const (
	KindRecords    Kind = "records"
	KindAggregates Kind = "aggregates"
)

// BatchID is the deterministic id of a batch: a pure function of the gateway, the uplink, the
// log and the sequence range it covers (DESIGN invariant 7), so a batch re-sent after a crash
// or reconnect carries the same id.
func BatchID(gateway, uplink, log string, first, last uint64) string {
	h := sha256.New()
	h.Write([]byte(gateway))
	h.Write([]byte{0})
	h.Write([]byte(uplink))
	h.Write([]byte{0})
	h.Write([]byte(log))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], first)
	binary.BigEndian.PutUint64(b[8:], last)
	h.Write(b[:])
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// AppendBatch appends the SPEC §3.3 envelope around items, each already a JSON value.
func AppendBatch(dst []byte, gateway, id string, kind Kind, items [][]byte) []byte {
	dst = append(dst, `{"v":1,"gateway":`...)
	dst = AppendString(dst, gateway)
	dst = append(dst, `,"batch":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"kind":`...)
	dst = AppendString(dst, string(kind))
	dst = append(dst, `,"records":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, it...)
	}
	return append(dst, "]}"...)
}

// Batch is a decoded SPEC §3.3 batch: its envelope, and its items as they were sent (records
// or panes, by Kind).
type Batch struct {
	V       int               `json:"v"`
	Gateway string            `json:"gateway"`
	Batch   string            `json:"batch"`
	Kind    Kind              `json:"kind"`
	Records []json.RawMessage `json:"records"`
}

// DecodeBatch parses a batch envelope. It checks the version and the kind, not the items.
func DecodeBatch(b []byte) (Batch, error) {
	var bt Batch
	if err := json.Unmarshal(b, &bt); err != nil {
		return Batch{}, fmt.Errorf("batch: %w", err)
	}
	if bt.V != 1 {
		return Batch{}, fmt.Errorf("batch: version %d, want 1", bt.V)
	}
	if bt.Kind != KindRecords && bt.Kind != KindAggregates {
		return Batch{}, fmt.Errorf("batch: kind %q, want %q or %q", bt.Kind, KindRecords, KindAggregates)
	}
	return bt, nil
}

// IsBatch reports whether a JSON object looks like a batch rather than a record: it has the
// envelope's "v" and "batch" members at its top level. It does not validate b.
func IsBatch(b []byte) bool {
	var probe struct {
		V     *int    `json:"v"`
		Batch *string `json:"batch"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.V != nil && probe.Batch != nil
}

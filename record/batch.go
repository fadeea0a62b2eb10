package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
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

package buffer

import (
	"crypto/sha256"
	"encoding/binary"
)

// Key layout (one Badger DB, prefixes keep the kinds apart):
//
//	l/<log>/<seq:8 BE>       an entry of a log
//	m/<log>                  a log's meta: high mark, first live seq, live count and bytes
//	t/<log>/<seq:8 BE>       time index: entries from seq on were appended at or after this
//	                         time (unix ms, 8 BE); one key per log per minute of appends
//	c/<log>/<consumer>       a consumer's committed position (next seq, 8 BE)
//	s/<key>                  state KV (pipelines' windows, uplinks' ranges)
//	d/<sha256(id)[:12]>      dedup index: expiry (unix ms, 8 BE), with a Badger TTL
//	x/dedup                  how many dedup keys were written since the last recount
//	h/<log>                  high mark of stores written before the meta key existed
func logPrefix(log string) []byte { return []byte("l/" + log + "/") }

func logKey(log string, seq uint64) []byte { return seqKey('l', log, seq) }

func timeKey(log string, seq uint64) []byte { return seqKey('t', log, seq) }

func timePrefix(log string) []byte { return []byte("t/" + log + "/") }

func seqKey(kind byte, log string, seq uint64) []byte {
	k := make([]byte, 0, len(log)+11)
	k = append(k, kind, '/')
	k = append(k, log...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, seq)
}

func metaKey(log string) []byte { return []byte("m/" + log) }

const metaPrefix = "m/"

func legacyHighKey(log string) []byte { return []byte("h/" + log) }

func cursorKey(log, consumer string) []byte { return []byte("c/" + log + "/" + consumer) }

func cursorPrefix(log string) []byte { return []byte("c/" + log + "/") }

func stateKey(key string) []byte { return []byte("s/" + key) }

const dedupPrefix = "d/"

// dedupHashLen is the length of the id hash kept per dedup key: 96 bits make a collision
// among a billion ids a one-in-10¹¹ event, and keep every key 14 bytes whatever the id.
const dedupHashLen = 12

// dedupHash is the dedup index's name for a record id.
func dedupHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return string(sum[:dedupHashLen])
}

func dedupKey(hash string) []byte { return append([]byte(dedupPrefix), hash...) }

// dedupExpiry decodes the value of a dedup key: the id's expiry, unix ms on the store's
// clock; ok is false for a value that is not one.
func dedupExpiry(v []byte) (exp int64, ok bool) {
	if len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

var dedupCountKey = []byte("x/dedup")

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// logMeta is what m/<log> holds, written in the same transaction as every change of the
// log, so it is exact after a crash.
type logMeta struct {
	high  uint64 // highest sequence number ever assigned (never reused)
	first uint64 // entries below first are deleted
	count int64  // live entries
	bytes int64  // their logical size: key + value
}

func (m logMeta) encode() []byte {
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint64(b, m.high)
	b = binary.BigEndian.AppendUint64(b, m.first)
	b = binary.BigEndian.AppendUint64(b, uint64(m.count))
	return binary.BigEndian.AppendUint64(b, uint64(m.bytes))
}

func decodeMeta(b []byte) (logMeta, bool) {
	if len(b) != 32 {
		return logMeta{}, false
	}
	return logMeta{
		high:  binary.BigEndian.Uint64(b),
		first: binary.BigEndian.Uint64(b[8:]),
		count: int64(binary.BigEndian.Uint64(b[16:])),
		bytes: int64(binary.BigEndian.Uint64(b[24:])),
	}, true
}

// entrySize is what an entry counts for in a log's bytes.
func entrySize(log string, valueLen int) int64 { return int64(len(log) + 11 + valueLen) }

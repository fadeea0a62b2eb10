package buffer

import (
	"crypto/sha256"
	"encoding/binary"
)

// Key layout (one Badger DB, prefixes keep the kinds apart):
//
//	a/<bulk>/<seq:8 BE>      an entry of the bulk log (Options.BulkLog: the raw readings)
//	a/<bulk>/<last:8 BE><count:4 BE><size:4 BE>
//	                         a segment: count entries of the bulk log up to last, in a
//	                         value of size bytes (segment.go)
//	c/<log>/<consumer>       a consumer's committed position (next seq, 8 BE)
//	h/<log>                  high mark of stores written before the meta key existed
//	l/<log>/<seq:8 BE>       an entry of any other log
//	l/<log>/<last:8 BE><count:4 BE><size:4 BE>
//	                         a segment of any other log
//	m/<log>                  a log's meta: high mark, first live seq, live count and bytes
//	n/<log>/<consumer>       entries deleted before the consumer had them: dropped for room
//	                         and expired by the retention (8 BE each)
//	s/<key>                  state KV (pipelines' windows, uplinks' ranges)
//	t/<log>/<seq:8 BE>       time index: entries from seq on were appended at or after this
//	                         time (unix ms, 8 BE); one key per log per minute of appends
//	x/dedup                  how many dedup keys were written since the last recount
//	x/dedup-width            the width of the dedup index's expiry buckets (ms, 8 BE)
//	z/<^end:8 BE><hash>      dedup index: the id's expiry (unix ms, 8 BE) under the end of
//	                         its expiry bucket, newest bucket first; with a Badger TTL
//
// The order is for compactions. Badger flushes a memtable into one L0 table, and moving
// L0 down rewrites every L1 table whose keys lie between the L0 tables' smallest and
// largest key. A memtable holds the newest entries of the bulk log, the newest dedup ids
// and a few small keys (meta, time index, cursors, state, the other logs). With the bulk
// log lowest, in ascending order, and the dedup index highest, newest first, that span
// holds the new keys and the small kinds only: the backlog of readings below it and the
// older ids above it stay where they are. With the previous layout (entries under
// l/<log>/ and ids under d/<hash>, random), every flush spanned the whole store, and each
// compaction rewrote all of L1, backlog included (BENCHMARKS.md, "Write amplification").
// convertLayout moves a store written with it at open.

// legacyBulkPrefix is where the previous layout kept the bulk log's entries.
func (s *Store) legacyBulkPrefix() string { return "l/" + s.opts.BulkLog + "/" }

// logKind is the key kind of log's entries: the store's bulk kind ('a', or 'l' for a
// read-only store in the previous layout) for the bulk log, 'l' for the others.
func (s *Store) logKind(log string) byte {
	if log == s.opts.BulkLog {
		return s.bulkKind
	}
	return 'l'
}

func (s *Store) logPrefix(log string) []byte {
	return []byte(string(s.logKind(log)) + "/" + log + "/")
}

func (s *Store) logKey(log string, seq uint64) []byte { return seqKey(s.logKind(log), log, seq) }

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

func missedKey(log, consumer string) []byte { return []byte("n/" + log + "/" + consumer) }

func missedPrefix(log string) []byte { return []byte("n/" + log + "/") }

const dedupPrefix = "z/"

// legacyDedupPrefix is where the previous layout kept dedup ids: d/<hash>.
const legacyDedupPrefix = "d/"

// dedupBuckets is how many expiry buckets a TTL spans. The ids of one bucket are keyed by
// hash, in no time order, so narrower buckets keep compactions of new ids off older ones
// (in TestMeasureWriteAmp a 16th of the TTL wrote 14% more per reading than a 64th); a
// lookup of an id the filter may hold reads its key in each bucket within the expiries of
// the filter generations that matched: one generation takes ids for a quarter of the
// TTL, so at most 17 reads.
const dedupBuckets = 64

// dedupHashLen is the length of the id hash kept per dedup key: 96 bits make a collision
// among a billion ids a one-in-10¹¹ event, and keep every key 22 bytes whatever the id.
const dedupHashLen = 12

// dedupHash is the dedup index's name for a record id.
func dedupHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return string(sum[:dedupHashLen])
}

// dedupBucketEnd is the end (unix ms, exclusive) of the bucket of ids that expire at exp,
// for buckets width ms wide: once it has passed, every id in the bucket has expired.
func dedupBucketEnd(exp, width int64) int64 { return (exp/width + 1) * width }

// dedupKey is the key of the id hashed to hash in the bucket ending at end.
func dedupKey(end int64, hash string) []byte { return append(dedupBucketKey(end), hash...) }

// dedupBucketKey is where the keys of the bucket ending at end begin.
func dedupBucketKey(end int64) []byte {
	k := make([]byte, 0, len(dedupPrefix)+8+dedupHashLen)
	k = append(k, dedupPrefix...)
	return binary.BigEndian.AppendUint64(k, ^uint64(end))
}

// parseDedupKey splits a dedup key into its bucket's end and the id's hash.
func parseDedupKey(k []byte) (end int64, hash []byte, ok bool) {
	if len(k) != len(dedupPrefix)+8+dedupHashLen {
		return 0, nil, false
	}
	return int64(^binary.BigEndian.Uint64(k[len(dedupPrefix):])), k[len(dedupPrefix)+8:], true
}

// dedupExpiry decodes the value of a dedup key: the id's expiry, unix ms on the store's
// clock; ok is false for a value that is not one.
func dedupExpiry(v []byte) (exp int64, ok bool) {
	if len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

var dedupCountKey = []byte("x/dedup")

// dedupWidthKey holds the width (ms, 8 BE) of the dedup index's buckets: lookups compute
// bucket ends with the width the live keys were written with.
var dedupWidthKey = []byte("x/dedup-width")

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

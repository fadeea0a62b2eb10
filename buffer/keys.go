package buffer

import "encoding/binary"

// Key layout (one Badger DB, prefixes keep the kinds apart):
//
//	l/<log>/<seq:8 BE>       an entry of a log
//	h/<log>                  the highest sequence number ever assigned in a log
//	c/<log>/<consumer>       a consumer's committed position (next seq, 8 BE)
//	s/<key>                  state KV (pipelines' windows, uplinks' ranges)
//	d/<id>                   dedup index, with a Badger TTL
func logPrefix(log string) []byte { return []byte("l/" + log + "/") }

func logKey(log string, seq uint64) []byte {
	k := make([]byte, 0, len(log)+11)
	k = append(k, "l/"...)
	k = append(k, log...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, seq)
}

func highKey(log string) []byte { return []byte("h/" + log) }

func cursorKey(log, consumer string) []byte { return []byte("c/" + log + "/" + consumer) }

func cursorPrefix(log string) []byte { return []byte("c/" + log + "/") }

func stateKey(key string) []byte { return []byte("s/" + key) }

func dedupKey(id string) []byte { return []byte("d/" + id) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

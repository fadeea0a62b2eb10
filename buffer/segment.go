// Segments: a log's entries are stored several to a Badger entry.

package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A segment is one Badger entry holding consecutive entries of one log: those a
// transaction of the writer appends to that log (a group commit's appends), up to
// segMaxBytes, split where their sequence numbers jump (an append of the group failed).
// One entry per group instead of one per reading means one key and one Badger entry
// header in the write-ahead log, in a flush and in every compaction, for all of them.
//
// Its key is the log's prefix, the segment's LAST sequence number (8 BE), how many entries
// it holds (4 BE) and the length of its value (4 BE): a forward seek to <prefix><from>
// lands on the segment that holds from (or the first after it), and iterating keys alone
// gives every segment's range and size (Badger knows the exact size of a value without
// reading it only while the value is in the LSM tree, not in the value log). A key with
// neither (8 bytes after the prefix) is an entry stored alone, as every entry was before
// segments: a segment of one whose value is the entry itself (the writer stores a lone
// entry so too; its value is in the LSM tree, below Badger's value threshold). Both forms
// are read everywhere, so a store written before segments needs no conversion.
//
// Its value is segVersion, then per entry its length (4 BE) and its bytes.
//
// Deletion (trimming, retention, drop_oldest) removes whole segments. One that straddles
// the boundary stays until its last entry is deleted: its entries below the log's first
// live sequence number (logMeta.first) are deleted for every reader and every count (Read
// and Tail skip them) though their bytes are still on disk.

// segVersion is the first byte of a segment's value.
const segVersion = 1

// segHeader is what a segment's value holds besides its entries: the version byte, and
// segFrame per entry.
const (
	segHeader = 1
	segFrame  = 4
)

// segMaxBytes bounds a segment's value (unless its one entry is larger): about one of
// Badger's blocks (4 KiB). Badger builds a table's blocks in arenas it pools, each grown to
// the largest block it held: with segments of up to a transaction (550 KiB) the live heap
// of TestMemoryBoundedUnderOverload reached 185–300 MiB, against 79 MiB with one entry per
// reading. A segment of 4 KiB holds ~16 readings of 230 bytes: their keys and Badger's
// per-entry overhead, shared, are a few bytes per reading.
const segMaxBytes = 4 << 10

// maxSegEntries bounds the entries of one segment (the count in its key).
const maxSegEntries = 1<<32 - 1

// segKey is the key of the segment of log holding count entries up to last in a value of
// size bytes.
func (s *Store) segKey(log string, last uint64, count uint32, size int) []byte {
	k := binary.BigEndian.AppendUint32(s.logKey(log, last), count)
	return binary.BigEndian.AppendUint32(k, uint32(size))
}

// segSuffix is the length of a segment's key after its log's prefix.
const segSuffix = 16

// segRange parses the part of a log key after its prefix: the first and last sequence
// numbers it holds, and whether it is a segment (else a lone entry).
func segRange(suffix []byte) (first, last uint64, seg, ok bool) {
	switch len(suffix) {
	case 8:
		last = binary.BigEndian.Uint64(suffix)
		return last, last, false, true
	case segSuffix:
		last = binary.BigEndian.Uint64(suffix)
		n := uint64(binary.BigEndian.Uint32(suffix[8:]))
		if n == 0 || n > last {
			return 0, 0, false, false
		}
		return last - n + 1, last, true, true
	}
	return 0, 0, false, false
}

// errSegment is a segment value that does not parse.
var errSegment = errors.New("buffer: corrupt segment")

// segEncoder builds a segment's value.
type segEncoder struct {
	buf   []byte // the value, once it holds two entries
	one   []byte // the first entry's value: a segment of one is stored as a lone entry
	first uint64
	last  uint64
	n     uint32
}

// add appends value as entry seq, which must follow the last one added.
func (e *segEncoder) add(seq uint64, value []byte) {
	switch e.n {
	case 0:
		e.first, e.one = seq, value
	case 1:
		e.buf = append(make([]byte, 0, max(segMaxBytes, e.size()+segFrame+len(value))), segVersion)
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(e.one)))
		e.buf = append(e.buf, e.one...)
	}
	if e.n > 0 {
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(value)))
		e.buf = append(e.buf, value...)
	}
	e.last = seq
	e.n++
}

// size is the length of e's value.
func (e *segEncoder) size() int {
	if e.n == 1 {
		return segHeader + segFrame + len(e.one)
	}
	return len(e.buf)
}

// value is e's segment value (for one entry, made now).
func (e *segEncoder) value() []byte {
	if e.n == 1 {
		v := append(make([]byte, 0, e.size()), segVersion)
		return append(binary.BigEndian.AppendUint32(v, uint32(len(e.one))), e.one...)
	}
	return e.buf
}

// segEntries calls fn for each entry of a segment's value that holds n entries, in order,
// with its index and bytes (valid during the call only). It returns errSegment when the
// value is not n entries exactly. fn's error ends the walk and is returned.
func segEntries(v []byte, n uint32, fn func(i uint32, value []byte) error) error {
	if len(v) < segHeader || v[0] != segVersion {
		return fmt.Errorf("%w: version %v", errSegment, v[:min(1, len(v))])
	}
	v = v[segHeader:]
	for i := uint32(0); i < n; i++ {
		if len(v) < segFrame {
			return fmt.Errorf("%w: entry %d of %d cut short", errSegment, i, n)
		}
		l := binary.BigEndian.Uint32(v)
		v = v[segFrame:]
		if uint64(l) > uint64(len(v)) {
			return fmt.Errorf("%w: entry %d of %d: %d bytes, %d left", errSegment, i, n, l, len(v))
		}
		if err := fn(i, v[:l:l]); err != nil {
			return err
		}
		v = v[l:]
	}
	if len(v) != 0 {
		return fmt.Errorf("%w: %d bytes after %d entries", errSegment, len(v), n)
	}
	return nil
}

// segment is one segment (or lone entry) as found by iterating a log's keys.
type segment struct {
	first, last uint64
	seg         bool  // a segment; else a lone entry (its value is the entry)
	size        int64 // the value's length
}

// segmentOf parses an item of a log's keys (under prefix); ok is false for a key that is
// not one.
func segmentOf(item *badger.Item, prefix []byte) (g segment, ok bool) {
	k := item.Key()
	if len(k) < len(prefix) {
		return segment{}, false
	}
	g.first, g.last, g.seg, ok = segRange(k[len(prefix):])
	if g.seg {
		g.size = int64(binary.BigEndian.Uint32(k[len(k)-4:]))
	} else {
		g.size = item.ValueSize() // exact for a value in the LSM tree
	}
	return g, ok
}

func (g segment) count() int64 { return int64(g.last - g.first + 1) }

// entries calls fn for each entry of a value of g with a sequence number in [from, to].
func (g segment) entries(v []byte, from, to uint64, fn func(seq uint64, value []byte) error) error {
	if !g.seg {
		if g.first < from || g.first > to {
			return nil
		}
		return fn(g.first, v)
	}
	return segEntries(v, uint32(g.count()), func(i uint32, value []byte) error {
		seq := g.first + uint64(i)
		if seq < from || seq > to {
			return nil
		}
		return fn(seq, value)
	})
}

// logicalBytes is what g's entries count for in their log's bytes (entrySize each), when
// all of them are live; from its value's length alone.
func (g segment) logicalBytes(log string) int64 {
	if !g.seg {
		return entrySize(log, int(g.size))
	}
	n := g.count()
	return n*entrySize(log, 0) + g.size - segHeader - segFrame*n
}

// txnSegments builds the segments of one transaction of the writer: per log, the entries
// its requests append, in order, one segment per run of consecutive numbers.
type txnSegments struct {
	open map[*logState]*segEncoder
}

// stage adds recs to the open segments of their logs; a log's segment whose numbers would
// jump is set in txn first, and the entries start a new one.
func (x *txnSegments) stage(s *Store, txn *badger.Txn, recs []rec) error {
	for _, r := range recs {
		e := x.open[r.ls]
		if e == nil {
			if x.open == nil {
				x.open = map[*logState]*segEncoder{}
			}
			e = &segEncoder{}
			x.open[r.ls] = e
		}
		full := e.size()+segFrame+len(r.value) > segMaxBytes || e.n == maxSegEntries
		if e.n > 0 && (r.seq != e.last+1 || full) {
			if err := e.set(s, txn, r.ls.name); err != nil {
				return err
			}
		}
		e.add(r.seq, r.value)
	}
	return nil
}

// flush sets every open segment in txn.
func (x *txnSegments) flush(s *Store, txn *badger.Txn) error {
	for ls, e := range x.open {
		if e.n == 0 {
			continue
		}
		if err := e.set(s, txn, ls.name); err != nil {
			return err
		}
	}
	return nil
}

func (x *txnSegments) reset() { clear(x.open) }

// set stages e's segment of log in txn and empties e (the transaction keeps the value
// until it commits: e starts a new buffer).
func (e *segEncoder) set(s *Store, txn *badger.Txn, log string) error {
	var err error
	if e.n == 1 {
		err = txn.Set(s.logKey(log, e.last), e.one)
	} else {
		err = txn.Set(s.segKey(log, e.last, e.n, len(e.buf)), e.buf)
	}
	e.buf, e.one, e.n = nil, nil, 0
	return err
}

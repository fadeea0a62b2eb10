package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgegate/edgegate/internal/clock"
)

// segmentKeys lists the ranges of log's keys: "first-last" for a segment, "seq" for an
// entry alone.
func segmentKeys(t *testing.T, s *Store, log string) []string {
	t.Helper()
	var out []string
	prefix := s.logPrefix(log)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(keysOnly(prefix))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			g, ok := segmentOf(it.Item(), prefix)
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("bad key %x", it.Item().Key()))
			case g.seg:
				out = append(out, fmt.Sprintf("%d-%d", g.first, g.last))
			default:
				out = append(out, fmt.Sprint(g.first))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// numbered returns n entries valued prefix-0 … prefix-(n-1).
func numbered(prefix string, n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i].Value = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return es
}

// TestSegmentsOnePerAppend: the entries of one append are one Badger entry, keyed by its
// last number; an append of one is an entry alone; a segment holds at most segMaxBytes.
func TestSegmentsOnePerAppend(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mustAppend(t, s, "raw", numbered("a", 10)...)
	mustAppend(t, s, "raw", numbered("b", 1)...)
	big := make([]Entry, 3)
	for i := range big {
		big[i].Value = bytes.Repeat([]byte{byte('x' + i)}, segMaxBytes/3)
	}
	mustAppend(t, s, "raw", big...)
	if got, want := segmentKeys(t, s, "raw"), []string{"1-10", "11", "12-13", "14"}; !slices.Equal(got, want) {
		t.Errorf("keys %q, want %q", got, want)
	}
	seqs, vs := readAll(t, s, "raw", 0)
	if len(seqs) != 14 || seqs[13] != 14 || vs[9] != "a-9" || vs[10] != "b-0" || vs[13] != string(big[2].Value) {
		t.Errorf("read %v", seqs)
	}
}

// TestReadFromInsideSegment: a read from any number inside a segment starts there, a
// limit ends it inside one, and the next read goes on from where it stopped.
func TestReadFromInsideSegment(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mustAppend(t, s, "raw", numbered("a", 10)...) // 1-10
	mustAppend(t, s, "raw", numbered("b", 10)...) // 11-20
	if keys := segmentKeys(t, s, "raw"); len(keys) != 2 {
		t.Fatalf("keys %q, want two segments", keys)
	}
	for from := uint64(0); from <= 21; from++ {
		seqs, _ := readAll(t, s, "raw", from)
		want := 20 - int(max(from, 1)) + 1
		if len(seqs) != max(want, 0) || want > 0 && seqs[0] != max(from, 1) {
			t.Errorf("read from %d: %v", from, seqs)
		}
	}
	var got []string
	next := uint64(4)
	for range 10 {
		n, err := s.Read("raw", next, 3, func(seq uint64, v []byte) error {
			got = append(got, fmt.Sprintf("%d:%s", seq, v))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		next = n
	}
	if len(got) != 17 || got[0] != "4:a-3" || got[6] != "10:a-9" || got[7] != "11:b-0" || got[16] != "20:b-9" || next != 21 {
		t.Errorf("reads of 3 from 4: %q, next %d", got, next)
	}
	// ErrStop inside a segment: the entry it was returned for is not counted as read.
	n, err := s.Read("raw", 12, 0, func(seq uint64, v []byte) error {
		if seq == 14 {
			return ErrStop
		}
		return nil
	})
	if err != nil || n != 14 {
		t.Errorf("stopped at 14: next %d, %v", n, err)
	}
}

// TestTrimPartOfSegment: trimming below a number inside a segment deletes the entries
// below it for every reader and count, exactly, while the segment stays until its last
// entry is trimmed, across a reopen.
func TestTrimPartOfSegment(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustAppend(t, s, "raw", numbered("a", 10)...) // 1-10
	mustAppend(t, s, "raw", numbered("b", 5)...)  // 11-15
	n, err := s.Trim(bg, "raw", 4)
	if err != nil || n != 3 {
		t.Fatalf("trim below 4: %d, %v; want 3", n, err)
	}
	check := func(when string, first uint64, count int64) {
		t.Helper()
		seqs, _ := readAll(t, s, "raw", 0)
		if len(seqs) != int(count) || seqs[0] != first {
			t.Errorf("%s: read %v, want %d from %d", when, seqs, count, first)
		}
		if c, _ := s.Count("raw"); c != count {
			t.Errorf("%s: count %d, want %d", when, c, count)
		}
		if f, _ := s.FirstSeq("raw"); f != first {
			t.Errorf("%s: first %d, want %d", when, f, first)
		}
		var want int64
		for _, v := range append(numbered("a", 10), numbered("b", 5)...)[first-1:] {
			want += entrySize("raw", len(v.Value))
		}
		info, err := s.Logs()
		if err != nil || info[0].First != first || info[0].Last != 15 || info[0].Count != count || info[0].Bytes != want {
			t.Errorf("%s: stats %+v %v, want first %d, count %d, %d bytes", when, info, err, first, count, want)
		}
		var tail []uint64
		if err := s.Tail("raw", 100, func(seq uint64, _ []byte) error { tail = append(tail, seq); return nil }); err != nil || !slices.Equal(tail, seqs) {
			t.Errorf("%s: tail %v %v, want %v", when, tail, err, seqs)
		}
	}
	check("trimmed below 4", 4, 12)
	if keys := segmentKeys(t, s, "raw"); !slices.Equal(keys, []string{"1-10", "11-15"}) {
		t.Errorf("keys %q: the segment partly trimmed must stay", keys)
	}
	s.Close()
	s = open(t, dir, Options{})
	check("reopened", 4, 12)
	if n, err := s.Trim(bg, "raw", 8); err != nil || n != 4 {
		t.Fatalf("trim below 8: %d, %v; want 4", n, err)
	}
	check("trimmed below 8", 8, 8)
	if n, err := s.Trim(bg, "raw", 12); err != nil || n != 4 {
		t.Fatalf("trim below 12: %d, %v; want 4 (8-11)", n, err)
	}
	check("trimmed below 12", 12, 4)
	if keys := segmentKeys(t, s, "raw"); !slices.Equal(keys, []string{"11-15"}) {
		t.Errorf("keys %q, want the first segment gone", keys)
	}
	if got := s.Stats().Trimmed.Load(); got != 8 {
		t.Errorf("trimmed %d since the reopen, want 8", got)
	}
	if n, err := s.Trim(bg, "raw", 100); err != nil || n != 4 {
		t.Fatalf("trim everything: %d, %v; want 4", n, err)
	}
	if keys := segmentKeys(t, s, "raw"); len(keys) != 0 {
		t.Errorf("keys %q left", keys)
	}
	if c, _ := s.Count("raw"); c != 0 {
		t.Errorf("count %d", c)
	}
}

// TestRetentionAcrossSegments: the retention deletes whole segments and part of one,
// with exact counts of what each consumer never had (as
// TestRetentionDeletesByAgeAndCountsUndelivered, with the entries appended together).
func TestRetentionAcrossSegments(t *testing.T) {
	clk := clock.NewFake(t0)
	s := open(t, t.TempDir(), Options{Clock: clk, Retention: time.Hour, Consumers: map[string][]string{"raw": {"up", "late"}}})
	mustAppend(t, s, "raw", numbered("a", 10)...) // 1-10 at 12:00
	clk.Set(t0.Add(30 * time.Minute))
	mustAppend(t, s, "raw", numbered("b", 5)...) // 11-15
	clk.Set(t0.Add(90 * time.Minute))
	mustAppend(t, s, "raw", numbered("c", 5)...) // 16-20
	if err := s.Commit(bg, "raw", "up", 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(bg, "raw", "late", 13); err != nil { // past the trim: no trim by it
		t.Fatal(err)
	}
	clk.Set(t0.Add(100 * time.Minute))
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); fmt.Sprint(seqs) != "[16 17 18 19 20]" {
		t.Fatalf("kept %v", seqs)
	}
	st := s.Stats()
	if st.Trimmed.Load() != 4 || st.Expired.Load() != 11 {
		t.Errorf("trimmed %d, expired %d; want 4 and 11", st.Trimmed.Load(), st.Expired.Load())
	}
	m, err := s.MissedBy("raw")
	if err != nil || m["up"] != (Missed{Retention: 11}) || m["late"] != (Missed{Retention: 3}) {
		t.Errorf("missed %+v %v; want up 11 (5-15), late 3 (13-15)", m, err)
	}
	if keys := segmentKeys(t, s, "raw"); !slices.Equal(keys, []string{"16-20"}) {
		t.Errorf("keys %q", keys)
	}
}

// TestDropOldestExactAcrossSegments: drop_oldest deletes whole segments, oldest first,
// with exact counts: per log, and per consumer of what it never had, whether its
// position is before, inside or after a dropped segment.
func TestDropOldestExactAcrossSegments(t *testing.T) {
	s := open(t, t.TempDir(), Options{Consumers: map[string][]string{"raw": {"none", "mid", "past"}}})
	for i := range 6 {
		mustAppend(t, s, "raw", numbered(fmt.Sprint(i), 10)...) // 1-10, 11-20, ... 51-60
	}
	for c, pos := range map[string]uint64{"mid": 15, "past": 45} {
		if err := s.Commit(bg, "raw", c, pos); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Trim(bg, "raw", 4); err != nil { // the first segment partly trimmed
		t.Fatal(err)
	}
	ls, _ := s.logState("raw")
	var seg int64
	for _, e := range numbered("0", 10) {
		seg += entrySize("raw", len(e.Value))
	}
	// As the budget does (on the writer goroutine, idle now: every request returned), for
	// a little more than two segments' bytes.
	n, _, err := s.dropOldest(ls, math.MaxUint64, 2*seg+1, dropRoom)
	if err != nil {
		t.Fatal(err)
	}
	// 4-10 (7), 11-20 (10), 21-30 (10): whole segments until more than 2 segments' bytes.
	if n != 27 {
		t.Errorf("dropped %d, want 27", n)
	}
	if keys := segmentKeys(t, s, "raw"); !slices.Equal(keys, []string{"31-40", "41-50", "51-60"}) {
		t.Errorf("keys %q", keys)
	}
	m, err := s.MissedBy("raw")
	if err != nil || m["none"] != (Missed{Room: 27}) || m["mid"] != (Missed{Room: 16}) || m["past"] != (Missed{}) {
		t.Errorf("missed %+v %v; want none 27, mid 16 (15-30), past nothing", m, err)
	}
	if c, _ := s.Count("raw"); c != 30 {
		t.Errorf("count %d, want 30", c)
	}
	if f, _ := s.FirstSeq("raw"); f != 31 {
		t.Errorf("first %d, want 31", f)
	}
	if got := s.Stats().Dropped.Load(); got != 27 {
		t.Errorf("dropped counter %d", got)
	}
	if b := ls.bytes.Load(); b != 3*seg {
		t.Errorf("bytes %d, want %d", b, 3*seg)
	}
}

// TestOpenStoreWithoutSegments: a store written before segments (an entry per key) opens
// and reads as it was; it is trimmed, dropped and appended to with both forms side by
// side, and a meta key rebuilt from the entries counts both.
func TestOpenStoreWithoutSegments(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustAppend(t, s, "raw", numbered("a", 10)...)
	mustAppend(t, s, "agg", numbered("g", 3)...)
	raw, agg := entries(t, s, "raw"), entries(t, s, "agg")
	s.Close()
	db, err := badger.Open(badgerOptions(dir, defaultMemTableSize, s.log))
	if err != nil {
		t.Fatal(err)
	}
	splitSegments(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, Options{})
	if keys := segmentKeys(t, s, "raw"); len(keys) != 10 || keys[0] != "1" {
		t.Fatalf("keys %q, want an entry per key", keys)
	}
	if got := entries(t, s, "raw"); !slices.Equal(got, raw) {
		t.Errorf("raw %q, want %q", got, raw)
	}
	if got := entries(t, s, "agg"); !slices.Equal(got, agg) {
		t.Errorf("agg %q, want %q", got, agg)
	}
	mustAppend(t, s, "raw", numbered("b", 5)...) // 11-15, a segment
	if keys := segmentKeys(t, s, "raw"); len(keys) != 11 || keys[10] != "11-15" {
		t.Errorf("keys %q, want the new entries in a segment", keys)
	}
	if n, err := s.Trim(bg, "raw", 12); err != nil || n != 11 {
		t.Errorf("trim below 12: %d %v", n, err)
	}
	if got := entries(t, s, "raw"); fmt.Sprint(got) != "[12:b-1 13:b-2 14:b-3 15:b-4]" {
		t.Errorf("after the trim: %q", got)
	}
	s.Close()

	// A store older still, without meta keys: rebuilt from both forms.
	db, err = badger.Open(badgerOptions(dir, defaultMemTableSize, s.log))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(seqKey('a', "raw", 20), []byte("lone")); err != nil {
			return err
		}
		return txn.Delete(metaKey("raw"))
	})
	if err == nil {
		err = db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	if c, _ := s.Count("raw"); c != 6 { // 11-15 (the segment: its trim was in the meta) and 20
		t.Errorf("rebuilt count %d, want 6", c)
	}
	if last, _ := s.LastSeq("raw"); last != 20 {
		t.Errorf("rebuilt last %d", last)
	}
}

// FuzzSegEntries: the segment decoder never panics nor reads past its value, and what it
// accepts encodes back to the same bytes.
func FuzzSegEntries(f *testing.F) {
	var e segEncoder
	e.add(7, []byte("one"))
	e.add(8, nil)
	e.add(9, []byte(`{"v":1}`))
	f.Add(e.value(), uint32(3))
	f.Add([]byte{segVersion}, uint32(0))
	f.Add([]byte{segVersion, 0, 0, 0, 9, 'x'}, uint32(1))
	f.Add([]byte{2}, uint32(1))
	f.Fuzz(func(t *testing.T, v []byte, n uint32) {
		n %= 1 << 16
		var vals [][]byte
		err := segEntries(v, n, func(i uint32, value []byte) error {
			if int(i) != len(vals) {
				t.Fatalf("entry %d after %d", i, len(vals))
			}
			vals = append(vals, bytes.Clone(value))
			return nil
		})
		if err != nil {
			return
		}
		if uint32(len(vals)) != n {
			t.Fatalf("%d entries decoded, want %d", len(vals), n)
		}
		if n == 0 {
			return
		}
		var back segEncoder
		for i, v := range vals {
			back.add(uint64(i+1), v)
		}
		if !bytes.Equal(back.value(), v) {
			t.Fatalf("re-encoded %x, want %x", back.value(), v)
		}
	})
}

// FuzzSegRange: a log key's suffix parses to a range that its key encodes back to, or
// not at all.
func FuzzSegRange(f *testing.F) {
	s := &Store{opts: Options{BulkLog: "raw"}, bulkKind: 'a'}
	prefix := s.logPrefix("raw")
	f.Add(s.segKey("raw", 10, 3, 99)[len(prefix):])
	f.Add(s.logKey("raw", 7)[len(prefix):])
	f.Add(s.segKey("raw", 2, 3, 0)[len(prefix):])
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, suffix []byte) {
		first, last, seg, ok := segRange(suffix)
		if !ok {
			return
		}
		if first == 0 && seg || first > last {
			t.Fatalf("%x: range %d..%d", suffix, first, last)
		}
		var back []byte
		if seg {
			back = s.segKey("raw", last, uint32(last-first+1), int(binary.BigEndian.Uint32(suffix[12:])))
		} else {
			back = s.logKey("raw", last)
		}
		if !bytes.Equal(back[len(prefix):], suffix) {
			t.Fatalf("%x parsed to %d..%d (segment %v), which is keyed %x", suffix, first, last, seg, back[len(prefix):])
		}
	})
}

// TestTailOfUnknownLog: tailing a log that never had entries (edgegate buffer tail -log
// x) reads nothing and does not make the log one of the store's.
func TestTailOfUnknownLog(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mustAppend(t, s, "raw", numbered("a", 3)...)
	if _, err := s.Trim(bg, "raw", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Tail("nothing", 5, func(uint64, []byte) error { t.Error("read an entry"); return nil }); err != nil {
		t.Fatal(err)
	}
	logs, err := s.Logs()
	if err != nil || len(logs) != 1 || logs[0].Name != "raw" {
		t.Errorf("logs %+v %v, want raw alone", logs, err)
	}
	var tail []uint64
	if err := s.Tail("raw", 5, func(seq uint64, _ []byte) error { tail = append(tail, seq); return nil }); err != nil || fmt.Sprint(tail) != "[2 3]" {
		t.Errorf("tail %v %v, want [2 3]", tail, err)
	}
}

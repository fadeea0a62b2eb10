package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
)

// allKeys lists the store's keys in order.
func allKeys(t *testing.T, db *badger.DB) [][]byte {
	t.Helper()
	var keys [][]byte
	err := db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); !bytes.HasPrefix(k, []byte("!badger!")) {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestKeyLayoutOrder: the bulk log's entries sort below every other key and the dedup
// index above, newest bucket first, so that a memtable's new keys span neither backlog.
func TestKeyLayoutOrder(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s := open(t, t.TempDir(), Options{DedupTTL: 16 * time.Minute, Clock: clk})
	ctx := context.Background()
	for round := range 3 {
		appendIDs(t, s, logs.Bulk, fmt.Sprintf("r%d", round), 0, 50)
		appendIDs(t, s, "agg", fmt.Sprintf("a%d", round), 0, 5)
		if err := s.Commit(ctx, logs.Bulk, "uplink", uint64(10*round+1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, func(tx *Tx) { tx.Put("window/x", []byte{byte(round)}) }); err != nil {
			t.Fatal(err)
		}
		clk.Advance(5 * time.Minute)
	}
	keys := allKeys(t, s.db)
	var bulk, dedup, other int
	var lastEnd int64 = 1 << 62
	for i, k := range keys {
		switch {
		case bytes.HasPrefix(k, s.logPrefix(logs.Bulk)):
			first, last, _, _ := segRange(k[len(s.logPrefix(logs.Bulk)):])
			bulk += int(last - first + 1) // entries: a key holds a segment of them
			if other+dedup > 0 {
				t.Fatalf("key %d %q of the bulk log sorts after %d other keys", i, k, other+dedup)
			}
		case bytes.HasPrefix(k, []byte(dedupPrefix)):
			dedup++
			end, _, ok := parseDedupKey(k)
			if !ok || end > lastEnd {
				t.Fatalf("dedup key %d %x: bucket end %d after %d (want newest first)", i, k, end, lastEnd)
			}
			lastEnd = end
		default:
			other++
			if dedup > 0 {
				t.Fatalf("key %q sorts among the dedup keys", k)
			}
		}
	}
	if bulk != 150 || dedup != 165 || other == 0 {
		t.Errorf("%d bulk entries, %d dedup keys, %d others; want 150, 165 and some", bulk, dedup, other)
	}
	if len(s.dedupEnds) != 3 {
		t.Errorf("live buckets %v, want 3 (one per round)", s.dedupEnds)
	}
}

// TestDedupBuckets: ids in several expiry buckets are found in each, across a reopen, until
// they expire; buckets whose ids all expired are dropped; a clock set back still finds
// the ids written before.
func TestDedupBuckets(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	opts := Options{DedupTTL: 16 * time.Minute, DedupCacheSize: 1, Clock: clk} // buckets of 15 s
	s := open(t, dir, opts)
	for _, b := range []string{"a", "b", "c", "d"} { // at 0, 4, 8 and 12 minutes
		if d := appendIDs(t, s, logs.Bulk, b, 0, 300); d != 0 {
			t.Fatalf("%d fresh ids of %s reported duplicate", d, b)
		}
		clk.Advance(4 * time.Minute)
	}
	clk.Set(t0.Add(13 * time.Minute))
	ends := slices.Clone(s.dedupEnds)
	if len(ends) != 4 || !slices.IsSortedFunc(ends, func(a, b int64) int { return int(b - a) }) {
		t.Fatalf("live buckets %v, want 4, newest first", ends)
	}
	for _, b := range []string{"a", "b", "c", "d"} {
		if d := appendIDs(t, s, logs.Bulk, b, 0, 300); d != 300 {
			t.Errorf("%d of 300 resent ids of %s reported duplicate", d, b)
		}
	}
	s.Close()

	s = open(t, dir, opts)
	if !slices.Equal(s.dedupEnds, ends) {
		t.Errorf("after a reopen, live buckets %v, want %v", s.dedupEnds, ends)
	}
	<-s.filterDone
	if d := appendIDs(t, s, logs.Bulk, "b", 0, 300); d != 300 {
		t.Errorf("after a reopen, %d of 300 resent ids reported duplicate", d)
	}

	clk.Set(t0.Add(17*time.Minute + time.Millisecond)) // a expired (at 16 min), and its bucket (16¼ min)
	if d := appendIDs(t, s, logs.Bulk, "a", 0, 300); d != 0 {
		t.Errorf("%d expired ids reported duplicate", d)
	}
	if d := appendIDs(t, s, logs.Bulk, "c", 0, 300); d != 300 {
		t.Errorf("%d of 300 live ids reported duplicate", d)
	}
	if len(s.dedupEnds) != 4 || s.dedupEnds[len(s.dedupEnds)-1] != ends[2] {
		t.Errorf("live buckets %v: want a's dropped, b's %d the oldest (and a's new one the newest)", s.dedupEnds, ends[2])
	}

	// One filter generation (a quarter TTL) spans several buckets (15 s): a lookup reads
	// past the newest bucket in its range.
	appendIDs(t, s, logs.Bulk, "f", 0, 300)
	clk.Advance(30 * time.Second)
	appendIDs(t, s, logs.Bulk, "g", 0, 300)
	clk.Advance(30 * time.Second)
	if d := appendIDs(t, s, logs.Bulk, "f", 0, 300); d != 300 {
		t.Errorf("%d of 300 ids resent a minute later reported duplicate", d)
	}

	clk.Set(t0.Add(-time.Hour)) // the clock goes back an hour
	if d := appendIDs(t, s, logs.Bulk, "d", 0, 300); d != 300 {
		t.Errorf("after the clock went back, %d of 300 stored ids reported duplicate", d)
	}
	if d := appendIDs(t, s, logs.Bulk, "e", 0, 300); d != 0 {
		t.Errorf("after the clock went back, %d fresh ids reported duplicate", d)
	}
	if d := appendIDs(t, s, logs.Bulk, "e", 0, 300); d != 300 {
		t.Errorf("after the clock went back, %d of 300 resent ids reported duplicate", d)
	}
}

// toLegacyLayout rewrites a closed store's bulk log and dedup index as the previous
// layout kept them (l/raw/<seq>, an entry per key, and d/<hash>), the first `entries`
// entries only (-1: all; the others stay a/raw/<seq>, an entry per key, as the layout
// before segments kept them), and adds a legacy id that expired.
func toLegacyLayout(t *testing.T, dir string, entries int, expired []byte) {
	t.Helper()
	db, err := badger.Open(badgerOptions(dir, defaultMemTableSize, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	splitSegments(t, db)
	wb := db.NewWriteBatch()
	moved := 0
	for _, k := range allKeys(t, db) {
		var nk []byte
		switch {
		case bytes.HasPrefix(k, []byte("a/"+logs.Bulk+"/")) && (entries < 0 || moved < entries):
			nk = append([]byte("l/"+logs.Bulk+"/"), k[len("a/"+logs.Bulk+"/"):]...)
			moved++
		case bytes.HasPrefix(k, []byte(dedupPrefix)):
			_, h, _ := parseDedupKey(k)
			nk = append([]byte(legacyDedupPrefix), h...)
		default:
			continue
		}
		err := db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(k)
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			e := badger.NewEntry(nk, v)
			if exp := item.ExpiresAt(); exp > 0 {
				e = e.WithTTL(time.Until(time.Unix(int64(exp), 0)))
			}
			if err := wb.SetEntry(e); err != nil {
				return err
			}
			return wb.Delete(k)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.SetEntry(badger.NewEntry(append([]byte(legacyDedupPrefix), "expired-id-h"...), expired)); err != nil {
		t.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
}

// splitSegments rewrites every segment of every log as lone entries: a key per entry, as
// stores were written before segments.
func splitSegments(t *testing.T, db *badger.DB) {
	t.Helper()
	wb := db.NewWriteBatch()
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < 2 || k[0] != 'a' && k[0] != 'l' || k[1] != '/' {
				continue
			}
			i := bytes.IndexByte(k[2:], '/')
			if i < 0 {
				continue
			}
			prefix := slices.Clone(k[:3+i])
			g, ok := segmentOf(it.Item(), prefix)
			if !ok || !g.seg {
				continue
			}
			err := it.Item().Value(func(v []byte) error {
				return g.entries(v, 0, math.MaxUint64, func(seq uint64, value []byte) error {
					return wb.Set(binary.BigEndian.AppendUint64(slices.Clone(prefix), seq), slices.Clone(value))
				})
			})
			if err != nil {
				return err
			}
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// entries lists every entry of log as "seq:value".
func entries(t *testing.T, s *Store, log string) []string {
	t.Helper()
	seqs, vals := readAll(t, s, log, 0)
	out := make([]string, len(seqs))
	for i := range seqs {
		out[i] = fmt.Sprintf("%d:%s", seqs[i], vals[i])
	}
	return out
}

// TestConvertLayout: a store written with the previous key layout is read as it is by a
// read-only open (buffer stats and tail), and converted by the first writable one: every
// entry in place with its sequence number, every live id still a duplicate, the expired
// id gone, and no key left under the old prefixes. A conversion cut short is finished by
// the next open.
func TestConvertLayout(t *testing.T) {
	for _, cut := range []int{-1, 1200} {
		t.Run(fmt.Sprintf("moved=%d", cut), func(t *testing.T) {
			dir := t.TempDir()
			clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			opts := Options{DedupTTL: time.Hour, DedupCacheSize: 1, Clock: clk}
			s := open(t, dir, opts)
			appendIDs(t, s, logs.Bulk, "r", 0, 3000)
			appendIDs(t, s, "agg", "g", 0, 20)
			raw, agg := entries(t, s, logs.Bulk), entries(t, s, "agg")
			s.Close()
			past := u64(uint64(clk.Now().Add(-time.Minute).UnixMilli()))
			toLegacyLayout(t, dir, cut, past)

			ro, err := Open(Options{Dir: dir, ReadOnly: true})
			switch {
			case cut >= 0:
				if err == nil || !strings.Contains(err.Error(), "interrupted") {
					t.Fatalf("read-only open of a half-converted store: %v, want an error saying the conversion was interrupted", err)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if got := entries(t, ro, logs.Bulk); !slices.Equal(got, raw) {
					t.Errorf("read-only, the previous layout reads %d entries, want %d", len(got), len(raw))
				}
				ro.Close()
			}

			var told []string
			withProgress := opts
			withProgress.Progress = func(status string) { told = append(told, status) }
			withProgress.scanSteps = 97 // the conversion reads in many steps, and writes in several transactions
			s = open(t, dir, withProgress)
			if len(told) == 0 || !strings.Contains(told[0], "key layout") {
				t.Errorf("progress told %q, want the conversion announced", told)
			}
			for _, p := range []string{s.legacyBulkPrefix(), legacyDedupPrefix} {
				if left, err := s.exists([]byte(p)); err != nil || left {
					t.Errorf("keys left under %q: %v %v", p, left, err)
				}
			}
			if got := entries(t, s, logs.Bulk); !slices.Equal(got, raw) {
				t.Errorf("converted, %d entries of %q (first %q), want %d (%q)", len(got), logs.Bulk, got[:min(1, len(got))], len(raw), raw[0])
			}
			if got := entries(t, s, "agg"); !slices.Equal(got, agg) {
				t.Errorf("agg changed: %d entries, want %d", len(got), len(agg))
			}
			<-s.filterDone
			if d := appendIDs(t, s, logs.Bulk, "r", 0, 3000); d != 3000 {
				t.Errorf("converted, %d of 3000 resent ids reported duplicate", d)
			}
			if n, err := s.LastSeq(logs.Bulk); err != nil || n != 3000 {
				t.Errorf("LastSeq %d %v, want 3000", n, err)
			}
			if d := appendIDs(t, s, logs.Bulk, "new", 0, 10); d != 0 {
				t.Errorf("%d fresh ids reported duplicate", d)
			}
			if got := entries(t, s, logs.Bulk); len(got) != 3010 || got[3000] != "3001:new-0" {
				t.Errorf("after the conversion, appends go on at %q, want 3001:new-0", got[min(3000, len(got)-1)])
			}
			s.Close()
			told = nil
			s = open(t, dir, withProgress)
			if len(told) != 0 {
				t.Errorf("a converted store's open told %q", told)
			}
		})
	}
}

// TestDedupLookupNarrowed: a lookup reads only the buckets in the expiry range the filter
// gives, and the filter's generations bound the expiries of the ids they hold.
func TestDedupLookupNarrowed(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	ttl := 16 * time.Minute
	s := open(t, t.TempDir(), Options{DedupTTL: ttl, DedupCacheSize: 1, Clock: clk})
	<-s.filterDone
	appendIDs(t, s, logs.Bulk, "a", 0, 10) // a at 0 min, b at 8 min: two filter generations
	clk.Advance(8 * time.Minute)
	appendIDs(t, s, logs.Bulk, "b", 0, 10)
	clk.Advance(time.Minute)
	now := clk.Now().UnixMilli()
	expA := t0.Add(ttl).UnixMilli()
	expB := t0.Add(8*time.Minute + ttl).UnixMilli()
	for _, c := range []struct {
		id     string
		exp    int64
		lo, hi int64 // the range searched
		found  bool
	}{
		{"a-3", expA, expA, expA, true},
		{"a-3", expA, expB, expB, false}, // b's bucket only
		{"b-3", expB, expB - 1000, expB + 1000, true},
		{"b-3", expB, expA, expA + 60_000, false},
		{"b-3", expB, math.MinInt64, math.MaxInt64, true},
	} {
		txn := s.db.NewTransaction(false)
		exp, ok, err := s.lookupDedup(txn, dedupHash(c.id), now, c.lo, c.hi)
		txn.Discard()
		if err != nil || ok != c.found || ok && exp != c.exp {
			t.Errorf("lookup of %s in [%d, %d]: %d %v %v, want found %v (expiry %d)", c.id, c.lo, c.hi, exp, ok, err, c.found, c.exp)
		}
	}
	for _, c := range []struct {
		id  string
		exp int64
	}{{"a-3", expA}, {"b-3", expB}} {
		lo, hi, ok := s.filter.expiries(dedupHash(c.id), now)
		if !ok || c.exp < lo || c.exp > hi || hi-lo > ttl.Milliseconds()/4 {
			t.Errorf("filter bounds %s in [%d, %d] (%v), want a quarter TTL around %d", c.id, lo, hi, ok, c.exp)
		}
	}
}

// TestDedupWidthKept: the bucket width is the one the live keys were written with, though
// the TTL changed; once they all expired, the new TTL's.
func TestDedupWidthKept(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s := open(t, dir, Options{DedupTTL: 16 * time.Minute, DedupCacheSize: 1, Clock: clk})
	if s.dedupWidth != 15_000 {
		t.Fatalf("width %d ms for a 16 min TTL, want 15 000", s.dedupWidth)
	}
	appendIDs(t, s, logs.Bulk, "a", 0, 100)
	s.Close()

	longer := Options{DedupTTL: 64 * time.Minute, DedupCacheSize: 1, Clock: clk}
	s = open(t, dir, longer)
	if s.dedupWidth != 15_000 {
		t.Errorf("width %d ms with live keys of 15 000", s.dedupWidth)
	}
	<-s.filterDone
	if d := appendIDs(t, s, logs.Bulk, "a", 0, 100); d != 100 {
		t.Errorf("with the TTL changed, %d of 100 resent ids reported duplicate", d)
	}
	s.Close()

	clk.Advance(time.Hour) // every id expired
	s = open(t, dir, longer)
	if s.dedupWidth != 60_000 {
		t.Errorf("width %d ms once the keys expired, want 60 000 (a 64th of 64 min)", s.dedupWidth)
	}
}

// TestBulkLogOption: the log Options.BulkLog names is the one keyed apart (a/), every other
// log, raw included, with the small kinds (l/); by default it is the schema's logs.Bulk.
func TestBulkLogOption(t *testing.T) {
	for _, c := range []struct{ bulk, want string }{{"", logs.Bulk}, {"readings", "readings"}} {
		s := open(t, t.TempDir(), Options{BulkLog: c.bulk})
		for _, log := range []string{logs.Raw, "readings", logs.Agg} {
			appendIDs(t, s, log, log, 0, 3)
		}
		kinds := map[string]string{}
		for _, k := range allKeys(t, s.db) {
			for _, log := range []string{logs.Raw, "readings", logs.Agg} {
				if len(k) > 2 && bytes.HasPrefix(k[2:], []byte(log+"/")) && (k[0] == 'a' || k[0] == 'l') {
					first, last, _, _ := segRange(k[3+len(log):]) // a key per segment of entries
					kinds[log] += strings.Repeat(string(k[0]), int(last-first+1))
				}
			}
		}
		for _, log := range []string{logs.Raw, "readings", logs.Agg} {
			want := "lll"
			if log == c.want {
				want = "aaa"
			}
			if kinds[log] != want {
				t.Errorf("BulkLog %q: entries of %q keyed %q, want %q", c.bulk, log, kinds[log], want)
			}
		}
		s.Close()
	}
}

package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The log contract: what every consumer of the store (ingest, pipelines, uplinks, the CLI)
// relies on. There is one implementation, Badger; the suite runs against every
// configuration that changes its write path — each sync policy, with and without a disk
// budget — and each case checks its promises again after a close and reopen.
type impl struct {
	name string
	opts Options
}

var impls = []impl{
	{"sync-always", Options{DedupTTL: time.Hour}},
	{"sync-interval", Options{DedupTTL: time.Hour, SyncInterval: 5 * time.Millisecond}},
	{"budgeted", Options{DedupTTL: time.Hour, MaxBytes: 256 << 20, ReserveFree: 1 << 20, OnFull: Reject}},
	{"small-memtables", Options{DedupTTL: time.Hour, memTableSize: 1 << 20}},
}

// harness opens a store of one configuration in a directory, and reopens it.
type harness struct {
	t    *testing.T
	dir  string
	opts Options
	s    *Store
}

func (h *harness) reopen() *Store {
	h.t.Helper()
	if h.s != nil {
		if err := h.s.Close(); err != nil {
			h.t.Fatalf("close: %v", err)
		}
	}
	h.s = open(h.t, h.dir, h.opts)
	return h.s
}

func TestLogContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"append assigns dense increasing numbers", contractAppend},
		{"read from any position, bounded, stoppable", contractRead},
		{"numbers are never reused after trims and reopens", contractNumbersUnique},
		{"cursors and consumed positions", contractCursors},
		{"update is atomic", contractUpdate},
		{"dedup by id, across reopens", contractDedup},
		{"wait wakes on append", contractWait},
		{"concurrent appends are all stored once", contractConcurrent},
		{"closed store refuses, close is idempotent", contractClose},
		{"value size bound", contractValueSize},
		{"log descriptions", contractLogs},
	}
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					h := &harness{t: t, dir: t.TempDir(), opts: im.opts}
					h.reopen()
					c.run(t, h)
				})
			}
		})
	}
}

var bg = context.Background()

func mustAppend(t *testing.T, s *Store, log string, es ...Entry) []Result {
	t.Helper()
	res, err := s.Append(bg, log, es)
	if err != nil {
		t.Fatalf("append to %s: %v", log, err)
	}
	if len(res) != len(es) {
		t.Fatalf("append: %d results for %d entries", len(res), len(es))
	}
	return res
}

func vals(vs ...string) []Entry {
	es := make([]Entry, len(vs))
	for i, v := range vs {
		es[i] = Entry{Value: []byte(v)}
	}
	return es
}

func contractAppend(t *testing.T, h *harness) {
	res := mustAppend(t, h.s, "raw", vals("a", "b")...)
	if res[0].Seq != 1 || res[1].Seq != 2 {
		t.Fatalf("seqs = %+v, want 1, 2", res)
	}
	mustAppend(t, h.s, "agg", vals("x")...)
	if last, _ := h.s.LastSeq("raw"); last != 2 {
		t.Fatalf("LastSeq = %d", last)
	}
	for pass := 0; pass < 2; pass++ {
		seqs, got := readAll(t, h.s, "raw", 0)
		if fmt.Sprint(seqs, got) != "[1 2] [a b]" {
			t.Fatalf("pass %d: raw = %v %v", pass, seqs, got)
		}
		if seqs, got := readAll(t, h.s, "agg", 0); fmt.Sprint(seqs, got) != "[1] [x]" {
			t.Fatalf("pass %d: agg = %v %v (logs number independently)", pass, seqs, got)
		}
		h.reopen()
	}
	if res := mustAppend(t, h.s, "raw", vals("c")...); res[0].Seq != 3 {
		t.Fatalf("after reopen: seq %d, want 3", res[0].Seq)
	}
	if _, err := h.s.Append(bg, "Bad/Name", vals("x")); err == nil {
		t.Fatal("bad log name accepted")
	}
}

func contractRead(t *testing.T, h *harness) {
	for i := 0; i < 10; i++ {
		mustAppend(t, h.s, "raw", vals(fmt.Sprint(i))...)
	}
	for pass := 0; pass < 2; pass++ {
		seqs, got := readAll(t, h.s, "raw", 4)
		if fmt.Sprint(seqs, got) != "[4 5 6 7 8 9 10] [3 4 5 6 7 8 9]" {
			t.Fatalf("from 4: %v %v", seqs, got)
		}
		var n int
		next, err := h.s.Read("raw", 2, 3, func(uint64, []byte) error { n++; return nil })
		if err != nil || n != 3 || next != 5 {
			t.Fatalf("bounded read: %d entries, next %d, %v; want 3, 5", n, next, err)
		}
		next, err = h.s.Read("raw", 1, 0, func(seq uint64, _ []byte) error {
			if seq == 3 {
				return ErrStop
			}
			return nil
		})
		if err != nil || next != 3 {
			t.Fatalf("stopped read: next %d, %v; want 3", next, err)
		}
		boom := errors.New("boom")
		if _, err := h.s.Read("raw", 1, 0, func(uint64, []byte) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("callback error: %v", err)
		}
		if next, err := h.s.Read("raw", 11, 0, func(uint64, []byte) error { return nil }); err != nil || next != 11 {
			t.Fatalf("read past the end: %d %v", next, err)
		}
		if seqs, _ := readAll(t, h.s, "none", 0); len(seqs) != 0 {
			t.Fatalf("unknown log: %v", seqs)
		}
		h.reopen()
	}
}

func contractNumbersUnique(t *testing.T, h *harness) {
	for i := 0; i < 5; i++ {
		mustAppend(t, h.s, "raw", vals(string(rune('a'+i)))...)
	}
	n, err := h.s.Trim(bg, "raw", 3)
	if err != nil || n != 2 {
		t.Fatalf("trim below 3 = %d, %v; want 2", n, err)
	}
	if seqs, _ := readAll(t, h.s, "raw", 0); fmt.Sprint(seqs) != "[3 4 5]" {
		t.Fatalf("after trim: %v", seqs)
	}
	if n, err := h.s.Trim(bg, "raw", 100); err != nil || n != 3 {
		t.Fatalf("trim all = %d, %v; want 3", n, err)
	}
	h.reopen()
	if res := mustAppend(t, h.s, "raw", vals("f")...); res[0].Seq != 6 {
		t.Fatalf("after trimming everything and reopening: seq %d, want 6", res[0].Seq)
	}
	if got := h.s.Stats().Trimmed.Load(); got != 0 {
		t.Fatalf("a new process starts its counters at 0, got %d", got)
	}
}

func contractCursors(t *testing.T, h *harness) {
	if c, err := h.s.Cursor("raw", "up"); c != 0 || err != nil {
		t.Fatalf("unknown cursor = %d %v", c, err)
	}
	if err := h.s.Commit(bg, "raw", "up", 7); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Commit(bg, "raw", "other", 3); err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 2; pass++ {
		if c, _ := h.s.Cursor("raw", "up"); c != 7 {
			t.Fatalf("cursor = %d", c)
		}
		if c, _ := h.s.Consumed("raw", []string{"up", "other"}); c != 3 {
			t.Fatalf("consumed = %d, want the lowest position 3", c)
		}
		if c, _ := h.s.Consumed("raw", nil); c != 0 {
			t.Fatalf("consumed without consumers = %d, want 0", c)
		}
		cs, err := h.s.Cursors("raw")
		if err != nil || fmt.Sprint(cs) != "map[other:3 up:7]" {
			t.Fatalf("cursors = %v %v", cs, err)
		}
		h.reopen()
	}
	if err := h.s.Commit(bg, "raw", "", 1); err == nil {
		t.Fatal("empty consumer name accepted")
	}
}

func contractUpdate(t *testing.T, h *harness) {
	err := h.s.Update(bg, func(tx *Tx) {
		tx.Append("agg", []byte("pane"))
		tx.Put("pipeline/p1", []byte("state"))
		tx.SetCursor("raw", "pipeline-p1", 7)
	})
	if err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 2; pass++ {
		v, ok, err := h.s.Get("pipeline/p1")
		if err != nil || !ok || string(v) != "state" {
			t.Fatalf("state = %q %v %v", v, ok, err)
		}
		if c, _ := h.s.Cursor("raw", "pipeline-p1"); c != 7 {
			t.Fatalf("cursor = %d", c)
		}
		if seqs, got := readAll(t, h.s, "agg", 0); fmt.Sprint(seqs, got) != "[1] [pane]" {
			t.Fatalf("agg = %v %v", seqs, got)
		}
		h.reopen()
	}
	// One bad op fails the whole update: nothing of it is applied.
	err = h.s.Update(bg, func(tx *Tx) {
		tx.Put("pipeline/p1", []byte("changed"))
		tx.Append("BAD NAME", nil)
	})
	if err == nil {
		t.Fatal("bad log name accepted")
	}
	if v, _, _ := h.s.Get("pipeline/p1"); string(v) != "state" {
		t.Fatalf("a failed update changed state to %q", v)
	}
	if err := h.s.Update(bg, func(tx *Tx) { tx.Delete("pipeline/p1") }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := h.s.Get("pipeline/p1"); ok {
		t.Fatal("deleted key still there")
	}
	if err := h.s.Update(bg, func(tx *Tx) { tx.Put("empty", nil) }); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := h.s.Get("empty"); !ok || len(v) != 0 {
		t.Fatalf("an empty value is a present key: %q %v", v, ok)
	}
}

func contractDedup(t *testing.T, h *harness) {
	res := mustAppend(t, h.s, "raw", Entry{ID: "a", Value: []byte("1")}, Entry{ID: "a", Value: []byte("1")}, Entry{ID: "b", Value: []byte("2")})
	if res[0].Dup || !res[1].Dup || res[2].Dup || res[1].Seq != 0 {
		t.Fatalf("results = %+v", res)
	}
	h.reopen() // a fresh process: the in-memory cache is empty, the durable index answers
	res = mustAppend(t, h.s, "raw", Entry{ID: "b", Value: []byte("2")}, Entry{ID: "c", Value: []byte("3")}, Entry{Value: []byte("no id")}, Entry{Value: []byte("no id")})
	if !res[0].Dup || res[1].Dup || res[2].Dup || res[3].Dup {
		t.Fatalf("after reopen: %+v (entries without id are never duplicates)", res)
	}
	if _, got := readAll(t, h.s, "raw", 0); fmt.Sprint(got) != "[1 2 3 no id no id]" {
		t.Fatalf("stored %v", got)
	}
	if n := h.s.Stats().DedupHits.Load(); n != 1 {
		t.Fatalf("dedup hits in this process = %d, want 1", n)
	}
}

func contractWait(t *testing.T, h *harness) {
	mustAppend(t, h.s, "raw", vals("a")...)
	if err := h.s.Wait(bg, "raw", 0); err != nil {
		t.Fatalf("wait for what is there: %v", err)
	}
	woke := make(chan error, 1)
	go func() { woke <- h.s.Wait(bg, "raw", 1) }()
	mustAppend(t, h.s, "raw", vals("b")...)
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := h.s.Wait(ctx, "raw", 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	woke = make(chan error, 1)
	go func() { woke <- h.s.Wait(bg, "agg", 0) }()
	if err := h.s.Update(bg, func(tx *Tx) { tx.Append("agg", []byte("p")) }); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatalf("an update's append wakes waiters too: %v", err)
	}
}

func contractConcurrent(t *testing.T, h *harness) {
	const writers, each = 20, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := h.s.Append(bg, "raw", []Entry{{ID: id, Value: []byte(id)}, {ID: id, Value: []byte(id)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for pass := 0; pass < 2; pass++ {
		seqs, got := readAll(t, h.s, "raw", 0)
		if len(seqs) != writers*each {
			t.Fatalf("stored %d, want %d", len(seqs), writers*each)
		}
		seen := map[string]bool{}
		for i, q := range seqs {
			if q != uint64(i+1) {
				t.Fatalf("seq %d at %d: numbers must be dense without failures", q, i)
			}
			if seen[got[i]] {
				t.Fatalf("%s stored twice", got[i])
			}
			seen[got[i]] = true
		}
		h.reopen()
	}
}

func contractClose(t *testing.T, h *harness) {
	mustAppend(t, h.s, "raw", vals("a")...)
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := h.s.Append(bg, "raw", vals("b")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := h.s.Update(bg, func(tx *Tx) { tx.Put("k", nil) }); !errors.Is(err, ErrClosed) {
		t.Fatalf("update after close: %v", err)
	}
	if err := h.s.Wait(bg, "raw", 5); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait after close: %v", err)
	}
	h.s = nil
	h.reopen()
	if _, got := readAll(t, h.s, "raw", 0); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after close and reopen: %v", got)
	}
}

func contractValueSize(t *testing.T, h *harness) {
	max := h.s.tuning.maxValue
	mustAppend(t, h.s, "raw", Entry{Value: make([]byte, max)})
	if _, err := h.s.Append(bg, "raw", []Entry{{Value: make([]byte, max+1)}}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a value beyond %d bytes: %v, want ErrTooLarge", max, err)
	}
	if err := h.s.Update(bg, func(tx *Tx) { tx.Put("big", make([]byte, max+1)) }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a state value beyond %d bytes: %v, want ErrTooLarge", max, err)
	}
	// A request too large for one Badger transaction fails alone.
	big := make([]Entry, 200000)
	for i := range big {
		big[i].Value = []byte("0123456789")
	}
	if _, err := h.s.Append(bg, "raw", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("an append beyond one Badger transaction: %v", err)
	}
	mustAppend(t, h.s, "raw", vals("ok")...)
	// Every value stayed in the LSM tree: the value log files hold no data blocks.
	if err := h.s.db.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := vlogBytes(t, h.dir); n > 64<<10 {
		t.Fatalf("value log files hold %d bytes: a value left the LSM tree", n)
	}
}

func vlogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += allocated(fi)
	}
	return n
}

func contractLogs(t *testing.T, h *harness) {
	mustAppend(t, h.s, "raw", vals("aa", "bbb", "c")...)
	mustAppend(t, h.s, "agg", vals("p")...)
	if _, err := h.s.Trim(bg, "raw", 2); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Commit(bg, "raw", "up", 3); err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 2; pass++ {
		ls, err := h.s.Logs()
		if err != nil || len(ls) != 2 {
			t.Fatalf("logs = %+v %v", ls, err)
		}
		raw := ls[1]
		if raw.Name != "raw" || raw.Count != 2 || raw.First != 2 || raw.Last != 3 || raw.High != 3 ||
			raw.Bytes != entrySize("raw", 3)+entrySize("raw", 1) || raw.Cursors["up"] != 3 {
			t.Fatalf("pass %d: raw = %+v", pass, raw)
		}
		if raw.Oldest.IsZero() || raw.Newest.Before(raw.Oldest) {
			t.Fatalf("append times %v..%v", raw.Oldest, raw.Newest)
		}
		var tail []string
		if err := h.s.Tail("raw", 5, func(seq uint64, v []byte) error {
			tail = append(tail, fmt.Sprintf("%d:%s", seq, v))
			return nil
		}); err != nil || fmt.Sprint(tail) != "[2:bbb 3:c]" {
			t.Fatalf("tail = %v %v", tail, err)
		}
		h.reopen()
	}
}

package buffer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger's and ristretto's package-level goroutines outlive every DB.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
	)
}

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	opts.Dir = dir
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readAll(t *testing.T, s *Store, log string, from uint64) (seqs []uint64, vals []string) {
	t.Helper()
	_, err := s.Read(log, from, 0, func(seq uint64, v []byte) error {
		seqs = append(seqs, seq)
		vals = append(vals, string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs, vals
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := open(t, dir, Options{})
	res, err := s.Append(ctx, "raw", []Entry{{Value: []byte("a")}, {Value: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Seq != 1 || res[1].Seq != 2 {
		t.Fatalf("seqs = %+v, want 1, 2", res)
	}
	if _, err := s.Append(ctx, "agg", []Entry{{Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	seqs, vals := readAll(t, s, "raw", 0)
	if fmt.Sprint(seqs, vals) != "[1 2] [a b]" {
		t.Fatalf("raw = %v %v", seqs, vals)
	}
	if err := s.Commit(ctx, "raw", "up", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("c")}}); err != ErrClosed {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}

	s = open(t, dir, Options{})
	if c, _ := s.Cursor("raw", "up"); c != 2 {
		t.Fatalf("cursor after reopen = %d, want 2", c)
	}
	res, err = s.Append(ctx, "raw", []Entry{{Value: []byte("c")}})
	if err != nil || res[0].Seq != 3 {
		t.Fatalf("append after reopen: %+v %v, want seq 3", res, err)
	}
	seqs, vals = readAll(t, s, "raw", 2)
	if fmt.Sprint(seqs, vals) != "[2 3] [b c]" {
		t.Fatalf("raw from 2 = %v %v", seqs, vals)
	}
}

func TestTrimKeepsNumbersUnique(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := open(t, dir, Options{})
	for i := 0; i < 5; i++ {
		if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte{byte('a' + i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Trim(ctx, "raw", 6)
	if err != nil || n != 5 {
		t.Fatalf("trim = %d, %v; want 5", n, err)
	}
	s.Close()
	s = open(t, dir, Options{})
	res, err := s.Append(ctx, "raw", []Entry{{Value: []byte("f")}})
	if err != nil || res[0].Seq != 6 {
		t.Fatalf("after trimming everything and reopening: %+v %v, want seq 6", res, err)
	}
}

func TestDedup(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := open(t, dir, Options{DedupTTL: time.Hour})
	res, err := s.Append(ctx, "raw", []Entry{{ID: "a", Value: []byte("1")}, {ID: "a", Value: []byte("1")}, {ID: "b", Value: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Dup || !res[1].Dup || res[2].Dup {
		t.Fatalf("results = %+v", res)
	}
	s.Close()
	// A fresh process: the in-memory cache is empty, the durable index answers.
	s = open(t, dir, Options{DedupTTL: time.Hour})
	res, err = s.Append(ctx, "raw", []Entry{{ID: "b", Value: []byte("2")}, {ID: "c", Value: []byte("3")}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Dup || res[1].Dup {
		t.Fatalf("after reopen: %+v", res)
	}
	_, vals := readAll(t, s, "raw", 0)
	if fmt.Sprint(vals) != "[1 2 3]" {
		t.Fatalf("stored %v, want [1 2 3]", vals)
	}
}

func TestConcurrentAppendsShareGroups(t *testing.T) {
	s := open(t, t.TempDir(), Options{DedupTTL: time.Hour})
	ctx := context.Background()
	const writers, each = 20, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := s.Append(ctx, "raw", []Entry{{ID: id, Value: []byte(id)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seqs, _ := readAll(t, s, "raw", 0)
	if len(seqs) != writers*each {
		t.Fatalf("stored %d, want %d", len(seqs), writers*each)
	}
	for i, q := range seqs {
		if q != uint64(i+1) {
			t.Fatalf("seq %d at %d: numbers must be dense without failures", q, i)
		}
	}
	if g := s.Stats().Groups.Load(); g >= writers*each {
		t.Errorf("groups = %d for %d appends: no grouping happened", g, writers*each)
	}
}

func TestUpdateIsAtomicAndWaitWakes(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	woke := make(chan error, 1)
	go func() { woke <- s.Wait(ctx, "agg", 0) }()
	err := s.Update(ctx, func(tx *Tx) {
		tx.Append("agg", []byte("pane"))
		tx.Put("pipeline/p1", []byte("state"))
		tx.SetCursor("raw", "pipeline-p1", 7)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	v, ok, err := s.Get("pipeline/p1")
	if err != nil || !ok || string(v) != "state" {
		t.Fatalf("state = %q %v %v", v, ok, err)
	}
	if c, _ := s.Cursor("raw", "pipeline-p1"); c != 7 {
		t.Fatalf("cursor = %d", c)
	}
	if err := s.Update(ctx, func(tx *Tx) { tx.Append("BAD NAME", nil) }); err == nil {
		t.Fatal("bad log name accepted")
	}
	if err := s.Update(ctx, func(tx *Tx) { tx.Delete("pipeline/p1") }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get("pipeline/p1"); ok {
		t.Fatal("deleted key still there")
	}
}

func TestTooLargeRequestFailsAlone(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	big := make([]Entry, 200000)
	for i := range big {
		big[i].Value = []byte("0123456789")
	}
	if _, err := s.Append(ctx, "raw", big); err == nil {
		t.Fatal("an append beyond one Badger transaction was accepted")
	}
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("ok")}}); err != nil {
		t.Fatalf("the store must keep serving: %v", err)
	}
}

func TestScanState(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	err := s.Update(ctx, func(tx *Tx) {
		tx.Put("p/a/1", []byte("x"))
		tx.Put("p/a/2", []byte("y"))
		tx.Put("p/b/1", []byte("z"))
		tx.Put("q", []byte("w"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = s.ScanState("p/a/", func(k string, v []byte) error {
		got = append(got, k+"="+string(v))
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[p/a/1=x p/a/2=y]" {
		t.Fatalf("scan: %v %v", got, err)
	}
}

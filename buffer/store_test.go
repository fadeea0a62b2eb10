package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	opts.Dir = dir
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testWriter sends log lines to t.Log, so they show with the failing test.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
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

// appendIDs appends n entries with ids prefix-from … prefix-(from+n-1) to log, in
// appends of 500, and returns how many were duplicates.
func appendIDs(t *testing.T, s *Store, log, prefix string, from, n int) (dups int) {
	t.Helper()
	for start := from; start < from+n; start += 500 {
		es := make([]Entry, min(500, from+n-start))
		for i := range es {
			es[i] = Entry{ID: fmt.Sprintf("%s-%d", prefix, start+i), Value: fmt.Appendf(nil, "%s-%d", prefix, start+i)}
		}
		res, err := s.Append(context.Background(), log, es)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Dup {
				dups++
			}
		}
	}
	return dups
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
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

// TestAppendAsyncPipelined: appends queued one after another without waiting are applied
// in that order, share fsyncs, and each Wait gives what Append would have: its sequence
// numbers, duplicates, or the refusal (an oversized value, a closed store).
func TestAppendAsyncPipelined(t *testing.T) {
	s := open(t, t.TempDir(), Options{DedupTTL: time.Hour})
	ctx := context.Background()
	syncs := s.Stats().Syncs.Load()
	const n = 500
	ps := make([]*Pending, 0, n+2)
	for i := 0; i < n; i++ {
		ps = append(ps, s.AppendAsync(ctx, "raw", []Entry{{ID: fmt.Sprint("id-", i), Value: []byte(fmt.Sprint(i))}}))
	}
	ps = append(ps, s.AppendAsync(ctx, "raw", []Entry{{ID: "id-7", Value: []byte("again")}}))
	ps = append(ps, s.AppendAsync(ctx, "raw", []Entry{{Value: make([]byte, s.tuning.maxValue+1)}}))
	for i, p := range ps[:n] {
		res, err := p.Wait()
		if err != nil || len(res) != 1 || res[0].Dup || res[0].Seq != uint64(i+1) {
			t.Fatalf("append %d: %+v %v, want seq %d", i, res, err, i+1)
		}
	}
	if res, err := ps[n].Wait(); err != nil || !res[0].Dup {
		t.Fatalf("re-sent id: %+v %v, want a duplicate", res, err)
	}
	if _, err := ps[n+1].Wait(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized value: %v, want ErrTooLarge", err)
	}
	if d := s.Stats().Syncs.Load() - syncs; d >= n {
		t.Errorf("%d fsyncs for %d pipelined appends", d, n)
	}
	seqs, vals := readAll(t, s, "raw", 0)
	if len(seqs) != n || vals[0] != "0" || vals[n-1] != fmt.Sprint(n-1) {
		t.Fatalf("log holds %d entries (%q … %q)", len(seqs), vals[0], vals[len(vals)-1])
	}
	s.Close()
	if _, err := s.AppendAsync(ctx, "raw", []Entry{{Value: []byte("late")}}).Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}
}

// TestMaintainMeasuresDisk: a maintenance round refreshes DiskBytes even with no appends
// (what /metrics reports without walking the directory itself).
func TestMaintainMeasuresDisk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := s.Append(context.Background(), "raw", []Entry{{Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	s.stats.DiskBytes.Store(-1) // stale
	if err := s.MaintainOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := s.Stats().DiskBytes.Load()
	want, err := DirBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got <= 0 || got > want+(1<<20) || got < want-(1<<20) {
		t.Fatalf("DiskBytes %d after a maintenance round; the directory takes %d", got, want)
	}
}

// TestScanInSteps: a scan in several read transactions hands every key under the prefix
// to fn once, in order, whatever the step, and stops at ErrStop.
func TestScanInSteps(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	err := s.Update(context.Background(), func(tx *Tx) {
		for i := range 50 {
			tx.Put(fmt.Sprintf("p/%03d", i), []byte{byte(i)})
		}
		tx.Put("q", []byte("outside"))
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int{1, 7, 10, 50, 51, 1000} {
		s.opts.scanSteps = step // nothing else scans this store
		var got []string
		err := s.scanInSteps(stateKey("p/"), func(k, v []byte) error {
			got = append(got, fmt.Sprintf("%s=%d", k, v[0]))
			return nil
		})
		if err != nil || len(got) != 50 {
			t.Fatalf("step %d: %d keys (%v)", step, len(got), err)
		}
		for i, g := range got {
			if want := fmt.Sprintf("s/p/%03d=%d", i, i); g != want {
				t.Fatalf("step %d: key %d is %s, want %s", step, i, g, want)
			}
		}
		n := 0
		err = s.scanInSteps(stateKey("p/"), func(k, v []byte) error {
			if n++; n == 20 {
				return ErrStop
			}
			return nil
		})
		if err != nil || n != 20 {
			t.Fatalf("step %d: stopped after %d keys (%v), want 20", step, n, err)
		}
	}
}

package buffer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
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

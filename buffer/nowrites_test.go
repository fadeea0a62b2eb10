//go:build edgegate_nowrites

// The baseline build's own test (the package's other tests expect a store that stores):
//
//	EDGEGATE_BENCHMARK_NOWRITES=1 go test -tags edgegate_nowrites -run NoWrites ./buffer/

package buffer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNoWritesAcksAfterTheFsyncOfItsGroup: the baseline releases an append only after an
// fsync of the plain log that holds its bytes, numbers the entries, replaces the file once
// a memtable's worth is written (deleting the old one at the next sync), and leaves Badger
// untouched.
func TestNoWritesAcksAfterTheFsyncOfItsGroup(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{DedupTTL: time.Hour, memTableSize: 1 << 20})
	value := bytes.Repeat([]byte("x"), 1000)
	var last uint64
	for i := 0; i < 3000; i++ { // ~3 MB: the plain log is replaced twice
		syncs := s.Stats().Syncs.Load()
		res, err := s.Append(context.Background(), "raw", []Entry{{ID: fmt.Sprintf("id-%d", i), Value: value}})
		if err != nil {
			t.Fatal(err)
		}
		if s.Stats().Syncs.Load() == syncs {
			t.Fatalf("append %d acknowledged with no fsync since it was queued", i)
		}
		if len(res) != 1 || res[0].Dup || res[0].Seq <= last {
			t.Fatalf("append %d: %+v after seq %d", i, res, last)
		}
		last = res[0].Seq
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.nowrites"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || filepath.Base(files[0]) != "00003.nowrites" {
		t.Fatalf("plain logs %v, want only the third (the older ones synced and deleted)", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, append([]byte("id-2999"), value...)) {
		t.Fatal("the last append's id and value are not in the current plain log")
	}
	if n, err := s.Count("raw"); err != nil || n != 0 {
		t.Fatalf("Count(raw) = %d, %v: the baseline stores nothing in Badger", n, err)
	}
}

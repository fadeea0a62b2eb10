package buffer

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWALSyncerCoversEveryLog: each Sync datasyncs every memtable log in the directory (and
// no other file), picks up logs created since the last Sync, syncs an older log once more
// after a newer one appeared and then no more, and lets go of deleted ones.
func TestWALSyncerCoversEveryLog(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) {
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	touch("00001.mem", "00002.mem", "000001.vlog", "000002.vlog", "000009.sst", "MANIFEST", "KEYREGISTRY")
	w, err := newWALSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var synced []string
	w.datasync = func(f *os.File) error {
		synced = append(synced, filepath.Base(f.Name()))
		return datasync(f)
	}
	sorted := func(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
	check := func(want, done []string, open string) {
		t.Helper()
		synced = synced[:0]
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(synced)
		if !slices.Equal(synced, want) {
			t.Errorf("synced %q, want %q", synced, want)
		}
		if got := sorted(w.done); !slices.Equal(got, done) {
			t.Errorf("done with %q, want %q", got, done)
		}
		if w.cur == nil || filepath.Base(w.cur.Name()) != open {
			t.Errorf("holds %v open, want only %s", w.cur, open)
		}
	}
	check([]string{"00001.mem", "00002.mem"}, []string{"00001.mem"}, "00002.mem")
	check([]string{"00002.mem"}, []string{"00001.mem"}, "00002.mem")
	// Badger rotated the memtable (a new log) and flushed the oldest (its log deleted).
	if err := os.Remove(filepath.Join(dir, "00001.mem")); err != nil {
		t.Fatal(err)
	}
	touch("00003.mem", "000003.vlog")
	check([]string{"00002.mem", "00003.mem"}, []string{"00002.mem"}, "00003.mem")
	check([]string{"00003.mem"}, []string{"00002.mem"}, "00003.mem")
	touch("100000.mem") // past 99999: longer names are larger numbers
	check([]string{"00003.mem", "100000.mem"}, []string{"00002.mem", "00003.mem"}, "100000.mem")
}

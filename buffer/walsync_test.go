package buffer

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWALSyncerCoversEveryLog: each Sync datasyncs every memtable log in the directory (and
// no other file), picks up logs created since the last Sync and lets go of deleted ones.
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
	check := func(want ...string) {
		t.Helper()
		synced = synced[:0]
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(synced)
		if !slices.Equal(synced, want) {
			t.Errorf("synced %q, want %q", synced, want)
		}
		var open []string
		for n := range w.files {
			open = append(open, n)
		}
		slices.Sort(open)
		if !slices.Equal(open, want) {
			t.Errorf("holds %q open, want %q", open, want)
		}
	}
	check("00001.mem", "00002.mem")
	// Badger rotated the memtable (a new log) and flushed the oldest (its log deleted).
	if err := os.Remove(filepath.Join(dir, "00001.mem")); err != nil {
		t.Fatal(err)
	}
	touch("00003.mem", "000003.vlog")
	check("00002.mem", "00003.mem")
}

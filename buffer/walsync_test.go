package buffer

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestWALSyncerCoversEveryLog: each Sync datasyncs every memtable log in the directory (and
// no other file), picks up logs created since the last Sync, syncs an older log once more
// after a newer one appeared and then no more, and lets go of deleted ones.
func TestWALSyncerCoversEveryLog(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) { touchFiles(t, dir, names...) }
	touch("00001.mem", "00002.mem", "000001.vlog", "000002.vlog", "000009.sst", "MANIFEST", "KEYREGISTRY")
	w, sync := recordingSyncer(t, dir, datasync)
	sorted := func(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
	check := func(want, done []string, open string) {
		t.Helper()
		sync(want...)
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
	touch("00004.mem", "00005.mem") // two rotations between syncs
	check([]string{"00003.mem", "00004.mem", "00005.mem"}, []string{"00002.mem", "00003.mem", "00004.mem"}, "00005.mem")
	for _, n := range []string{"00002.mem", "00003.mem", "00004.mem"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	touch("99999.mem") // as if numbered on past 99999 (Badger's logs are consecutive)
	w.next = filepath.Join(dir, "99999.mem")
	check([]string{"00005.mem", "99999.mem"}, []string{"00005.mem"}, "99999.mem")
	touch("100000.mem") // past 99999: longer names are larger numbers
	check([]string{"100000.mem", "99999.mem"}, []string{"00005.mem", "99999.mem"}, "100000.mem")
	check([]string{"100000.mem"}, []string{"00005.mem", "99999.mem"}, "100000.mem")
}

// TestWALSyncerListsOnlyAfterARotation: a Sync lists the directory only when Badger
// rotated its memtable since the last listing (the log numbered after the newest exists);
// otherwise it syncs the newest log alone.
func TestWALSyncerListsOnlyAfterARotation(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) { touchFiles(t, dir, name) }
	touch("00007.mem")
	touch("000001.sst")
	w, sync := recordingSyncer(t, dir, func(*os.File) error { return nil })
	sync("00007.mem")
	for range 5 {
		sync("00007.mem")
		touch("000002.sst") // tables come and go: no rotation
	}
	if w.listings != 1 {
		t.Errorf("%d listings for 6 syncs without a rotation, want 1", w.listings)
	}
	touch("00008.mem")
	sync("00007.mem", "00008.mem")
	sync("00008.mem")
	if w.listings != 2 {
		t.Errorf("%d listings after one rotation, want 2", w.listings)
	}
}

// TestWALSyncerFollowsBadgerRotations: Badger numbers its memtable logs one after the
// other, which is what lets a Sync look for the next one instead of listing the directory;
// with real rotations, the syncer lists the directory once per rotation it saw (and once at
// the first Sync), and every log Badger held was numbered right after one before it.
func TestWALSyncerFollowsBadgerRotations(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	val := make([]byte, 400<<10) // a 4 MiB memtable holds about ten
	seen := map[int]bool{}
	for i := 0; i < 60; i++ {
		if _, err := s.Append(bg, "raw", []Entry{{Value: val}}); err != nil {
			t.Fatal(err)
		}
		paths, err := filepath.Glob(filepath.Join(dir, "*.mem"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".mem"))
			if err != nil {
				t.Fatalf("memtable log %s: %v", p, err)
			}
			seen[n] = true
		}
	}
	nums := slices.Sorted(maps.Keys(seen))
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			t.Errorf("memtable logs %v: %d came after %d", nums, nums[i], nums[i-1])
		}
	}
	rotations := len(nums) - 1
	if rotations < 3 {
		t.Fatalf("only %d rotations in 24 MiB of appends (logs %v)", rotations, nums)
	}
	// The syncer runs once per group; after the last append it is idle.
	if l := s.wal.listings; l < 2 || l > rotations+1 {
		t.Errorf("%d directory listings for %d rotations and 60 fsyncs, want 2 to %d", l, rotations, rotations+1)
	}
}

// touchFiles creates the named files in dir.
func touchFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// recordingSyncer is a WAL syncer of dir, closed with the test, that syncs with datasync;
// its sync runs one Sync and checks the names of the files it synced.
func recordingSyncer(t *testing.T, dir string, datasync func(*os.File) error) (w *walSyncer, sync func(want ...string)) {
	t.Helper()
	w, err := newWALSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	var synced []string
	w.datasync = func(f *os.File) error {
		synced = append(synced, filepath.Base(f.Name()))
		return datasync(f)
	}
	return w, func(want ...string) {
		t.Helper()
		synced = synced[:0]
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(synced)
		if !slices.Equal(synced, want) {
			t.Errorf("synced %q, want %q", synced, want)
		}
	}
}

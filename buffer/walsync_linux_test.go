package buffer

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dirtyMapped sums, by file, the dirty memory (kB, from /proc/self/smaps) of this
// process's mappings of files whose names end in suffix. A page written through a shared
// mapping is dirty until it is written back; writeback cleans its page-table entry.
func dirtyMapped(suffix string) (map[string]int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dirty := map[string]int{}
	file := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"): // a mapping's header
			file = ""
			if len(fields) == 6 && strings.HasSuffix(fields[5], suffix) {
				file = fields[5]
				dirty[file] += 0
			}
		case file != "" && len(fields) == 3 && (fields[0] == "Shared_Dirty:" || fields[0] == "Private_Dirty:"):
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				return nil, err
			}
			dirty[file] += kb
		}
	}
	return dirty, sc.Err()
}

// newestMem is the highest-numbered memtable log among the keys of m ("" if none).
func newestMem[V any](m map[string]V) string {
	newest := ""
	for p := range m {
		if newest == "" || numberedAfter(filepath.Base(p), filepath.Base(newest)) {
			newest = p
		}
	}
	return newest
}

// memLogs lists the memtable logs in dir by path.
func memLogs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, p := range paths {
		m[p] = true
	}
	return m
}

// TestWALSyncerWritesMappedPages: an fdatasync through the syncer's own descriptor writes
// back pages written through a shared mapping of the file, as Badger's msync would.
func TestWALSyncerWritesMappedPages(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "00001.mem")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := 0; i < len(m); i += 4096 {
		m[i] = 1
	}
	if d, err := dirtyMapped(".mem"); err != nil || d[p] == 0 {
		t.Skipf("smaps shows no dirty pages for a written shared mapping here (%v)", err)
	}
	w, err := newWALSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if d, err := dirtyMapped(".mem"); err != nil || d[p] != 0 {
		t.Errorf("%d kB still dirty after Sync (%v)", d[p], err)
	}
}

// TestSyncCoversRotatedMemtables: a group's fsync covers the memtable log it was written
// to even when the next group, committed while that fsync waited to start, rotated the
// memtable. badger.DB.Sync syncs the current memtable's log only, so it would leave the
// group in an unsynced file until the old memtable is flushed, and release it: this test
// fails with syncFn = s.db.Sync.
func TestSyncCoversRotatedMemtables(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir()) // as smaps names the files
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, Options{})
	type report struct {
		dirty map[string]int // older memtable logs still mapped right after the fsync
		err   error
	}
	entered, gate, reports := make(chan struct{}), make(chan struct{}), make(chan report, 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) }) // before the store's Close, which fsyncs
	sync := s.syncFn
	s.syncFn = func() error { // only the syncer calls it from here on
		select {
		case entered <- struct{}{}:
			<-gate
		case <-done:
			return sync()
		}
		err := sync()
		d, derr := dirtyMapped(".mem")
		delete(d, newestMem(d)) // the current memtable is not checked
		reports <- report{d, errors.Join(err, derr)}
		return err
	}
	ctx := context.Background()
	val := make([]byte, 400<<10) // a 4 MiB memtable holds about ten
	// A round is conclusive when b rotated the memtable and the old one was not flushed yet
	// when a's fsync ended; on a loaded machine that takes more rounds.
	conclusive, rotations, rounds := 0, 0, 0
	for end := time.Now().Add(time.Minute); conclusive < 3 && (rounds < 400 || time.Now().Before(end)); rounds++ {
		round := rounds
		a := s.AppendAsync(ctx, "raw", []Entry{{Value: val}})
		<-entered // a is committed; its fsync waits
		holder := newestMem(memLogs(t, dir))
		b := s.AppendAsync(ctx, "raw", []Entry{{Value: val}})
		for deadline := time.Now().Add(5 * time.Second); len(s.synced) == 0; runtime.Gosched() {
			if time.Now().After(deadline) { // (no sleeps: the old memtable's flush is racing)
				t.Fatal("the second append was not committed")
			}
		}
		rotated := newestMem(memLogs(t, dir)) != holder
		gate <- struct{}{}
		r := <-reports
		if r.err != nil {
			t.Fatal(r.err)
		}
		if rotated {
			rotations++
		}
		if kb, mapped := r.dirty[holder]; rotated && mapped {
			conclusive++
			if kb != 0 {
				t.Errorf("round %d: %s, rotated out by the next group, has %d kB dirty after the fsync that released its last group", round, filepath.Base(holder), kb)
			}
		}
		if _, err := a.Wait(); err != nil {
			t.Fatal(err)
		}
		<-entered
		gate <- struct{}{}
		<-reports
		if _, err := b.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d conclusive of %d rounds, %d rotated the memtable", conclusive, rounds, rotations)
	if conclusive < 3 {
		t.Fatalf("only %d of %d rounds had a group rotate the memtable out from under the previous group's fsync (%d rotated it, the rest of those saw it flushed first)", conclusive, rounds, rotations)
	}
}

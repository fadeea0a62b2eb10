package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// crashImage appends n entries (each acknowledged, so durable), then copies the store's
// directory while it is open: the copy is what a kill -9 or a power cut right after the
// last acknowledgement leaves on disk.
func crashImage(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	s := open(t, dir, Options{DedupTTL: 0})
	for i := 1; i <= n; i++ {
		mustAppend(t, s, "raw", Entry{Value: []byte(fmt.Sprintf("entry-%03d", i))})
	}
	img := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		copyFile(t, filepath.Join(dir, e.Name()), filepath.Join(img, e.Name()))
	}
	return img
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// walFile returns the write-ahead log holding the entries and the end of its data (the
// file is preallocated with zeros past it).
func walFile(t *testing.T, dir string) (string, int64) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	sort.Strings(files)
	for i := len(files) - 1; i >= 0; i-- {
		data, err := os.ReadFile(files[i])
		if err != nil {
			t.Fatal(err)
		}
		if end := int64(len(bytes.TrimRight(data, "\x00"))); end > 64 {
			return files[i], end
		}
	}
	t.Fatal("no write-ahead log with data")
	return "", 0
}

func TestRecoveryFromACleanCrashImage(t *testing.T) {
	img := crashImage(t, 50)
	s := open(t, img, Options{})
	if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 50 || len(s.Lost()) != 0 {
		t.Fatalf("%d entries, lost %v; want all 50 and nothing lost", len(seqs), s.Lost())
	}
}

func TestRecoveryFromADamagedTail(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, wal string, end int64)
	}{
		{"torn last write", func(t *testing.T, wal string, end int64) {
			if err := os.Truncate(wal, end-40); err != nil {
				t.Fatal(err)
			}
		}},
		{"corrupt bytes mid-log", func(t *testing.T, wal string, end int64) {
			f, err := os.OpenFile(wal, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("garbage!"), end*2/3); err != nil {
				t.Fatal(err)
			}
		}},
		{"log cut to its header", func(t *testing.T, wal string, end int64) {
			if err := os.Truncate(wal, 20); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := crashImage(t, 50)
			wal, end := walFile(t, img)
			c.damage(t, wal, end)
			var logs strings.Builder
			s := open(t, img, Options{Logger: newTestLogger(&logs)})
			seqs, got := readAll(t, s, "raw", 0)
			if len(seqs) >= 50 {
				t.Fatalf("the damage lost nothing (%d entries): the test did not damage the log", len(seqs))
			}
			// What is left is a clean prefix, intact.
			for i, q := range seqs {
				if q != uint64(i+1) || got[i] != fmt.Sprintf("entry-%03d", i+1) {
					t.Fatalf("entry %d: seq %d %q", i, q, got[i])
				}
			}
			// The loss is reported exactly, and once.
			want := []Loss{{Log: "raw", From: uint64(len(seqs) + 1), To: 50}}
			if fmt.Sprint(s.Lost()) != fmt.Sprint(want) || s.Stats().Lost.Load() != uint64(50-len(seqs)) {
				t.Fatalf("lost = %v (%d), want %v", s.Lost(), s.Stats().Lost.Load(), want)
			}
			if !strings.Contains(logs.String(), "committed entries were lost at recovery") {
				t.Fatalf("not logged:\n%s", logs.String())
			}
			// Its numbers stay taken: the log's high mark is the last one committed, as
			// the next open will also say.
			if last, _ := s.LastSeq("raw"); last != 50 {
				t.Errorf("LastSeq after recovery = %d, want 50", last)
			}
			if ls, _ := s.Logs(); len(ls) != 1 || ls[0].High != 50 || ls[0].Last != uint64(len(seqs)) {
				t.Errorf("Logs after recovery = %+v, want High 50, Last %d", ls, len(seqs))
			}
			// It keeps serving, and never hands out the lost numbers again.
			if res := mustAppend(t, s, "raw", vals("after")...); res[0].Seq != 51 {
				t.Fatalf("first append after recovery got seq %d, want 51", res[0].Seq)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, img, Options{})
			if len(s.Lost()) != 0 {
				t.Fatalf("the loss was reported again at the next open: %v", s.Lost())
			}
			if seqs, _ := readAll(t, s, "raw", 0); seqs[len(seqs)-1] != 51 {
				t.Fatalf("after reopen: %v", seqs)
			}
		})
	}
}

func TestRecoveryWithAGarbledWitness(t *testing.T) {
	img := crashImage(t, 10)
	if err := os.WriteFile(filepath.Join(img, witnessFile), []byte("raw 12x\n\x00\x01garbage\nBAD/NAME 7\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	s := open(t, img, Options{})
	if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 10 || len(s.Lost()) != 0 {
		t.Fatalf("%d entries, lost %v", len(seqs), s.Lost())
	}
	if res := mustAppend(t, s, "raw", vals("x")...); res[0].Seq != 11 {
		t.Fatalf("seq %d", res[0].Seq)
	}
}

// TestRecoveryWithAnEmptyLogFile: a kill -9 or a power cut while Badger deletes a memtable
// log or a value-log file (it truncates it to zero, then removes it), or right after it
// created one, before it extended it, leaves the file empty, and
// badger.Open then failed at every start ("Create a new file", dgraph-io/badger#2207): the
// daemon crash-looped (the soak, on a full tmpfs). A writable open removes such files; a
// read-only one says the store needs recovery.
func TestRecoveryWithAnEmptyLogFile(t *testing.T) {
	next := func(dir, ext, format string) string {
		files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
		max := 0
		for _, f := range files {
			var fid int
			if _, err := fmt.Sscanf(filepath.Base(f), "%d", &fid); err == nil && fid > max {
				max = fid
			}
		}
		return fmt.Sprintf(format, max+1)
	}
	cases := []struct {
		name  string
		files func(dir string) []string
	}{
		{"memtable log", func(dir string) []string {
			return []string{next(dir, ".mem", "%05d.mem")}
		}},
		{"value log", func(dir string) []string {
			return []string{next(dir, ".vlog", "%06d.vlog")}
		}},
		{"both", func(dir string) []string {
			return []string{next(dir, ".mem", "%05d.mem"), next(dir, ".vlog", "%06d.vlog")}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := crashImage(t, 30)
			empty := tc.files(img)
			for _, name := range empty {
				if err := os.WriteFile(filepath.Join(img, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Open(Options{Dir: img, ReadOnly: true}); !errors.Is(err, ErrNeedsRecovery) {
				t.Fatalf("read-only open: %v, want ErrNeedsRecovery", err)
			}
			s := open(t, img, Options{})
			if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 30 || len(s.Lost()) != 0 {
				t.Fatalf("%d entries, lost %v; want all 30 and nothing lost", len(seqs), s.Lost())
			}
			mustAppend(t, s, "raw", Entry{Value: []byte("after")})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, img, Options{ReadOnly: true})
			if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 31 {
				t.Fatalf("%d entries after a reopen, want 31", len(seqs))
			}
		})
	}
}

// TestEmptyLogFilesOfAnOpenStoreKept: a store open in another process may have just
// created a log file, not yet extended: removeEmptyLogs leaves the files of a locked
// directory alone.
func TestEmptyLogFilesOfAnOpenStoreKept(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	path := filepath.Join(dir, "99999.mem")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	if err := removeEmptyLogs(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the empty file of an open store: %v, want it kept", err)
	}
}

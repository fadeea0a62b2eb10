package buffer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// walSyncer makes durable what Badger has committed: it fdatasyncs the write-ahead log of
// every memtable Badger still holds (its *.mem files).
//
// The value log (*.vlog) is left alone: no value reaches it, since every value is smaller
// than Badger's ValueThreshold (tuning.maxValue; contractValueSize checks that the value-log
// files stay empty), and an fdatasync of that clean file still costs a device cache flush
// (77 µs of a 445 µs durable append here, measured when it was synced).
//
// Why not badger.DB.Sync (v4.9.6, db.go): it msyncs the current memtable's log only,
// holding the read side of db.lock.
//   - When a memtable is full, the next write rotates it (ensureRoomForWrite) without
//     syncing it. A Sync that starts after that rotation syncs the new, nearly empty log
//     and leaves what the group before it wrote in an unsynced file until the old
//     memtable's flush to L0: acknowledged as durable, lost on a power cut.
//   - Every write takes the write side of db.lock (ensureRoomForWrite), so while Sync's
//     msync runs no group can be committed: the fsync of one group and the commit of the
//     next, which the writer means to overlap, ran one after the other.
//
// Listing the directory at every sync is what makes the first point safe: a group's
// entries are in a memtable log that existed when the group was committed, so at the
// next sync that file is either listed, and synced, or gone, which Badger does only after
// the memtable's L0 table was synced and recorded in its (synced) manifest. On Linux,
// msync(MS_SYNC) of a shared file mapping is vfs_fsync_range on the file: an fdatasync of
// the same file through another descriptor writes the same pages.
//
// Badger writes only to its current memtable, which has the highest-numbered log; an
// older log is complete once a newer one exists. So an older log, once synced, is skipped
// until its flush deletes it: an fdatasync of a clean file still costs a device cache
// flush.
//
// One goroutine at a time calls Sync (the syncer, or the writer with sync: <interval>).
type walSyncer struct {
	dir  *os.File        // the store's directory, rewound for every listing
	cur  *os.File        // the newest log, kept open from one sync to the next; nil: none yet
	done map[string]bool // older logs synced since a newer one existed, until deleted
	// datasync is fdatasync(2) (a test records the calls).
	datasync func(*os.File) error
}

func newWALSyncer(dir string) (*walSyncer, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s for fsync: %w", dir, err)
	}
	return &walSyncer{dir: d, done: map[string]bool{}, datasync: datasync}, nil
}

// Sync fdatasyncs every memtable log present now that may hold unsynced writes.
func (w *walSyncer) Sync() error {
	names, err := w.list()
	if err != nil {
		return err
	}
	newest := ""
	for _, name := range names {
		if numberedAfter(name, newest) {
			newest = name
		}
	}
	if w.cur != nil && filepath.Base(w.cur.Name()) != newest {
		w.cur.Close() // rotated out: synced once more below, as an older log
		w.cur = nil
	}
	for name := range w.done {
		if !slices.Contains(names, name) {
			delete(w.done, name) // flushed and deleted
		}
	}
	for _, name := range names {
		if w.done[name] {
			continue
		}
		f := w.cur
		if name != newest || f == nil {
			f, err = os.Open(filepath.Join(w.dir.Name(), name))
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed to L0 and deleted since the listing: durable there
			}
			if err != nil {
				return fmt.Errorf("buffer: open %s for fsync: %w", name, err)
			}
		}
		err := w.datasync(f)
		if name == newest {
			w.cur = f
		} else {
			f.Close()
			if err == nil {
				w.done[name] = true
			}
		}
		if err != nil {
			return fmt.Errorf("buffer: fsync %s: %w", name, err)
		}
	}
	return nil
}

// numberedAfter reports whether log a has a higher number than b ("" is none). Badger
// names them with zero-padded numbers (%05d.mem), so a longer name is a larger number.
func numberedAfter(a, b string) bool {
	return b == "" || len(a) > len(b) || len(a) == len(b) && a > b
}

// list names the memtable logs in the directory.
func (w *walSyncer) list() ([]string, error) {
	if _, err := w.dir.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", w.dir.Name(), err)
	}
	all, err := w.dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", w.dir.Name(), err)
	}
	names := all[:0]
	for _, n := range all {
		if strings.HasSuffix(n, ".mem") {
			names = append(names, n)
		}
	}
	return names, nil
}

// Close closes the directory and the newest log.
func (w *walSyncer) Close() error {
	if w.cur != nil {
		w.cur.Close()
		w.cur = nil
	}
	return w.dir.Close()
}

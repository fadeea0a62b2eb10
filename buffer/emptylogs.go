// Empty log files left by a crash: Badger cannot open a store holding one.

package buffer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// emptyLogs lists the memtable logs (.mem) and value-log files (.vlog) in dir that are
// empty. Badger deletes such a file once it is done with it (a memtable flushed to a
// table, a value-log file garbage-collected) by truncating it to zero and then removing
// it, and it creates one by creating it and then extending it: a kill -9 or a power cut
// between the two steps leaves an empty file, and from then on badger.Open fails on it
// ("Create a new file": it takes the file for one it has just made; dgraph-io/badger#2207,
// open upstream), so the daemon would fail at every start. An empty file holds no entry,
// not even the header Badger writes first; what a deleted one held is in the tables.
func emptyLogs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("buffer: list %s: %w", dir, err)
	}
	var empty []string
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("buffer: stat %s: %w", filepath.Join(dir, name), err)
		}
		if fi.Mode().IsRegular() && fi.Size() == 0 {
			empty = append(empty, name)
		}
	}
	return empty, nil
}

// removeEmptyLogs removes the empty log files of dir (emptyLogs) before a writable open.
// It holds Badger's directory lock meanwhile, so it never touches the files of a process
// that has the store open: one that just created a file may not have extended it yet.
// When another process holds the lock it removes nothing, and badger.Open then reports
// the store in use.
func removeEmptyLogs(dir string, lg *slog.Logger) error {
	unlock, ok, err := lockDir(dir)
	if err != nil || !ok {
		return err
	}
	defer unlock()
	empty, err := emptyLogs(dir)
	if err != nil || len(empty) == 0 {
		return err
	}
	for _, name := range empty {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("buffer: remove the empty %s: %w", name, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	lg.Warn("removed empty log files left by a crash (they held nothing)", "files", empty)
	return nil
}

// checkEmptyLogs is the check of a read-only open, which may not remove anything: a store
// with an empty log file needs a writable open first (ErrNeedsRecovery), unless another
// process has it open (ErrInUse), whose file it may be. Badger is not asked: its failed
// open leaves the database's goroutines running.
func checkEmptyLogs(dir string) error {
	empty, err := emptyLogs(dir)
	if err != nil || len(empty) == 0 {
		return err
	}
	unlock, ok, err := lockDir(dir)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("buffer: open %s: %w", dir, ErrInUse)
	}
	unlock()
	return fmt.Errorf("buffer: open %s: %w (empty log files left by a crash: %s)", dir, ErrNeedsRecovery, strings.Join(empty, ", "))
}

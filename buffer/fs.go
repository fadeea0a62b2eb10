package buffer

import (
	"fmt"
	"os"
)

// FSInfo is what the store needs to know about the file system that holds it.
type FSInfo struct {
	// Avail is the space an unprivileged process may still allocate (statfs f_bavail).
	Avail uint64
}

// StatFS reports on the file system holding a directory. The default is statfs(2); tests
// pass their own to simulate a nearly full disk.
type StatFS func(dir string) (FSInfo, error)

// DirBytes is the disk space the files directly in dir occupy: allocated blocks, not
// apparent sizes, since Badger preallocates sparse, memory-mapped files (a fresh value-log
// file claims 32 MiB and uses a few KiB). This is the figure max_bytes bounds; Badger's own
// db.Size() is refreshed only once a minute.
func DirBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("buffer: measure %s: %w", dir, err)
	}
	var total int64
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // deleted by a compaction since ReadDir
		}
		total += allocated(fi)
	}
	return total, nil
}

//go:build unix

package buffer

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// SysStatFS is statfs(2).
func SysStatFS(dir string) (FSInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return FSInfo{}, fmt.Errorf("buffer: statfs %s: %w", dir, err)
	}
	return FSInfo{Avail: uint64(st.Bavail) * uint64(st.Bsize)}, nil
}

// lockDir takes the lock Badger takes on a store's directory (an exclusive flock on the
// directory itself), without waiting: ok is false when another process holds it.
func lockDir(dir string) (unlock func(), ok bool, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false, fmt.Errorf("buffer: open %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("buffer: lock %s: %w", dir, err)
	}
	return func() { f.Close() }, true, nil // closing the descriptor releases the lock
}

// syncDir makes the creations and removals of files in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("buffer: open %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("buffer: sync %s: %w", dir, err)
	}
	return nil
}

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

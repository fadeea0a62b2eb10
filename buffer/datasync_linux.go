package buffer

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync is fdatasync(2): the file's data and what is needed to read it back.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

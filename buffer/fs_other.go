//go:build !unix

package buffer

import (
	"errors"
	"os"
)

func allocated(fi os.FileInfo) int64 { return fi.Size() }

// SysStatFS is not available here: the reserve cannot be checked, only max_bytes.
func SysStatFS(string) (FSInfo, error) { return FSInfo{}, errors.ErrUnsupported }

// lockDir cannot take Badger's lock here: the empty log files are left alone (Badger
// locks with its own mechanism on these systems).
func lockDir(string) (unlock func(), ok bool, err error) { return nil, false, nil }

func syncDir(string) error { return nil }

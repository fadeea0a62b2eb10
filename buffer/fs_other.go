//go:build !unix

package buffer

import (
	"errors"
	"os"
)

func allocated(fi os.FileInfo) int64 { return fi.Size() }

// SysStatFS is not available here: the reserve cannot be checked, only max_bytes.
func SysStatFS(string) (FSInfo, error) { return FSInfo{}, errors.ErrUnsupported }

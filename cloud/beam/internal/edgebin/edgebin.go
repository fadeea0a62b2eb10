// Package edgebin builds the edgegate binary from the repository around this module, so
// tests drive the daemon only through its command line and wire formats.
package edgebin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// RepoRoot returns the edgegate repository this module sits in: the nearest parent
// directory whose go.mod declares module github.com/edgegate/edgegate.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/edgegate/edgegate\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("edgegate repository not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles ./cmd/edgegate of the repository into dir and returns the binary's path.
func Build(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edgegate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/edgegate")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/edgegate in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

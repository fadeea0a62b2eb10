package filesink_test

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/filesink"
	"github.com/edgegate/edgegate/uplink/sinktest"
)

func newSink(t *testing.T, path string) uplink.Sink {
	t.Helper()
	cfg := &uplink.Config{Name: "archive", Type: "file"}
	cfg.SetDefaults()
	sc := filesink.Type().NewConfig().(*filesink.Config)
	sc.Path = path
	cfg.Sink = sc
	s, err := filesink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lineIDs returns the ids of the records of every batch line in the file at path.
func lineIDs(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		ids, err := sinktest.PayloadIDs(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ids...)
	}
	return out
}

// TestContract: the file sink keeps uplink.Sink's promises; its upstream is the file, and
// an unreachable one a path under a regular file.
func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Up: func(t *testing.T) (uplink.Sink, func() []string) {
			path := filepath.Join(t.TempDir(), "out", "uplink.jsonl")
			return newSink(t, path), func() []string { return lineIDs(t, path) }
		},
		Unreachable: func(t *testing.T) uplink.Sink {
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o640); err != nil {
				t.Fatal(err)
			}
			return newSink(t, filepath.Join(file, "uplink.jsonl"))
		},
	})
}

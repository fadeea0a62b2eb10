package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// makeBuffer leaves a stopped daemon's data_dir: a raw log of 5 readings of which an uplink
// committed 3, and an agg log of 1 pane.
func makeBuffer(t *testing.T) string {
	t.Helper()
	dataDir := t.TempDir()
	s, err := buffer.Open(buffer.Options{Dir: filepath.Join(dataDir, "buffer"), DedupTTL: 0})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		v := `{"id":"r` + string(rune('0'+i)) + `","value":` + string(rune('0'+i)) + `}`
		if _, err := s.Append(ctx, "raw", []buffer.Entry{{Value: []byte(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, "agg", []buffer.Entry{{Value: []byte(`{"pane":1}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "raw", "cloud", 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dataDir
}

func TestBufferStats(t *testing.T) {
	dir := makeBuffer(t)
	code, out, errOut := runCmd("buffer", "stats", "-d", dir)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"buffer " + filepath.Join(dir, "buffer") + ":",
		"LOG", "ENTRIES",
		"raw  5", "agg  1",
		"cursor raw/cloud: next 4 (2 entries behind)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lack %q:\n%s", want, out)
		}
	}
	// The buffer directory itself works too, and JSON is there for scripts.
	code, out, _ = runCmd("buffer", "stats", "-d", filepath.Join(dir, "buffer"), "-json")
	var st statsJSON
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("json: exit %d: %s", code, out)
	}
	if len(st.Logs) != 2 || st.Logs[1].Name != "raw" || st.Logs[1].Entries != 5 || st.Logs[1].Last != 5 ||
		st.Logs[1].Cursors["cloud"] != 4 || st.DiskBytes <= 0 || st.Logs[1].Oldest == nil {
		t.Fatalf("json = %+v", st)
	}
}

func TestBufferTail(t *testing.T) {
	dir := makeBuffer(t)
	code, out, errOut := runCmd("buffer", "tail", "-d", dir, "-n", "2")
	if code != 0 || out != "{\"id\":\"r4\",\"value\":4}\n{\"id\":\"r5\",\"value\":5}\n" {
		t.Fatalf("tail -n 2: exit %d, out %q, err %q", code, out, errOut)
	}
	code, out, _ = runCmd("buffer", "tail", "-d", dir, "-log", "agg")
	if code != 0 || out != "{\"pane\":1}\n" {
		t.Fatalf("tail -log agg: exit %d, %q", code, out)
	}
	if code, out, _ = runCmd("buffer", "tail", "-d", dir, "-n", "0"); code != 0 || out != "" {
		t.Fatalf("tail -n 0: exit %d, %q", code, out)
	}
	// Nothing to print is said on stderr, with what the buffer has instead.
	code, out, errOut = runCmd("buffer", "tail", "-d", dir, "-log", "deadletter")
	if code != 0 || out != "" || !strings.Contains(errOut, `log "deadletter" has had no entries (logs in this buffer: agg, raw)`) {
		t.Fatalf("tail -log deadletter: exit %d, out %q, err %q", code, out, errOut)
	}
	s, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "buffer")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Trim(context.Background(), "agg", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd("buffer", "tail", "-d", dir, "-log", "agg")
	if code != 0 || out != "" || !strings.Contains(errOut, `log "agg" is empty (1 appended so far: all delivered and trimmed`) {
		t.Fatalf("tail of the trimmed agg log: exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestBufferErrors(t *testing.T) {
	dir := makeBuffer(t)
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"buffer"}, 2, "usage: edgegate buffer"},
		{[]string{"buffer", "frob"}, 2, `unknown command "frob"`},
		{[]string{"buffer", "tail", "-d", dir, "-n", "-1"}, 2, "expected a count"},
		{[]string{"buffer", "stats", "-d", dir, "extra"}, 2, "unexpected argument"},
		{[]string{"buffer", "stats", "-d", t.TempDir()}, 1, "no edgegate buffer here"},
		{[]string{"buffer", "tail", "-d", dir, "-log", "Bad/Name"}, 1, "bad log name"},
	}
	for _, c := range cases {
		code, _, errOut := runCmd(c.args...)
		if code != c.code || !strings.Contains(errOut, c.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.err)
		}
	}
	// A running daemon holds the store: the command says so instead of reading half-written data.
	s, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "buffer")})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd("buffer", "stats", "-d", dir)
	s.Close()
	if code != 1 || !strings.Contains(errOut, "in use, probably by the running daemon") {
		t.Errorf("store in use: exit %d, %q", code, errOut)
	}
}

// After a crash the write-ahead log needs recovery, which a read-only open cannot do: the
// command says so, and -repair recovers as the daemon would.
func TestBufferStatsAfterACrash(t *testing.T) {
	dir := makeBuffer(t)
	bdir := filepath.Join(dir, "buffer")
	s, err := buffer.Open(buffer.Options{Dir: bdir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), "raw", []buffer.Entry{{Value: []byte(`{"id":"r6"}`)}}); err != nil {
		t.Fatal(err)
	}
	// Copy the files of the open store: what a kill -9 leaves.
	img := filepath.Join(t.TempDir(), "buffer")
	os.Mkdir(img, 0o750)
	ents, _ := os.ReadDir(bdir)
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(bdir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(img, e.Name()), data, 0o640)
	}
	s.Close()
	// In a child process: Badger's failed read-only open leaves its goroutines running
	// (its Open returns without stopping them), which the process's exit ends and the
	// goleak check of this package's tests would report.
	cmd := testutil.SelfCommand("buffer", "stats", "-d", img)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run() // a failure is its exit code, checked below
	code, errOut := cmd.ProcessState.ExitCode(), stderr.String()
	if code != 1 || !strings.Contains(errOut, "-repair") {
		t.Fatalf("unclean store: exit %d, %q", code, errOut)
	}
	code, out, errOut := runCmd("buffer", "tail", "-d", img, "-n", "1", "-repair")
	if code != 0 || out != "{\"id\":\"r6\"}\n" {
		t.Fatalf("-repair: exit %d, out %q, err %q", code, out, errOut)
	}
}

// TestBufferStatsMissed: entries the retention deleted before an uplink had them are
// shown beside its cursor, and in the JSON, from the counts the store keeps on disk.
func TestBufferStatsMissed(t *testing.T) {
	dataDir := t.TempDir()
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	opts := buffer.Options{Dir: filepath.Join(dataDir, "buffer"), Clock: clk, Retention: time.Hour,
		Consumers: map[string][]string{"raw": {"cloud", "archive"}}}
	s, err := buffer.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := s.Append(ctx, "raw", []buffer.Entry{{Value: []byte(`{"value":1}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx, "raw", "cloud", 4); err != nil { // cloud had 1–3, archive none
		t.Fatal(err)
	}
	clk.Set(t0.Add(2 * time.Hour))
	if err := s.MaintainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("buffer", "stats", "-d", dataDir)
	for _, want := range []string{
		"cursor raw/archive: next 0 (0 entries behind; never had 5: 0 dropped for room, 5 expired)",
		"cursor raw/cloud: next 4 (0 entries behind; never had 2: 0 dropped for room, 2 expired)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("stats lacks %q: exit %d\n%s%s", want, code, out, errOut)
		}
	}
	_, out, _ = runCmd("buffer", "stats", "-d", dataDir, "-json")
	var st statsJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Logs) != 1 ||
		st.Logs[0].Missed["cloud"] != (missedJSON{Retention: 2}) || st.Logs[0].Missed["archive"] != (missedJSON{Retention: 5}) {
		t.Fatalf("json: %v\n%s", err, out)
	}
}

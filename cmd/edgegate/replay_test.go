package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/record"
)

var update = flag.Bool("update", false, "rewrite golden files")

func runCLI(stdin string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

// TestReplayWorkedExample runs SPEC §4's worked example through `edgegate replay` and
// checks every pane against the table, then byte for byte against the golden file.
func TestReplayWorkedExample(t *testing.T) {
	dir := filepath.Join("testdata", "replay")
	code, out, errs := runCLI("", "replay", "-c", filepath.Join(dir, "worked.yaml"), "--input", filepath.Join(dir, "worked.jsonl"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		p, err := record.DecodePane([]byte(line))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if p.ID != record.PaneID(p.Pipeline, p.Key, ms(t, p.Start), ms(t, p.End), p.Pane.Index) {
			t.Fatalf("pane id %s is not the hash of its window and index", p.ID)
		}
		got = append(got, fmt.Sprintf("%s %s [%s,%s) %s#%d count=%d sum=%g", p.Pipeline, p.Key,
			p.Start[17:23], p.End[17:23], p.Pane.Timing, p.Pane.Index, p.Count, *p.Sum))
	}
	// The table of SPEC §4, in emission order: #6 fires [0,10) ON_TIME in both pipelines,
	// #7 a LATE pane (accumulating: count 5, sum 18; discarding: count 1, sum 7), #9 is
	// dropped, and the end of input fires [10,20) and [20,30).
	want := []string{
		"example t1/temperature [00.000,10.000) ON_TIME#0 count=4 sum=11",
		"example-discarding t1/temperature [00.000,10.000) ON_TIME#0 count=4 sum=11",
		"example t1/temperature [00.000,10.000) LATE#1 count=5 sum=18",
		"example-discarding t1/temperature [00.000,10.000) LATE#1 count=1 sum=7",
		"example t1/temperature [10.000,20.000) ON_TIME#0 count=3 sum=18",
		"example t1/temperature [20.000,30.000) ON_TIME#0 count=1 sum=10",
		"example-discarding t1/temperature [10.000,20.000) ON_TIME#0 count=3 sum=18",
		"example-discarding t1/temperature [20.000,30.000) ON_TIME#0 count=1 sum=10",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("panes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(errs, "example: 10 records, 4 panes, 1 too late") {
		t.Fatalf("summary: %s", errs)
	}
	golden := filepath.Join(dir, "worked.golden.jsonl")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want2, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want2) {
		t.Fatalf("output differs from %s (run with -update after checking):\n%s", golden, out)
	}
	// stdin and --pipeline give the same panes of that pipeline.
	in, _ := os.ReadFile(filepath.Join(dir, "worked.jsonl"))
	code, out2, errs := runCLI(string(in), "replay", "-c", filepath.Join(dir, "worked.yaml"), "--pipeline", "example")
	var only []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, `"pipeline":"example"`) {
			only = append(only, l)
		}
	}
	if code != exitOK || strings.TrimSpace(out2) != strings.Join(only, "\n") {
		t.Fatalf("--pipeline example from stdin: exit %d\n%s\n%s", code, out2, errs)
	}
}

// TestReplayBatches feeds `edgegate replay` the worked example as the file uplink writes it
// (batches of records, with a batch of aggregates among them) and gets the golden panes.
func TestReplayBatches(t *testing.T) {
	dir := filepath.Join("testdata", "replay")
	in, err := os.ReadFile(filepath.Join(dir, "worked.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var items [][]byte
	for _, l := range strings.Split(strings.TrimSpace(string(in)), "\n") {
		if l != "" { // the file has a blank line, which replay skips
			items = append(items, []byte(l))
		}
	}
	golden, err := os.ReadFile(filepath.Join(dir, "worked.golden.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	pane := []byte(strings.SplitN(string(golden), "\n", 2)[0])
	var file []byte
	for _, b := range []struct {
		kind  record.Kind
		items [][]byte
	}{{record.KindRecords, items[:4]}, {record.KindAggregates, [][]byte{pane}}, {record.KindRecords, items[4:]}} {
		file = record.AppendBatch(file, "gw", "b", b.kind, b.items)
		file = append(file, '\n')
	}
	path := filepath.Join(t.TempDir(), "uplink.jsonl")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("", "replay", "-c", filepath.Join(dir, "worked.yaml"), "--input", path)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if out != string(golden) {
		t.Fatalf("panes from batches differ from worked.golden.jsonl:\n%s", out)
	}
	if !strings.Contains(errs, "11 records from 2 batches (1 batch of aggregates skipped)") {
		t.Errorf("summary: %s", errs)
	}

	// A record the core refuses is located by line and place in its batch.
	bad := record.AppendBatch(nil, "gw", "b", record.KindRecords, [][]byte{items[0], []byte(`{"ts":1}`)})
	code, _, errs = runCLI(string(bad)+"\n", "replay", "-c", filepath.Join(dir, "worked.yaml"))
	if code != exitUser || !strings.Contains(errs, "stdin:1: record 2 of the batch: not a record") {
		t.Errorf("bad record in a batch: exit %d, %s", code, errs)
	}
}

// TestReplayCountsOversized: a record whose window state could never be committed (a 2 KB
// series in a 1000-window sliding pipeline) is dropped from aggregation by replay as by the
// daemon, and the summary says so.
func TestReplayCountsOversized(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "slide.yaml")
	if err := os.WriteFile(cfg, []byte(`gateway: {id: gw, data_dir: "`+dir+`"}
pipelines:
  - name: slide
    input: "#"
    window: {type: sliding, size: 1000s, every: 1s}
    aggregates: [count]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	in := `{"topic":"t","series":"k","ts":"2026-11-26T12:00:00Z","value":1}` + "\n" +
		`{"topic":"t","series":"` + strings.Repeat("x", 2000) + `","ts":"2026-11-26T12:00:01Z","value":2}` + "\n"
	code, _, errs := runCLI(in, "replay", "-c", cfg)
	if code != exitOK || !strings.Contains(errs, "slide: 1 records, ") || !strings.Contains(errs, "1 too large to aggregate") {
		t.Fatalf("exit %d, summary %q", code, errs)
	}
}

func ms(t *testing.T, s string) int64 {
	t.Helper()
	var in record.Reading
	if _, err := record.ParseReading([]byte(`{"topic":"x","ts":"`+s+`","value":0}`), &in); err != nil {
		t.Fatal(err)
	}
	return in.TS
}

func TestReplayErrors(t *testing.T) {
	dir := filepath.Join("testdata", "replay")
	cfg := filepath.Join(dir, "worked.yaml")
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		err   string
	}{
		{"", []string{"replay", "-c", cfg, "--pipeline", "nope"}, exitUser, `has no pipeline "nope" (it has: example, example-discarding)`},
		{"", []string{"replay", "-c", cfg, "--input", filepath.Join(dir, "missing.jsonl")}, exitUser, "no such file"},
		{"{\"topic\":\"t\",\"ts\":\"2026-11-26T12:00:00Z\",\"value\":1}\n\nnot json\n", []string{"replay", "-c", cfg}, exitUser, "stdin:3: not a record"},
		{"", []string{"replay", "-c", cfg, "extra"}, exitUsage, `unexpected argument "extra"`},
		{"", []string{"replay", "--bogus"}, exitUsage, "flag provided but not defined"},
		{"", []string{"replay", "-c", filepath.Join(dir, "missing.yaml")}, exitUser, "read config"},
	} {
		code, _, errs := runCLI(tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", tc.args, code, errs, tc.code, tc.err)
		}
	}
}

package winspec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/cloud/beam/internal/edgebin"
)

var edgegate string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "winspec-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	edgegate, err = edgebin.Build(dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// configHead is the daemon config a snippet is validated in: the snippet's keys follow,
// indented under the pipeline, from line 6.
const configHead = `gateway: {id: gw-x, data_dir: /tmp/winspec}
broker: {allow_anonymous: true}
pipelines:
  - name: p
    input: "devices/#"
`

var snippets = []struct {
	yaml  string
	valid bool
}{
	{"window: {type: tumbling, size: 1m}", true},
	{"window: {type: sliding, size: 5m, every: 1m}", true},
	{"window: {type: session, gap: 30s}", true},
	{"window: {type: tumbling, size: 1m}\naggregates: [count, sum, min, max, mean, first, last, stddev]\nout_of_order: 0\nallowed_lateness: 1h\naccumulation: discarding", true},
	{"window: {type: sliding, size: 1000s, every: 1s}", true},
	{"window: {type: tumbling, size: 250ms}\nout_of_order: 1500ms", true},
	{"window: {type: tumbling}", false},
	{"window: {type: tumbling, size: 0}", false},
	{"window: {type: sliding, size: 5m}", false},
	{"window: {type: sliding, size: 5m, every: 2m}", false},
	{"window: {type: sliding, size: 2000s, every: 1s}", false},
	{"window: {type: session, gap: 0}", false},
	{"window: {type: session, gap: 1s, size: 1m}", false},
	{"window: {type: tumbling, size: 1m, every: 10s}", false},
	{"window: {type: tumbling, size: 1m, gap: 0}", false},
	{"window: {type: hopping, size: 1m}", false},
	{"window: {type: tumbling, size: 1.5ms}", false},
	{"window: {type: tumbling, size: -1s}", false},
	{"window: {type: tumbling, size: 10}", false},
	{"window: {type: tumbling, size: 1m, colour: red}", false},
	{"window: {type: tumbling, size: 1m}\naggregates: [count, foo]", false},
	{"window: {type: tumbling, size: 1m}\naggregates: [sum, sum]", false},
	{"window: {type: tumbling, size: 1m}\naggregates: count", false},
	{"window: {type: tumbling, size: 1m}\naccumulation: both", false},
	{"window: {type: tumbling, size: 1m}\nout_of_order: 1.5ms", false},
	{"window: {type: tumbling, size: 1m}\nallowed_lateness: soon", false},
	{"window: tumbling", false},
	// The default window, tumbling, has no size. The daemon reports it at the pipeline
	// (line 4), Parse at the spec it reads (line 6).
	{"aggregates: [count]", false},
}

// moved are the positions Parse reports elsewhere than the daemon, by snippet.
var moved = map[string][2]string{"aggregates: [count]": {"6:5", "4:5"}}

var position = regexp.MustCompile(`(?m):(\d+:\d+): `)

// positions returns the LINE:COL of each problem in a report.
func positions(report string) []string {
	var ps []string
	for _, m := range position.FindAllStringSubmatch(report, -1) {
		ps = append(ps, m[1])
	}
	slices.Sort(ps)
	return slices.Compact(ps)
}

// TestParseAgreesWithValidate checks each snippet against `edgegate validate` on the same
// YAML: the same verdict, and problems reported at the same positions.
func TestParseAgreesWithValidate(t *testing.T) {
	dir := t.TempDir()
	for i, sn := range snippets {
		indented := "    " + strings.ReplaceAll(sn.yaml, "\n", "\n    ") + "\n"
		cfg := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
		if err := os.WriteFile(cfg, []byte(configHead+indented), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(edgegate, "validate", "-c", cfg).CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("edgegate validate: %v", err)
		}
		daemonValid := err == nil
		// The same lines, the head blanked out, so positions line up.
		_, perr := Parse([]byte(strings.Repeat("#\n", strings.Count(configHead, "\n")) + indented))
		if daemonValid != sn.valid {
			t.Errorf("snippet %q: edgegate validate says valid=%v, the table %v:\n%s", sn.yaml, daemonValid, sn.valid, out)
		}
		if (perr == nil) != daemonValid {
			t.Errorf("snippet %q: Parse says %v, edgegate validate:\n%s", sn.yaml, perr, out)
			continue
		}
		if perr != nil {
			got, want := positions(":"+strings.ReplaceAll(perr.Error(), "\n", "\n:")), positions(string(out))
			if m, ok := moved[sn.yaml]; ok && slices.Equal(got, []string{m[0]}) && slices.Equal(want, []string{m[1]}) {
				continue
			}
			if !slices.Equal(got, want) {
				t.Errorf("snippet %q: problems at %v, edgegate validate at %v:\n%v\n%s", sn.yaml, got, want, perr, out)
			}
		}
	}
}

func TestParse(t *testing.T) {
	s, err := Parse([]byte("window: {type: sliding, size: 5m, every: 1m}\naggregates: [count, stddev]\nout_of_order: 2s\nallowed_lateness: 1h\naccumulation: discarding\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Window: Window{Type: Sliding, Size: 5 * time.Minute, Every: time.Minute},
		Aggregates: []string{"count", "stddev"}, OutOfOrder: 2 * time.Second, AllowedLateness: time.Hour, Discarding: true}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
	// YAML writes what Parse reads.
	back, err := Parse([]byte(s.YAML()))
	if err != nil || fmt.Sprint(back) != fmt.Sprint(s) {
		t.Errorf("YAML round trip: %+v, %v", back, err)
	}
	d, err := Parse([]byte("window: {type: session, gap: 10s}"))
	if err != nil {
		t.Fatal(err)
	}
	if d.OutOfOrder != 10*time.Second || d.Discarding || !slices.Equal(d.Aggregates, []string{"count", "mean", "min", "max"}) {
		t.Errorf("defaults: %+v", d)
	}
}

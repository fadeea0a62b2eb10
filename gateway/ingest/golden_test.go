package ingest

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

var update = flag.Bool("update", false, "rewrite the testdata/*/*.golden files")

// goldenNow is the arrival time of every golden message.
var goldenNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// goldenRoutes has one route per format; a corpus file of testdata/<format>/ is published
// on goldenTopics[<format>].
var goldenRoutes = []config.Route{
	{Topic: "dev/+device/+metric", Format: "json", Series: "{device}/{metric}", Unit: "Cel",
		Units: map[string]string{"humidity": "%RH"}, Labels: map[string]string{"site": "north", "device": "{device}"}},
	{Topic: "senml/+device", Format: "senml", Series: "{device}", Labels: map[string]string{"unit": "{unit}"}},
	{Topic: "num/+device/+metric", Format: "number", Series: "{device}/{metric}", Unit: "Cel"},
}

var goldenTopics = map[string]string{
	"json":   "dev/d1/temperature",
	"senml":  "senml/d1",
	"number": "num/d1/temperature",
}

// TestGolden decodes every file of the testdata corpus and compares the records (SPEC §3.1
// JSON, one per line) or the refusal with its .golden file. Run with -update to rewrite
// them after a deliberate change, and review the diff.
func TestGolden(t *testing.T) {
	rt, err := NewRouter(goldenRoutes, "drop")
	if err != nil {
		t.Fatal(err)
	}
	for format, tp := range goldenTopics {
		files, err := filepath.Glob(filepath.Join("testdata", format, "*"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, in := range files {
			if strings.HasSuffix(in, ".golden") {
				continue
			}
			n++
			t.Run(format+"/"+filepath.Base(in), func(t *testing.T) {
				payload, err := os.ReadFile(in)
				if err != nil {
					t.Fatal(err)
				}
				got := decodeToText(rt, tp, payload)
				if bad := strings.HasPrefix(filepath.Base(in), "bad-"); bad != strings.HasPrefix(got, "refused") {
					t.Errorf("file name says bad=%v, decode gave:\n%s", bad, got)
				}
				golden := strings.TrimSuffix(in, filepath.Ext(in)) + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("decode %s:\n got: %s\nwant: %s", in, got, want)
				}
			})
		}
		if n == 0 {
			t.Errorf("no corpus for format %s", format)
		}
	}
}

func decodeToText(rt *Router, tp string, payload []byte) string {
	recs, _, err := rt.Decode(tp, payload, goldenNow)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return "unexpected error type: " + err.Error() + "\n"
		}
		return "refused " + string(e.Reason) + ": " + e.Err.Error() + "\n"
	}
	var b strings.Builder
	for i := range recs {
		b.Write(recs[i].AppendJSON(nil))
		b.WriteByte('\n')
	}
	return b.String()
}

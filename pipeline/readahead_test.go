package pipeline

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

// TestRunnerReadsLargeEntriesInBoundedBatches: raw messages of 200 KB between the readings
// make the batches the runner reads ahead stop at batchBytes, not at the step's count of
// entries: the runner still takes every entry once and in order (its panes are the
// replay's), and no batch holds more than batchBytes besides its last entry.
func TestRunnerReadsLargeEntriesInBoundedBatches(t *testing.T) {
	spec := runnerSpec()
	var ins []Input
	for i := range 400 {
		ins = append(ins, Input{Topic: "t", Series: "k" + string(rune('a'+i%7)), TS: sec(float64(i) / 10), Value: float64(i)})
	}
	recs := recordsJSON(ins)
	big := bytes.Repeat([]byte("x"), 200<<10)
	var all [][]byte
	for i, v := range recs {
		all = append(all, v)
		if i%10 == 0 {
			raw := record.Record{ID: "raw", Topic: "t", TS: time.UnixMilli(sec(0)).UTC(), Payload: big, Raw: true}
			all = append(all, raw.AppendJSON(nil))
		}
	}
	s := openStore(t, t.TempDir())
	for _, v := range all { // one a call: the large ones do not fit many to a transaction
		if _, err := s.Append(context.Background(), "raw", []buffer.Entry{{Value: v}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewRunner(spec, RunnerOptions{Store: s, Input: "raw", Clock: clock.NewFake(time.Unix(1e9, 0))})
	if err != nil {
		t.Fatal(err)
	}
	h := runRunner(t, r)
	waitAll(t, h, len(all))
	h.stop(t)
	if got := r.Stats().Records.Load(); got != uint64(len(recs)) {
		t.Fatalf("%d readings aggregated, want %d", got, len(recs))
	}
	got, want := panesByID(t, aggLog(t, s)), replayPanes(t, spec, recs)
	if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("aggregate log: %d panes, replay %d", len(got), len(want))
	}
	// No batch held more than batchBytes besides its last entry.
	if r.batchHigh == 0 || r.batchHigh > batchBytes+len(all[1]) {
		t.Fatalf("the largest batch held %d bytes", r.batchHigh)
	}
}

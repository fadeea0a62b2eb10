package uplink

import (
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestFilteredEntriesReadOnce: an uplink forwarding only agg/# reads each raw reading once
// while its batch lingers, not again at every append (the 2k msg/s profile of issue 20:
// a third of the daemon's CPU went to reading raw readings it forwards none of). What it
// forwards, and the position it commits, are unchanged: the pane, and the raw log's end.
func TestFilteredEntriesReadOnce(t *testing.T) {
	st := testStore(t, t.TempDir())
	defer st.Close()
	sink := &recSink{}
	clk := clock.NewFake(time.Unix(1e9, 0))
	u := testUplink(st, sink, "agg/#")
	u.clock = clk
	u.batch.Linger = conf.Duration(time.Hour)
	var once sync.Once
	var stopErr error
	stopRun := run(u)
	stop := func() error { once.Do(func() { stopErr = stopRun() }); return stopErr }
	defer stop()

	const rounds, per = 20, 10
	n := 0
	for r := 0; r < rounds; r++ {
		vals := make([]string, per)
		for i := range vals {
			vals[i] = rec("devices/d1/t", n)
			n++
		}
		appendN(t, st, "raw", vals...)
		// The uplink has looked at every reading so far (and, lingering, waits for more).
		testutil.Eventually(t, 10*time.Second, "the uplink read the new readings", func() bool { return u.stats.scanned.Load() >= uint64(n) && clk.Timers() > 0 })
	}
	if got := u.stats.scanned.Load(); got != rounds*per {
		t.Fatalf("read %d raw entries for %d readings: each should be read once", got, rounds*per)
	}

	appendN(t, st, "agg", pane("p", 1))
	testutil.Eventually(t, 10*time.Second, "the pane sent and the raw log passed", func() bool {
		clk.Advance(2 * time.Hour) // past the lingers, whenever the uplink saw the pane
		c, err := st.Cursor("raw", "up")
		return err == nil && c == rounds*per+1 && len(sink.batches()) == 1
	})
	if b := sink.batches()[0]; b.Log != "agg" || b.Records != 1 {
		t.Fatalf("sent %+v, want the one pane", b)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

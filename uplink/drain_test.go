package uplink_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// TestDrainOneTransactionPerGroup: an uncapped backlog drain writes one transaction (one
// fsync) per group of batches — the next group's record shares it with the commit of the
// group acknowledged before — not one to record and another to commit. Every record is
// still delivered exactly once, the cursor ends past the log and no lane state is left.
func TestDrainOneTransactionPerGroup(t *testing.T) {
	const batch, group, groups = 50, 16, 20 // group: the uplink's groupSize
	const backlog = batch * group * groups
	s := openStore(t, t.TempDir())
	fillIDs(t, s, "r", "sensors/a/t", 0, backlog)
	up := testutil.StartUpstream(t)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: %q, max_rate: 0, batch: {max_records: %d, linger: 10ms}}`, up.URL(), batch))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	before := s.Stats().Groups.Load()
	stop := run(t, u)
	testutil.Eventually(t, time.Minute, "the backlog drained", func() bool { return u.Stats().Records.Load() == backlog })
	stop()
	// The split; the first two groups' records (nothing acknowledged yet to share them);
	// the next groups' records, each with the commit of the group two before; the last two
	// groups' commits alone. Recording and committing apart took 2 per group (41 here).
	txs := s.Stats().Groups.Load() - before
	if txs > groups+3 {
		t.Errorf("%d transactions for a drain of %d groups, want at most %d", txs, groups, groups+3)
	}
	t.Logf("%d transactions for %d groups", txs, groups)

	seen := map[string]int{}
	for _, p := range payloads(up) {
		for _, id := range recordIDs(p) {
			seen[id]++
		}
	}
	for i := range backlog {
		if id := fmt.Sprintf("r%06d", i); seen[id] != 1 {
			t.Fatalf("record %s delivered %d times", id, seen[id])
		}
	}
	if c, _ := s.Cursor("raw", "cloud"); c != backlog+1 {
		t.Errorf("cursor %d, want %d", c, backlog+1)
	}
	if v, ok, _ := s.Get("uplink/cloud/raw/lanes"); ok {
		t.Errorf("lane state left after the drain: %s", v)
	}
}

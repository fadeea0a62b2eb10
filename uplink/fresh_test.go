package uplink_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// fillIDs appends n records with ids prefix%06d on topic, in chunks of one transaction.
func fillIDs(t testing.TB, s *buffer.Store, prefix, topic string, from, n int) {
	t.Helper()
	const chunk = 2000 // ~260 KB: within one transaction (buffer's MaxRequestBytes)
	for lo := from; lo < from+n; lo += chunk {
		var es []buffer.Entry
		for i := lo; i < min(lo+chunk, from+n); i++ {
			r := record.Record{ID: fmt.Sprintf("%s%06d", prefix, i), Topic: topic, Series: "s", TS: time.UnixMilli(int64(1764158400000 + i)).UTC(), Value: float64(i)}
			es = append(es, buffer.Entry{Value: r.AppendJSON(nil)})
		}
		if _, err := s.Append(context.Background(), "raw", es); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFreshFirst: with a 200k-record backlog draining at max_rate, each fresh record is
// delivered before the gateway clock has moved 2×linger past its arrival, and the backlog
// lane never exceeds its cap. The clock is the injected fake: the upstream round trip costs
// no gateway time, so "within 2×linger plus the round trip" is checked exactly. Then the
// uplink restarts mid-drain (the lanes are reloaded from the store) with no cap and
// delivers everything; resent batches have the same ids and bytes.
func TestFreshFirst(t *testing.T) {
	backlog := 200_000
	if testing.Short() {
		backlog = 20_000
	}
	const (
		linger  = 100 * time.Millisecond
		maxRate = 5000
		fresh   = 12
	)
	s := openStore(t, t.TempDir())
	t0 := time.Now()
	fillIDs(t, s, "r", "sensors/a/t", 0, backlog)
	t.Logf("filled %d records in %s", backlog, time.Since(t0))
	up := testutil.StartUpstream(t)
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: %q, max_rate: %d, batch: {max_records: 500, linger: %s}}`, up.URL(), maxRate, linger))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clk, discard)
	stop := run(t, u)

	testutil.Eventually(t, 10*time.Second, "the drain to start", func() bool { return u.Status().Draining })
	start := clk.Now()
	backlogSent := func() int {
		n := 0
		for _, p := range payloads(up) {
			_, recs := testutil.DecodeBatch(t, p)
			for _, r := range recs {
				if r.Topic == "sensors/a/t" {
					n++
				}
			}
		}
		return n
	}
	for i := range fresh {
		fillIDs(t, s, "f", "fresh/a/t", i, 1)
		id := fmt.Sprintf("f%06d", i)
		key := []byte(`"id":"` + id + `"`)
		arrival := clk.Now()
		seen := len(up.Messages()) // the record cannot be in what arrived before it was stored
		delivered := func(wait time.Duration) bool {
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				ms := up.Messages()
				for ; seen < len(ms); seen++ {
					if bytes.Contains(ms[seen].Payload, key) {
						return true
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
			return false
		}
		// Let the uplink see the record at `arrival`, then move the clock in steps of
		// linger/2, giving the uplink ample real time at each step.
		time.Sleep(20 * time.Millisecond)
		ok := false
		for step := 1; step <= 4 && !ok; step++ {
			clk.Advance(linger / 2)
			ok = delivered(map[bool]time.Duration{true: 3 * time.Second, false: 30 * time.Millisecond}[step >= 2])
		}
		if !ok {
			t.Fatalf("fresh record %s not delivered within 2×linger of gateway time (arrived %s, now %s)", id, arrival.Format(time.StampMilli), clk.Now().Format(time.StampMilli))
		}
		// The cap: at most max_rate records/s of gateway time, plus the first group (a
		// quarter second of max_rate, sent at once).
		elapsed := clk.Now().Sub(start)
		if n, limit := backlogSent(), int(elapsed.Seconds()*maxRate)+maxRate/4; n > limit {
			t.Fatalf("backlog sent %d records in %s of gateway time, over the cap (%d)", n, elapsed, limit)
		}
	}
	st := u.Status()
	if !st.Draining || st.Backlog < uint64(backlog)/2 {
		t.Fatalf("the drain should still be running at the cap: %+v", st)
	}
	t.Logf("after %s of gateway time: %d backlog records sent at max_rate %d; %d fresh records delivered", clk.Now().Sub(start), backlogSent(), maxRate, fresh)
	stop()
	sink.Close()

	// Restart mid-drain, without a cap and on the real clock: everything arrives.
	cfg.MaxRate = 0
	sink2, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink2)
	u2 := uplink.New(cfg, "gw", "raw", record.KindRecords, sink2, s, clock.Real{}, discard)
	run(t, u2)
	t0 = time.Now()
	testutil.Eventually(t, 120*time.Second, "the whole backlog", func() bool { return !u2.Status().Draining && u2.Status().Backlog == 0 })
	t.Logf("the rest drained without a cap in %s", time.Since(t0))

	ids := map[string]int{}
	byBatch := map[string]string{}
	for _, p := range payloads(up) {
		id := batchID(p)
		if prev, ok := byBatch[id]; ok && prev != string(p) {
			t.Fatalf("batch %s resent with different content", id)
		}
		byBatch[id] = string(p)
		for _, r := range recordIDs(p) {
			ids[r]++
		}
	}
	for i := range backlog {
		if ids[fmt.Sprintf("r%06d", i)] == 0 {
			t.Fatalf("backlog record r%06d never delivered", i)
		}
	}
	for i := range fresh {
		if ids[fmt.Sprintf("f%06d", i)] == 0 {
			t.Fatalf("fresh record f%06d never delivered", i)
		}
	}
	if c, _ := s.Cursor("raw", "cloud"); c != uint64(backlog+fresh+1) {
		t.Errorf("cursor %d, want %d", c, backlog+fresh+1)
	}
	if v, ok, _ := s.Get("uplink/cloud/raw/lanes"); ok {
		t.Errorf("lane state left after the drain: %s", v)
	}
}

// batchID and recordIDs read a §3.3 batch written by record.AppendBatch without a full
// decode (200k records under the race detector): each record starts with {"id":"...".
func batchID(p []byte) string {
	_, rest, _ := bytes.Cut(p, []byte(`"batch":"`))
	id, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(id)
}

func recordIDs(p []byte) []string {
	var out []string
	for {
		i := bytes.Index(p, []byte(`{"id":"`))
		if i < 0 {
			return out
		}
		p = p[i+7:]
		id, rest, _ := bytes.Cut(p, []byte(`"`))
		out = append(out, string(id))
		p = rest
	}
}

// TestFreshFirstUncapped: with max_rate 0 the backlog lane always has its next group
// ready; a fresh reading must still overtake it rather than wait for the end of the drain.
func TestFreshFirstUncapped(t *testing.T) {
	const backlog = 100_000
	s := openStore(t, t.TempDir())
	fillIDs(t, s, "r", "sensors/a/t", 0, backlog)
	up := testutil.StartUpstream(t)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: %q, max_rate: 0, batch: {max_records: 500, linger: 10ms}}`, up.URL()))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "the drain under way", func() bool { return u.Stats().Records.Load() > 0 })
	fillIDs(t, s, "f", "fresh/a/t", 0, 1)
	testutil.Eventually(t, 60*time.Second, "everything", func() bool { return u.Stats().Records.Load() == backlog+1 })
	got := payloads(up)
	after := -1
	for i, p := range got {
		if bytes.Contains(p, []byte(`"id":"f000000"`)) {
			after = 0
			for _, q := range got[i+1:] {
				after += len(recordIDs(q))
			}
			break
		}
	}
	if after <= 0 {
		t.Fatalf("the fresh reading was not sent before the end of the drain (%d backlog records after it)", after)
	}
	t.Logf("the fresh reading overtook %d backlog records", after)
}

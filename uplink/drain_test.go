package uplink_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// TestDrainOneTransactionPerGroup: an uncapped backlog drain writes one transaction (one
// fsync) per group of batches — the next group's record shares it with the commit of the
// group acknowledged before, the last two groups share their commit and the split is
// written with the first record — not one to record and another to commit. Every record is
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
	// The first two groups' records (nothing acknowledged yet to share them; the first
	// carries the split, once written on its own); the next groups' records, each with the
	// commit of the group two before; the last two groups' commits in one, once the last is
	// acknowledged (they took two in a row). 23 in all before both; recording and
	// committing apart took 2 per group (41 here).
	txs := s.Stats().Groups.Load() - before
	if txs > groups+1 {
		t.Errorf("%d transactions for a drain of %d groups, want at most %d", txs, groups, groups+1)
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

// recyclingSink acknowledges every batch, as a sink that keeps no reference to a payload
// once acknowledged (uplink.Recycler). It checks that no payload changes while it holds
// it — a payload handed to the next cuts too early would be overwritten by the read of
// the group that follows, which runs meanwhile — and keeps a copy of each.
type recyclingSink struct {
	mu     sync.Mutex
	got    [][]byte
	bases  map[*byte]int // payload buffers seen, by their first byte
	reused int
	err    error
}

func (s *recyclingSink) Send(ctx context.Context, b *uplink.Batch) error {
	_, err := s.SendAll(ctx, []*uplink.Batch{b})
	return err
}

func (s *recyclingSink) SendAll(_ context.Context, bs []*uplink.Batch) (int, error) {
	held := make([][]byte, len(bs))
	for i, b := range bs {
		held[i] = bytes.Clone(b.Payload)
	}
	time.Sleep(2 * time.Millisecond) // in flight: the next group is read meanwhile
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range bs {
		if !bytes.Equal(b.Payload, held[i]) && s.err == nil {
			s.err = fmt.Errorf("batch %s [%d, %d] changed while in flight", b.ID, b.First, b.Last)
		}
		base := unsafe.SliceData(b.Payload)
		if s.bases[base] > 0 {
			s.reused++
		}
		s.bases[base]++
		s.got = append(s.got, held[i])
	}
	return len(bs), nil
}

func (s *recyclingSink) Close() error           { return nil }
func (s *recyclingSink) RecyclesPayloads() bool { return true }

// TestDrainRecyclesPayloadsOnlyOnceAcknowledged: with a sink that lets the uplink reuse
// acknowledged payloads, a drain does reuse them, and no payload changes while the sink
// holds it; every record is delivered once.
func TestDrainRecyclesPayloadsOnlyOnceAcknowledged(t *testing.T) {
	const batch, backlog = 50, 50 * 16 * 10
	s := openStore(t, t.TempDir())
	fillIDs(t, s, "r", "sensors/a/t", 0, backlog)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: "tcp://127.0.0.1:1", max_rate: 0, batch: {max_records: %d, linger: 10ms}}`, batch))
	sink := &recyclingSink{bases: map[*byte]int{}}
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	stop := run(t, u)
	testutil.Eventually(t, time.Minute, "the backlog drained", func() bool { return u.Stats().Records.Load() == backlog })
	stop()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.err != nil {
		t.Fatal(sink.err)
	}
	if sink.reused == 0 {
		t.Errorf("no payload buffer reused in %d batches", len(sink.got))
	}
	seen := map[string]int{}
	for _, p := range sink.got {
		for _, id := range recordIDs(p) {
			seen[id]++
		}
	}
	for i := range backlog {
		if id := fmt.Sprintf("r%06d", i); seen[id] != 1 {
			t.Fatalf("record %s delivered %d times", id, seen[id])
		}
	}
	t.Logf("%d batches, %d in a reused buffer", len(sink.got), sink.reused)
}

package uplink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// TestGroupReadInParallelCutsTheSameBatches: a backlog group, read several batches per read
// of the store (readRun) and its second half by a second goroutine (readGroup), is made of
// exactly the batches that reading them one by one, in sequence, cuts —
// same ranges, ids, payloads, items and seqs — whether the guess of where the second half
// starts holds (full batches of consecutive entries) or not (filtered entries, batches cut
// by bytes), up to the end of the range.
func TestGroupReadInParallelCutsTheSameBatches(t *testing.T) {
	cases := []struct {
		name     string
		forward  string
		maxBytes conf.ByteSize
		topic    func(i int) string
		series   func(i int) string
		hits     string // the guess holds for: "all" full groups, "some", "none"
	}{
		{"consecutive", "#", 1 << 20, func(int) string { return "devices/d1/t" }, func(int) string { return "s" }, "all"},
		{"filtered", "devices/d1/#", 1 << 20, func(i int) string { return fmt.Sprintf("devices/d%d/t", 1+min(i%7, 1)) }, func(int) string { return "s" }, "none"},
		// Runs of 500 small records (batches full by count) and 500 large ones (cut by
		// bytes).
		{"bytes", "#", 1500, func(int) string { return "devices/d1/t" }, func(i int) string { return strings.Repeat("x", 100*(i/500%2)) }, "some"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := testStore(t, t.TempDir())
			defer st.Close()
			const n = 3000
			vals := make([]string, n)
			for i := range vals {
				r := record.Record{ID: fmt.Sprint("r", i), Topic: c.topic(i), Series: c.series(i), Value: float64(i)}
				vals[i] = string(r.AppendJSON(nil))
			}
			appendN(t, st, "raw", vals...)
			newUplink := func() (*Uplink, *stream) {
				u := testUplink(st, &recSink{}, c.forward)
				u.batch.MaxRecords, u.batch.MaxBytes = 10, c.maxBytes
				return u, u.streams[1] // raw
			}
			end := uint64(n + 1) // the backlog lane's end: the log's last entry + 1

			// In sequence, one batch after the other, as cutBacklog did.
			u, s := newUplink()
			var want []*Batch
			for pos := uint64(0); pos < end; {
				b, _, err := u.read(s, pos, end-1, false)
				if err != nil {
					t.Fatal(err)
				}
				if b == nil {
					t.Fatalf("nothing read from %d", pos)
				}
				want = append(want, b)
				pos = b.Last + 1
			}

			// In groups of 16, each read in two halves at once when the guess allows.
			u, s = newUplink()
			var got []*Batch
			for pos := uint64(0); pos < end; {
				bs, err := u.readGroup(s, pos, end, groupSize)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, bs...)
				pos = bs[len(bs)-1].Last + 1
			}

			if len(got) != len(want) {
				t.Fatalf("%d batches in groups, %d in sequence", len(got), len(want))
			}
			for i, w := range want {
				g := got[i]
				if g.ID != w.ID || g.First != w.First || g.Last != w.Last || g.Records != w.Records ||
					!bytes.Equal(g.Payload, w.Payload) || !slices.Equal(g.Seqs, w.Seqs) ||
					!slices.EqualFunc(g.Items, w.Items, bytes.Equal) {
					t.Fatalf("batch %d: [%d, %d] with %d records in groups, [%d, %d] with %d in sequence", i, g.First, g.Last, g.Records, w.First, w.Last, w.Records)
				}
			}
			// A batch rebuilt from its recorded range after a restart is the same.
			ur, sr := newUplink()
			for i, w := range want {
				b, _, err := ur.read(sr, w.First, w.Last, true)
				if err != nil {
					t.Fatal(err)
				}
				if b == nil || b.ID != w.ID || !bytes.Equal(b.Payload, w.Payload) {
					t.Fatalf("batch %d [%d, %d] rebuilt from its range differs from the one cut", i, w.First, w.Last)
				}
			}
			hits := u.stats.speculated.Load()
			t.Logf("%d batches, %d groups with their second half read in parallel", len(got), hits)
			full := uint64(len(got) / groupSize)
			switch {
			case c.hits == "all" && hits < full:
				t.Errorf("%d second halves read in parallel for %d full groups: the guess should hold for each", hits, full)
			case c.hits == "some" && (hits == 0 || hits >= full):
				t.Errorf("%d second halves read in parallel for %d full groups: the guess should hold for some only", hits, full)
			case c.hits == "none" && hits > 0:
				t.Errorf("%d second halves read in parallel: the guess should never hold", hits)
			}
		})
	}
}

// TestReadAheadIsTheGroupReadGroupCuts: a backlog group read ahead (while the group before
// it is recorded and sent) is used only when it is the group readGroup would cut at that
// moment — same start, range end, size and limits — and is then exactly that group; after
// a change of the limits (a config reload) or from another start it is dropped and the
// group is read again.
func TestReadAheadIsTheGroupReadGroupCuts(t *testing.T) {
	st := testStore(t, t.TempDir())
	defer st.Close()
	const n = 2000
	vals := make([]string, n)
	for i := range vals {
		r := record.Record{ID: fmt.Sprint("r", i), Topic: "devices/d1/t", Series: "s", Value: float64(i)}
		vals[i] = string(r.AppendJSON(nil))
	}
	appendN(t, st, "raw", vals...)
	end := uint64(n + 1)
	newUplink := func() (*Uplink, *stream) {
		u := testUplink(st, &recSink{}, "#")
		u.batch.MaxRecords = 10
		return u, u.streams[1] // raw
	}
	same := func(t *testing.T, got, want []*Batch) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d batches, want %d", len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.ID != w.ID || g.First != w.First || g.Last != w.Last || !bytes.Equal(g.Payload, w.Payload) || !slices.Equal(g.Seqs, w.Seqs) {
				t.Fatalf("batch %d: [%d, %d] read ahead, [%d, %d] read then", i, g.First, g.Last, w.First, w.Last)
			}
		}
	}

	// Groups read ahead one after the other, as a drain does.
	u, s := newUplink()
	uw, sw := newUplink()
	for pos := uint64(0); pos < end; {
		want, err := uw.readGroup(sw, pos, end, groupSize)
		if err != nil {
			t.Fatal(err)
		}
		u.readAhead(s, pos, end, groupSize)
		got, err := u.takeAhead(s, pos, end, groupSize)
		if err != nil {
			t.Fatal(err)
		}
		same(t, got, want)
		if s.ahead != nil {
			t.Fatal("the read ahead is still held once taken")
		}
		pos = want[len(want)-1].Last + 1
	}

	// Not the group asked for: dropped.
	u, s = newUplink()
	u.readAhead(s, 1, end, groupSize)
	for _, c := range []struct {
		name     string
		pos, end uint64
		n        int
	}{{"another start", 2, end, groupSize}, {"another end", 1, end - 1, groupSize}, {"another size", 1, end, groupSize / 2}} {
		if got, err := u.takeAhead(s, c.pos, c.end, c.n); got != nil || err != nil || s.ahead != nil {
			t.Errorf("%s: the group read ahead was used (%d batches, %v)", c.name, len(got), err)
		}
		u.readAhead(s, 1, end, groupSize)
	}
	u.batch.MaxRecords = 7 // a reload
	if got, _ := u.takeAhead(s, 1, end, groupSize); got != nil {
		t.Errorf("the group read ahead with the old limits was used after a reload: first batch [%d, %d]", got[0].First, got[0].Last)
	}
}

// TestDrainLastGroupFailingStillCommitsTheOneBefore: the drain's last group waits to share
// its commit with the group acknowledged before it; when the last group's send fails, that
// group and the last group's acknowledged batches are committed all the same, before the
// uplink backs off: none of them is sent again.
func TestDrainLastGroupFailingStillCommitsTheOneBefore(t *testing.T) {
	const n = 2 * groupSize * 3 // three groups of batches of 2
	st := storeOfReadings(t, n)
	defer st.Close()
	sink := &recSink{fail: func(b *Batch, _ int) error {
		if b.Log == "raw" && b.Last == n {
			return errors.New("refused for now")
		}
		return nil
	}}
	u := testUplink(st, sink)
	u.maxRate = 0
	u.MinBackoff, u.MaxBackoff = time.Millisecond, 5*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	testutil.Eventually(t, time.Minute, "everything but the last batch committed", func() bool {
		c, _ := st.Cursor("raw", "up")
		return c == n-1 && u.stats.Errors.Load() > 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := u.stats.Records.Load(); got != n-2 {
		t.Errorf("%d records counted, want %d", got, n-2)
	}
	sent := map[string]int{}
	for _, b := range sink.batches() {
		if sent[b.ID]++; sent[b.ID] > 1 {
			t.Fatalf("batch [%d, %d] sent again: it was acknowledged and should have been committed", b.First, b.Last)
		}
	}
}

// TestDrainChainsGroupsBesideAnEmptyLog: an uplink over two logs, one of them empty and
// never committed (its cursor 0), drains the other's backlog chained — the next group
// recorded while one is in flight, with the commit of the group before: one transaction
// per group. The empty log's cursor 0 was taken for one entry waiting (sequence numbers
// start at 1), so once its linger had passed the drain stopped chaining: two transactions
// per group, and each group read only after the one before was acknowledged.
func TestDrainChainsGroupsBesideAnEmptyLog(t *testing.T) {
	const groups = 6
	const n = 2 * groupSize * groups // batches of 2
	st := storeOfReadings(t, n)
	defer st.Close()
	sink := &recSink{}
	u := testUplink(st, sink) // agg (empty) and raw; linger 0
	u.maxRate = 0
	before := st.Stats().Groups.Load()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	testutil.Eventually(t, time.Minute, "the backlog drained", func() bool { return u.stats.Records.Load() == n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if txs := st.Stats().Groups.Load() - before; txs > groups+2 {
		t.Errorf("%d transactions for a drain of %d groups, want at most %d", txs, groups, groups+2)
	}
}

// TestDrainLastGroupRefusedDeadLettersTheRefusedBatch: when the upstream refuses for good
// a batch of the drain's last group — whose commit waits to be shared with the group
// before — the batch dead-lettered is the one refused, not an acknowledged one; every
// other batch is committed once and nothing is sent again.
func TestDrainLastGroupRefusedDeadLettersTheRefusedBatch(t *testing.T) {
	const n = 2 * groupSize * 3 // three groups of batches of 2
	st := storeOfReadings(t, n)
	defer st.Close()
	var refused string
	sink := &recSink{fail: func(b *Batch, _ int) error {
		if b.Log == "raw" && b.Last == n-2 { // the last group's next-to-last batch
			refused = b.ID
			return fmt.Errorf("%w: no", ErrPermanent)
		}
		return nil
	}}
	u := testUplink(st, sink)
	u.maxRate = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	testutil.Eventually(t, time.Minute, "everything committed", func() bool {
		c, _ := st.Cursor("raw", "up")
		return c == n+1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var dead []string
	st.Read(logs.DeadLetter, 0, 0, func(_ uint64, v []byte) error {
		dead = append(dead, string(v))
		return nil
	})
	if len(dead) != 1 || !strings.Contains(dead[0], refused) {
		t.Fatalf("dead letters %q, want one of batch %s", dead, refused)
	}
	if got := u.stats.Records.Load(); got != n-2 {
		t.Errorf("%d records counted, want %d", got, n-2)
	}
	sent := map[string]int{}
	for _, b := range sink.batches() {
		if sent[b.ID]++; sent[b.ID] > 1 {
			t.Fatalf("batch [%d, %d] sent again", b.First, b.Last)
		}
	}
}

// storeOfReadings is a store whose raw log holds n readings of one device.
func storeOfReadings(t *testing.T, n int) *buffer.Store {
	t.Helper()
	st := testStore(t, t.TempDir())
	vals := make([]string, n)
	for i := range vals {
		vals[i] = rec("devices/d1/t", i)
	}
	appendN(t, st, "raw", vals...)
	return st
}

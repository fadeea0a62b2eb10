package buffer

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// appendAt appends n entries to log at the fake time now.
func appendAt(t *testing.T, s *Store, clk *clock.Fake, log string, at time.Time, n int) {
	t.Helper()
	clk.Set(at)
	for i := 0; i < n; i++ {
		mustAppend(t, s, log, Entry{Value: []byte(fmt.Sprintf("%s-%d", at.Format("15:04"), i))})
	}
}

func TestRetentionDeletesByAgeAndCountsUndelivered(t *testing.T) {
	clk := clock.NewFake(t0)
	s := open(t, t.TempDir(), Options{Clock: clk, Retention: time.Hour, Consumers: map[string][]string{"raw": {"up"}}})
	appendAt(t, s, clk, "raw", t0, 10)                    // seqs 1-10
	appendAt(t, s, clk, "raw", t0.Add(30*time.Minute), 5) // 11-15
	appendAt(t, s, clk, "raw", t0.Add(90*time.Minute), 5) // 16-20
	// The uplink delivered the first 4.
	if err := s.Commit(bg, "raw", "up", 5); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(100 * time.Minute)) // cutoff 00:40: the 12:00 and 12:30 minutes are old
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	seqs, _ := readAll(t, s, "raw", 0)
	if fmt.Sprint(seqs) != "[16 17 18 19 20]" {
		t.Fatalf("kept %v, want the entries of the last hour", seqs)
	}
	st := s.Stats()
	if st.Trimmed.Load() != 4 || st.Expired.Load() != 11 || st.Dropped.Load() != 0 {
		t.Fatalf("trimmed %d expired %d dropped %d; want 4 delivered, 11 expired undelivered, 0",
			st.Trimmed.Load(), st.Expired.Load(), st.Dropped.Load())
	}
	if pl := st.PerLog()["raw"]; pl.Expired != 11 {
		t.Fatalf("per-log counts %+v", pl)
	}
	// The consumer had 1–4: the 11 expired entries are the ones it never had, durably.
	if m, err := s.MissedBy("raw"); err != nil || m["up"] != (Missed{Retention: 11}) {
		t.Fatalf("missed by up: %+v, %v; want 11 expired", m, err)
	}
	// Nothing more to do: a second round changes nothing.
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if st.Expired.Load() != 11 {
		t.Fatalf("second round expired more: %d", st.Expired.Load())
	}
	// The index keeps dating the remaining entries.
	ls, _ := s.Logs()
	if !ls[0].Oldest.Equal(t0.Add(90*time.Minute)) || ls[0].First != 16 {
		t.Fatalf("oldest = %v first %d", ls[0].Oldest, ls[0].First)
	}
	clk.Set(t0.Add(200 * time.Minute))
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 0 || st.Expired.Load() != 16 {
		t.Fatalf("everything is old now: kept %v, expired %d", seqs, st.Expired.Load())
	}
	if ls, _ := s.Logs(); ls[0].Missed["up"] != (Missed{Retention: 16}) {
		t.Fatalf("missed by up: %+v; want 16 expired", ls[0].Missed)
	}
	// Numbers go on.
	if res := mustAppend(t, s, "raw", vals("new")...); res[0].Seq != 21 {
		t.Fatalf("seq after expiring everything = %d", res[0].Seq)
	}
}

// A board without a real-time clock appends at "1970" until NTP syncs: those entries must
// not vanish when the clock jumps forward.
func TestRetentionIgnoresEntriesStampedBeforeTheClockWasSet(t *testing.T) {
	clk := clock.NewFake(time.Unix(60, 0))
	s := open(t, t.TempDir(), Options{Clock: clk, Retention: time.Hour})
	appendAt(t, s, clk, "raw", time.Unix(60, 0), 3)
	appendAt(t, s, clk, "raw", t0, 2)
	clk.Set(t0.Add(30 * time.Minute))
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 5 {
		t.Fatalf("kept %v: entries dated 1970 were expired", seqs)
	}
}

func TestTrimFollowsTheSlowestConsumer(t *testing.T) {
	clk := clock.NewFake(t0)
	s := open(t, t.TempDir(), Options{Clock: clk, Consumers: map[string][]string{"raw": {"a", "b"}}})
	appendAt(t, s, clk, "raw", t0, 10)
	if err := s.Commit(bg, "raw", "a", 8); err != nil {
		t.Fatal(err)
	}
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); len(seqs) != 10 {
		t.Fatalf("b never committed: nothing may go, kept %v", seqs)
	}
	if err := s.Commit(bg, "raw", "b", 4); err != nil {
		t.Fatal(err)
	}
	// A stale cursor of a consumer no longer configured does not hold the log back.
	if err := s.Commit(bg, "raw", "removed-uplink", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); fmt.Sprint(seqs) != "[4 5 6 7 8 9 10]" || s.Stats().Trimmed.Load() != 3 {
		t.Fatalf("kept %v, trimmed %d", seqs, s.Stats().Trimmed.Load())
	}
	s.SetConsumers("raw", []string{"a"})
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	if seqs, _ := readAll(t, s, "raw", 0); fmt.Sprint(seqs) != "[8 9 10]" {
		t.Fatalf("after b was removed: kept %v", seqs)
	}
	// Maintain runs on the store's clock and stops with its context.
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- s.Maintain(ctx) }()
	for clk.Timers() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Commit(bg, "raw", "a", 11); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	for {
		if seqs, _ := readAll(t, s, "raw", 0); len(seqs) == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package ops

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func TestRecentKeepsTheLastPointsOfEachSeries(t *testing.T) {
	r := NewRecent(10, 4)
	for i := 0; i < 6; i++ { // 6 values into a ring of 4: the last 4 stay, oldest first
		r.Observe("a", "Cel", float64(i), t0.Add(time.Duration(i)*time.Second), t0.Add(time.Duration(i)*time.Millisecond))
	}
	r.Observe("b", "", 7.5, t0, t0.Add(time.Second)) // seen last: listed first
	got := r.Snapshot()
	if len(got) != 2 {
		t.Fatalf("%d series, want 2: %+v", len(got), got)
	}
	b, a := got[0], got[1]
	if b.Series != "b" || b.Value != 7.5 || len(b.Values) != 1 || !b.Time.Equal(t0) {
		t.Errorf("b: %+v", b)
	}
	if a.Series != "a" || a.Unit != "Cel" || a.Value != 5 || fmt.Sprint(a.Values) != "[2 3 4 5]" ||
		!a.Time.Equal(t0.Add(5*time.Second)) || !a.From.Equal(t0.Add(2*time.Second)) {
		t.Errorf("a: %+v", a)
	}
}

// TestRecentIsBounded: past maxSeries, a new series evicts the one seen least recently, at
// most once per evictEvery; in between, new series are left out.
func TestRecentIsBounded(t *testing.T) {
	r := NewRecent(3, 2)
	now := t0
	for _, s := range []string{"a", "b", "c"} {
		now = now.Add(time.Millisecond)
		r.Observe(s, "", 1, now, now)
	}
	now = now.Add(time.Millisecond)
	r.Observe("a", "", 2, now, now) // a is the newest now; b the oldest
	now = now.Add(time.Second)
	r.Observe("d", "", 1, now, now) // evicts b
	r.Observe("e", "", 1, now, now) // too soon after an eviction: left out
	if got := names(r.Snapshot()); got != "[d a c]" {
		t.Errorf("series %s, want [d a c]", got)
	}
	now = now.Add(evictEvery)
	r.Observe("e", "", 1, now, now) // evicts c
	if got := names(r.Snapshot()); got != "[e d a]" {
		t.Errorf("series %s, want [e d a]", got)
	}
	// A flood of new series keeps the table at its bound.
	for i := 0; i < 1000; i++ {
		now = now.Add(evictEvery / 10)
		r.Observe(fmt.Sprint("s", i), "", 1, now, now)
	}
	if n := len(r.Snapshot()); n != 3 {
		t.Errorf("%d series kept, want 3", n)
	}
}

func names(ss []SeriesStatus) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Series)
	}
	return fmt.Sprint(n)
}

// TestRecentConcurrent runs publishers of shared and own series beside snapshots (for the
// race detector), then checks every series holds its last values in order.
func TestRecentConcurrent(t *testing.T) {
	r := NewRecent(50, 8)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.Snapshot()
			}
		}
	}()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := fmt.Sprint("own-", w)
			for i := 0; i < 2000; i++ {
				now := t0.Add(time.Duration(i) * time.Microsecond)
				r.Observe(own, "", float64(i), now, now)
				r.Observe("shared", "", 1, now, now)
			}
		}()
	}
	wg.Wait()
	close(stop)
	got := r.Snapshot()
	if len(got) != 9 {
		t.Fatalf("%d series, want 9", len(got))
	}
	for _, s := range got {
		if s.Series != "shared" && fmt.Sprint(s.Values) != "[1992 1993 1994 1995 1996 1997 1998 1999]" {
			t.Errorf("%s: %v", s.Series, s.Values)
		}
	}
}

func TestRecentSkipsWhatJSONCannotCarry(t *testing.T) {
	r := NewRecent(10, 4)
	var zero float64
	r.Observe("nan", "", zero/zero, t0, t0)
	if got := r.Snapshot(); len(got) != 0 {
		t.Errorf("NaN kept: %+v", got)
	}
}

// BenchmarkRecentObserve is the cost Observe adds to each stored record, with every
// publisher (GOMAXPROCS of them) on series of its own among 100.
func BenchmarkRecentObserve(b *testing.B) {
	r := NewRecent(RecentSeries, RecentPoints)
	series := make([]string, RecentSeries)
	for i := range series {
		series[i] = fmt.Sprintf("devices/dev-%03d/temperature", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Observe(series[i%len(series)], "Cel", 21.5, t0, t0)
			i += 7
		}
	})
}

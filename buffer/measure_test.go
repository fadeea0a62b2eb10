package buffer

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// Measurements behind the budget's constants, at production sizes. They take minutes, so
// they run only when asked:
//
//	EDGEGATE_MEASURE=1 go test -run TestMeasure -v -timeout 30m ./buffer/
func measuring(t *testing.T) {
	if os.Getenv("EDGEGATE_MEASURE") == "" {
		t.Skip("a measurement, not a test: set EDGEGATE_MEASURE=1 to run it")
	}
}

// TestMeasureBudgetAtScale floods a store with production options and a 128 MiB budget
// (the smallest allowed) with four times its size under each policy, measuring the
// directory every millisecond.
func TestMeasureBudgetAtScale(t *testing.T) {
	measuring(t)
	for _, onFull := range []OnFull{DropOldest, Reject} {
		dir := t.TempDir()
		opts := Options{MaxBytes: 128 << 20, OnFull: onFull, DedupTTL: 24 * time.Hour, MaintainEvery: time.Second}
		s := open(t, dir, opts)
		stop := runMaintain(t, s)
		watch := watchDisk(dir, nil)
		start := time.Now()
		res := flood(t, s, "raw", 4*opts.MaxBytes, 8)
		stop()
		peak := watch.close()
		st := s.Stats()
		ls, _ := s.Logs()
		var live, bytes int64
		for _, l := range ls {
			live += l.Count
			bytes += l.Bytes
		}
		fmt.Printf("%s: %d readings offered in %v; kept %d (%.1f MiB logical), dropped %d, refused %d (guard %d), dedup ids %d (%d older ones forgotten); peak %.1f MiB = %.3f of max_bytes; final %.1f MiB\n",
			onFull, res.offered, time.Since(start).Round(time.Second), live, float64(bytes)/(1<<20), st.Dropped.Load(), st.Rejected.Load(), st.Guarded.Load(),
			s.DedupIDs(), st.DedupEvicted.Load(), float64(peak)/(1<<20), float64(peak)/float64(opts.MaxBytes), float64(st.DiskBytes.Load())/(1<<20))
		if peak > opts.MaxBytes {
			t.Errorf("%s: peak %d over max_bytes %d", onFull, peak, opts.MaxBytes)
		}
	}
}

// TestMeasureCompactionSpikes writes with production options while measuring the
// directory every millisecond (watchDisk), and reports how far it grew beyond what was written within 100 ms,
// 250 ms and 1 s: what the headroom must hold.
func TestMeasureCompactionSpikes(t *testing.T) {
	measuring(t)
	dir := t.TempDir()
	s := open(t, dir, Options{DedupTTL: time.Hour})
	type point struct {
		at      time.Time
		du      int64
		written int64
	}
	var mu sync.Mutex
	var pts []point
	var written int64
	watch := watchDisk(dir, func(du int64) {
		mu.Lock()
		pts = append(pts, point{time.Now(), du, written})
		mu.Unlock()
	})
	consumer := "cap"
	s.SetConsumers("raw", []string{consumer})
	stop := runMaintain(t, s)
	start := time.Now()
	for time.Since(start) < 2*time.Minute {
		flood(t, s, "raw", 4<<20, 8)
		mu.Lock()
		written += 4 << 20
		mu.Unlock()
		// Keep ~150 MiB of logical data: deliver (and so trim) what is beyond it.
		last, _ := s.LastSeq("raw")
		if keep := uint64(150 << 20 / 230); last > keep {
			if err := s.Commit(bg, "raw", consumer, last-keep); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop()
	watch.close()
	for _, win := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, time.Second} {
		var worst int64
		j := 0
		for i := range pts {
			for pts[i].at.Sub(pts[j].at) > win {
				j++
			}
			for k := j; k < i; k++ {
				worst = max(worst, (pts[i].du-pts[k].du)-(pts[i].written-pts[k].written))
			}
		}
		fmt.Printf("within %v: the directory grew up to %.1f MiB beyond what was written\n", win, float64(worst)/(1<<20))
	}
}

// TestMeasureFilterLoad times the scan that reads the dedup index into the filter at open,
// with a million ids stored.
func TestMeasureFilterLoad(t *testing.T) {
	measuring(t)
	const ids = 1_000_000
	dir := t.TempDir()
	opts := Options{DedupTTL: 24 * time.Hour}
	s := open(t, dir, opts)
	for start := 0; start < ids; start += 500 {
		es := make([]Entry, 500)
		for i := range es {
			es[i] = Entry{ID: fmt.Sprintf("device-%d:%09d", (start+i)%100, start+i), Value: []byte(`{"v":1}`)}
		}
		if _, err := s.Append(bg, "raw", es); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	start := time.Now()
	s = open(t, dir, opts)
	opened := time.Since(start)
	<-s.filterDone
	loaded := time.Since(start)
	b := <-s.filter.loaded
	t.Logf("%d ids: open %v, filter loaded %v after open began (%.2f µs per id), %d ids in %d KiB",
		ids, opened.Round(time.Millisecond), loaded.Round(time.Millisecond),
		float64(loaded-opened)/float64(time.Microsecond)/ids, b.n, len(b.words)*8>>10)
	if b.n != ids {
		t.Errorf("loaded %d ids, want %d", b.n, ids)
	}
}

// TestMeasureConvert times the conversion at open of a store written with the previous
// key layout: a million readings with their ids.
func TestMeasureConvert(t *testing.T) {
	measuring(t)
	const n = 1_000_000
	dir := t.TempDir()
	opts := Options{DedupTTL: 24 * time.Hour, MaxBytes: 2 << 30}
	s := open(t, dir, opts)
	r := rand.New(rand.NewPCG(1, 2))
	for start := 0; start < n; start += 500 {
		es := make([]Entry, 500)
		for i := range es {
			es[i] = reading(start+i, r)
		}
		if _, err := s.Append(bg, "raw", es); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	toLegacyLayout(t, dir, -1, u64(0))
	start := time.Now()
	s = open(t, dir, opts)
	took := time.Since(start)
	c, err := s.Count("raw")
	if err != nil || c != n {
		t.Fatalf("%d entries after the conversion (%v), want %d", c, err, n)
	}
	t.Logf("converted %d entries and their ids in %v (%.1f µs per entry)", n, took.Round(time.Millisecond), float64(took.Microseconds())/n)
}

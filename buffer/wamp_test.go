package buffer

import (
	"context"
	"expvar"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestMeasureWriteAmp measures what the store writes to disk per reading: readings of
// ~230 bytes with ids from 8 writers in appends of 50, an aggregate every 100 readings as
// the pipeline appends them, dedup ids kept 24 h, in steps of 32 MiB of readings up to
// 384 MiB. The store's clock runs at 100 readings per second (a busy gateway), so the ids
// span hours as they would; bytes written are the process's own (/proc/self/io
// write_bytes): Badger's logs, flushes and compactions. Offline, nothing is delivered and
// the backlog grows; online, an uplink commits all but the newest 20 000 readings every
// 20 ms and Maintain trims them.
func TestMeasureWriteAmp(t *testing.T) {
	measuring(t)
	for _, online := range []bool{false, true} {
		name := "offline"
		if online {
			name = "online"
		}
		t.Run(name, func(t *testing.T) { measureWriteAmp(t, online) })
	}
}

func measureWriteAmp(t *testing.T, online bool) {
	const perSecond = 100
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
	opts := Options{MaxBytes: 2 << 30, DedupTTL: 24 * time.Hour, SyncInterval: 10 * time.Millisecond, Clock: clk}
	if os.Getenv("EDGEGATE_WAMP_DEDUP") == "0" { // the share of the dedup index
		opts.DedupTTL = 0
	}
	if online {
		opts.Consumers = map[string][]string{"raw": {"uplink"}}
	}
	s := open(t, dir, opts)
	ctx := context.Background()
	if online {
		stop := runMaintain(t, s)
		defer stop()
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		defer func() { close(done); wg.Wait() }()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if last, err := s.LastSeq("raw"); err == nil && last > 20_000 {
					if err := s.Commit(ctx, "raw", "uplink", last-20_000); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	agg := []Entry{{Value: []byte(`{"series":"dev-1/temperature","start":"2026-11-27T10:00:00Z","end":"2026-11-27T10:01:00Z","mean":21.5,"count":60}`)}}
	var n int // readings offered, guarded by mu
	var mu sync.Mutex
	step := func(bytes int64) (readings int) {
		var offered int64
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), uint64(n)))
				for {
					mu.Lock()
					if offered >= bytes {
						mu.Unlock()
						return
					}
					withAgg := n%100 == 0 // one aggregate per 100 readings
					es := make([]Entry, 50)
					for i := range es {
						es[i] = reading(n, r)
						n++
						readings++
						offered += int64(len(es[i].Value))
					}
					mu.Unlock()
					if _, err := s.Append(ctx, "raw", es); err != nil {
						t.Error(err)
						return
					}
					if withAgg {
						if _, err := s.Append(ctx, "agg", agg); err != nil {
							t.Error(err)
							return
						}
					}
					clk.Advance(time.Second * 50 / perSecond)
				}
			}()
		}
		wg.Wait()
		return readings
	}
	var total, records, written int64
	b0 := badgerWrites()
	for total < 384<<20 {
		w0, err := testutil.ProcField(os.Getpid(), "io", "write_bytes")
		if err != nil {
			t.Skip("no /proc/self/io:", err)
		}
		start := time.Now()
		got := step(32 << 20)
		w1, _ := testutil.ProcField(os.Getpid(), "io", "write_bytes")
		total += 32 << 20
		records += int64(got)
		written += w1 - w0
		du, _ := DirBytes(dir)
		fmt.Printf("%s: %3d MiB of readings (%4.1f h): %4.0f disk bytes per reading in this step, %4.0f so far; %.0f readings/s; directory %.0f MiB\n",
			t.Name(), total>>20, float64(records)/perSecond/3600, float64(w1-w0)/float64(got), float64(written)/float64(records), float64(got)/time.Since(start).Seconds(),
			float64(du)/(1<<20))
	}
	// Where the bytes went, per reading, so far: what the store gave Badger (its memtable
	// logs write that, plus a few bytes of header per entry), the tables each compaction
	// wrote by target level, and the rest (flushes to L0, the witness, the directory).
	b1 := badgerWrites()
	per := func(n int64) float64 { return float64(n) / float64(records) }
	fmt.Printf("%s: per reading %.0f written: %.0f given to Badger (its logs)", t.Name(), per(written), per(b1.user-b0.user))
	var compacted int64
	for _, l := range slices.Sorted(maps.Keys(b1.compaction)) {
		n := b1.compaction[l] - b0.compaction[l]
		compacted += n
		fmt.Printf(", %.0f compacted into %s", per(n), l)
	}
	fmt.Printf(", %.0f the rest (flushes to L0 mostly)\n", per(written-(b1.user-b0.user)-compacted))
}

// badgerBytes is what Badger's metrics say it was given and compacted so far (the metrics
// are the process's: one store at a time).
type badgerBytes struct {
	user       int64            // bytes of the entries written (keys, values, headers)
	compaction map[string]int64 // bytes of the tables compactions built, by target level
}

func badgerWrites() badgerBytes {
	b := badgerBytes{compaction: map[string]int64{}}
	if v, ok := expvar.Get("badger_write_bytes_user").(*expvar.Int); ok {
		b.user = v.Value()
	}
	if m, ok := expvar.Get("badger_write_bytes_compaction").(*expvar.Map); ok {
		m.Do(func(kv expvar.KeyValue) {
			if v, ok := kv.Value.(*expvar.Int); ok {
				b.compaction[kv.Key] = v.Value()
			}
		})
	}
	return b
}

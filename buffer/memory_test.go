package buffer

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
)

// liveHeap is the heap the last collection found live (runtime/metrics).
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestMemoryBoundedUnderOverload (issue 20, goal 2): writers that append far faster than
// the store commits (16 of them, never waiting for an append: only the store's queue
// holds them back) write 16 memtables' worth of readings; the live heap,
// sampled after every collection, never exceeds what the options bound (heapBound): the
// writer's queue, Badger's memtables, caches and table builders. Counts, not time: the
// run ends when every append is durable.
func TestMemoryBoundedUnderOverload(t *testing.T) {
	memTable := int64(defaultMemTableSize)
	if v, err := strconv.Atoi(os.Getenv("EDGEGATE_MEMTABLE_MIB")); err == nil {
		memTable = int64(v) << 20
	}
	s := open(t, t.TempDir(), Options{DedupTTL: time.Hour, memTableSize: memTable})
	const writers, value = 16, 180
	perWriter := int(16*memTable/(value+120)) / writers // +key, id and dedup entry
	runtime.GC()
	base := liveHeap()

	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var cycles uint32
		for {
			select {
			case <-stop:
				return
			default:
			}
			var ms runtime.MemStats // cheap enough at one read per collection
			runtime.ReadMemStats(&ms)
			if ms.NumGC != cycles {
				cycles = ms.NumGC
				peak = max(peak, liveHeap())
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				v := make([]byte, value)
				copy(v, fmt.Sprintf(`{"value":%d.5,"unit":"Cel","ts":%d,"id":"w%d-%d"}`, i%40, 1700000000000+i, w, i))
				// Not waited for: only the store's queue holds the writer back.
				s.AppendAsync(ctx, "raw", []Entry{{ID: fmt.Sprintf("w%d-%d", w, i), Value: v}})
			}
		})
	}
	wg.Wait()
	if _, err := s.Append(ctx, "raw", []Entry{{ID: "last", Value: []byte("{}")}}); err != nil {
		t.Fatal(err) // behind every append queued before it
	}
	close(stop)
	<-sampled
	if got, want := s.Stats().Appended.Load(), uint64(writers*perWriter+1); got != want {
		t.Fatalf("%d entries appended, want %d", got, want)
	}
	bound := heapBound(memTable)
	t.Logf("memtable %d MiB: %d appends, live heap %.1f MiB at the start, at most %.1f MiB (bound %.1f MiB)",
		memTable>>20, writers*perWriter, float64(base)/(1<<20), float64(peak)/(1<<20), float64(bound)/(1<<20))
	if peak > base+uint64(bound) {
		t.Errorf("live heap reached %.1f MiB over the start, beyond the bound of %.1f MiB", float64(peak-base)/(1<<20), float64(bound)/(1<<20))
	}
}

// TestQueuedBytesBounded: while the disk does not answer (an fsync that hangs), an
// appender that never waits for its appends is held back once the appends queued or
// in the writer's groups hold maxQueuedBytes: it gets no further than that many bytes
// of 64 KiB values, not the writer's 1024 requests (64 MiB). Once the disk answers,
// every append is stored.
func TestQueuedBytesBounded(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	hung := make(chan struct{})
	s.syncFn = func() error { <-hung; return nil }
	const total, size = 1024, 64 << 10
	cost := appendCost([]Entry{{Value: make([]byte, size)}}, nil)
	var returned atomic.Int64
	ctx := context.Background()
	produced := make(chan []*Pending, 1)
	go func() {
		var ps []*Pending
		defer func() { produced <- ps }()
		for range total {
			ps = append(ps, s.AppendAsync(ctx, "raw", []Entry{{Value: make([]byte, size)}}))
			returned.Add(1)
		}
	}()
	testutil.Eventually(t, 30*time.Second, "the queue's bytes held", func() bool {
		return s.queued.held.Load()+cost > maxQueuedBytes
	})
	if n, most := returned.Load(), int64(maxQueuedBytes/cost); n > most {
		t.Errorf("%d appends of %d bytes returned while the disk hung, at most %d fit in %d bytes", n, size, most, maxQueuedBytes)
	}
	close(hung)
	for _, p := range <-produced {
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Appended.Load(); got != total {
		t.Fatalf("%d appended, want %d", got, total)
	}
	if held := s.queued.held.Load(); held != 0 {
		t.Errorf("%d bytes still held with nothing queued", held)
	}
}

// heapBound is the most heap the store may hold with memtables of memTable bytes (and the
// shipped caches), whatever the load: the appends in flight (maxQueuedBytes), the block and
// index caches, the memtables (two, and one being flushed), and Badger's table builders:
// arenas it pools eight at a time, each grown to what one table needed (a flush builds a
// whole memtable, its blocks uncompressed and compressed: 2–4 memtables each), plus those
// of builds running. TestMemoryBoundedUnderOverload measured 17–22 memtables over the
// start in all (4 MiB: 68–89 MiB; BENCHMARKS.md, "Memory").
func heapBound(memTable int64) int64 {
	const caches = 4<<20 + 2<<20 // WithBlockCacheSize, WithIndexCacheSize
	return maxQueuedBytes + caches + 3*memTable + 24*memTable
}

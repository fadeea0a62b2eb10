package buffer

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend is the ingest path's store cost: concurrent appends of one ~230-byte
// reading with an id each, durable before they return (sync: always, the default) or
// with a 10 ms fsync interval. entries/group shows how many appends one fsync carries.
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []time.Duration{0, 10 * time.Millisecond} {
		for _, writers := range []int{1, 10, 100} {
			name := fmt.Sprintf("sync=always/writers=%d", writers)
			if sync > 0 {
				name = fmt.Sprintf("sync=%v/writers=%d", sync, writers)
			}
			b.Run(name, func(b *testing.B) {
				s := benchStore(b, Options{DedupTTL: 24 * time.Hour, SyncInterval: sync})
				benchAppend(b, s, writers)
			})
		}
	}
}

func benchStore(b *testing.B, opts Options) *Store {
	opts.Dir = b.TempDir()
	s, err := Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchAppend(b *testing.B, s *Store, writers int) {
	vals := make([][]byte, 1024)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range vals {
		vals[i] = record(i, r)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				v := vals[i%int64(len(vals))]
				if _, err := s.Append(bg, "raw", []Entry{{ID: fmt.Sprint(i), Value: v}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(s.Stats().Appended.Load())/float64(max(1, s.Stats().Groups.Load())), "entries/group")
}

// BenchmarkRead is an uplink reading a backlog: 100 000 readings of ~230 bytes appended
// 50 at a time (a group commit's worth), read in pages of 1 000, once per iteration.
func BenchmarkRead(b *testing.B) {
	s := benchStore(b, Options{SyncInterval: 10 * time.Millisecond})
	r := rand.New(rand.NewPCG(1, 2))
	const total = 100_000
	for i := 0; i < total; i += 50 {
		es := make([]Entry, 50)
		for k := range es {
			es[k] = Entry{Value: record(i+k, r)}
		}
		if _, err := s.Append(bg, "raw", es); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		n, next := 0, uint64(0)
		for n < total {
			nx, err := s.Read("raw", next, 1000, func(uint64, []byte) error { n++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			if nx == next {
				b.Fatalf("read %d of %d, then nothing from %d", n, total, next)
			}
			next = nx
		}
	}
	b.ReportMetric(float64(b.N*total)/b.Elapsed().Seconds(), "records/s")
}

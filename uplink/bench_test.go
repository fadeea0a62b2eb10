package uplink_test

import (
	"context"
	"net"
	"sync"

	"fmt"
	paho "github.com/eclipse/paho.mqtt.golang"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// BenchmarkBacklogDrain measures how fast an uplink drains a 50k-record backlog to a local
// mosquitto in 500-record batches (read from the store, batch, record the ranges, send with
// up to 16 batches in flight, wait for the PUBACKs, commit), against a bare paho publisher
// sending the same payloads in the same run: "bare" keeps 16 in flight like the uplink,
// "serial" waits for each PUBACK before the next publish. The three alternate within each
// iteration. Reported: records/s of each and ratio = uplink ÷ bare (target ≥ 0.8).
//
// mosquitto runs with set_tcp_nodelay true: by default it leaves Nagle's algorithm on for
// its PUBACKs, so any client with several publishes in flight waits for a 40 ms delayed
// ACK per group — measured here at 10× slower than serial publishing.
//
// The "rtt20ms" variant puts a proxy that delays every byte by 10 ms each way between the
// publishers and mosquitto: the shape of a real uplink, where the round trip, not the CPU,
// bounds a drain.
func BenchmarkBacklogDrain(b *testing.B) {
	b.Run("loopback", func(b *testing.B) { benchDrain(b, 0) })
	b.Run("rtt20ms", func(b *testing.B) { benchDrain(b, 10*time.Millisecond) })
}

func benchDrain(b *testing.B, delay time.Duration) {
	const records, batch = 50_000, 500
	mq := testutil.StartMosquittoWith(b, "allow_anonymous true\nset_tcp_nodelay true")
	addr := mq.Addr
	if delay > 0 {
		addr = delayProxy(b, mq.Addr, delay)
	}
	s := openStore(b, b.TempDir())
	fillIDs(b, s, "r", "sensors/a/t", 0, records)

	// The baseline's payloads: the same batches the uplink builds.
	var payloads [][]byte
	var items [][]byte
	s.Read("raw", 0, 0, func(seq uint64, v []byte) error {
		items = append(items, append([]byte(nil), v...))
		if len(items) == batch {
			id := record.BatchID("gw", "bare", "raw", seq-batch+1, seq)
			payloads = append(payloads, record.AppendBatch(nil, "gw", id, record.KindRecords, items))
			items = items[:0]
		}
		return nil
	})
	c := testutil.Paho(b, addr, "bare")

	publish := func(window int) time.Duration {
		t0 := time.Now()
		for lo := 0; lo < len(payloads); lo += window {
			var toks []paho.Token
			for _, p := range payloads[lo:min(lo+window, len(payloads))] {
				toks = append(toks, c.Publish("edgegate/gw/records", 1, false, p))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					b.Fatalf("bare publish: %v", tok.Error())
				}
			}
		}
		return time.Since(t0)
	}

	var bare, serial, ours time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bare += publish(16)
		serial += publish(1)

		ours += drain(b, s, addr, fmt.Sprintf("drain-%d", i), records, batch)
	}
	n := float64(b.N * records)
	b.ReportMetric(n/ours.Seconds(), "rec/s")
	b.ReportMetric(n/bare.Seconds(), "bare-rec/s")
	b.ReportMetric(n/serial.Seconds(), "serial-rec/s")
	b.ReportMetric(bare.Seconds()/ours.Seconds(), "ratio")
}

// drain runs a new uplink named name — a new consumer, which drains the whole log from the
// start — until it has committed records, and returns how long that took.
func drain(b *testing.B, s *buffer.Store, addr, name string, records, batch int) time.Duration {
	cfg := uplinkConfig(fmt.Sprintf(`{name: %s, type: mqtt, url: "tcp://%s", max_rate: 0, batch: {max_records: %d, max_bytes: 512KiB, linger: 1s}}`, name, addr, batch))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	defer sink.Close()
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- u.Run(ctx) }()
	for u.Stats().Records.Load() < uint64(records) {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(t0)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return took
}

// BenchmarkDrainAlone is BenchmarkBacklogDrain's loopback uplink without the bare
// publishers, so that a CPU profile holds the drain only:
//
//	go test -run '^$' -bench DrainAlone -benchtime 30x -cpuprofile drain.cpu ./uplink/
//	go tool pprof -top drain.cpu
func BenchmarkDrainAlone(b *testing.B) {
	const records, batch = 50_000, 500
	mq := testutil.StartMosquittoWith(b, "allow_anonymous true\nset_tcp_nodelay true")
	s := openStore(b, b.TempDir())
	fillIDs(b, s, "r", "sensors/a/t", 0, records)
	var took time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		took += drain(b, s, mq.Addr, fmt.Sprintf("drain-%d", i), records, batch)
	}
	b.ReportMetric(float64(b.N*records)/took.Seconds(), "rec/s")
}

// delayProxy forwards TCP connections to target, delivering every chunk delay later in
// each direction (an RTT of 2×delay, bandwidth unbounded). It stops with the benchmark.
func delayProxy(tb testing.TB, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			due  time.Time
			data []byte
		}
		q := make(chan chunk, 4096)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(q)
			for {
				buf := make([]byte, 64<<10)
				n, err := src.Read(buf)
				if n > 0 {
					q <- chunk{time.Now().Add(delay), buf[:n]}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			defer dst.Close()
			for c := range q {
				time.Sleep(time.Until(c.due))
				if _, err := dst.Write(c.data); err != nil {
					src.Close()
					for range q {
					}
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			pipe(out, in)
			pipe(in, out)
		}
	}()
	return ln.Addr().String()
}

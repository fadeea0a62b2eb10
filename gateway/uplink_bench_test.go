package gateway_test

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// BenchmarkUplinkLatency measures publish→upstream latency through the whole gateway: ten
// devices publish QoS 1 readings, 1000 msg/s in all, for 5 s into the embedded broker
// (durable before the PUBACK), and an mqtt uplink with linger 100ms forwards them to an
// upstream broker. (One device alone cannot publish 1000 QoS 1 msg/s here: mochi handles a
// client's packets one after the other and each PUBACK waits for an fsync.) Reported: p50 and p99 of the latency, and, measured in the same run, the p99 of a
// bare paho QoS 1 publish to that upstream (the round trip the uplink cannot avoid); the
// expected bound is linger + that round trip. The device's own publish→PUBACK time (the
// durable append, fsync included) is reported too: the uplink cannot send a reading before
// it is stored.
func BenchmarkUplinkLatency(b *testing.B) {
	const (
		rate     = 1000
		duration = 5 * time.Second
		linger   = 100 * time.Millisecond
	)
	up := testutil.StartUpstream(b)
	path := writeConfig(b, b.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: %s}}
`, up.URL(), linger))
	r := start(b, path, clock.Real{})
	const devices = 10
	var devs []paho.Client
	for d := range devices {
		devs = append(devs, testutil.Paho(b, r.g.BrokerAddrs()[0], fmt.Sprintf("lat-dev-%d", d)))
	}

	// The bare round trip: one QoS 1 publish of a batch-sized payload, PUBACK awaited.
	bareC := testutil.Paho(b, up.Addr, "lat-bare")
	payload := bytes.Repeat([]byte("x"), 14_000) // ~100 readings' worth
	var bare []time.Duration
	for range 200 {
		t0 := time.Now()
		tok := bareC.Publish("bare/rtt", 1, false, payload)
		tok.Wait()
		bare = append(bare, time.Since(t0))
	}

	var lat, ingest []time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		n := int(duration.Seconds() * rate)
		sent := make([]time.Time, n)
		start := len(up.Messages())
		tick := time.NewTicker(10 * time.Millisecond)
		acked := make([]time.Duration, n)
		var wg sync.WaitGroup
		for i := 0; i < n; {
			<-tick.C
			for j := 0; j < rate/100 && i < n; j++ {
				sent[i] = time.Now()
				tok := devs[i%devices].Publish("devices/lat/temperature", 1, false, fmt.Sprintf(`{"value": %d, "id": "lat%d:%d"}`, i, it, i))
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					tok.Wait()
					acked[i] = time.Since(sent[i])
				}(i)
				i++
			}
		}
		tick.Stop()
		wg.Wait()
		ingest = append(ingest, acked...)
		prefix := []byte(fmt.Sprintf(`"id":"lat%d:`, it))
		got := 0
		deadline := time.Now().Add(30 * time.Second)
		for got < n && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			got = 0
			for _, m := range up.Messages()[start:] {
				got += bytes.Count(m.Payload, prefix)
			}
		}
		if got < n {
			b.Fatalf("%d of %d readings upstream", got, n)
		}
		for _, m := range up.Messages()[start:] {
			p := m.Payload
			for {
				i := bytes.Index(p, prefix)
				if i < 0 {
					break
				}
				p = p[i+len(prefix):]
				j := bytes.IndexByte(p, '"')
				seq, _ := strconv.Atoi(string(p[:j]))
				lat = append(lat, m.At.Sub(sent[seq]))
			}
		}
	}
	q := func(ds []time.Duration, f float64) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(f*float64(len(ds)-1))]
	}
	p50, p99, rtt := q(lat, 0.50), q(lat, 0.99), q(bare, 0.99)
	b.ReportMetric(float64(q(ingest, 0.50))/1e6, "puback-p50-ms")
	b.ReportMetric(float64(q(ingest, 0.99))/1e6, "puback-p99-ms")
	b.ReportMetric(float64(p50)/1e6, "p50-ms")
	b.ReportMetric(float64(p99)/1e6, "p99-ms")
	b.ReportMetric(float64(rtt)/1e6, "bare-rtt-p99-ms")
	b.ReportMetric(float64(p99)/float64(linger+rtt), "p99/(linger+rtt)")
}

// Package loadgen drives an MQTT broker with paho publishers for edgegate's benchmarks:
// QoS 1 (or 0) readings of 100-byte JSON, either as fast as an in-flight window allows or
// at a fixed total rate, timing every publish from the call to its PUBACK.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Config describes one load.
type Config struct {
	Publishers int
	// Topic is where publisher i publishes.
	Topic func(i int) string
	// IDPrefix makes the readings' ids unique across loads on one gateway.
	IDPrefix string
	// Window is how many unacknowledged messages a publisher keeps in flight.
	Window int
	// Messages is the total to send as fast as the windows allow (Rate 0).
	Messages int
	// Rate is a fixed total rate in msg/s for Duration; each publisher sends its share at
	// evenly spaced instants.
	Rate     float64
	Duration time.Duration
	// QoS0 publishes at QoS 0 instead of 1; a QoS 0 publish counts as acknowledged once
	// paho has written it.
	QoS0 bool
	// Payload makes reading n of publisher pub; nil: Payload.
	Payload func(prefix string, pub, n int) []byte
}

// Result is what a load measured.
type Result struct {
	Acked   int
	Elapsed time.Duration
	// Latencies are publish→PUBACK times, one per acknowledged message.
	Latencies []time.Duration
	// MaxLag (fixed rate only) is the longest a publish started after its scheduled
	// instant, waiting for a full window: when it is not small against the latencies, the
	// rate was not held and the latencies leave out that wait.
	MaxLag time.Duration
}

// Throughput is acknowledged messages per second.
func (r Result) Throughput() float64 { return float64(r.Acked) / r.Elapsed.Seconds() }

// Percentile returns the p-th percentile (0–100) of the latencies.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	ds := append([]time.Duration(nil), r.Latencies...)
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(p / 100 * float64(len(ds)-1))
	return ds[i]
}

// Payload is reading n of publisher pub: a JSON object of exactly 100 bytes with a unique
// id, as a device would send.
func Payload(prefix string, pub, n int) []byte {
	const size = 100
	b := fmt.Appendf(nil, `{"value":21.5,"unit":"Cel","ts":1764158400123,"id":"%s-%d-%d","pad":"`, prefix, pub, n)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// Connect connects n paho clients (MQTT 3.1.1, clean session) to addr.
func Connect(addr string, n int, idPrefix string) ([]paho.Client, error) {
	cs := make([]paho.Client, 0, n)
	for i := 0; i < n; i++ {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("%s-%d", idPrefix, i)).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
			SetWriteTimeout(30 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			Disconnect(cs)
			return nil, fmt.Errorf("connect publisher %d to %s: %v", i, addr, tok.Error())
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// Disconnect closes every client.
func Disconnect(cs []paho.Client) {
	for _, c := range cs {
		c.Disconnect(0)
	}
}

type inflight struct {
	at  time.Time
	tok paho.Token
}

// qosAndPayload returns the QoS to publish at and the payload function (Payload unless
// the caller gave one).
func (cfg Config) qosAndPayload() (byte, func(string, int, int) []byte) {
	qos := byte(1)
	if cfg.QoS0 {
		qos = 0
	}
	if cfg.Payload == nil {
		return qos, Payload
	}
	return qos, cfg.Payload
}

// share is the number of messages publisher p sends when the run is by count (Rate 0).
func (cfg Config) share(p int) int {
	if cfg.Rate != 0 {
		return 0
	}
	n := cfg.Messages / cfg.Publishers
	if p < cfg.Messages%cfg.Publishers {
		n++
	}
	return n
}

// Run sends the load through already connected clients (one per publisher).
func Run(ctx context.Context, clients []paho.Client, cfg Config) (Result, error) {
	if len(clients) != cfg.Publishers || cfg.Publishers == 0 {
		return Result{}, errors.New("loadgen: one connected client per publisher")
	}
	window := max(cfg.Window, 1)
	qos, payload := cfg.qosAndPayload()
	var (
		mu   sync.Mutex // guards res and ferr
		res  Result
		ferr error
		wg   sync.WaitGroup
	)
	record := func(lat time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if ferr == nil {
				ferr = err
			}
			return
		}
		res.Acked++
		res.Latencies = append(res.Latencies, lat)
	}
	start := time.Now()
	for p := 0; p < cfg.Publishers; p++ {
		count := cfg.share(p)
		// Acknowledgements of one connection come in order: a waiter takes them FIFO and
		// frees a slot for each; a publish takes a slot first, so exactly `window` are
		// ever unacknowledged.
		acks := make(chan inflight, window)
		slots := make(chan struct{}, window)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for f := range acks {
				if !f.tok.WaitTimeout(60 * time.Second) {
					record(0, fmt.Errorf("loadgen: no PUBACK within 60s"))
				} else {
					record(time.Since(f.at), f.tok.Error())
				}
				<-slots
			}
		}()
		go func() {
			defer wg.Done()
			defer close(acks)
			c, topic := clients[p], cfg.Topic(p)
			send := func(n int) {
				slots <- struct{}{} // blocks while `window` messages are unacknowledged
				at := time.Now()
				acks <- inflight{at, c.Publish(topic, qos, false, payload(cfg.IDPrefix, p, n))}
			}
			if cfg.Rate == 0 {
				for n := 0; n < count && ctx.Err() == nil; n++ {
					send(n)
				}
				return
			}
			every := time.Duration(float64(time.Second) * float64(cfg.Publishers) / cfg.Rate)
			// Spread the publishers over one period so the total rate is smooth.
			next := start.Add(every * time.Duration(p) / time.Duration(cfg.Publishers))
			var lag time.Duration
			for n := 0; time.Since(start) < cfg.Duration && ctx.Err() == nil; n++ {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				lag = max(lag, time.Since(next))
				send(n)
				next = next.Add(every)
			}
			mu.Lock()
			res.MaxLag = max(res.MaxLag, lag)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res, ferr
}

package broker

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestRatePacesNotRefuses (issue 16, item 11): a client over max_rate_per_client is slowed
// down by reading its socket at its rate, not refused. With the gateway clock in the
// test's hands: an MQTT 5 client sends three times its rate back to back; the first second's
// burst is acknowledged at once, then one more per token (each 1/rate of clock time), none
// refused; meanwhile another client is answered at once.
func TestRatePacesNotRefuses(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	const rate = 10
	e := newEnvClock(t, clk, func(c *config.Config) { c.Broker.MaxRatePerClient = rate })
	c := e.user(t, "dev-1", "paced")
	var acked atomic.Int32
	codes := make(chan byte, 3*rate)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3*rate; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			r, err := c.c.Publish(ctx, &paho.Publish{Topic: "devices/dev-1/t", QoS: 1, Payload: []byte(strconv.Itoa(i))})
			cancel()
			if r == nil {
				codes <- 0xff
				t.Errorf("publish %d: %v", i, err)
				return
			}
			codes <- r.ReasonCode
			acked.Add(1)
		}
	}()
	testutil.Eventually(t, 10*time.Second, "the burst acknowledged and the next publish paced", func() bool {
		return acked.Load() == rate && clk.Timers() == 1
	})

	// Another client is not slowed by the paced one.
	other := e.user(t, "dev-2", "honest")
	for i := 0; i < 5; i++ {
		if code, err := other.publish(t, "devices/dev-2/t", 1, strconv.Itoa(100+i)); code != 0 {
			t.Fatalf("the other client's publish %d: %#x %v", i, code, err)
		}
	}
	if n := acked.Load(); n != rate {
		t.Fatalf("the paced client got %d acknowledgements with no clock time passing, want %d", n, rate)
	}

	steps := 0
	for acked.Load() < 3*rate {
		testutil.Eventually(t, 10*time.Second, "the paced client waiting for its token", func() bool {
			return clk.Timers() == 1 || acked.Load() == 3*rate
		})
		if acked.Load() == 3*rate {
			break
		}
		before := acked.Load()
		clk.Advance(time.Second / rate)
		steps++
		testutil.Eventually(t, 10*time.Second, "one more acknowledgement per token", func() bool { return acked.Load() == before+1 })
	}
	<-done
	if steps != 2*rate {
		t.Errorf("the %d publishes over the burst took %d tokens' time, want %d", 2*rate, steps, 2*rate)
	}
	close(codes)
	for code := range codes {
		if code != 0 {
			t.Errorf("a paced publish was answered %#x", code)
		}
	}
	for reason, n := range e.b.Refusals().Snapshot() {
		if n != 0 {
			t.Errorf("%s counted %d", reason, n)
		}
	}
	if n := len(e.records(t)); n != 3*rate+5 {
		t.Errorf("store holds %d records, want %d", n, 3*rate+5)
	}
}

// TestFloodDisconnected: a raw 3.1.1 client firing QoS 0 publishes as fast as it can is
// paced at its rate, and disconnected (flood) once it has been paced without a pause for
// flood_after; what it got stored is its burst plus flood_after at its rate. Reconnecting
// does not start it afresh.
func TestFloodDisconnected(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	const rate = 64 // a token every 15.625 ms: exact in float64
	e := newEnvClock(t, clk, func(c *config.Config) {
		c.Broker.MaxRatePerClient = rate
		c.Broker.FloodAfter = conf.Duration(time.Second)
	})
	conn := dialFrom(t, "127.0.0.1", e.addr["tcp"])
	if code := rawLogin(t, conn, "flood", "dev-1", "dev-1-pw"); code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	var burst []byte
	for i := 0; i < 1000; i++ {
		burst = append(burst, publishPacket("devices/dev-1/t", []byte(strconv.Itoa(i)))...)
	}
	wrote := make(chan struct{})
	go func() { defer close(wrote); _, _ = conn.Write(burst) }() // the broker may close mid-write
	t.Cleanup(func() { conn.Close(); <-wrote })
	closed := make(chan bool, 1)
	go func() { closed <- closedWithin(conn, time.Minute) }()
	for steps := 0; ; steps++ {
		if steps > 10*rate {
			t.Fatal("flooding client not disconnected")
		}
		select {
		case ok := <-closed:
			if !ok {
				t.Fatal("flooding client not disconnected")
			}
		default:
			if clk.Timers() == 0 {
				time.Sleep(time.Millisecond)
				steps--
				continue
			}
			clk.Advance(time.Second / rate)
			continue
		}
		break
	}
	testutil.Eventually(t, 10*time.Second, "flood counted", func() bool { return e.b.Refusals().Count(ReasonFlood) == 1 })
	if n := len(e.records(t)); n != 2*rate {
		t.Errorf("store holds %d records from the flood, want %d: the burst, then flood_after at the rate", n, 2*rate)
	}
	again := dialFrom(t, "127.0.0.1", e.addr["tcp"])
	if code := rawLogin(t, again, "flood", "dev-1", "dev-1-pw"); code != 0 {
		t.Fatalf("reconnect CONNACK %d", code)
	}
	again.Write(publishPacket("devices/dev-1/t", []byte("1001")))
	if !closedWithin(again, 5*time.Second) {
		t.Error("a flooder that reconnected got a fresh start")
	}
	if n := len(e.records(t)); n != 2*rate {
		t.Errorf("store holds %d records after the reconnect, want %d", n, 2*rate)
	}
	if e.b.Refusals().Count(ReasonFlood) != 2 {
		t.Errorf("flood counted %d times, want 2", e.b.Refusals().Count(ReasonFlood))
	}
}

// TestMQTTjsBurstPaced (issue 16, item 11): MQTT.js replays its offline queue at once on
// reconnect, and treats a 0x97 PUBACK as final (the reading is lost at the device). A burst
// of four times max_rate_per_client is acknowledged whole, none refused, at the rate.
func TestMQTTjsBurstPaced(t *testing.T) {
	const rate, n = 50, 200
	e := newEnv(t, func(c *config.Config) { c.Broker.MaxRatePerClient = rate })
	evs := runMQTTjs(t, map[string]any{
		"scenario": "burst", "url": "mqtt://" + e.addr["tcp"], "clientId": "js-burst",
		"username": "dev-1", "password": password("dev-1"), "protocolVersion": 5,
		"topic": "devices/dev-1/t", "n": n,
	})
	d := last(t, evs, "done")
	if errs := d["errors"].([]any); len(errs) > 0 || int(d["acked"].(float64)) != n {
		t.Fatalf("MQTT.js burst of %d at rate %d: %v acked, errors %v", n, rate, d["acked"], errs)
	}
	// The limiter lets the first second's burst through, then one per 1/rate: a lower
	// bound the broker guarantees, whatever the machine's load.
	if ms, min := d["ms"].(float64), float64((n-rate)*1000/rate)*0.9; ms < min {
		t.Errorf("burst of %d acknowledged in %.0f ms: faster than %d/s allows (%.0f ms)", n, ms, rate, min)
	}
	for reason, c := range e.b.Refusals().Snapshot() {
		if c != 0 {
			t.Errorf("%s counted %d", reason, c)
		}
	}
	if got := len(e.records(t)); got != n {
		t.Errorf("store holds %d records, want %d", got, n)
	}
}

func last(t *testing.T, evs []map[string]any, ev string) map[string]any {
	t.Helper()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i]["ev"] == ev {
			return evs[i]
		}
	}
	t.Fatalf("no %q event from MQTT.js: %v", ev, evs)
	return nil
}

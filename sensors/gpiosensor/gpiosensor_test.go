package gpiosensor

import (
	"context"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestLevel(t *testing.T) {
	for _, tt := range []struct {
		pull string
		want gpio.Pull
		lvl  float64 // gpiotest pulls the level with the resistor
	}{{"up", gpio.PullUp, 1}, {"down", gpio.PullDown, 0}, {"none", gpio.Float, 0}} {
		pin := &gpiotest.Pin{N: "GPIO4", Num: 4}
		d, err := Open(pin, Config{Pin: "GPIO4", Pull: tt.pull, Mode: "level"}, clock.NewFake(t0))
		if err != nil {
			t.Fatal(err)
		}
		if pin.P != tt.want {
			t.Errorf("pull %s set %v", tt.pull, pin.P)
		}
		rs, err := d.Read(context.Background())
		if err != nil || len(rs) != 1 || rs[0] != (sensors.Reading{Metric: "level", Value: tt.lvl}) {
			t.Errorf("pull %s: %+v, %v", tt.pull, rs, err)
		}
		pin.Out(gpio.High)
		if rs, _ := d.Read(context.Background()); rs[0].Value != 1 {
			t.Errorf("high pin reads %v", rs[0].Value)
		}
		pin.Out(gpio.Low)
		if rs, _ := d.Read(context.Background()); rs[0].Value != 0 {
			t.Errorf("low pin reads %v", rs[0].Value)
		}
		if err := d.Run(context.Background()); err != nil { // level mode: nothing to watch
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

type counter struct {
	t    *testing.T
	pin  *gpiotest.Pin
	clk  *clock.Fake
	d    *Driver
	stop func()
}

func startCounter(t *testing.T, c Config) *counter {
	pin := &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level)}
	clk := clock.NewFake(t0)
	d, err := Open(pin, c, clk)
	if err != nil {
		t.Fatal(err)
	}
	d.edgeWait = 5 * time.Millisecond // shorter polls of the context in tests
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.Run(ctx) }()
	return &counter{t: t, pin: pin, clk: clk, d: d, stop: func() { cancel(); wg.Wait(); d.Close() }}
}

// edge delivers one edge and waits until the counter has taken it.
func (c *counter) edge(l gpio.Level) {
	c.t.Helper()
	n := c.d.seen.Load()
	c.pin.EdgesChan <- l
	for c.d.seen.Load() == n {
		time.Sleep(20 * time.Microsecond)
	}
}

func (c *counter) read() (count, rate float64) {
	c.t.Helper()
	rs, err := c.d.Read(context.Background())
	if err != nil || len(rs) != 2 || rs[0].Metric != "count" || rs[0].Unit != "count" || rs[1].Metric != "rate" || rs[1].Unit != "1/s" {
		c.t.Fatalf("read: %+v, %v", rs, err)
	}
	return rs[0].Value, rs[1].Value
}

// TestCounter: a rain gauge's tips between readings, as count and rate per second.
func TestCounter(t *testing.T) {
	c := startCounter(t, Config{Pin: "GPIO17", Pull: "up", Mode: "counter", Edge: "falling"})
	defer c.stop()
	if c.pin.P != gpio.PullUp {
		t.Errorf("pull %v", c.pin.P)
	}
	for i := 0; i < 3; i++ {
		c.clk.Advance(2 * time.Second)
		c.edge(gpio.Low)
	}
	c.clk.Set(t0.Add(10 * time.Second))
	if n, r := c.read(); n != 3 || r != 0.3 {
		t.Errorf("first 10 s: count %v rate %v, want 3 and 0.3/s", n, r)
	}
	c.clk.Advance(5 * time.Second)
	c.edge(gpio.Low)
	c.clk.Advance(15 * time.Second)
	if n, r := c.read(); n != 1 || r != 0.05 {
		t.Errorf("next 20 s: count %v rate %v, want 1 and 0.05/s", n, r)
	}
	if n, r := c.read(); n != 0 || r != 0 {
		t.Errorf("no time, no edges: count %v rate %v", n, r)
	}
}

// TestDebounce: edges closer than debounce to the last counted one are bounces.
func TestDebounce(t *testing.T) {
	c := startCounter(t, Config{Pin: "GPIO17", Pull: "up", Mode: "counter", Edge: "both", Debounce: conf.Duration(20 * time.Millisecond)})
	defer c.stop()
	steps := []time.Duration{0, 5 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 19 * time.Millisecond, 2 * time.Millisecond}
	// counted at 0, 20 (20 after 0), 50; bounces at 5, 10, 69 (19 after 50); counted at 71.
	for _, s := range steps {
		c.clk.Advance(s)
		c.edge(gpio.High)
	}
	c.clk.Advance(time.Second - 71*time.Millisecond)
	if n, r := c.read(); n != 4 || r != 4 {
		t.Errorf("count %v rate %v, want 4 and 4/s", n, r)
	}
}

func TestEdgeSetupErrorNamesThePin(t *testing.T) {
	pin := &gpiotest.Pin{N: "GPIO17", Num: 17} // no edge support
	_, err := Open(pin, Config{Pin: "GPIO17", Pull: "up", Mode: "counter", Edge: "falling"}, clock.NewFake(t0))
	if err == nil || err.Error() != "GPIO17: set up as input: gpiotest: please set p.EdgesChan first; the pin may be claimed by another function (an I2C, SPI or 1-Wire overlay) or lack edge support" {
		t.Fatalf("error %v", err)
	}
}

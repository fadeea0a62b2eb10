// Package gpiosensor is the driver of digital inputs on a GPIO pin, through periph.io: the
// pin's level, or an edge counter for rain gauges, flow meters and anemometers, reported
// per reading as the edges since the previous one (count) and their rate (1/s).
package gpiosensor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/hw"
)

// edgeWait bounds one wait for an edge: periph's WaitForEdge takes no context, so Run
// checks for its end this often.
const edgeWait = 500 * time.Millisecond

// Driver reads one GPIO input.
type Driver struct {
	pin      gpio.PinIO
	clk      clock.Clock
	counter  bool
	debounce time.Duration
	edgeWait time.Duration

	count atomic.Uint64 // edges counted since open (Run)
	seen  atomic.Uint64 // edges received, counted or not (tests wait on it)

	// Owned by Read.
	lastCount uint64
	lastRead  time.Time

	haltOnce sync.Once
}

var (
	_ sensors.Driver = (*Driver)(nil)
	_ sensors.Runner = (*Driver)(nil)
)

// New is the Open of the gpio driver: the pin of cfg's gpio block.
func New(cfg *sensors.Config, clk clock.Clock) (sensors.Driver, error) {
	c, ok := cfg.Device.(*Config)
	if !ok {
		return nil, fmt.Errorf("sensor %q: gpio block missing", cfg.Name)
	}
	pin, err := hw.Pin(c.Pin)
	if err != nil {
		return nil, err
	}
	return Open(pin, *c, clk)
}

// Open configures pin as an input with the pull and, in counter mode, the edge of c.
func Open(pin gpio.PinIO, c Config, clk clock.Clock) (*Driver, error) {
	pull := map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "none": gpio.Float}[c.Pull]
	edge := gpio.NoEdge
	counter := c.Mode == "counter"
	if counter {
		edge = map[string]gpio.Edge{"falling": gpio.FallingEdge, "rising": gpio.RisingEdge, "both": gpio.BothEdges}[c.Edge]
		if edge == gpio.NoEdge {
			return nil, fmt.Errorf("gpio edge %q: expected falling, rising or both", c.Edge)
		}
	}
	if err := pin.In(pull, edge); err != nil {
		return nil, &hw.Error{Bus: pin.Name(), Err: fmt.Errorf("set up as input: %w", err),
			Fix: "the pin may be claimed by another function (an I2C, SPI or 1-Wire overlay) or lack edge support"}
	}
	return &Driver{pin: pin, clk: clk, counter: counter, debounce: c.Debounce.D(), edgeWait: edgeWait, lastRead: clk.Now()}, nil
}

// Run counts edges until ctx ends (counter mode); it returns at once in level mode.
func (d *Driver) Run(ctx context.Context) error {
	if !d.counter {
		return nil
	}
	var last time.Time
	for ctx.Err() == nil {
		if !d.pin.WaitForEdge(d.edgeWait) {
			continue
		}
		now := d.clk.Now()
		if d.debounce > 0 && !last.IsZero() && now.Sub(last) < d.debounce {
			d.seen.Add(1)
			continue // a bounce of the contact, not a new event
		}
		last = now
		d.count.Add(1)
		d.seen.Add(1)
	}
	return nil
}

// Read returns the level (0 or 1), or the edges since the previous read and their rate.
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !d.counter {
		v := 0.0
		if d.pin.Read() == gpio.High {
			v = 1
		}
		return []sensors.Reading{{Metric: "level", Value: v}}, nil
	}
	now := d.clk.Now()
	n := d.count.Load()
	delta := n - d.lastCount
	elapsed := now.Sub(d.lastRead).Seconds()
	d.lastCount, d.lastRead = n, now
	rate := 0.0
	if elapsed > 0 {
		rate = float64(delta) / elapsed
	}
	return []sensors.Reading{
		{Metric: "count", Value: float64(delta), Unit: "count"},
		{Metric: "rate", Value: rate, Unit: "1/s"},
	}, nil
}

// Close releases the pin.
func (d *Driver) Close() error {
	var err error
	d.haltOnce.Do(func() { err = d.pin.Halt() })
	return err
}

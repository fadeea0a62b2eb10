// Package sim is a simulated sensor: a seeded, reproducible signal for demos and tests,
// published through the same path as real sensors.
package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
)

// Driver produces a sine over the clock's time, or a seeded random walk.
type Driver struct {
	cfg   Config
	clock clock.Clock
	rng   *rand.Rand
	cur   float64
}

var _ sensors.Driver = (*Driver)(nil)

// New is the Open of the sim driver: the signal of cfg's sim block.
func New(cfg *sensors.Config, clk clock.Clock) (sensors.Driver, error) {
	sc, ok := cfg.Device.(*Config)
	if !ok {
		return nil, fmt.Errorf("sensor %q: sim block missing", cfg.Name)
	}
	c := *sc
	seed := uint64(c.Seed)
	return &Driver{
		cfg:   c,
		clock: clk,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		cur:   (c.Min + c.Max) / 2,
	}, nil
}

// Read returns one reading.
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var v float64
	switch d.cfg.Kind {
	case "random_walk":
		d.cur += (d.rng.Float64()*2 - 1) * d.cfg.Step
		d.cur = math.Max(d.cfg.Min, math.Min(d.cfg.Max, d.cur))
		v = d.cur
	default:
		period := d.cfg.Period.D()
		phase := float64(d.clock.Now().UnixNano()%int64(period)) / float64(period)
		mid, amp := (d.cfg.Min+d.cfg.Max)/2, (d.cfg.Max-d.cfg.Min)/2
		v = mid + amp*math.Sin(2*math.Pi*phase)
	}
	// Three decimals, as a real sensor's resolution would give.
	v = math.Round(v*1000) / 1000
	return []sensors.Reading{{Metric: d.cfg.Metric, Value: v, Unit: d.cfg.Unit}}, nil
}

// Close does nothing: there is no device.
func (d *Driver) Close() error { return nil }

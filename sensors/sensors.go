// Package sensors polls local sensors and publishes their readings through the broker's
// ingest path. It defines the Driver interface, the Poller (one goroutine per sensor, a
// jittered schedule, a read timeout and backoff on errors) and the reading payload.
package sensors

import (
	"context"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/topic"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

// Reading is one measured value.
type Reading struct {
	Metric string  // e.g. temperature; {metric} in the sensor's topic
	Value  float64 // in Unit
	Unit   string  // SenML unit, e.g. Cel, %RH, Pa
}

// Driver reads one sensor. Read returns when ctx ends (the poller's read timeout) and is
// never called concurrently with itself. Close releases the device.
type Driver interface {
	Read(ctx context.Context) ([]Reading, error)
	Close() error
}

// Factory builds a driver from its config; it opens the device but starts nothing.
type Factory func(cfg config.Sensor, clk clock.Clock) (Driver, error)

// Publisher takes a reading's payload into the ingest path (broker.Broker.Publish).
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte) error
}

// Sensor is one configured, opened sensor.
type Sensor struct {
	Name     string
	Driver   Driver
	Interval time.Duration
	Topic    *topic.Template
}

// Stats of one sensor, read by metrics and /status.
type Stats struct {
	Reads     atomic.Uint64
	Errors    atomic.Uint64
	Published atomic.Uint64
	Up        atomic.Bool
}

// Poller runs the sensors.
type Poller struct {
	sensors []Sensor
	pub     Publisher
	clock   clock.Clock
	log     *slog.Logger
	stats   map[string]*Stats
}

// NewPoller builds a poller; Run starts it.
func NewPoller(sensors []Sensor, pub Publisher, clk clock.Clock, log *slog.Logger) *Poller {
	p := &Poller{sensors: sensors, pub: pub, clock: clk, log: log.With("component", "sensors"), stats: map[string]*Stats{}}
	for _, s := range sensors {
		p.stats[s.Name] = &Stats{}
	}
	return p
}

// Stats returns the counters of the named sensor.
func (p *Poller) Stats(name string) *Stats { return p.stats[name] }

// Run polls every sensor on its own goroutine until ctx ends, then closes the drivers.
func (p *Poller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range p.sensors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.poll(ctx, s)
		}()
	}
	wg.Wait()
	for _, s := range p.sensors {
		if err := s.Driver.Close(); err != nil {
			p.log.Warn("close sensor", "sensor", s.Name, "err", err)
		}
	}
	return nil
}

const maxBackoff = 5 * time.Minute

func (p *Poller) poll(ctx context.Context, s Sensor) {
	st := p.stats[s.Name]
	// Spread sensors over their interval so they don't all fire together; the offset is a
	// stable function of the name, so restarts keep the same phase.
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	delay := time.Duration(h.Sum64() % uint64(s.Interval))
	failures := 0
	t := p.clock.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		err := p.readOnce(ctx, s, st)
		next := s.Interval
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			st.Errors.Add(1)
			if st.Up.Swap(false) || failures == 1 {
				p.log.Warn("sensor read failed", "sensor", s.Name, "err", err, "failures", failures)
			}
			next = backoff(s.Interval, failures)
		} else {
			if !st.Up.Swap(true) && failures > 0 {
				p.log.Info("sensor recovered", "sensor", s.Name, "after_failures", failures)
			}
			failures = 0
		}
		t.Reset(next)
	}
}

// backoff doubles the wait per consecutive failure, from the interval up to maxBackoff,
// with ±10% jitter.
func backoff(interval time.Duration, failures int) time.Duration {
	d := interval
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	if d > maxBackoff {
		d = maxBackoff
	}
	j := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + j
}

func (p *Poller) readOnce(ctx context.Context, s Sensor, st *Stats) error {
	rctx, cancel := context.WithTimeout(ctx, s.Interval)
	defer cancel()
	rs, err := s.Driver.Read(rctx)
	st.Reads.Add(1)
	if err != nil {
		return err
	}
	now := p.clock.Now()
	for _, r := range rs {
		tp := s.Topic.Expand(func(n string) string {
			if n == "metric" {
				return r.Metric
			}
			return s.Name
		})
		if err := p.pub.Publish(ctx, tp, Payload(r, now)); err != nil {
			return err
		}
		st.Published.Add(1)
	}
	return nil
}

// Payload is the JSON a reading is published as: {"value":21.5,"ts":<unix ms>,"unit":"Cel"}.
func Payload(r Reading, ts time.Time) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"value":`...)
	b = record.AppendFloat(b, r.Value)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	if r.Unit != "" {
		b = append(b, `,"unit":`...)
		b = record.AppendString(b, r.Unit)
	}
	return append(b, '}')
}

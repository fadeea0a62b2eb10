package sensors

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/topic"
)

// Open builds the configured sensors with the drivers of types and opens their devices. A
// device that cannot be opened stops the start-up, unless its sensor says on_missing:
// degraded: then it starts down, without a driver, and the poller retries the open with
// backoff. The error lists every sensor that failed, each with the bus, the
// address and the fix; on error, what was opened is closed.
func Open(cfgs []Config, types []DriverType, clk clock.Clock, log *slog.Logger) ([]Sensor, error) {
	log = log.With("component", "sensors")
	var (
		out  []Sensor
		errs []error
	)
	for i := range cfgs {
		c := &cfgs[i]
		typ := Find(types, c.Driver)
		if typ == nil {
			errs = append(errs, fmt.Errorf("sensor %q: driver %q is not built into this binary", c.Name, c.Driver))
			continue
		}
		t, err := topic.ParseTemplate(c.Topic)
		if err != nil {
			errs = append(errs, fmt.Errorf("sensor %q: topic: %w", c.Name, err))
			continue
		}
		s := Sensor{
			Name: c.Name, Kind: c.Driver, Interval: c.Interval.D(), Timeout: c.Timeout.D(),
			Topic: t, Calibration: c.Calibration,
			Open: func() (Driver, error) { return typ.Open(c, clk) },
		}
		s.Driver, err = s.Open()
		if err != nil {
			err = fmt.Errorf("sensor %q (%s): %w", c.Name, c.Driver, err)
			if c.OnMissing != "degraded" {
				errs = append(errs, fmt.Errorf("%w (or set on_missing: degraded to start without it)", err))
				continue
			}
			log.Warn("sensor unavailable at start; running without it and retrying", "sensor", c.Name, "err", err)
			s.OpenErr = err
		}
		out = append(out, s)
	}
	if len(errs) > 0 {
		CloseAll(out)
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// CloseAll closes the opened drivers of sensors a poller never ran.
func CloseAll(ss []Sensor) {
	for _, s := range ss {
		if s.Driver != nil {
			s.Driver.Close()
		}
	}
}

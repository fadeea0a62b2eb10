// Package cputemp is the driver of the board's own temperature sensor, read from a Linux
// thermal zone (/sys/class/thermal/thermal_zone0/temp: millidegrees Celsius). It needs no
// bus: it is the health sensor every board has.
package cputemp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/hw"
)

// Driver reads one thermal zone file.
type Driver struct {
	path string
}

var _ sensors.Driver = (*Driver)(nil)

// New is the Open of the cpu_temp driver: the zone of cfg's cpu_temp block.
func New(cfg *sensors.Config, _ clock.Clock) (sensors.Driver, error) {
	c, ok := cfg.Device.(*Config)
	if !ok {
		return nil, fmt.Errorf("sensor %q: cpu_temp block missing", cfg.Name)
	}
	return Open(c.Path)
}

// Open checks that path holds a temperature.
func Open(path string) (*Driver, error) {
	d := &Driver{path: path}
	if _, err := d.read(); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &hw.Error{Bus: path, Err: errors.New("no such thermal zone"),
				Fix: "ls /sys/class/thermal/ lists this board's zones; set cpu_temp.path to one of their temp files"}
		}
		return nil, err
	}
	return d, nil
}

// Parse reads a thermal zone's content: an integer in millidegrees Celsius.
func Parse(b []byte) (float64, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("expected millidegrees Celsius, found %q", s)
	}
	return float64(n) / 1000, nil
}

func (d *Driver) read() (float64, error) {
	b, err := os.ReadFile(d.path)
	if err != nil {
		return 0, err
	}
	v, err := Parse(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", d.path, err)
	}
	return v, nil
}

// Read returns the zone's temperature (Cel).
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v, err := d.read()
	if err != nil {
		return nil, err
	}
	return []sensors.Reading{{Metric: "temperature", Value: v, Unit: "Cel"}}, nil
}

// Close does nothing: the file is opened per read.
func (d *Driver) Close() error { return nil }

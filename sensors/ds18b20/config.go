package ds18b20

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the ds18b20 block of a sensor: the probes on one 1-Wire bus.
type Config struct {
	// Resolution in bits, 9–12: 0.5 °C … 0.0625 °C, converting in 94 ms … 750 ms.
	Resolution int `yaml:"resolution"`
	// Probes to read, by address. Empty: the single probe found on the bus.
	Probes []Probe `yaml:"probes"`
}

// Probe is one probe: its address as Linux shows it (28-0316a2797aff) and the metric its
// temperature is published as.
type Probe struct {
	Address string `yaml:"address"`
	Metric  string `yaml:"metric"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.Resolution = 12 }

// Type is the ds18b20 driver.
func Type() sensors.DriverType {
	return sensors.DriverType{
		Name: "ds18b20", Bus: sensors.BusOneWire,
		NewConfig: sensors.Defaulted[Config],
		Open:      New,
	}
}

// Resolve normalises the probes' addresses to lower case and names their metrics:
// temperature for a single probe, else its address.
func (c *Config) Resolve() {
	for i := range c.Probes {
		p := &c.Probes[i]
		p.Address = strings.ToLower(p.Address)
		if p.Metric == "" {
			if len(c.Probes) == 1 {
				p.Metric = "temperature"
			} else {
				p.Metric = p.Address
			}
		}
	}
}

// Conversion is the longest a DS18B20 takes to convert at a resolution (datasheet
// "Configuration Register": 750 ms at 12 bits, halving per bit down to 93.75 ms at 9).
func Conversion(bits int) time.Duration {
	return 750 * time.Millisecond >> uint(min(max(12-bits, 0), 3))
}

var addressRe = regexp.MustCompile(`^28-[0-9a-f]{12}$`)

// Validate checks the resolution against the sensor's interval and timeout, and the probes.
func (c *Config) Validate(s *sensors.Config, r *conf.Reporter) {
	p := r.Path("")
	b := r.At("ds18b20")
	bp := b.Path("")
	if c.Resolution < 9 || c.Resolution > 12 {
		b.Errorf("resolution", "%s.resolution %d: expected 9, 10, 11 or 12 bits", bp, c.Resolution)
	} else {
		conv := Conversion(c.Resolution)
		if s.Interval.D() < conv {
			r.Errorf("interval", "%s.interval %s: a %d-bit DS18B20 conversion takes %s; use a longer interval or a lower resolution", p, s.Interval, c.Resolution, conv)
		} else if s.Timeout.D() < conv {
			r.Errorf("timeout", "%s.timeout %s: a %d-bit DS18B20 conversion takes %s", p, s.Timeout, c.Resolution, conv)
		}
	}
	addrs := map[string]int{}
	metrics := map[string]int{}
	for i, pr := range c.Probes {
		pb := b.At(fmt.Sprintf("probes[%d]", i))
		pp := pb.Path("")
		j, dupAddr := addrs[pr.Address]
		if !addressRe.MatchString(pr.Address) {
			pb.Errorf("address", "%s.address %q: expected a DS18B20 address as in /sys/bus/w1/devices, e.g. 28-0316a2797aff", pp, pr.Address)
		} else if dupAddr {
			pb.Errorf("address", "%s.address %s is also probes[%d]", pp, pr.Address, j)
		}
		addrs[pr.Address] = i
		if !sensors.MetricOK(pr.Metric) {
			pb.Errorf("metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", pp, pr.Metric)
		} else if j, dup := metrics[pr.Metric]; dup && !dupAddr {
			pb.Errorf("metric", "%s.metric %q is also the metric of probes[%d]", pp, pr.Metric, j)
		}
		metrics[pr.Metric] = i
	}
}

// Metrics are the probes' metrics, or temperature for the single probe found on the bus.
func (c *Config) Metrics() []string {
	if len(c.Probes) == 0 {
		return []string{"temperature"}
	}
	var out []string
	for _, p := range c.Probes {
		out = append(out, p.Metric)
	}
	return out
}

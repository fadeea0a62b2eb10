package sensors

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// Config is one entry of the config's sensors list (SPEC §7). The keys every sensor shares
// (bus, address, timeout, on_missing, calibration) sit at its top level; the driver's own
// settings live in a block named after the driver, whose type the driver declares
// (DriverType.NewConfig) and which Resolve decodes into Device.
type Config struct {
	Name   string `yaml:"name"`
	Driver string `yaml:"driver"`
	// Interval between two readings.
	Interval conf.Duration `yaml:"interval"`
	// Topic the readings are published on; {metric} and {name} are replaced.
	Topic string `yaml:"topic"`
	// Bus is the I2C bus device (/dev/i2c-1) or the 1-Wire bus master (w1_bus_master1).
	Bus string `yaml:"bus"`
	// Address is the 7-bit I2C address of the chip.
	Address int `yaml:"address"`
	// Timeout bounds one read; default the interval, at most 10s.
	Timeout conf.Duration `yaml:"timeout"`
	// OnMissing is what a device that cannot be opened at start does: fail (stop the
	// start-up) or degraded (run without it, marked down, and retry with backoff).
	OnMissing string `yaml:"on_missing"`
	// Calibration per metric: value*scale + offset, optionally with another unit.
	Calibration map[string]Calibration `yaml:"calibration"`

	// Device is the driver's block (its defaults when the file has none); nil when the
	// driver is unknown.
	Device DriverConfig `yaml:"-"`
	// Blocks are the keys left to the drivers until Resolve takes them.
	Blocks conf.Extra
}

// SetDefaults implements conf.Defaulter.
func (s *Config) SetDefaults() {
	s.Interval = conf.Duration(10 * time.Second)
	s.Topic = "sensors/{name}/{metric}"
	s.OnMissing = "fail"
}

// Calibration corrects one metric of a sensor: value*scale + offset. Unit, when set,
// replaces the driver's unit (a rain gauge's count scaled to mm, an ADC's volts to bar).
type Calibration struct {
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	Unit   string  `yaml:"unit"`
}

// SetDefaults implements conf.Defaulter.
func (c *Calibration) SetDefaults() { c.Scale = 1 }

// Bus is the kind of bus a driver's device hangs on.
type Bus uint8

// Bus kinds of the drivers.
const (
	BusNone Bus = iota
	BusI2C
	BusOneWire
)

// DriverType is a driver as a registry knows it (cmd/edgegate builds the registry of what
// the binary contains; nothing registers itself). Name is both the driver: value and the
// key of its block.
type DriverType struct {
	Name string
	// Bus is the kind of bus the device is on: it sets the default and the check of the
	// sensor's bus key.
	Bus Bus
	// Address is the default I2C address (Bus I2C).
	Address int
	// NewConfig returns the driver's block with its defaults.
	NewConfig func() DriverConfig
	// Open builds a driver for a validated sensor: it opens the bus and checks that the
	// device answers, but starts nothing. Errors name the bus, the address and the fix.
	Open func(cfg *Config, clk clock.Clock) (Driver, error)
}

// Defaulted is a DriverType's NewConfig for a driver whose block is C: a C with its
// defaults set.
func Defaulted[C any, PC interface {
	*C
	DriverConfig
	conf.Defaulter
}]() DriverConfig {
	c := PC(new(C))
	c.SetDefaults()
	return c
}

// DriverConfig is a driver's block of a sensor's config.
type DriverConfig interface {
	// Validate checks the block and what the driver asks of the sensor's shared keys (the
	// I2C address, an interval long enough for a conversion), reporting at the sensor.
	Validate(s *Config, r *conf.Reporter)
	// Metrics lists the metrics the sensor publishes ({metric} in its topic), in order.
	Metrics() []string
}

// resolver is implemented by driver blocks with defaults that depend on what the file set
// (a probe's metric on the number of probes).
type resolver interface{ Resolve() }

// Names lists the drivers of types, in order.
func Names(types []DriverType) []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = t.Name
	}
	return out
}

// Find returns the type of the named driver, or nil.
func Find(types []DriverType, name string) *DriverType {
	for i := range types {
		if types[i].Name == name {
			return &types[i]
		}
	}
	return nil
}

// Default reads are bounded by the interval, and by this so a slow interval does not leave
// a hung device undetected for minutes.
const maxDefaultTimeout = 10 * time.Second

// Resolve decodes the sensor's driver block (the file's, or the driver's defaults), reports
// blocks of other drivers and keys no driver takes, and fills the defaults that depend on
// the driver. r is positioned at the sensor; it runs after the first decoding pass.
func (s *Config) Resolve(doc *conf.Doc, r *conf.Reporter, types []DriverType) {
	t := Find(types, s.Driver)
	if t != nil {
		s.Device = t.NewConfig()
	}
	for _, b := range s.Blocks {
		switch owner := Find(types, b.Key.Value); {
		case owner == nil:
			doc.UnknownKey(b.Key, r.Path(""), append(conf.Keys(s), Names(types)...))
		case owner == t:
			doc.Decode(b.Value, s.Device, b.Path)
		case b.Value.Tag == "!!null":
			// An empty block of another driver sets nothing.
		default:
			// Decoded all the same, so a wrong type there is reported too.
			doc.Decode(b.Value, owner.NewConfig(), b.Path)
			r.Errorf(b.Key.Value, "%s: only for driver %s", r.Path(b.Key.Value), owner.Name)
		}
	}
	s.Blocks = nil
	if t != nil {
		switch t.Bus {
		case BusI2C:
			if s.Bus == "" {
				s.Bus = "/dev/i2c-1"
			}
			if s.Address == 0 {
				s.Address = t.Address
			}
		case BusOneWire:
			if s.Bus == "" {
				s.Bus = "w1_bus_master1"
			}
		}
		if rv, ok := s.Device.(resolver); ok {
			rv.Resolve()
		}
	}
	if s.Timeout == 0 {
		s.Timeout = conf.Duration(min(s.Interval.D(), maxDefaultTimeout))
	}
}

// Metrics lists the metrics the sensor publishes ({metric} in its topic), in order.
func (s *Config) Metrics() []string {
	if s.Device == nil {
		return nil
	}
	return s.Device.Metrics()
}

var (
	i2cBusRe     = regexp.MustCompile(`^/dev/i2c-[0-9]{1,3}$`)
	oneWireBusRe = regexp.MustCompile(`^w1_bus_master[0-9]{1,3}$`)
)

// Validate checks the sensor against the drivers of types, each problem with its position.
// The uniqueness of names is the caller's (it sees the whole list).
func (s *Config) Validate(r *conf.Reporter, types []DriverType) {
	p := r.Path("")
	t := Find(types, s.Driver)
	if t == nil {
		r.Errorf("driver", "%s.driver %q: unknown driver (known: %s)", p, s.Driver, strings.Join(Names(types), ", "))
	}
	if s.Interval.D() < 10*time.Millisecond {
		r.Errorf("interval", "%s.interval %s: must be at least 10ms", p, s.Interval)
	}
	s.validateTopic(r)
	if !slices.Contains([]string{"fail", "degraded"}, s.OnMissing) {
		r.Errorf("on_missing", "%s.on_missing %q: expected fail or degraded", p, s.OnMissing)
	}
	if s.Timeout.D() < 10*time.Millisecond {
		r.Errorf("timeout", "%s.timeout %s: must be at least 10ms", p, s.Timeout)
	}
	bus := BusNone
	if t != nil {
		bus = t.Bus
	}
	switch bus {
	case BusI2C:
		if !i2cBusRe.MatchString(s.Bus) {
			r.Errorf("bus", "%s.bus %q: expected an I2C bus device such as /dev/i2c-1", p, s.Bus)
		}
	case BusOneWire:
		if !oneWireBusRe.MatchString(s.Bus) {
			r.Errorf("bus", "%s.bus %q: expected a 1-Wire bus master such as w1_bus_master1 (ls /sys/bus/w1/devices)", p, s.Bus)
		}
		if s.Address != 0 {
			r.Errorf("address", "%s.address: a 1-Wire probe has no I2C address; list probes under %s.probes", p, s.Driver)
		}
	default:
		if s.Bus != "" {
			r.Errorf("bus", "%s.bus: driver %s uses no bus", p, s.Driver)
		}
		if s.Address != 0 {
			r.Errorf("address", "%s.address: driver %s has no I2C address", p, s.Driver)
		}
	}
	if s.Device != nil {
		s.Device.Validate(s, r)
	}
	s.validateCalibration(r)
}

func (s *Config) validateTopic(r *conf.Reporter) {
	p := r.Path("")
	t, err := topic.ParseTemplate(s.Topic)
	if err != nil {
		r.Errorf("topic", "%s.topic: %v", p, err)
		return
	}
	for _, n := range t.Names() {
		if n != "metric" && n != "name" {
			r.Errorf("topic", "%s.topic: unknown placeholder {%s} (known: {name}, {metric})", p, n)
		}
	}
	sample := t.Expand(func(n string) string { return "x" })
	if err := topic.ValidName(sample); err != nil {
		r.Errorf("topic", "%s.topic: %v", p, err)
	}
}

func (s *Config) validateCalibration(r *conf.Reporter) {
	p := r.Path("")
	known := s.Metrics()
	for m, cal := range s.Calibration {
		key := "calibration." + m
		cp := r.Path(key)
		if len(known) > 0 && !slices.Contains(known, m) {
			r.Errorf(key, "%s.calibration: unknown metric %q (driver %s publishes: %s)", p, m, s.Driver, strings.Join(known, ", "))
		}
		if cal.Scale == 0 || math.IsNaN(cal.Scale) {
			r.Errorf(key+".scale", "%s.scale: 0 would turn every reading into the offset", cp)
		}
		if strings.ContainsAny(cal.Unit, " \t\"\\") || len(cal.Unit) > 16 {
			r.Errorf(key+".unit", "%s.unit %q: a SenML unit such as Cel, %%RH, Pa, V, mm or 1/s", cp, cal.Unit)
		}
	}
}

// MetricOK reports whether m can name a metric: non-empty, at most 64 bytes, without '/',
// '+' or '#' (it becomes a topic level).
func MetricOK(m string) bool {
	return m != "" && len(m) <= 64 && !strings.ContainsAny(m, "/+#")
}

// HexAddress formats an I2C address for messages.
func HexAddress(a int) string {
	if a < 0 {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%#02x", a)
}

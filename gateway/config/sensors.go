package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/topic"
)

// Sensor is one local sensor polled by the gateway. The keys every hardware sensor shares
// (bus, address, timeout, on_missing, calibration) sit at the sensor's top level, as in
// SPEC §7; driver-specific settings live in a block named after the driver
// (sensor_drivers.go).
type Sensor struct {
	Name   string `yaml:"name"`
	Driver string `yaml:"driver"`
	// Interval between two readings.
	Interval Duration `yaml:"interval"`
	// Topic the readings are published on; {metric} and {name} are replaced.
	Topic string `yaml:"topic"`
	// Bus is the I2C bus device (/dev/i2c-1) or the 1-Wire bus master (w1_bus_master1).
	Bus string `yaml:"bus"`
	// Address is the 7-bit I2C address of the chip.
	Address int `yaml:"address"`
	// Timeout bounds one read; default the interval, at most 10s.
	Timeout Duration `yaml:"timeout"`
	// OnMissing is what a device that cannot be opened at start does: fail (stop the
	// start-up) or degraded (run without it, marked down, and retry with backoff).
	OnMissing string `yaml:"on_missing"`
	// Calibration per metric: value*scale + offset, optionally with another unit.
	Calibration map[string]Calibration `yaml:"calibration"`

	Sim     *Sim     `yaml:"sim"`
	BME280  *BMx280  `yaml:"bme280"`
	BMP280  *BMx280  `yaml:"bmp280"`
	DS18B20 *DS18B20 `yaml:"ds18b20"`
	ADS1115 *ADS1115 `yaml:"ads1115"`
	GPIO    *GPIO    `yaml:"gpio"`
	CPUTemp *CPUTemp `yaml:"cpu_temp"`
}

func (s *Sensor) setDefaults() {
	s.Interval = Duration(10 * time.Second)
	s.Topic = "sensors/{name}/{metric}"
	s.OnMissing = "fail"
}

// Sim configures the simulated driver: a seeded, reproducible signal.
type Sim struct {
	// Kind is sine (between min and max over period) or random_walk (steps of at most step,
	// kept within min and max).
	Kind   string   `yaml:"kind"`
	Min    float64  `yaml:"min"`
	Max    float64  `yaml:"max"`
	Period Duration `yaml:"period"`
	Step   float64  `yaml:"step"`
	Seed   int64    `yaml:"seed"`
	// Metric names the reading ({metric} in the topic).
	Metric string `yaml:"metric"`
	Unit   string `yaml:"unit"`
}

func (s *Sim) setDefaults() {
	s.Kind = "sine"
	s.Min, s.Max = 0, 1
	s.Period = Duration(10 * time.Minute)
	s.Step = 0.1
	s.Seed = 1
	s.Metric = "value"
}

// SensorDrivers lists the drivers the config knows.
var SensorDrivers = []string{"sim", "bme280", "bmp280", "ds18b20", "ads1115", "gpio", "cpu_temp"}

func (c *Config) validateSensors(v *validator) {
	names := map[string]int{}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		p := fmt.Sprintf("sensors[%d]", i)
		v.uniqueName(p, s.Name, i, names)
		if !oneOf(s.Driver, SensorDrivers...) {
			v.at(p+".driver", "%s.driver %q: unknown driver (known: %s)", p, s.Driver, strings.Join(SensorDrivers, ", "))
		}
		if s.Interval.D() < 10*time.Millisecond {
			v.at(p+".interval", "%s.interval %s: must be at least 10ms", p, s.Interval)
		}
		t, err := topic.ParseTemplate(s.Topic)
		if err != nil {
			v.at(p+".topic", "%s.topic: %v", p, err)
		} else {
			for _, n := range t.Names() {
				if n != "metric" && n != "name" {
					v.at(p+".topic", "%s.topic: unknown placeholder {%s} (known: {name}, {metric})", p, n)
				}
			}
			sample := t.Expand(func(n string) string { return "x" })
			if err := topic.ValidName(sample); err != nil {
				v.at(p+".topic", "%s.topic: %v", p, err)
			}
		}
		if s.Driver == "sim" && s.Sim != nil {
			c.validateSim(v, p+".sim", s.Sim)
		} else if s.Sim != nil {
			v.at(p+".sim", "%s.sim: only for driver sim", p)
		}
		c.validateSensorHardware(v, p, s)
	}
}

func (c *Config) validateSim(v *validator, p string, s *Sim) {
	if !oneOf(s.Kind, "sine", "random_walk") {
		v.at(p+".kind", "%s.kind %q: expected sine or random_walk", p, s.Kind)
	}
	if s.Max < s.Min {
		v.at(p+".max", "%s: max %v is below min %v", p, s.Max, s.Min)
	}
	if s.Kind == "sine" && s.Period.D() <= 0 {
		v.at(p+".period", "%s.period must be > 0 for a sine", p)
	}
	if s.Kind == "random_walk" && s.Step <= 0 {
		v.at(p+".step", "%s.step must be > 0 for a random walk", p)
	}
	if s.Metric == "" || strings.ContainsAny(s.Metric, "/+#") {
		v.at(p+".metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", p, s.Metric)
	}
}

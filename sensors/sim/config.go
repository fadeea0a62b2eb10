package sim

import (
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the sim block of a sensor: a seeded, reproducible signal.
type Config struct {
	// Kind is sine (between min and max over period) or random_walk (steps of at most step,
	// kept within min and max).
	Kind   string        `yaml:"kind"`
	Min    float64       `yaml:"min"`
	Max    float64       `yaml:"max"`
	Period conf.Duration `yaml:"period"`
	Step   float64       `yaml:"step"`
	Seed   int64         `yaml:"seed"`
	// Metric names the reading ({metric} in the topic).
	Metric string `yaml:"metric"`
	Unit   string `yaml:"unit"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() {
	c.Kind = "sine"
	c.Min, c.Max = 0, 1
	c.Period = conf.Duration(10 * time.Minute)
	c.Step = 0.1
	c.Seed = 1
	c.Metric = "value"
}

// Type is the sim driver.
func Type() sensors.DriverType {
	return sensors.DriverType{
		Name:      "sim",
		NewConfig: sensors.Defaulted[Config],
		Open:      New,
	}
}

// Validate checks the signal's shape.
func (c *Config) Validate(_ *sensors.Config, r *conf.Reporter) {
	r = r.At("sim")
	p := r.Path("")
	if c.Kind != "sine" && c.Kind != "random_walk" {
		r.Errorf("kind", "%s.kind %q: expected sine or random_walk", p, c.Kind)
	}
	if c.Max < c.Min {
		r.Errorf("max", "%s: max %v is below min %v", p, c.Max, c.Min)
	}
	if c.Kind == "sine" && c.Period.D() <= 0 {
		r.Errorf("period", "%s.period must be > 0 for a sine", p)
	}
	if c.Kind == "random_walk" && c.Step <= 0 {
		r.Errorf("step", "%s.step must be > 0 for a random walk", p)
	}
	if c.Metric == "" || strings.ContainsAny(c.Metric, "/+#") {
		r.Errorf("metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", p, c.Metric)
	}
}

// Metrics is the one metric of the signal.
func (c *Config) Metrics() []string { return []string{c.Metric} }

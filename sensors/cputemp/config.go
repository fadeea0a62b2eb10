package cputemp

import (
	"path/filepath"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the cpu_temp block of a sensor: the thermal zone read.
type Config struct {
	// Path of the thermal zone's temp file (millidegrees Celsius).
	Path string `yaml:"path"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.Path = "/sys/class/thermal/thermal_zone0/temp" }

// Type is the cpu_temp driver.
func Type() sensors.DriverType {
	return sensors.DriverType{
		Name:      "cpu_temp",
		NewConfig: sensors.Defaulted[Config],
		Open:      New,
	}
}

// Validate checks the path.
func (c *Config) Validate(_ *sensors.Config, r *conf.Reporter) {
	if !filepath.IsAbs(c.Path) {
		r.Errorf("cpu_temp.path", "%s.cpu_temp.path %q: expected an absolute path such as /sys/class/thermal/thermal_zone0/temp", r.Path(""), c.Path)
	}
}

// Metrics is the zone's temperature.
func (c *Config) Metrics() []string { return []string{"temperature"} }

package gpiosensor

import (
	"regexp"
	"slices"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the gpio block of a sensor: a digital input pin.
type Config struct {
	// Pin by name: GPIO17, or its header position P1_11.
	Pin string `yaml:"pin"`
	// Pull is the internal resistor: up, down or none. Default none.
	Pull string `yaml:"pull"`
	// Mode is level (the pin's state, 0 or 1) or counter (edges counted between readings:
	// count and rate). Default level.
	Mode string `yaml:"mode"`
	// Edge counted in counter mode: falling, rising or both. Default falling.
	Edge string `yaml:"edge"`
	// Debounce ignores an edge closer than this to the previous counted one. Default 0.
	Debounce conf.Duration `yaml:"debounce"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() {
	c.Pull = "none"
	c.Mode = "level"
	c.Edge = "falling"
}

// Type is the gpio driver.
func Type() sensors.DriverType {
	return sensors.DriverType{
		Name:      "gpio",
		NewConfig: sensors.Defaulted[Config],
		Open:      New,
	}
}

var pinRe = regexp.MustCompile(`^(GPIO[0-9]{1,3}|P1_[0-9]{1,2})$`)

// Validate checks the pin and its mode.
func (c *Config) Validate(_ *sensors.Config, r *conf.Reporter) {
	p := r.Path("")
	b := r.At("gpio")
	bp := b.Path("")
	if c.Pin == "" {
		b.Errorf("", "%s: a gpio sensor needs gpio.pin, e.g. gpio: {pin: GPIO17}", p)
		return
	}
	if !pinRe.MatchString(c.Pin) {
		b.Errorf("pin", "%s.pin %q: expected a pin name such as GPIO17 (BCM numbering) or P1_11 (header position)", bp, c.Pin)
	}
	if !slices.Contains([]string{"up", "down", "none"}, c.Pull) {
		b.Errorf("pull", "%s.pull %q: expected up, down or none", bp, c.Pull)
	}
	if !slices.Contains([]string{"level", "counter"}, c.Mode) {
		b.Errorf("mode", "%s.mode %q: expected level or counter", bp, c.Mode)
	}
	if !slices.Contains([]string{"falling", "rising", "both"}, c.Edge) {
		b.Errorf("edge", "%s.edge %q: expected falling, rising or both", bp, c.Edge)
	}
	if c.Mode == "level" && (b.Has("edge") || b.Has("debounce")) {
		key := "edge"
		if !b.Has(key) {
			key = "debounce"
		}
		b.Errorf(key, "%s.%s: only for mode counter", bp, key)
	}
	if c.Debounce.D() > time.Second {
		b.Errorf("debounce", "%s.debounce %s: at most 1s", bp, c.Debounce)
	}
}

// Metrics are level, or count and rate in counter mode.
func (c *Config) Metrics() []string {
	if c.Mode == "counter" {
		return []string{"count", "rate"}
	}
	return []string{"level"}
}

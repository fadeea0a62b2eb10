package bmx280

import (
	"slices"
	"strings"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the bme280 or bmp280 block of a sensor.
type Config struct {
	// Oversampling of every measurement: 1, 2, 4, 8 or 16. Default 1 (the datasheet's
	// "weather monitoring" setting: least self-heating).
	Oversampling int `yaml:"oversampling"`

	model string // bme280 or bmp280: the driver, and the block's key
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.Oversampling = 1 }

// BME280 is the bme280 driver (temperature, humidity, pressure).
func BME280() sensors.DriverType { return driverType("bme280") }

// BMP280 is the bmp280 driver (temperature, pressure).
func BMP280() sensors.DriverType { return driverType("bmp280") }

func driverType(model string) sensors.DriverType {
	return sensors.DriverType{
		Name: model, Bus: sensors.BusI2C, Address: 0x76,
		NewConfig: func() sensors.DriverConfig {
			c := &Config{model: model}
			c.SetDefaults()
			return c
		},
		Open: New,
	}
}

// Validate checks the oversampling and the chip's address.
func (c *Config) Validate(s *sensors.Config, r *conf.Reporter) {
	p := r.Path("")
	if a := s.Address; a != 0x76 && a != 0x77 {
		r.Errorf("address", "%s.address %s: a %s answers at 0x76 (SDO to GND) or 0x77 (SDO to VCC)", p, sensors.HexAddress(a), strings.ToUpper(c.model))
	}
	if !slices.Contains([]int{1, 2, 4, 8, 16}, c.Oversampling) {
		r.Errorf(c.model+".oversampling", "%s.oversampling %d: expected 1, 2, 4, 8 or 16", r.Path(c.model), c.Oversampling)
	}
}

// Metrics are temperature and pressure, and humidity for a BME280.
func (c *Config) Metrics() []string {
	if c.model == "bmp280" {
		return []string{"temperature", "pressure"}
	}
	return []string{"temperature", "humidity", "pressure"}
}

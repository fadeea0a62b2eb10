package config

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Calibration corrects one metric of a sensor: value*scale + offset. Unit, when set,
// replaces the driver's unit (a rain gauge's count scaled to mm, an ADC's volts to bar).
type Calibration struct {
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	Unit   string  `yaml:"unit"`
}

func (c *Calibration) setDefaults() { c.Scale = 1 }

// BMx280 configures a Bosch BME280 (temperature, humidity, pressure) or BMP280
// (temperature, pressure) on I2C.
type BMx280 struct {
	// Oversampling of every measurement: 1, 2, 4, 8 or 16. Default 1 (the datasheet's
	// "weather monitoring" setting: least self-heating).
	Oversampling int `yaml:"oversampling"`
}

func (b *BMx280) setDefaults() { b.Oversampling = 1 }

// DS18B20 configures Maxim DS18B20 probes on one 1-Wire bus.
type DS18B20 struct {
	// Resolution in bits, 9–12: 0.5 °C … 0.0625 °C, converting in 94 ms … 750 ms.
	Resolution int `yaml:"resolution"`
	// Probes to read, by address. Empty: the single probe found on the bus.
	Probes []DS18B20Probe `yaml:"probes"`
}

func (d *DS18B20) setDefaults() { d.Resolution = 12 }

// DS18B20Probe is one probe: its address as Linux shows it (28-0316a2797aff) and the
// metric its temperature is published as.
type DS18B20Probe struct {
	Address string `yaml:"address"`
	Metric  string `yaml:"metric"`
}

// ADS1115 configures a TI ADS1115 16-bit ADC on I2C.
type ADS1115 struct {
	// DataRate in samples per second: 8, 16, 32, 64, 128, 250, 475 or 860. Default 128.
	DataRate int `yaml:"data_rate"`
	// Channels to read, each once per interval.
	Channels []ADS1115Channel `yaml:"channels"`
}

func (a *ADS1115) setDefaults() { a.DataRate = 128 }

// ADS1115Channel is one input of the ADC.
type ADS1115Channel struct {
	// Channel is 0–3 (single-ended, against GND) or 0-1, 0-3, 1-3, 2-3 (differential).
	Channel string `yaml:"channel"`
	// Metric names the reading; default ain<channel> (ain0, ain0-1).
	Metric string `yaml:"metric"`
	// Gain of the amplifier, which sets the full-scale range: 2/3 (±6.144 V), 1 (±4.096 V),
	// 2 (±2.048 V), 4 (±1.024 V), 8 (±0.512 V), 16 (±0.256 V). Default 1.
	Gain string `yaml:"gain"`
}

func (a *ADS1115Channel) setDefaults() { a.Gain = "1" }

// GPIO configures a digital input pin.
type GPIO struct {
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
	Debounce Duration `yaml:"debounce"`
}

func (g *GPIO) setDefaults() {
	g.Pull = "none"
	g.Mode = "level"
	g.Edge = "falling"
}

// CPUTemp configures the board's own temperature sensor, read from a thermal zone.
type CPUTemp struct {
	// Path of the thermal zone's temp file (millidegrees Celsius).
	Path string `yaml:"path"`
}

func (c *CPUTemp) setDefaults() { c.Path = "/sys/class/thermal/thermal_zone0/temp" }

// Bus kinds of the hardware drivers.
const (
	busNone    = ""
	busI2C     = "i2c"
	busOneWire = "1-wire"
)

func driverBus(driver string) string {
	switch driver {
	case "bme280", "bmp280", "ads1115":
		return busI2C
	case "ds18b20":
		return busOneWire
	}
	return busNone
}

// Default reads are bounded by the interval, and by this so a slow interval does not leave
// a hung device undetected for minutes.
const maxDefaultTimeout = 10 * time.Second

// resolve fills the defaults that depend on the driver. It runs after decoding.
func (s *Sensor) resolve() {
	newBlock := func(d defaulter) { d.setDefaults() }
	switch s.Driver {
	case "sim":
		if s.Sim == nil {
			s.Sim = &Sim{}
			newBlock(s.Sim)
		}
	case "bme280":
		if s.BME280 == nil {
			s.BME280 = &BMx280{}
			newBlock(s.BME280)
		}
	case "bmp280":
		if s.BMP280 == nil {
			s.BMP280 = &BMx280{}
			newBlock(s.BMP280)
		}
	case "ds18b20":
		if s.DS18B20 == nil {
			s.DS18B20 = &DS18B20{}
			newBlock(s.DS18B20)
		}
	case "cpu_temp":
		if s.CPUTemp == nil {
			s.CPUTemp = &CPUTemp{}
			newBlock(s.CPUTemp)
		}
	}
	switch driverBus(s.Driver) {
	case busI2C:
		if s.Bus == "" {
			s.Bus = "/dev/i2c-1"
		}
		if s.Address == 0 {
			if s.Driver == "ads1115" {
				s.Address = 0x48
			} else {
				s.Address = 0x76
			}
		}
	case busOneWire:
		if s.Bus == "" {
			s.Bus = "w1_bus_master1"
		}
	}
	if s.Timeout == 0 {
		s.Timeout = Duration(min(s.Interval.D(), maxDefaultTimeout))
	}
	if d := s.DS18B20; d != nil {
		for i := range d.Probes {
			p := &d.Probes[i]
			p.Address = strings.ToLower(p.Address)
			if p.Metric == "" {
				if len(d.Probes) == 1 {
					p.Metric = "temperature"
				} else {
					p.Metric = p.Address
				}
			}
		}
	}
	if a := s.ADS1115; a != nil {
		for i := range a.Channels {
			if a.Channels[i].Metric == "" {
				a.Channels[i].Metric = "ain" + a.Channels[i].Channel
			}
		}
	}
}

// Metrics lists the metrics the sensor publishes ({metric} in its topic), in order.
func (s *Sensor) Metrics() []string {
	switch s.Driver {
	case "sim":
		if s.Sim != nil {
			return []string{s.Sim.Metric}
		}
	case "bme280":
		return []string{"temperature", "humidity", "pressure"}
	case "bmp280":
		return []string{"temperature", "pressure"}
	case "cpu_temp":
		return []string{"temperature"}
	case "ds18b20":
		if s.DS18B20 == nil || len(s.DS18B20.Probes) == 0 {
			return []string{"temperature"}
		}
		var out []string
		for _, p := range s.DS18B20.Probes {
			out = append(out, p.Metric)
		}
		return out
	case "ads1115":
		var out []string
		if s.ADS1115 != nil {
			for _, c := range s.ADS1115.Channels {
				out = append(out, c.Metric)
			}
		}
		return out
	case "gpio":
		if s.GPIO != nil && s.GPIO.Mode == "counter" {
			return []string{"count", "rate"}
		}
		return []string{"level"}
	}
	return nil
}

var (
	i2cBusRe     = regexp.MustCompile(`^/dev/i2c-[0-9]{1,3}$`)
	oneWireBusRe = regexp.MustCompile(`^w1_bus_master[0-9]{1,3}$`)
	ds18b20Re    = regexp.MustCompile(`^28-[0-9a-f]{12}$`)
	gpioPinRe    = regexp.MustCompile(`^(GPIO[0-9]{1,3}|P1_[0-9]{1,2})$`)
)

// ADS1115Channels, ADS1115Gains and ADS1115DataRates are the values the ADC takes.
var (
	ADS1115Channels  = []string{"0", "1", "2", "3", "0-1", "0-3", "1-3", "2-3"}
	ADS1115Gains     = []string{"2/3", "1", "2", "4", "8", "16"}
	ADS1115DataRates = []int{8, 16, 32, 64, 128, 250, 475, 860}
)

// DS18B20Conversion is the longest a DS18B20 takes to convert at a resolution (datasheet
// "Configuration Register": 750 ms at 12 bits, halving per bit down to 93.75 ms at 9).
func DS18B20Conversion(bits int) time.Duration {
	return 750 * time.Millisecond >> uint(min(max(12-bits, 0), 3))
}

// validateSensorHardware checks the keys of the hardware drivers: buses, addresses,
// channels, pins, probes and calibration, each with its position.
func (c *Config) validateSensorHardware(v *validator, p string, s *Sensor) {
	if !oneOf(s.OnMissing, "fail", "degraded") {
		v.at(p+".on_missing", "%s.on_missing %q: expected fail or degraded", p, s.OnMissing)
	}
	if s.Timeout.D() < 10*time.Millisecond {
		v.at(p+".timeout", "%s.timeout %s: must be at least 10ms", p, s.Timeout)
	}
	bus := driverBus(s.Driver)
	switch bus {
	case busI2C:
		if !i2cBusRe.MatchString(s.Bus) {
			v.at(p+".bus", "%s.bus %q: expected an I2C bus device such as /dev/i2c-1", p, s.Bus)
		}
		c.validateI2CAddress(v, p, s)
	case busOneWire:
		if !oneWireBusRe.MatchString(s.Bus) {
			v.at(p+".bus", "%s.bus %q: expected a 1-Wire bus master such as w1_bus_master1 (ls /sys/bus/w1/devices)", p, s.Bus)
		}
		if s.Address != 0 {
			v.at(p+".address", "%s.address: a 1-Wire probe has no I2C address; list probes under ds18b20.probes", p)
		}
	default:
		if s.Bus != "" {
			v.at(p+".bus", "%s.bus: driver %s uses no bus", p, s.Driver)
		}
		if s.Address != 0 {
			v.at(p+".address", "%s.address: driver %s has no I2C address", p, s.Driver)
		}
	}

	blocks := []struct {
		key, driver string
		set         bool
	}{
		{"bme280", "bme280", s.BME280 != nil}, {"bmp280", "bmp280", s.BMP280 != nil},
		{"ds18b20", "ds18b20", s.DS18B20 != nil}, {"ads1115", "ads1115", s.ADS1115 != nil},
		{"gpio", "gpio", s.GPIO != nil}, {"cpu_temp", "cpu_temp", s.CPUTemp != nil},
	}
	for _, b := range blocks {
		if b.set && s.Driver != b.driver {
			v.at(p+"."+b.key, "%s.%s: only for driver %s", p, b.key, b.driver)
		}
	}
	switch s.Driver {
	case "bme280":
		c.validateBMx280(v, p+".bme280", s.BME280)
	case "bmp280":
		c.validateBMx280(v, p+".bmp280", s.BMP280)
	case "ds18b20":
		c.validateDS18B20(v, p, s)
	case "ads1115":
		c.validateADS1115(v, p, s.ADS1115)
	case "gpio":
		c.validateGPIO(v, p, s.GPIO)
	case "cpu_temp":
		if !filepath.IsAbs(s.CPUTemp.Path) {
			v.at(p+".cpu_temp.path", "%s.cpu_temp.path %q: expected an absolute path such as /sys/class/thermal/thermal_zone0/temp", p, s.CPUTemp.Path)
		}
	}
	c.validateCalibration(v, p, s)
}

func (c *Config) validateI2CAddress(v *validator, p string, s *Sensor) {
	a := s.Address
	switch s.Driver {
	case "bme280", "bmp280":
		if a != 0x76 && a != 0x77 {
			v.at(p+".address", "%s.address %s: a %s answers at 0x76 (SDO to GND) or 0x77 (SDO to VCC)", p, hexAddr(a), strings.ToUpper(s.Driver))
		}
	case "ads1115":
		if a < 0x48 || a > 0x4b {
			v.at(p+".address", "%s.address %s: an ADS1115 answers at 0x48 (ADDR to GND), 0x49 (VDD), 0x4a (SDA) or 0x4b (SCL)", p, hexAddr(a))
		}
	}
}

func hexAddr(a int) string {
	if a < 0 {
		return strconv.Itoa(a)
	}
	return fmt.Sprintf("%#02x", a)
}

func (c *Config) validateBMx280(v *validator, p string, b *BMx280) {
	if b == nil {
		return
	}
	if !oneOfInt(b.Oversampling, 1, 2, 4, 8, 16) {
		v.at(p+".oversampling", "%s.oversampling %d: expected 1, 2, 4, 8 or 16", p, b.Oversampling)
	}
}

func (c *Config) validateDS18B20(v *validator, p string, s *Sensor) {
	d := s.DS18B20
	bp := p + ".ds18b20"
	if d.Resolution < 9 || d.Resolution > 12 {
		v.at(bp+".resolution", "%s.resolution %d: expected 9, 10, 11 or 12 bits", bp, d.Resolution)
	} else {
		conv := DS18B20Conversion(d.Resolution)
		if s.Interval.D() < conv {
			v.at(p+".interval", "%s.interval %s: a %d-bit DS18B20 conversion takes %s; use a longer interval or a lower resolution", p, s.Interval, d.Resolution, conv)
		} else if s.Timeout.D() < conv {
			v.at(p+".timeout", "%s.timeout %s: a %d-bit DS18B20 conversion takes %s", p, s.Timeout, d.Resolution, conv)
		}
	}
	addrs := map[string]int{}
	metrics := map[string]int{}
	for i, pr := range d.Probes {
		pp := fmt.Sprintf("%s.probes[%d]", bp, i)
		j, dupAddr := addrs[pr.Address]
		if !ds18b20Re.MatchString(pr.Address) {
			v.at(pp+".address", "%s.address %q: expected a DS18B20 address as in /sys/bus/w1/devices, e.g. 28-0316a2797aff", pp, pr.Address)
		} else if dupAddr {
			v.at(pp+".address", "%s.address %s is also probes[%d]", pp, pr.Address, j)
		}
		addrs[pr.Address] = i
		if !metricOK(pr.Metric) {
			v.at(pp+".metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", pp, pr.Metric)
		} else if j, dup := metrics[pr.Metric]; dup && !dupAddr {
			v.at(pp+".metric", "%s.metric %q is also the metric of probes[%d]", pp, pr.Metric, j)
		}
		metrics[pr.Metric] = i
	}
}

func (c *Config) validateADS1115(v *validator, p string, a *ADS1115) {
	bp := p + ".ads1115"
	if a == nil || len(a.Channels) == 0 {
		v.at(bp, "%s: an ads1115 sensor needs ads1115.channels, e.g. ads1115: {channels: [{channel: 0, metric: soil}]}", p)
		return
	}
	if !oneOfInt(a.DataRate, ADS1115DataRates...) {
		v.at(bp+".data_rate", "%s.data_rate %d: expected one of 8, 16, 32, 64, 128, 250, 475, 860 samples/s", bp, a.DataRate)
	}
	chans := map[string]int{}
	metrics := map[string]int{}
	for i, ch := range a.Channels {
		cp := fmt.Sprintf("%s.channels[%d]", bp, i)
		if !oneOf(ch.Channel, ADS1115Channels...) {
			v.at(cp+".channel", "%s.channel %q: expected 0, 1, 2 or 3 (against GND) or 0-1, 0-3, 1-3, 2-3 (differential)", cp, ch.Channel)
		} else if j, dup := chans[ch.Channel]; dup {
			v.at(cp+".channel", "%s.channel %s is also channels[%d]", cp, ch.Channel, j)
		}
		chans[ch.Channel] = i
		if !oneOf(ch.Gain, ADS1115Gains...) {
			v.at(cp+".gain", "%s.gain %q: expected 2/3 (±6.144 V), 1 (±4.096 V), 2 (±2.048 V), 4 (±1.024 V), 8 (±0.512 V) or 16 (±0.256 V)", cp, ch.Gain)
		}
		if !metricOK(ch.Metric) {
			v.at(cp+".metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", cp, ch.Metric)
		} else if j, dup := metrics[ch.Metric]; dup {
			v.at(cp+".metric", "%s.metric %q is also the metric of channels[%d]", cp, ch.Metric, j)
		}
		metrics[ch.Metric] = i
	}
}

func (c *Config) validateGPIO(v *validator, p string, g *GPIO) {
	bp := p + ".gpio"
	if g == nil || g.Pin == "" {
		v.at(bp, "%s: a gpio sensor needs gpio.pin, e.g. gpio: {pin: GPIO17}", p)
		return
	}
	if !gpioPinRe.MatchString(g.Pin) {
		v.at(bp+".pin", "%s.pin %q: expected a pin name such as GPIO17 (BCM numbering) or P1_11 (header position)", bp, g.Pin)
	}
	if !oneOf(g.Pull, "up", "down", "none") {
		v.at(bp+".pull", "%s.pull %q: expected up, down or none", bp, g.Pull)
	}
	if !oneOf(g.Mode, "level", "counter") {
		v.at(bp+".mode", "%s.mode %q: expected level or counter", bp, g.Mode)
	}
	if !oneOf(g.Edge, "falling", "rising", "both") {
		v.at(bp+".edge", "%s.edge %q: expected falling, rising or both", bp, g.Edge)
	}
	if g.Mode == "level" && (c.Has(bp+".edge") || c.Has(bp+".debounce")) {
		key := ".edge"
		if !c.Has(bp + key) {
			key = ".debounce"
		}
		v.at(bp+key, "%s%s: only for mode counter", bp, key)
	}
	if g.Debounce.D() > time.Second {
		v.at(bp+".debounce", "%s.debounce %s: at most 1s", bp, g.Debounce)
	}
}

func (c *Config) validateCalibration(v *validator, p string, s *Sensor) {
	if len(s.Calibration) == 0 {
		return
	}
	known := s.Metrics()
	for m, cal := range s.Calibration {
		cp := p + ".calibration." + m
		if len(known) > 0 && !oneOf(m, known...) {
			v.at(cp, "%s.calibration: unknown metric %q (driver %s publishes: %s)", p, m, s.Driver, strings.Join(known, ", "))
		}
		if cal.Scale == 0 || math.IsNaN(cal.Scale) {
			v.at(cp+".scale", "%s.scale: 0 would turn every reading into the offset", cp)
		}
		if strings.ContainsAny(cal.Unit, " \t\"\\") || len(cal.Unit) > 16 {
			v.at(cp+".unit", "%s.unit %q: a SenML unit such as Cel, %%RH, Pa, V, mm or 1/s", cp, cal.Unit)
		}
	}
}

func metricOK(m string) bool {
	return m != "" && len(m) <= 64 && !strings.ContainsAny(m, "/+#")
}

func oneOfInt(x int, allowed ...int) bool {
	for _, a := range allowed {
		if x == a {
			return true
		}
	}
	return false
}

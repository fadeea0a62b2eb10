package ads1115

import (
	"fmt"
	"slices"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

// Config is the ads1115 block of a sensor.
type Config struct {
	// DataRate in samples per second: 8, 16, 32, 64, 128, 250, 475 or 860. Default 128.
	DataRate int `yaml:"data_rate"`
	// Channels to read, each once per interval.
	Channels []Channel `yaml:"channels"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.DataRate = 128 }

// Channel is one input of the ADC.
type Channel struct {
	// Channel is 0–3 (single-ended, against GND) or 0-1, 0-3, 1-3, 2-3 (differential).
	Channel string `yaml:"channel"`
	// Metric names the reading; default ain<channel> (ain0, ain0-1).
	Metric string `yaml:"metric"`
	// Gain of the amplifier, which sets the full-scale range: 2/3 (±6.144 V), 1 (±4.096 V),
	// 2 (±2.048 V), 4 (±1.024 V), 8 (±0.512 V), 16 (±0.256 V). Default 1.
	Gain string `yaml:"gain"`
}

// SetDefaults implements conf.Defaulter.
func (c *Channel) SetDefaults() { c.Gain = "1" }

// Channels, Gains and DataRates are the values the ADC takes.
var (
	Channels  = []string{"0", "1", "2", "3", "0-1", "0-3", "1-3", "2-3"}
	Gains     = []string{"2/3", "1", "2", "4", "8", "16"}
	DataRates = []int{8, 16, 32, 64, 128, 250, 475, 860}
)

// Type is the ads1115 driver.
func Type() sensors.DriverType {
	return sensors.DriverType{
		Name: "ads1115", Bus: sensors.BusI2C, Address: 0x48,
		NewConfig: sensors.Defaulted[Config],
		Open:      New,
	}
}

// Resolve names the channels without a metric ain<channel>.
func (c *Config) Resolve() {
	for i := range c.Channels {
		if c.Channels[i].Metric == "" {
			c.Channels[i].Metric = "ain" + c.Channels[i].Channel
		}
	}
}

// Validate checks the address, the data rate and the channels.
func (c *Config) Validate(s *sensors.Config, r *conf.Reporter) {
	p := r.Path("")
	if a := s.Address; a < 0x48 || a > 0x4b {
		r.Errorf("address", "%s.address %s: an ADS1115 answers at 0x48 (ADDR to GND), 0x49 (VDD), 0x4a (SDA) or 0x4b (SCL)", p, sensors.HexAddress(a))
	}
	b := r.At("ads1115")
	bp := b.Path("")
	if len(c.Channels) == 0 {
		b.Errorf("", "%s: an ads1115 sensor needs ads1115.channels, e.g. ads1115: {channels: [{channel: 0, metric: soil}]}", p)
		return
	}
	if !slices.Contains(DataRates, c.DataRate) {
		b.Errorf("data_rate", "%s.data_rate %d: expected one of 8, 16, 32, 64, 128, 250, 475, 860 samples/s", bp, c.DataRate)
	}
	chans := map[string]int{}
	metrics := map[string]int{}
	for i, ch := range c.Channels {
		cr := b.At(fmt.Sprintf("channels[%d]", i))
		cp := cr.Path("")
		if !slices.Contains(Channels, ch.Channel) {
			cr.Errorf("channel", "%s.channel %q: expected 0, 1, 2 or 3 (against GND) or 0-1, 0-3, 1-3, 2-3 (differential)", cp, ch.Channel)
		} else if j, dup := chans[ch.Channel]; dup {
			cr.Errorf("channel", "%s.channel %s is also channels[%d]", cp, ch.Channel, j)
		}
		chans[ch.Channel] = i
		if !slices.Contains(Gains, ch.Gain) {
			cr.Errorf("gain", "%s.gain %q: expected 2/3 (±6.144 V), 1 (±4.096 V), 2 (±2.048 V), 4 (±1.024 V), 8 (±0.512 V) or 16 (±0.256 V)", cp, ch.Gain)
		}
		if !sensors.MetricOK(ch.Metric) {
			cr.Errorf("metric", "%s.metric %q: a non-empty name without '/', '+' or '#'", cp, ch.Metric)
		} else if j, dup := metrics[ch.Metric]; dup {
			cr.Errorf("metric", "%s.metric %q is also the metric of channels[%d]", cp, ch.Metric, j)
		}
		metrics[ch.Metric] = i
	}
}

// Metrics are the channels' metrics.
func (c *Config) Metrics() []string {
	var out []string
	for _, ch := range c.Channels {
		out = append(out, ch.Metric)
	}
	return out
}

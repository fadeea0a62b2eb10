// Package ads1115 is the driver of the TI ADS1115 16-bit ADC on I2C, written on
// periph.io's conn/v3 rather than devices' ads1x15: that driver sleeps exactly one
// conversion period and never checks the conversion-done bit, while the datasheet allows
// the data rate to run 10% slow; a late conversion then returns the previous channel's
// result. Here each single-shot conversion is waited for on the injected clock and
// confirmed by the OS bit before the result is read.
package ads1115

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/hw"
)

// Registers and config register bits (datasheet SBAS444, "Register Map").
const (
	regConversion = 0x00
	regConfig     = 0x01

	cfgOS       = 1 << 15 // write: start a conversion; read: 1 when idle
	cfgSingle   = 1 << 8  // single-shot mode
	cfgCompNone = 0x0003  // comparator disabled
)

var muxBits = map[string]uint16{
	"0-1": 0, "0-3": 1, "1-3": 2, "2-3": 3, "0": 4, "1": 5, "2": 6, "3": 7,
}

// gains maps the PGA setting to its bits and full-scale range in µV.
var gains = map[string]struct {
	bits uint16
	fsUV int64
}{
	"2/3": {0, 6144000}, "1": {1, 4096000}, "2": {2, 2048000},
	"4": {3, 1024000}, "8": {4, 512000}, "16": {5, 256000},
}

var rateBits = map[int]uint16{8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}

type channel struct {
	name   string
	metric string
	config [2]byte // with OS set: starts this channel's conversion
	fsUV   int64
}

// Driver reads the configured channels of one ADS1115.
type Driver struct {
	dev      i2c.Dev
	owned    i2c.BusCloser
	clk      clock.Clock
	chans    []channel
	wait     time.Duration // before the first check of the OS bit
	pollStep time.Duration // between further checks

	closeOnce sync.Once
	closeErr  error
}

var _ sensors.Driver = (*Driver)(nil)

// New is the Open of the ads1115 driver: it opens cfg.Bus and checks that the ADC answers
// at cfg.Address.
func New(cfg *sensors.Config, clk clock.Clock) (sensors.Driver, error) {
	c, ok := cfg.Device.(*Config)
	if !ok {
		return nil, fmt.Errorf("sensor %q: ads1115 block missing", cfg.Name)
	}
	bus, err := hw.OpenI2C(cfg.Bus)
	if err != nil {
		return nil, err
	}
	d, err := Open(bus, cfg.Bus, uint16(cfg.Address), *c, clk)
	if err != nil {
		bus.Close()
		return nil, err
	}
	return d, nil
}

// Open checks that the ADC answers at addr on bus (named busName in errors) and prepares
// the channels. When bus is an i2c.BusCloser, the driver owns it and closes it.
func Open(bus i2c.Bus, busName string, addr uint16, c Config, clk clock.Clock) (*Driver, error) {
	rate, ok := rateBits[c.DataRate]
	if !ok {
		return nil, fmt.Errorf("data rate %d: not an ADS1115 rate", c.DataRate)
	}
	period := time.Second / time.Duration(c.DataRate)
	d := &Driver{
		dev: i2c.Dev{Bus: bus, Addr: addr}, clk: clk,
		// The data rate may run 10% slow (datasheet, Electrical Characteristics: data rate
		// variation ±10%).
		wait:     period + period/10,
		pollStep: max(period/10, 100*time.Microsecond),
	}
	for _, ch := range c.Channels {
		mux, ok := muxBits[ch.Channel]
		g, gok := gains[ch.Gain]
		if !ok || !gok {
			return nil, fmt.Errorf("channel %q gain %q: not an ADS1115 input", ch.Channel, ch.Gain)
		}
		v := uint16(cfgOS) | mux<<12 | g.bits<<9 | cfgSingle | rate<<5 | cfgCompNone
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], v)
		d.chans = append(d.chans, channel{name: ch.Channel, metric: ch.Metric, config: b, fsUV: g.fsUV})
	}
	var reg [2]byte
	if err := d.dev.Tx([]byte{regConfig}, reg[:]); err != nil {
		return nil, hw.I2CNoAnswer(busName, addr, err)
	}
	if bc, ok := bus.(i2c.BusCloser); ok {
		d.owned = bc
	}
	return d, nil
}

var errNotDone = errors.New("conversion not done (is the ADC powered?)")

// Read converts each channel in turn and returns its voltage (V). A channel that fails is
// an error returned with the other channels' readings.
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	rs := make([]sensors.Reading, 0, len(d.chans))
	var errs []error
	for _, ch := range d.chans {
		v, err := d.convert(ctx, ch)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("channel %s: %w", ch.name, err))
			continue
		}
		rs = append(rs, sensors.Reading{Metric: ch.metric, Value: v, Unit: "V"})
	}
	return rs, errors.Join(errs...)
}

func (d *Driver) sleep(ctx context.Context, t time.Duration) error {
	select {
	case <-d.clk.After(t):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// convert runs one single-shot conversion: start it, wait a conversion period (plus the
// tolerance), poll the OS bit until the ADC is idle, read the result.
func (d *Driver) convert(ctx context.Context, ch channel) (float64, error) {
	if err := d.dev.Tx([]byte{regConfig, ch.config[0], ch.config[1]}, nil); err != nil {
		return 0, err
	}
	if err := d.sleep(ctx, d.wait); err != nil {
		return 0, err
	}
	for polls := 0; ; polls++ {
		var reg [2]byte
		if err := d.dev.Tx([]byte{regConfig}, reg[:]); err != nil {
			return 0, err
		}
		if binary.BigEndian.Uint16(reg[:])&cfgOS != 0 {
			break
		}
		if polls == 10 {
			return 0, errNotDone
		}
		if err := d.sleep(ctx, d.pollStep); err != nil {
			return 0, err
		}
	}
	var out [2]byte
	if err := d.dev.Tx([]byte{regConversion}, out[:]); err != nil {
		return 0, err
	}
	raw := int64(int16(binary.BigEndian.Uint16(out[:])))
	// One division of exact integers: the result is the correctly rounded voltage.
	return float64(raw*ch.fsUV) / (32768 * 1e6), nil
}

// Close closes the bus the driver opened. The ADC powers down by itself after a
// single-shot conversion.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		if d.owned != nil {
			d.closeErr = d.owned.Close()
		}
	})
	return d.closeErr
}

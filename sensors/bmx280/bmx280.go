// Package bmx280 is the driver of the Bosch BME280 (temperature, humidity, pressure) and
// BMP280 (temperature, pressure) on I2C, over periph.io's bmxx80 in forced mode: one
// measurement per read, the chip sleeping in between (no self-heating).
package bmx280

import (
	"context"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/hw"
)

// Chip ids (register 0xD0), datasheets §5.4.1 (BME280) and §4.3.1 (BMP280).
const (
	regChipID = 0xD0
	idBME280  = 0x60
	idBMP280  = 0x58
)

// Driver reads one BME280 or BMP280.
type Driver struct {
	dev      *bmxx80.Dev
	bus      i2c.BusCloser // closed by Close when the driver opened it
	humidity bool

	closeOnce sync.Once
	closeErr  error
}

var _ sensors.Driver = (*Driver)(nil)

// New is the Open of the bme280 and bmp280 drivers: it opens cfg.Bus and checks that the
// configured chip answers at cfg.Address.
func New(cfg *sensors.Config, _ clock.Clock) (sensors.Driver, error) {
	over := 1
	if c, ok := cfg.Device.(*Config); ok {
		over = c.Oversampling
	}
	bus, err := hw.OpenI2C(cfg.Bus)
	if err != nil {
		return nil, err
	}
	d, err := Open(bus, cfg.Bus, uint16(cfg.Address), cfg.Driver, over)
	if err != nil {
		bus.Close()
		return nil, err
	}
	return d, nil
}

// Open talks to the chip at addr on bus (named busName in errors): model is bme280 or
// bmp280, oversampling 1, 2, 4, 8 or 16. When bus is an i2c.BusCloser, the driver owns
// it and closes it.
func Open(bus i2c.Bus, busName string, addr uint16, model string, oversampling int) (*Driver, error) {
	// Read the chip id first, ourselves: bmxx80's errors lose whether the chip is absent
	// or another chip answers.
	var id [1]byte
	if err := bus.Tx(addr, []byte{regChipID}, id[:]); err != nil {
		return nil, hw.I2CNoAnswer(busName, addr, err)
	}
	at := fmt.Sprintf("%#02x on %s", addr, busName)
	switch {
	case id[0] == idBMP280 && model == "bme280":
		return nil, fmt.Errorf("the chip at %s is a BMP280 (chip id 0x58), which has no humidity sensor: set driver: bmp280", at)
	case id[0] != idBME280 && id[0] != idBMP280:
		return nil, fmt.Errorf("the chip at %s has id %#02x, not a BME280 (0x60) or BMP280 (0x58): another device answers at this address", at, id[0])
	}
	o, err := oversamplingOf(oversampling)
	if err != nil {
		return nil, err
	}
	humidity := id[0] == idBME280 && model == "bme280"
	opts := bmxx80.Opts{Temperature: o, Pressure: o, Humidity: bmxx80.Off}
	if humidity {
		opts.Humidity = o
	}
	dev, err := bmxx80.NewI2C(pairWrites{bus}, addr, &opts)
	if err != nil {
		return nil, fmt.Errorf("set up %s at %s: %w", model, at, err)
	}
	d := &Driver{dev: dev, humidity: humidity}
	if bc, ok := bus.(i2c.BusCloser); ok {
		d.bus = bc
	}
	return d, nil
}

// pairWrites sends a write of several register/value pairs as one write per pair. The
// chips take both alike (BME280 datasheet §6.2.1: a multi-byte write is register/data
// pairs), but an SMBus-only adapter sends a long write as an I²C block, and a chip that
// reads it as data for consecutive registers (the kernel's i2c-stub, standing in for a
// BME280) would get the results registers after ctrl_meas overwritten.
type pairWrites struct{ i2c.Bus }

func (p pairWrites) Tx(addr uint16, w, r []byte) error {
	if len(r) == 0 && len(w) > 2 && len(w)%2 == 0 {
		for i := 0; i < len(w); i += 2 {
			if err := p.Bus.Tx(addr, w[i:i+2], nil); err != nil {
				return err
			}
		}
		return nil
	}
	return p.Bus.Tx(addr, w, r)
}

func oversamplingOf(n int) (bmxx80.Oversampling, error) {
	switch n {
	case 1:
		return bmxx80.O1x, nil
	case 2:
		return bmxx80.O2x, nil
	case 4:
		return bmxx80.O4x, nil
	case 8:
		return bmxx80.O8x, nil
	case 16:
		return bmxx80.O16x, nil
	}
	return 0, fmt.Errorf("oversampling %d: expected 1, 2, 4, 8 or 16", n)
}

// Read triggers one forced measurement (a few ms to ~100 ms with 16x oversampling) and
// returns temperature (Cel), humidity (%RH, BME280 only) and pressure (Pa).
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var e physic.Env
	if err := d.dev.Sense(&e); err != nil {
		return nil, err
	}
	rs := make([]sensors.Reading, 0, 3)
	rs = append(rs, sensors.Reading{Metric: "temperature", Value: e.Temperature.Celsius(), Unit: "Cel"})
	if d.humidity {
		rs = append(rs, sensors.Reading{Metric: "humidity", Value: float64(e.Humidity) / float64(physic.PercentRH), Unit: "%RH"})
	}
	rs = append(rs, sensors.Reading{Metric: "pressure", Value: float64(e.Pressure) / float64(physic.Pascal), Unit: "Pa"})
	return rs, nil
}

// Close puts nothing to sleep (forced mode already sleeps) and closes the bus it opened.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		if err := d.dev.Halt(); err != nil {
			d.closeErr = err
		}
		if d.bus != nil {
			if err := d.bus.Close(); err != nil && d.closeErr == nil {
				d.closeErr = err
			}
		}
	})
	return d.closeErr
}

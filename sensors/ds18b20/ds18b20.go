// Package ds18b20 is the driver of Maxim DS18B20 temperature probes on a 1-Wire bus, over
// periph.io's ds18b20: one conversion for every probe of the bus at once, waited for on the
// injected clock, then one scratchpad read per probe.
package ds18b20

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ds18b20"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/hw"
)

const family = 0x28

// powerOn is the temperature register's reset value (datasheet: +85 °C). Read right after
// a conversion, it means the probe browned out or never converted.
var powerOn = 85*physic.Celsius + physic.ZeroCelsius

var errPowerOn = errors.New("reads the power-on value 85 °C: the conversion did not happen (check VDD and the 4.7 kΩ pull-up)")

type probe struct {
	name   string // 28-0316a2797aff
	metric string
	dev    *ds18b20.Dev
}

// Driver reads the DS18B20 probes of one sensor.
type Driver struct {
	bus        onewire.Bus
	owned      onewire.BusCloser
	clk        clock.Clock
	resolution int
	probes     []probe

	closeOnce sync.Once
	closeErr  error
}

var _ sensors.Driver = (*Driver)(nil)

// New is the Open of the ds18b20 driver: it opens cfg.Bus and finds the probes.
func New(cfg *sensors.Config, clk clock.Clock) (sensors.Driver, error) {
	c, ok := cfg.Device.(*Config)
	if !ok {
		return nil, fmt.Errorf("sensor %q: ds18b20 block missing", cfg.Name)
	}
	bus, err := hw.OpenOneWire(cfg.Bus)
	if err != nil {
		return nil, err
	}
	d, err := Open(bus, cfg.Bus, c.Resolution, c.Probes, clk)
	if err != nil {
		bus.Close()
		return nil, err
	}
	return d, nil
}

// ParseAddress turns a probe's Linux name (28-0316a2797aff: family, then the 48-bit serial)
// into its 64-bit ROM code, family in the low byte and the CRC in the high one.
func ParseAddress(s string) (onewire.Address, error) {
	fam, serial, ok := strings.Cut(s, "-")
	if !ok || fam != "28" || len(serial) != 12 {
		return 0, fmt.Errorf("probe address %q: expected 28- and 12 hex digits, e.g. 28-0316a2797aff", s)
	}
	id, err := strconv.ParseUint(serial, 16, 48)
	if err != nil {
		return 0, fmt.Errorf("probe address %q: %w", s, err)
	}
	rom := uint64(family) | id<<8
	var b [7]byte
	for i := range b {
		b[i] = byte(rom >> (8 * i))
	}
	return onewire.Address(rom | uint64(onewire.CalcCRC(b[:]))<<56), nil
}

// FormatAddress is the inverse of ParseAddress.
func FormatAddress(a onewire.Address) string {
	return fmt.Sprintf("%02x-%012x", byte(a), (uint64(a)>>8)&(1<<48-1))
}

// Open sets up the probes on bus (named busName in errors) at the given resolution (9–12
// bits). With no probes listed, it uses the single DS18B20 found on the bus. When bus is
// a onewire.BusCloser, the driver owns it and closes it.
func Open(bus onewire.Bus, busName string, resolution int, probes []Probe, clk clock.Clock) (*Driver, error) {
	found, err := bus.Search(false)
	if err != nil {
		return nil, &hw.Error{Bus: busName, Err: fmt.Errorf("search: %w", err),
			Fix: "check the data line's 4.7 kΩ pull-up to 3V3 and the probes' wiring"}
	}
	var names []string
	present := map[onewire.Address]bool{}
	for _, a := range found {
		if byte(a) == family {
			names = append(names, FormatAddress(a))
			present[a] = true
		}
	}
	slices.Sort(names)
	if len(probes) == 0 {
		switch len(names) {
		case 0:
			return nil, &hw.Error{Bus: busName, Err: errors.New("no DS18B20 found"),
				Fix: "check the probe's wiring (data with a 4.7 kΩ pull-up to 3V3, GND, VDD to 3V3)"}
		case 1:
			probes = []Probe{{Address: names[0], Metric: "temperature"}}
		default:
			return nil, &hw.Error{Bus: busName, Err: fmt.Errorf("%d DS18B20 found (%s)", len(names), strings.Join(names, ", ")),
				Fix: "list them under ds18b20.probes, each with its metric"}
		}
	}
	d := &Driver{bus: bus, clk: clk, resolution: resolution}
	for _, p := range probes {
		addr, err := ParseAddress(p.Address)
		if err != nil {
			return nil, err
		}
		if !present[addr] {
			return nil, hw.OneWireProbeMissing(busName, p.Address, names)
		}
		dev, err := ds18b20.New(bus, addr, resolution)
		if err != nil {
			return nil, &hw.Error{Bus: busName, Addr: p.Address, Err: err}
		}
		d.probes = append(d.probes, probe{name: p.Address, metric: p.Metric, dev: dev})
	}
	if bc, ok := bus.(onewire.BusCloser); ok {
		d.owned = bc
	}
	return d, nil
}

// Read starts a conversion on every probe of the bus at once, waits the conversion time of
// the resolution (up to 750 ms at 12 bits) on the clock, and reads each probe. A probe
// that does not answer is an error returned with the readings of the others.
func (d *Driver) Read(ctx context.Context) ([]sensors.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ds18b20.StartAll(d.bus); err != nil {
		return nil, fmt.Errorf("start conversion: %w", err)
	}
	select {
	case <-d.clk.After(Conversion(d.resolution)):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rs := make([]sensors.Reading, 0, len(d.probes))
	var errs []error
	for _, p := range d.probes {
		t, err := p.dev.LastTemp()
		if err == nil && t == powerOn {
			// periph means to reject this value but compares it with a temperature
			// difference, so it never matches: check it here.
			err = errPowerOn
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("probe %s: %w", p.name, err))
			continue
		}
		rs = append(rs, sensors.Reading{Metric: p.metric, Value: t.Celsius(), Unit: "Cel"})
	}
	return rs, errors.Join(errs...)
}

// Close closes the bus the driver opened.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		if d.owned != nil {
			d.closeErr = d.owned.Close()
		}
	})
	return d.closeErr
}

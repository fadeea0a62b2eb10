//go:build linux

package hw

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/host/v3"
	"periph.io/x/host/v3/netlink"
	"periph.io/x/host/v3/sysfs"
)

var (
	initOnce sync.Once
	initErr  error
)

// Init loads periph.io's host drivers once. On a machine without buses it succeeds:
// what is missing shows when a sensor opens its bus.
func Init() error {
	initOnce.Do(func() {
		if _, err := host.Init(); err != nil {
			initErr = fmt.Errorf("periph host init: %w", err)
		}
	})
	return initErr
}

// OpenI2C opens an I2C bus device (/dev/i2c-1). Each call opens its own handle, so each
// sensor closes its own; the kernel serialises transactions on the bus. An adapter that
// does only SMBus gets an SMBusBus.
func OpenI2C(bus string) (i2c.BusCloser, error) {
	n, err := I2CBusNumber(bus)
	if err != nil {
		return nil, err
	}
	if err := Init(); err != nil {
		return nil, err
	}
	// Check the device file first: periph's message for a missing bus is terse.
	f, err := os.OpenFile(bus, os.O_RDWR, 0)
	if err != nil {
		return nil, openError(bus, "I2C bus", err, func() string { return fixI2CBus(bus, n) }, "i2c")
	}
	if funcs, err := i2cFuncs(f); err == nil && smbusOnly(funcs) {
		return newSMBusBus(bus, funcs, &smbusFile{f}), nil
	}
	f.Close()
	b, err := sysfs.NewI2C(n)
	if err != nil {
		return nil, &Error{Bus: bus, Err: err}
	}
	return b, nil
}

// OpenOneWire opens a 1-Wire bus master (w1_bus_master1) through the kernel's w1 netlink
// interface.
func OpenOneWire(bus string) (onewire.BusCloser, error) {
	n, err := OneWireMaster(bus)
	if err != nil {
		return nil, err
	}
	if err := Init(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/bus/w1/devices/" + bus); err != nil {
		return nil, openError(bus, "1-Wire bus master", err, fixOneWireBus, "")
	}
	b, err := netlink.New(uint32(n))
	if err != nil {
		if strings.Contains(err.Error(), "permission") || strings.Contains(err.Error(), "not permitted") {
			return nil, &Error{Bus: bus, Err: err, Fix: fixPermission("the kernel's 1-Wire netlink socket", "")}
		}
		return nil, &Error{Bus: bus, Err: err}
	}
	return b, nil
}

// Pin returns a GPIO pin by name (GPIO17, P1_11).
func Pin(name string) (gpio.PinIO, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	p := gpioreg.ByName(name)
	if p == nil {
		fix := "check the pin name (BCM numbering: GPIO17 is header pin 11)"
		if _, err := os.Stat("/dev/gpiochip0"); errors.Is(err, os.ErrNotExist) {
			fix = "this machine has no GPIO controller (no /dev/gpiochip*)"
		} else if err != nil {
			fix = fixPermission("/dev/gpiochip*", "gpio")
		}
		return nil, &Error{Bus: name, Err: errors.New("no such GPIO pin"), Fix: fix}
	}
	return p, nil
}

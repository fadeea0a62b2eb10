//go:build !linux

package hw

import (
	"fmt"
	"runtime"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
)

func unsupported(what string) error {
	return fmt.Errorf("%s: %w (this build is %s/%s; build for linux/arm64, or use driver sim here)", what, ErrUnsupported, runtime.GOOS, runtime.GOARCH)
}

// Init fails: periph.io's bus drivers are Linux-only.
func Init() error { return unsupported("periph host init") }

// OpenI2C fails: I2C needs Linux.
func OpenI2C(bus string) (i2c.BusCloser, error) { return nil, unsupported("I2C bus " + bus) }

// OpenOneWire fails: 1-Wire needs Linux.
func OpenOneWire(bus string) (onewire.BusCloser, error) {
	return nil, unsupported("1-Wire bus " + bus)
}

// Pin fails: GPIO needs Linux.
func Pin(name string) (gpio.PinIO, error) { return nil, unsupported("GPIO pin " + name) }

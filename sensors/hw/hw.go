// Package hw opens the buses and pins that sensor drivers use, through periph.io's host
// drivers on Linux. Its errors name the bus, the address and the fix, because a missing
// bus or a miswired chip is the first thing a user meets.
package hw

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnsupported is returned on systems where periph.io has no host drivers for buses.
var ErrUnsupported = errors.New("hardware sensors need Linux")

// Error is a bus, device or pin that could not be opened or did not answer.
type Error struct {
	Bus  string // /dev/i2c-1, w1_bus_master1, GPIO17
	Addr string // 0x76, 28-0316a2797aff; empty for the bus itself
	Err  error
	Fix  string // what the user should do
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Addr != "" {
		fmt.Fprintf(&b, "device %s on %s: %v", e.Addr, e.Bus, e.Err)
	} else {
		fmt.Fprintf(&b, "%s: %v", e.Bus, e.Err)
	}
	if e.Fix != "" {
		b.WriteString("; ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

var (
	i2cBusRe     = regexp.MustCompile(`^/dev/i2c-([0-9]{1,3})$`)
	oneWireBusRe = regexp.MustCompile(`^w1_bus_master([0-9]{1,3})$`)
)

// I2CBusNumber parses /dev/i2c-N.
func I2CBusNumber(bus string) (int, error) {
	m := i2cBusRe.FindStringSubmatch(bus)
	if m == nil {
		return 0, fmt.Errorf("I2C bus %q: expected /dev/i2c-N", bus)
	}
	return strconv.Atoi(m[1])
}

// OneWireMaster parses w1_bus_masterN.
func OneWireMaster(bus string) (int, error) {
	m := oneWireBusRe.FindStringSubmatch(bus)
	if m == nil {
		return 0, fmt.Errorf("1-Wire bus %q: expected w1_bus_masterN", bus)
	}
	return strconv.Atoi(m[1])
}

// Fixes, shared by the platform files and the drivers.

func fixI2CBus(bus string, n int) string {
	if n == 1 {
		return fmt.Sprintf("enable I2C: sudo raspi-config nonint do_i2c 0 (or add dtparam=i2c_arm=on to /boot/firmware/config.txt), then reboot; ls /dev/i2c-* lists the buses (bus: %s)", bus)
	}
	return fmt.Sprintf("enable the I2C bus (a dtoverlay in /boot/firmware/config.txt), then reboot; ls /dev/i2c-* lists the buses (bus: %s)", bus)
}

func fixPermission(what, group string) string {
	if group == "" {
		return fmt.Sprintf("permission denied on %s: run edgegate as root", what)
	}
	return fmt.Sprintf("permission denied on %s: run edgegate as root or in group %s (SupplementaryGroups=%s in the systemd unit)", what, group, group)
}

// deviceClass is the systemd device class (DeviceAllow=char-…, from /proc/devices) of the
// device files a group gives access to.
var deviceClass = map[string]string{"i2c": "char-i2c", "gpio": "char-gpiochip"}

func fixDevicePolicy(what, class string) string {
	return fmt.Sprintf("the service's device policy blocks %s: the unit needs DeviceAllow=%s rw (the packaged unit has it; check systemctl cat edgegate for a drop-in that resets DeviceAllow=)", what, class)
}

func fixOneWireBus() string {
	return "enable 1-Wire: sudo raspi-config nonint do_onewire 0 (or add dtoverlay=w1-gpio to /boot/firmware/config.txt; data on GPIO4 with a 4.7 kΩ pull-up to 3V3), then reboot; ls /sys/bus/w1/devices lists the masters"
}

// I2CNoAnswer wraps the failure of the first transaction with a chip: nobody answered.
func I2CNoAnswer(bus string, addr uint16, err error) error {
	n, _ := I2CBusNumber(bus)
	return &Error{Bus: bus, Addr: fmt.Sprintf("%#02x", addr), Err: fmt.Errorf("no answer: %w", err),
		Fix: fmt.Sprintf("check the wiring (SDA to GPIO2/pin 3, SCL to GPIO3/pin 5, VCC to 3V3, GND) and the address; i2cdetect -y %d lists the addresses that answer", n)}
}

// OneWireProbeMissing reports a probe that is not on the bus.
func OneWireProbeMissing(bus, addr string, found []string) error {
	seen := "no probe answered"
	if len(found) > 0 {
		seen = "the bus has " + strings.Join(found, ", ")
	}
	return &Error{Bus: bus, Addr: addr, Err: errors.New("not found"),
		Fix: fmt.Sprintf("%s; check the probe's wiring (data with a 4.7 kΩ pull-up to 3V3) and its address in ls /sys/bus/w1/devices", seen)}
}

// openError classifies an error from opening a device file.
func openError(bus, what string, err error, notExist func() string, group string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return &Error{Bus: bus, Err: fmt.Errorf("no such %s", what), Fix: notExist()}
	case errors.Is(err, syscall.EPERM) && deviceClass[group] != "":
		// Not the file's mode (that is EACCES): a device cgroup refuses it, as systemd's
		// DevicePolicy=closed does for a device missing from DeviceAllow.
		return &Error{Bus: bus, Err: err, Fix: fixDevicePolicy(bus, deviceClass[group])}
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return &Error{Bus: bus, Err: err, Fix: fixPermission(bus, group)}
	}
	return &Error{Bus: bus, Err: err}
}

//go:build linux

package hw

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMissingBusesNameTheFix runs on a machine without the buses (CI, a laptop): each
// error names the bus and says how to enable it. On a board that has them, the cases
// that would open real hardware are skipped.
func TestMissingBusesNameTheFix(t *testing.T) {
	if err := Init(); err != nil {
		t.Fatalf("periph host init must succeed without buses: %v", err)
	}
	tests := []struct {
		name string
		path string // skip when it exists
		open func() error
		want []string
	}{
		{"i2c-1", "/dev/i2c-1", func() error { _, err := OpenI2C("/dev/i2c-1"); return err },
			[]string{"/dev/i2c-1: no such I2C bus", "raspi-config nonint do_i2c 0", "dtparam=i2c_arm=on", "reboot"}},
		{"i2c-7", "/dev/i2c-7", func() error { _, err := OpenI2C("/dev/i2c-7"); return err },
			[]string{"/dev/i2c-7: no such I2C bus", "enable the I2C bus"}},
		{"w1", "/sys/bus/w1/devices/w1_bus_master1", func() error { _, err := OpenOneWire("w1_bus_master1"); return err },
			[]string{"w1_bus_master1: no such 1-Wire bus master", "raspi-config nonint do_onewire 0", "dtoverlay=w1-gpio", "4.7 kΩ"}},
		{"gpio", "/dev/gpiochip0", func() error { _, err := Pin("GPIO17"); return err },
			[]string{"GPIO17: no such GPIO pin", "no GPIO controller"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); err == nil {
				t.Skipf("%s exists on this machine", tt.path)
			}
			err := tt.open()
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("error %v is not a *hw.Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestBusNames(t *testing.T) {
	if n, err := I2CBusNumber("/dev/i2c-11"); err != nil || n != 11 {
		t.Errorf("I2CBusNumber = %d, %v", n, err)
	}
	if n, err := OneWireMaster("w1_bus_master2"); err != nil || n != 2 {
		t.Errorf("OneWireMaster = %d, %v", n, err)
	}
	for _, bad := range []string{"i2c-1", "/dev/i2c-", "/dev/i2c-1x"} {
		if _, err := I2CBusNumber(bad); err == nil {
			t.Errorf("I2CBusNumber(%q) accepted", bad)
		}
	}
	if _, err := OpenI2C("I2C1"); err == nil || !strings.Contains(err.Error(), "expected /dev/i2c-N") {
		t.Errorf("OpenI2C(I2C1) = %v", err)
	}
}

func TestNoAnswerNamesBusAddressAndFix(t *testing.T) {
	err := I2CNoAnswer("/dev/i2c-1", 0x76, errors.New("remote I/O error"))
	want := "device 0x76 on /dev/i2c-1: no answer: remote I/O error; check the wiring (SDA to GPIO2/pin 3, SCL to GPIO3/pin 5, VCC to 3V3, GND) and the address; i2cdetect -y 1 lists the addresses that answer"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
	err = OneWireProbeMissing("w1_bus_master1", "28-0316a2797aff", []string{"28-0316a2797b00"})
	if !strings.Contains(err.Error(), "device 28-0316a2797aff on w1_bus_master1: not found; the bus has 28-0316a2797b00") {
		t.Errorf("got %s", err)
	}
}

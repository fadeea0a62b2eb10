//go:build !linux

package hw

import (
	"errors"
	"strings"
	"testing"
)

// TestUnsupported: off Linux every opener fails with ErrUnsupported and says what to do.
func TestUnsupported(t *testing.T) {
	_, e1 := OpenI2C("/dev/i2c-1")
	_, e2 := OpenOneWire("w1_bus_master1")
	_, e3 := Pin("GPIO17")
	for _, err := range []error{Init(), e1, e2, e3} {
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "build for linux/arm64, or use driver sim here") {
			t.Errorf("error %v", err)
		}
	}
}

package ds18b20

import (
	"testing"
	"time"
)

func TestConversion(t *testing.T) {
	want := map[int]time.Duration{9: 93750 * time.Microsecond, 10: 187500 * time.Microsecond, 11: 375 * time.Millisecond, 12: 750 * time.Millisecond}
	for bits, d := range want {
		if got := Conversion(bits); got != d {
			t.Errorf("Conversion(%d) = %s, want %s", bits, got, d)
		}
	}
}

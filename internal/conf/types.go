package conf

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a Go-style duration in the config ("10s", "1m", "24h"; "0" or "0s" for none).
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// DecodeScalar implements ScalarDecoder.
func (d *Duration) DecodeScalar(value string) error {
	if value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(value)
	if err != nil {
		return fmt.Errorf("expected a duration such as 500ms, 10s, 1m or 24h, found %q", value)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", value)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size in bytes, written with a unit: 64KiB, 512MiB, 1GiB (or kB/MB/GB for
// powers of ten, or a plain number of bytes).
type ByteSize int64

func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", int64(b))
}

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseByteSize parses a size such as 64KiB or 512MiB.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("expected a size such as 64KiB, 16MiB or 1GiB, found %q", s)
	}
	return ByteSize(f * mult), nil
}

// DecodeScalar implements ScalarDecoder.
func (b *ByteSize) DecodeScalar(value string) error {
	v, err := ParseByteSize(value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

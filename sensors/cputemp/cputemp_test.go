package cputemp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/sensors"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "temp")
	tests := []struct {
		content string
		want    float64
	}{
		{"48312\n", 48.312}, {"0\n", 0}, {"-5250", -5.25}, {"105000\n", 105},
	}
	os.WriteFile(path, []byte(tests[0].content), 0o644)
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		os.WriteFile(path, []byte(tt.content), 0o644)
		rs, err := d.Read(context.Background())
		if err != nil || len(rs) != 1 || rs[0] != (sensors.Reading{Metric: "temperature", Value: tt.want, Unit: "Cel"}) {
			t.Errorf("%q: %+v, %v", tt.content, rs, err)
		}
	}
	os.WriteFile(path, []byte("hot\n"), 0o644)
	if _, err := d.Read(context.Background()); err == nil || !strings.Contains(err.Error(), `expected millidegrees Celsius, found "hot"`) {
		t.Errorf("garbage: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMissingZone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "thermal_zone9", "temp")
	_, err := Open(path)
	want := path + ": no such thermal zone; ls /sys/class/thermal/ lists this board's zones; set cpu_temp.path to one of their temp files"
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}

// TestThisMachine reads the real zone when the machine has one.
func TestThisMachine(t *testing.T) {
	const zone = "/sys/class/thermal/thermal_zone0/temp"
	if _, err := os.Stat(zone); err != nil {
		t.Skipf("no %s here", zone)
	}
	d, err := Open(zone)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if err != nil || rs[0].Value < -40 || rs[0].Value > 150 {
		t.Errorf("%+v, %v", rs, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"48312\n", "-5250", " 7 ", "", "1e3", "99999999999"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Parse(b)
		if err == nil && (v < -2147484 || v > 2147484) {
			t.Fatalf("Parse(%q) = %v: out of the int32 millidegree range", b, v)
		}
	})
}

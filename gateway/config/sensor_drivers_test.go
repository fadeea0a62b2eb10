package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/ads1115"
	"github.com/edgegate/edgegate/sensors/bmx280"
	"github.com/edgegate/edgegate/sensors/cputemp"
	"github.com/edgegate/edgegate/sensors/ds18b20"
	"github.com/edgegate/edgegate/sensors/gpiosensor"
)

// TestSensorHardwareDefaults checks the defaults that depend on the driver, and the
// metrics each driver publishes (what calibration keys and topics refer to).
func TestSensorHardwareDefaults(t *testing.T) {
	c, err := Load("testdata/sensors_hw.good.yml", full)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]sensors.Config{}
	for _, s := range c.Sensors {
		byName[s.Name] = s
	}
	tests := []struct {
		name    string
		bus     string
		addr    int
		timeout time.Duration
		metrics []string
	}{
		{"greenhouse", "/dev/i2c-1", 0x76, 10 * time.Second, []string{"temperature", "humidity", "pressure"}},
		{"attic", "/dev/i2c-1", 0x77, 10 * time.Second, []string{"temperature", "pressure"}},
		{"tank", "w1_bus_master1", 0, 10 * time.Second, []string{"top", "bottom"}},
		{"pipe", "w1_bus_master1", 0, 10 * time.Second, []string{"temperature"}},
		{"soil", "/dev/i2c-1", 0x49, 2 * time.Second, []string{"moisture", "ain2-3"}},
		{"rain", "", 0, 10 * time.Second, []string{"count", "rate"}},
		{"door", "", 0, 10 * time.Second, []string{"level"}},
		{"board", "", 0, 10 * time.Second, []string{"temperature"}},
	}
	for _, tt := range tests {
		s, ok := byName[tt.name]
		if !ok {
			t.Fatalf("sensor %s missing", tt.name)
		}
		if s.Bus != tt.bus || s.Address != tt.addr || s.Timeout.D() != tt.timeout {
			t.Errorf("%s: bus %q address %#x timeout %s; want %q %#x %s", tt.name, s.Bus, s.Address, s.Timeout, tt.bus, tt.addr, tt.timeout)
		}
		if got := s.Metrics(); !reflect.DeepEqual(got, tt.metrics) {
			t.Errorf("%s: metrics %v, want %v", tt.name, got, tt.metrics)
		}
	}
	if s := byName["greenhouse"]; s.Device.(*bmx280.Config).Oversampling != 1 || s.OnMissing != "fail" {
		t.Errorf("bme280 defaults: %+v", s)
	}
	if s := byName["attic"]; s.OnMissing != "degraded" || s.Device.(*bmx280.Config).Oversampling != 16 {
		t.Errorf("bmp280: %+v", s)
	}
	if p := byName["tank"].Device.(*ds18b20.Config).Probes[0]; p.Address != "28-0316a2797aff" {
		t.Errorf("probe address not normalised to lower case: %q", p.Address)
	}
	if d := byName["pipe"].Device.(*ds18b20.Config); d == nil || d.Resolution != 12 || len(d.Probes) != 0 {
		t.Errorf("ds18b20 defaults: %+v", d)
	}
	if ch := byName["soil"].Device.(*ads1115.Config).Channels; ch[0].Gain != "1" || ch[1].Gain != "2/3" {
		t.Errorf("ads1115 gains: %+v", ch)
	}
	if g := byName["door"].Device.(*gpiosensor.Config); g.Pull != "none" || g.Mode != "level" {
		t.Errorf("gpio defaults: %+v", g)
	}
	if cal := byName["greenhouse"].Calibration["temperature"]; cal.Scale != 1 || cal.Offset != -0.4 {
		t.Errorf("calibration defaults: %+v", cal)
	}
	if cal := byName["rain"].Calibration["count"]; cal.Scale != 0.2794 || cal.Unit != "mm" {
		t.Errorf("calibration: %+v", cal)
	}
	if p := byName["board"].Device.(*cputemp.Config).Path; p != "/sys/class/thermal/thermal_zone1/temp" {
		t.Errorf("cpu_temp path %q", p)
	}
}

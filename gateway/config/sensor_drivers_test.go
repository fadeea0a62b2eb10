package config

import (
	"reflect"
	"testing"
	"time"
)

// TestSensorHardwareDefaults checks the defaults that depend on the driver, and the
// metrics each driver publishes (what calibration keys and topics refer to).
func TestSensorHardwareDefaults(t *testing.T) {
	c, err := Load("testdata/sensors_hw.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Sensor{}
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
	if s := byName["greenhouse"]; s.BME280 == nil || s.BME280.Oversampling != 1 || s.OnMissing != "fail" {
		t.Errorf("bme280 defaults: %+v", s)
	}
	if s := byName["attic"]; s.OnMissing != "degraded" || s.BMP280.Oversampling != 16 {
		t.Errorf("bmp280: %+v", s)
	}
	if p := byName["tank"].DS18B20.Probes[0]; p.Address != "28-0316a2797aff" {
		t.Errorf("probe address not normalised to lower case: %q", p.Address)
	}
	if d := byName["pipe"].DS18B20; d == nil || d.Resolution != 12 || len(d.Probes) != 0 {
		t.Errorf("ds18b20 defaults: %+v", d)
	}
	if ch := byName["soil"].ADS1115.Channels; ch[0].Gain != "1" || ch[1].Gain != "2/3" {
		t.Errorf("ads1115 gains: %+v", ch)
	}
	if g := byName["door"].GPIO; g.Pull != "none" || g.Mode != "level" {
		t.Errorf("gpio defaults: %+v", g)
	}
	if cal := byName["greenhouse"].Calibration["temperature"]; cal.Scale != 1 || cal.Offset != -0.4 {
		t.Errorf("calibration defaults: %+v", cal)
	}
	if cal := byName["rain"].Calibration["count"]; cal.Scale != 0.2794 || cal.Unit != "mm" {
		t.Errorf("calibration: %+v", cal)
	}
	if p := byName["board"].CPUTemp.Path; p != "/sys/class/thermal/thermal_zone1/temp" {
		t.Errorf("cpu_temp path %q", p)
	}
}

func TestDS18B20Conversion(t *testing.T) {
	want := map[int]time.Duration{9: 93750 * time.Microsecond, 10: 187500 * time.Microsecond, 11: 375 * time.Millisecond, 12: 750 * time.Millisecond}
	for bits, d := range want {
		if got := DS18B20Conversion(bits); got != d {
			t.Errorf("DS18B20Conversion(%d) = %s, want %s", bits, got, d)
		}
	}
}

package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/sensors"
)

// TestHardwareSensorsDegradedStart: a thermal-zone sensor's calibrated readings take the
// ingest path to the upstream, while a BME280 on a bus this machine lacks runs degraded:
// marked down in the gateway's sensor status with an error that names the bus and the fix,
// and without delaying the other sensor.
func TestHardwareSensorsDegradedStart(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hardware drivers need Linux")
	}
	const bus = "/dev/i2c-97"
	if _, err := os.Stat(bus); err == nil {
		t.Skipf("%s exists here", bus)
	}
	dir := t.TempDir()
	zone := filepath.Join(dir, "temp")
	if err := os.WriteFile(zone, []byte("41500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := testutil.StartMochi(t, "127.0.0.1:0")
	path := writeConfig(t, dir, "127.0.0.1:0", fmt.Sprintf(`
sensors:
  - name: board
    driver: cpu_temp
    interval: 50ms
    cpu_temp: {path: %q}
    calibration: {temperature: {offset: -1.5}}
  - name: greenhouse
    driver: bme280
    bus: %s
    address: 0x77
    interval: 50ms
    on_missing: degraded
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: 50ms}}
`, zone, bus, up.URL()))
	r := start(t, path, clock.Real{})
	testutil.Eventually(t, 10*time.Second, "cpu_temp readings upstream", func() bool {
		return len(upstreamRecords(t, up.Messages())) >= 3
	})
	for _, rec := range upstreamRecords(t, up.Messages()) {
		if rec.Series != "board/temperature" || rec.Topic != "sensors/board/temperature" || rec.Unit != "Cel" || rec.Value != 40 {
			t.Fatalf("record = %+v, want board/temperature 40 Cel", rec)
		}
	}
	var st []sensors.Status
	testutil.Eventually(t, 10*time.Second, "the missing BME280 retried", func() bool {
		st = r.g.Sensors()
		return len(st) == 2 && st[1].ConsecutiveFailures >= 1
	})
	if st[0].Name != "board" || st[0].State != sensors.StateUp || st[0].Published < 3 {
		t.Errorf("board status %+v", st[0])
	}
	g := st[1]
	if g.Name != "greenhouse" || g.State != sensors.StateDown || g.Driver != "bme280" ||
		!strings.Contains(g.LastError, bus+": no such I2C bus; enable the I2C bus") || g.NextAttempt == nil {
		t.Errorf("greenhouse status %+v", g)
	}
}

// TestMissingDeviceStopsStartup: with on_missing left at fail, the gateway does not start,
// and the error names the sensor, the bus and the fix.
func TestMissingDeviceStopsStartup(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hardware drivers need Linux")
	}
	const bus = "/dev/i2c-98"
	if _, err := os.Stat(bus); err == nil {
		t.Skipf("%s exists here", bus)
	}
	dir := t.TempDir()
	path := writeConfig(t, dir, "127.0.0.1:0", `
sensors:
  - {name: greenhouse, driver: bme280, bus: /dev/i2c-98}
`)
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = gateway.New(cfg, gateway.Options{Logger: testLogger(t)})
	want := `sensor "greenhouse" (bme280): /dev/i2c-98: no such I2C bus; enable the I2C bus (a dtoverlay in /boot/firmware/config.txt), then reboot; ls /dev/i2c-* lists the buses (bus: /dev/i2c-98) (or set on_missing: degraded to start without it)`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "buffer")); err == nil {
		t.Error("the store was opened although a sensor failed")
	}
}

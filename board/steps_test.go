package board

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/loadgen"
	"github.com/edgegate/edgegate/record"
)

// The BMP280 datasheet's worked example (BST-BMP280-DS001, §3.11.3, §8.1–8.2): trimming
// values and raw readings for which it gives T = 25.08 °C and p = 100653.27 Pa. The BME280
// datasheet has no humidity example: the humidity trimming values are a real chip's, and
// the expected humidity is the datasheet's double-precision formula (§8.1) applied to them.
var (
	bmeT    = [3]int{27504, 26435, -1000}
	bmeP    = [9]int{36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000}
	bmeADCT = 519888
	bmeADCP = 415148
	bmeH1   = 75
	bmeH    = [5]int{366, 0, 309, 0, 30} // H2..H6
	bmeADCH = 27187
)

// bmeRegisters returns the BME280's registers as (register, value) pairs: chip id 0x60,
// calibration 0x88..0xA1 and 0xE1..0xE7, results 0xF7..0xFE.
func bmeRegisters() [][2]byte {
	var regs [][2]byte
	calib := make([]byte, 26)
	for i, v := range append(bmeT[:], bmeP[:]...) {
		binary.LittleEndian.PutUint16(calib[2*i:], uint16(int16(v)))
	}
	binary.LittleEndian.PutUint16(calib[0:], uint16(bmeT[0])) // T1 and P1 are unsigned
	binary.LittleEndian.PutUint16(calib[6:], uint16(bmeP[0]))
	calib[25] = byte(bmeH1)
	for i, v := range calib {
		regs = append(regs, [2]byte{0x88 + byte(i), v})
	}
	h2, h3, h4, h5, h6 := bmeH[0], bmeH[1], bmeH[2], bmeH[3], bmeH[4]
	for i, v := range []byte{byte(h2), byte(h2 >> 8), byte(h3), byte(h4 >> 4), byte(h4&0xF) | byte(h5&0xF)<<4, byte(h5 >> 4), byte(int8(h6))} {
		regs = append(regs, [2]byte{0xE1 + byte(i), v})
	}
	for i, v := range []byte{byte(bmeADCP >> 12), byte(bmeADCP >> 4), byte(bmeADCP << 4), byte(bmeADCT >> 12), byte(bmeADCT >> 4), byte(bmeADCT << 4), byte(bmeADCH >> 8), byte(bmeADCH)} {
		regs = append(regs, [2]byte{0xF7 + byte(i), v})
	}
	return append(regs, [2]byte{0xD0, 0x60})
}

// bmeHumidity is the datasheet's double-precision humidity compensation (§8.1).
func bmeHumidity() float64 {
	t1, t2, t3 := float64(bmeT[0]), float64(bmeT[1]), float64(bmeT[2])
	v1 := (float64(bmeADCT)/16384 - t1/1024) * t2
	v2 := (float64(bmeADCT)/131072 - t1/8192) * (float64(bmeADCT)/131072 - t1/8192) * t3
	tFine := math.Floor(v1 + v2)
	h2, h3, h4, h5, h6 := float64(bmeH[0]), float64(bmeH[1]), float64(bmeH[2]), float64(bmeH[3]), float64(bmeH[4])
	h := tFine - 76800
	h = (float64(bmeADCH) - (h4*64 + h5/16384*h)) * (h2 / 65536 * (1 + h6/67108864*h*(1+h3/67108864*h)))
	h = h * (1 - float64(bmeH1)*h/524288)
	return math.Max(0, math.Min(100, h))
}

// gpio-sim's configfs: one bank of 8 lines, line 0 named GPIO17 as on a Pi's header.
const gpioSimSetup = `set -e
modprobe gpio-sim
d=/sys/kernel/config/gpio-sim/board
if [ ! -d $d ]; then
	mkdir $d $d/bank0 $d/bank0/line0
	echo 8 >$d/bank0/num_lines
	echo GPIO17 >$d/bank0/line0/name
	echo 1 >$d/live
fi
chip=$(cat $d/bank0/chip_name)
udevadm settle
echo /sys/devices/platform/$(cat $d/dev_name)/$chip/sim_gpio0/pull`

// 3. The hardened unit holds (no writes outside the state directory; alive under 10k msg/s
// within MemoryMax with GOMEMLIMIT), and the real bus path works: a BME280 on i2c-stub and
// a counter on a gpio-sim line, through DeviceAllow, the i2c/gpio groups and periph.
func (b *board) stepHardening(t *testing.T) {
	u := b.unit(t, "MainPID", "NRestarts", "MemoryMax")
	pid := u["MainPID"]

	// Writes, as root inside the daemon's mount namespace (ProtectSystem=strict,
	// ProtectHome, PrivateTmp) and as the daemon's user.
	probe := `for p in /etc /usr /var/lib /var/log /root /home /opt /srv /var/lib/edgegate /tmp; do
		if touch $p/.board-probe 2>/dev/null; then echo "$p writable"; rm -f $p/.board-probe; else echo "$p read-only"; fi
	done`
	for _, who := range []string{"root", "edgegate"} {
		cmd := fmt.Sprintf("nsenter -t %s -m -- setpriv --reuid=%s --regid=%s --init-groups sh -c '%s'", pid, who, who, probe)
		out := b.vm.MustRun(t, cmd)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			path, verdict, _ := strings.Cut(l, " ")
			want := "read-only"
			if path == "/var/lib/edgegate" || path == "/tmp" {
				want = "writable"
			}
			if verdict != want {
				t.Errorf("as %s in the daemon's namespace: %s is %s, want %s", who, path, verdict, want)
			}
		}
		t.Logf("as %s in the daemon's mount namespace:\n%s", who, out)
	}

	// 10k msg/s offered by the project's load generator, QoS 1, ten publishers.
	clients, err := loadgen.Connect(b.vm.MQTT, 10, "mem")
	if err != nil {
		t.Fatal(err)
	}
	res, err := loadgen.Run(context.Background(), clients, loadgen.Config{Publishers: 10,
		Topic: func(i int) string { return fmt.Sprintf("devices/mem-%d/value", i) }, IDPrefix: "mem", Window: 64,
		Rate: 10000, Duration: 45 * time.Second})
	loadgen.Disconnect(clients)
	if err != nil {
		t.Errorf("load: %v", err)
	}
	cg := "/sys/fs/cgroup/system.slice/edgegate.service"
	after := b.unit(t, "MainPID", "NRestarts")
	peak := strings.TrimSpace(b.vm.MustRun(t, "cat "+cg+"/memory.peak"))
	events := b.vm.MustRun(t, "cat "+cg+"/memory.events")
	env := b.vm.MustRun(t, "tr '\\0' '\\n' </proc/"+after["MainPID"]+"/environ | grep GOMEMLIMIT || true")
	peakB, _ := strconv.ParseFloat(peak, 64)
	b.fig(t, "10k msg/s offered: acknowledged", "%.0f msg/s (p99 PUBACK %s, max lag %s)", res.Throughput(), res.Percentile(99).Round(time.Millisecond), res.MaxLag.Round(time.Millisecond))
	maxB, _ := strconv.ParseFloat(u["MemoryMax"], 64)
	b.fig(t, "10k msg/s: cgroup memory peak", "%.0f MiB of MemoryMax %.0f MiB (%s)", peakB/(1<<20), maxB/(1<<20), strings.TrimSpace(env))
	if after["MainPID"] != pid || after["NRestarts"] != u["NRestarts"] {
		t.Errorf("the daemon restarted under load: before %v, after %v", u, after)
	}
	if !strings.Contains(events, "oom_kill 0") {
		t.Errorf("memory.events: %s", events)
	}
	if !strings.Contains(env, "GOMEMLIMIT=") {
		t.Errorf("the daemon runs without GOMEMLIMIT")
	}

	// The simulated buses. i2c-stub answers at 0x76 with the worked example's registers.
	bus := strings.TrimSpace(b.vm.MustRun(t, `modprobe i2c-dev && modprobe i2c-stub chip_addr=0x76 &&
		for d in /sys/bus/i2c/devices/i2c-*; do grep -q "SMBus stub" $d/name && basename $d; done`))
	if !strings.HasPrefix(bus, "i2c-") {
		t.Fatalf("no i2c-stub bus: %q", bus)
	}
	n := strings.TrimPrefix(bus, "i2c-")
	var set strings.Builder
	for _, r := range bmeRegisters() {
		fmt.Fprintf(&set, "i2cset -y %s 0x76 %#02x %#02x b\n", n, r[0], r[1])
	}
	b.vm.MustRun(t, set.String())
	t.Logf("i2cdump of the stub:\n%s", b.vm.MustRun(t, "i2cdump -y "+n+" 0x76 b"))
	pull := strings.TrimSpace(b.vm.MustRun(t, gpioSimSetup))
	t.Logf("/dev: %s", b.vm.MustRun(t, "ls -l /dev/i2c-* /dev/gpiochip*"))

	b.sensors = fmt.Sprintf(`sensors:
  - name: bme
    driver: bme280
    bus: /dev/%s
    address: 0x76
    interval: 2s
    on_missing: degraded
  - name: rain
    driver: gpio
    interval: 2s
    on_missing: degraded
    gpio: {pin: GPIO17, pull: none, mode: counter, edge: rising}
`, bus)
	b.writeConfig(t)
	b.vm.MustRun(t, "systemctl restart edgegate.service")
	if _, err := b.vm.WaitReady(2 * time.Minute); err != nil {
		t.Fatal(err)
	}

	// The datasheet's values upstream.
	eventually(t, 2*time.Minute, "bme readings upstream", func() bool { return len(b.up.Records("bme/")) >= 3 })
	got := map[string]float64{}
	for _, r := range b.up.Records("bme/") {
		if r.Value != nil {
			got[strings.TrimPrefix(r.Series, "bme/")] = *r.Value
		}
	}
	b.fig(t, "BME280 on i2c-stub, upstream", "%.2f Cel, %.4f %%RH, %.2f Pa", got["temperature"], got["humidity"], got["pressure"])
	if math.Abs(got["temperature"]-25.08) > 0.005 {
		t.Errorf("temperature %v, the datasheet gives 25.08 °C", got["temperature"])
	}
	if math.Abs(got["pressure"]-100653.27) > 0.05 {
		t.Errorf("pressure %v, the datasheet gives 100653.27 Pa", got["pressure"])
	}
	if h := bmeHumidity(); math.Abs(got["humidity"]-h) > 0.01 {
		t.Errorf("humidity %v, the datasheet's formula gives %.4f %%RH", got["humidity"], h)
	}

	// Edges on the simulated line: 25 rising edges, counted.
	const edges = 25
	var toggle strings.Builder
	for range edges {
		fmt.Fprintf(&toggle, "echo pull-up >%s; sleep 0.05; echo pull-down >%s; sleep 0.05\n", pull, pull)
	}
	b.vm.MustRun(t, toggle.String())
	eventually(t, 2*time.Minute, fmt.Sprintf("%d edges counted upstream", edges), func() bool {
		sum := 0.0
		for _, r := range b.up.Records("rain/count") {
			if r.Value != nil {
				sum += *r.Value
			}
		}
		return sum >= edges
	})
	sum := 0.0
	for _, r := range b.up.Records("rain/count") {
		sum += *r.Value
	}
	b.fig(t, "gpio-sim edges toggled / counted", "%d / %.0f", edges, sum)
	if sum != edges {
		t.Errorf("counted %v edges, toggled %d", sum, edges)
	}

	// Without char-i2c in DeviceAllow, the BME280 is down, and says what to do.
	b.vm.MustRun(t, "mkdir -p /etc/systemd/system/edgegate.service.d")
	b.vm.Put(t, "/etc/systemd/system/edgegate.service.d/board.conf", []byte(`[Service]
DeviceAllow=
DeviceAllow=/dev/gpiomem rw
DeviceAllow=char-gpiochip rw
`), 0o644)
	b.vm.MustRun(t, "systemctl daemon-reload && systemctl restart edgegate.service")
	var lastErr string
	eventually(t, 2*time.Minute, "the bme sensor reported down", func() bool {
		for _, s := range b.status(t)["sensors"].([]any) {
			m := s.(map[string]any)
			if m["name"] == "bme" && m["up"] == false && m["last_error"] != nil {
				lastErr = m["last_error"].(string)
				return true
			}
		}
		return false
	})
	b.fig(t, "bme without DeviceAllow", "%s", lastErr)
	if !strings.Contains(lastErr, "DeviceAllow") {
		t.Errorf("the error does not name the fix (DeviceAllow): %s", lastErr)
	}
	b.vm.MustRun(t, "rm /etc/systemd/system/edgegate.service.d/board.conf && systemctl daemon-reload && systemctl restart edgegate.service")
	b.sensors = ""
	b.writeConfig(t)
	b.vm.MustRun(t, "systemctl restart edgegate.service")
	// The load generator counts acknowledgements without naming them: its ids are unique,
	// so at least that many of its readings must be upstream.
	eventually(t, 10*time.Minute, fmt.Sprintf("%d load readings upstream", res.Acked), func() bool {
		return len(b.up.Records("mem-")) >= res.Acked
	})
}

// 5. No RTC: the guest boots with its clock years back and no time source; readings it
// stamps itself are held, and the status says so. A clock step as NTP makes it (the host's
// SNTP server, the guest's systemd-timesyncd) releases them re-dated, with the ids SPEC
// §3.1 gives them.
func (b *board) stepNoRTC(t *testing.T) {
	b.clockMode = "auto"
	b.sensors = `sensors:
  - name: sim-1
    driver: sim
    interval: 1s
    sim: {kind: sine, min: 18, max: 24, period: 10m, metric: temperature, unit: Cel}
`
	b.writeConfig(t)
	b.vm.Shutdown(t)
	bootReal := time.Now()
	b.vm.Boot(t, BootOptions{RTC: "2019-06-01T00:00:00"})
	if _, err := b.vm.WaitReady(5 * time.Minute); err != nil {
		t.Fatal(err)
	}
	guest := strings.TrimSpace(b.vm.MustRun(t, "date -u +%FT%TZ"))
	b.fig(t, "no RTC: guest clock at boot", "%s (host %s)", guest, time.Now().UTC().Format(time.RFC3339))

	// Bare numbers carry no ts: the gateway stamps them, so they are held too.
	type sent struct {
		at    time.Time
		value float64
	}
	var bare []sent
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.vm.MQTT).SetClientID("rtc-1").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	for i := range 10 {
		v := 20 + float64(i)/10
		at := time.Now()
		tok := c.Publish("devices/rtc-1/value", 1, false, strconv.FormatFloat(v, 'f', -1, 64))
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		bare = append(bare, sent{at, v})
		time.Sleep(500 * time.Millisecond)
	}
	c.Disconnect(0)
	var clock map[string]any
	eventually(t, time.Minute, "readings held", func() bool {
		clock = b.status(t)["clock"].(map[string]any)
		return clock["state"] == "waiting" && clock["held"].(float64) >= 20
	})
	b.fig(t, "no RTC: /status clock before the step", "%v", clock)
	if n := len(b.up.Records("sim-1/")) + len(b.up.Records("rtc-1/")); n > 0 {
		t.Errorf("%d readings went upstream while the clock was wrong", n)
	}

	// The step, as NTP makes it.
	ntp, err := StartSNTP()
	if err != nil {
		t.Fatal(err)
	}
	defer ntp.Close()
	stepAt := time.Now()
	b.vm.MustRun(t, "systemctl start systemd-timesyncd.service")
	eventually(t, 2*time.Minute, "the guest clock stepped", func() bool {
		out, err := b.vm.Run("date +%s")
		if err != nil {
			return false
		}
		s, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		return math.Abs(float64(s-time.Now().Unix())) < 5
	})
	diag := func() {
		out, _ := b.vm.Run("ls -l /run/systemd/timesync/; journalctl -b --no-pager -o cat -u systemd-timesyncd | tail -5; journalctl -b --no-pager -o cat -u edgegate | tail -5")
		t.Logf("guest after the step:\n%s", out)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		clock = b.status(t)["clock"].(map[string]any)
		if clock["state"] == "synced" && clock["held"].(float64) == 0 {
			break
		}
		if time.Now().After(deadline) {
			diag()
			t.Fatalf("held readings not released 4 minutes after the clock step: /status clock %v", clock)
		}
		time.Sleep(time.Second)
	}
	b.fig(t, "no RTC: /status clock after the step", "%v", clock)
	eventually(t, 2*time.Minute, "the bare readings upstream", func() bool { return len(b.up.Records("rtc-1/")) >= len(bare) })

	// Re-dated: each bare reading at (about) the moment it was sent, with the hash id of its
	// new time; the sensor's readings between the boot and the step.
	for _, r := range b.up.Records("rtc-1/") {
		var match *sent
		for i := range bare {
			if *r.Value == bare[i].value {
				match = &bare[i]
			}
		}
		if match == nil {
			t.Errorf("unexpected reading upstream: %+v", r)
			continue
		}
		if d := r.TS.Sub(match.at); d < -3*time.Second || d > 3*time.Second {
			t.Errorf("reading %v re-dated to %s, sent at %s", *r.Value, r.TS, match.at)
		}
		if want := record.HashID(r.Series, r.TS, *r.Value); r.ID != want {
			t.Errorf("reading %v: id %s, SPEC §3.1 gives %s", *r.Value, r.ID, want)
		}
	}
	held := 0
	for _, r := range b.up.Records("sim-1/") {
		if r.TS.Before(stepAt) {
			held++
			if r.TS.Before(bootReal) {
				t.Errorf("sensor reading re-dated to %s, before the boot (%s)", r.TS, bootReal)
			}
			if want := record.HashID(r.Series, r.TS, *r.Value); r.ID != want {
				t.Errorf("sensor reading %s: id %s, SPEC §3.1 gives %s", r.TS, r.ID, want)
			}
		}
	}
	b.fig(t, "no RTC: readings re-dated upstream", "%d bare device readings, %d sensor readings", len(bare), held)
	if held == 0 {
		t.Error("no sensor reading from before the step upstream")
	}
}

// 6. Package life cycle: an upgrade with data in the buffer loses nothing and keeps the
// edited config (a conffile); remove keeps the data; purge removes data, config and user.
func (b *board) stepPackage(t *testing.T) {
	b.sensors, b.clockMode = "", ""
	b.writeConfig(t)
	b.vm.MustRun(t, "systemctl restart edgegate.service")
	cfgBefore := b.vm.MustRun(t, "sha256sum /etc/edgegate/edgegate.yaml")
	pid := b.unit(t, "MainPID")["MainPID"]

	// Data in the buffer: the upstream is down while devices publish.
	b.up.Down()
	f := StartFleet(b.vm.MQTT, "pkg", 4, 50, 16)
	eventually(t, 2*time.Minute, "readings acknowledged", func() bool { return f.AckedCount() >= 1000 })
	f.Stop()
	acked := f.Acked()
	b.acked = append(b.acked, acked...)
	backlog := b.status(t)["uplinks"].([]any)[0].(map[string]any)["backlog"].(float64)
	b.fig(t, "upgrade: backlog before", "%.0f records (%d acknowledged while the upstream was down)", backlog, len(acked))

	out := b.installDeb(t, b.s.debNew)
	t.Logf("upgrade:\n%s", out)
	if strings.Contains(out, "Configuration file") {
		t.Errorf("dpkg asked about the config:\n%s", out)
	}
	if after := b.vm.MustRun(t, "sha256sum /etc/edgegate/edgegate.yaml"); after != cfgBefore {
		t.Errorf("the upgrade changed the edited config")
	}
	conf := b.vm.MustRun(t, "dpkg-query -W -f='${Conffiles}' edgegate")
	if !strings.Contains(conf, "/etc/edgegate/edgegate.yaml") {
		t.Errorf("not a conffile: %s", conf)
	}
	ver := strings.TrimSpace(b.vm.MustRun(t, "dpkg-query -W -f='${Version}' edgegate"))
	u := b.unit(t, "MainPID", "ActiveState")
	if u["MainPID"] == pid || u["ActiveState"] != "active" {
		t.Errorf("the upgrade did not restart the service: %v (was %s)", u, pid)
	}
	b.fig(t, "upgrade", "to %s, service restarted, config kept", ver)
	if err := b.up.Up(); err != nil {
		t.Fatal(err)
	}
	b.waitUpstream(t, acked, 5*time.Minute)

	// remove: the service stops, the data stays. Proof: readings acknowledged while the
	// upstream was down reach it after a reinstall.
	b.up.Down()
	f = StartFleet(b.vm.MQTT, "rm", 2, 50, 16)
	eventually(t, 2*time.Minute, "readings acknowledged", func() bool { return f.AckedCount() >= 300 })
	f.Stop()
	kept := f.Acked()
	b.acked = append(b.acked, kept...)
	b.vm.MustRun(t, "DEBIAN_FRONTEND=noninteractive apt-get remove -y edgegate 2>&1")
	state := b.vm.MustRun(t, "test ! -e /usr/bin/edgegate && ls /var/lib/edgegate/buffer | wc -l && ls /etc/edgegate && getent passwd edgegate")
	t.Logf("after remove: %s", state)
	b.installDeb(t, b.s.debNew)
	b.vm.MustRun(t, "systemctl start edgegate.service")
	if err := b.up.Up(); err != nil {
		t.Fatal(err)
	}
	b.waitUpstream(t, kept, 5*time.Minute)
	b.fig(t, "remove", "data kept: %d readings buffered before the remove went upstream after a reinstall", len(kept))

	// purge: data, config and user gone.
	out = b.vm.MustRun(t, "DEBIAN_FRONTEND=noninteractive apt-get purge -y edgegate 2>&1")
	t.Logf("purge:\n%s", out)
	left := b.vm.MustRun(t, "for p in /var/lib/edgegate /etc/edgegate; do test -e $p && echo $p left || echo $p gone; done; "+
		"getent passwd edgegate || echo no-user; getent group edgegate || echo no-group")
	if !strings.Contains(left, "/var/lib/edgegate gone") || !strings.Contains(left, "/etc/edgegate gone") ||
		!strings.Contains(left, "no-user") || !strings.Contains(left, "no-group") {
		t.Errorf("after purge:\n%s", left)
	}
	b.fig(t, "purge", "data, config, user and group gone")
	b.fig(t, "all steps: readings acknowledged", "%d, lost %d", len(b.acked), missing(b.up, b.acked))
}

func missing(u *Upstream, ids []string) int {
	_, n := u.Missing(ids, 0)
	return n
}

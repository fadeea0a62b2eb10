package board

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The run's settings, from the environment `make test-board` sets.
type settings struct {
	cache  string // the image (board/build-image.sh)
	run    string // this run's disk, consoles and reports
	deb    string // the .deb `make dist` built for arm64
	debNew string // the same with a higher version (the upgrade)
	short  bool   // install, start, one power cut (CI)
	cuts   int
}

func loadSettings(t *testing.T) settings {
	s := settings{cache: os.Getenv("BOARD_CACHE"), deb: os.Getenv("BOARD_DEB"), debNew: os.Getenv("BOARD_DEB_NEW"),
		short: os.Getenv("BOARD_MODE") == "short", run: os.Getenv("BOARD_RUN")}
	if s.cache == "" || s.deb == "" {
		t.Skip("the emulated board runs with make test-board (BOARD_CACHE, BOARD_DEB unset)")
	}
	s.cuts = 10
	if s.short {
		s.cuts = 1
	}
	if v := os.Getenv("BOARD_CUTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("BOARD_CUTS=%q: want a count ≥ 1", v)
		}
		s.cuts = n
	}
	if s.run == "" {
		s.run = t.TempDir()
	}
	if err := os.MkdirAll(s.run, 0o755); err != nil {
		t.Fatal(err)
	}
	if !s.short && s.debNew == "" {
		t.Fatal("BOARD_DEB_NEW: the full run upgrades to a newer .deb")
	}
	return s
}

// board is the state the steps share.
type board struct {
	s    settings
	vm   *VM
	up   *Upstream
	figs []string // figures for the report, in order
	// What the guest's config says beyond the base (sensors, the clock mode).
	sensors   string
	clockMode string
	acked     []string // every id the devices got a PUBACK for, across steps
}

func (b *board) fig(t testing.TB, name string, format string, args ...any) {
	line := fmt.Sprintf("%-34s %s", name+":", fmt.Sprintf(format, args...))
	b.figs = append(b.figs, line)
	t.Log("figure: " + line)
}

// config is the guest's /etc/edgegate/edgegate.yaml: devices on the LAN (the forwarded
// port), the uplink at the host's upstream broker, the ops server on the guest's address
// so the host reaches it through a forwarded port.
func (b *board) config() []byte {
	clock := b.clockMode
	if clock == "" {
		clock = "trust"
	}
	return fmt.Appendf(nil, `# edgegate on the emulated board (board/board_test.go writes this file)
gateway:
  id: board-01
  data_dir: /var/lib/edgegate
broker:
  listeners:
    - {type: tcp, address: ":1883"}
  allow_anonymous: true
  anonymous: {publish: ["#"], subscribe: ["#"]}
  max_rate_per_client: 2000
routes:
  - topic: "devices/+device/+metric"
    format: json
    series: "{device}/{metric}"
%s
uplinks:
  - name: cloud
    type: mqtt
    url: %q
    topic: "edgegate/{gateway}/{kind}"
    client_id: board-01
    qos: 1
    forward: ["devices/#", "sensors/#"]
    batch: {max_records: 500, linger: 500ms}
    backoff: {min: 500ms, max: 5s}
ops:
  listen: "0.0.0.0:9464"
  flush_timeout: 5s
  clock: {mode: %s}
`, b.sensors, b.up.GuestURL(), clock)
}

// writeConfig installs the config (keeping the package's owner and mode) and checks it.
func (b *board) writeConfig(t testing.TB) {
	t.Helper()
	b.vm.Put(t, "/etc/edgegate/edgegate.yaml", b.config(), 0o640)
	b.vm.MustRun(t, "chgrp edgegate /etc/edgegate/edgegate.yaml && edgegate validate -c /etc/edgegate/edgegate.yaml")
}

// unit returns systemctl show's properties of edgegate.service.
func (b *board) unit(t testing.TB, props ...string) map[string]string {
	t.Helper()
	out := b.vm.MustRun(t, "systemctl show edgegate.service -p "+strings.Join(props, " -p "))
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// status fetches /status.
func (b *board) status(t testing.TB) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := b.vm.Get(ctx, "/status")
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("/status: %v", err)
	}
	return m
}

// eventually polls cond every second until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(time.Second)
	}
}

// waitUpstream waits until every id is upstream.
func (b *board) waitUpstream(t testing.TB, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		miss, n := b.up.Missing(ids, 5)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged readings are not upstream after %s, e.g. %v", n, len(ids), timeout, miss)
		}
		time.Sleep(time.Second)
	}
}

// runStep runs one check as a subtest and prints its PASS/FAIL line.
func runStep(t *testing.T, name string, f func(t *testing.T)) bool {
	start := time.Now()
	ok := t.Run(name, f)
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Printf("BOARD %-28s %s (%s)\n", name, verdict, time.Since(start).Round(time.Second))
	return ok
}

func TestBoard(t *testing.T) {
	s := loadSettings(t)
	up, err := NewUpstream()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Up(); err != nil {
		t.Fatal(err)
	}
	defer up.Down()
	b := &board{s: s, up: up, vm: NewVM(t, s.cache, s.run)}
	t.Logf("board: run directory %s", s.run)
	defer func() {
		fmt.Println("BOARD figures:")
		for _, f := range b.figs {
			fmt.Println("  " + f)
		}
		_ = os.WriteFile(filepath.Join(s.run, "figures.txt"), []byte(strings.Join(b.figs, "\n")+"\n"), 0o644)
	}()

	if !runStep(t, "1-install-and-start", b.stepInstall) {
		return
	}
	if s.short {
		runStep(t, "4-power-cuts", b.stepPowerCuts)
		return
	}
	runStep(t, "2-watchdog", b.stepWatchdog)
	runStep(t, "3-hardening-and-buses", b.stepHardening)
	runStep(t, "4-power-cuts", b.stepPowerCuts)
	runStep(t, "5-no-rtc", b.stepNoRTC)
	runStep(t, "6-package-life-cycle", b.stepPackage)
}

// installDeb copies a .deb into the guest and installs it with apt.
func (b *board) installDeb(t testing.TB, deb string) string {
	t.Helper()
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(deb)
	b.vm.Put(t, "/root/"+name, data, 0o644)
	return b.vm.MustRun(t, "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ./"+name+" 2>&1")
}

// 1. The package installs with apt, the unit starts as packaged (Type=notify), its
// exposure score is recorded, /readyz answers through the forwarded port, the journal has
// the start line, and a device's reading goes all the way upstream.
func (b *board) stepInstall(t *testing.T) {
	d := b.vm.Boot(t, BootOptions{})
	b.fig(t, "boot to ssh login (cached image)", "%.1f s", d.Seconds())
	b.fig(t, "guest kernel", "%s", strings.TrimSpace(b.vm.MustRun(t, "uname -rm")))

	out := b.installDeb(t, b.s.deb)
	t.Logf("apt install:\n%s", out)
	b.writeConfig(t)
	start := time.Now()
	b.vm.MustRun(t, "systemctl enable --now edgegate.service")
	b.fig(t, "systemctl start (to READY=1)", "%.1f s", time.Since(start).Seconds())

	u := b.unit(t, "Type", "ActiveState", "SubState", "MainPID", "WatchdogUSec", "User")
	if u["Type"] != "notify" || u["ActiveState"] != "active" || u["SubState"] != "running" {
		t.Fatalf("unit: %v, want Type=notify, active (running)", u)
	}
	t.Logf("unit: %v", u)

	sec, _ := b.vm.Run("systemd-analyze security --no-pager edgegate.service")
	_ = os.WriteFile(filepath.Join(b.s.run, "security.txt"), []byte(sec), 0o644)
	m := regexp.MustCompile(`Overall exposure level for edgegate.service: ([0-9.]+) (\S+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level:\n%s", sec)
	}
	b.fig(t, "systemd-analyze security", "%s %s", m[1], m[2])

	ready, err := b.vm.WaitReady(2 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_ = ready
	j := b.vm.MustRun(t, "journalctl -u edgegate.service --no-pager -o cat")
	if !strings.Contains(j, "edgegate running") {
		t.Fatalf("journal has no start line (edgegate running):\n%s", j)
	}

	f := StartFleet(b.vm.MQTT, "first", 1, 5, 4)
	eventually(t, time.Minute, "a first acknowledged reading", func() bool { return f.AckedCount() >= 10 })
	f.Stop()
	b.acked = append(b.acked, f.Acked()...)
	b.waitUpstream(t, f.Acked(), 2*time.Minute)
}

// 2. A stopped daemon (SIGSTOP) stops pinging the watchdog: systemd kills it within
// WatchdogSec and starts it again, and nothing acknowledged is lost.
func (b *board) stepWatchdog(t *testing.T) {
	f := StartFleet(b.vm.MQTT, "wd", 4, 50, 16)
	defer f.Stop()
	eventually(t, time.Minute, "readings acknowledged", func() bool { return f.AckedCount() >= 400 })
	u := b.unit(t, "MainPID", "NRestarts", "WatchdogUSec")
	pid := u["MainPID"]
	stopAt := strings.TrimSpace(b.vm.MustRun(t, "date +%s.%N && kill -STOP "+pid))
	t0, _ := strconv.ParseFloat(stopAt, 64)
	var nu map[string]string
	eventually(t, 5*time.Minute, "a new main process, active", func() bool {
		nu = b.unit(t, "MainPID", "NRestarts", "ActiveState", "SubState")
		return nu["MainPID"] != pid && nu["MainPID"] != "0" && nu["ActiveState"] == "active" && nu["SubState"] == "running"
	})
	back := strings.TrimSpace(b.vm.MustRun(t, "date +%s.%N"))
	t1, _ := strconv.ParseFloat(back, 64)
	j := b.vm.MustRun(t, fmt.Sprintf("journalctl -u edgegate.service --no-pager -o short-unix --since @%d", int64(t0)))
	var tw float64
	for _, l := range strings.Split(j, "\n") {
		if strings.Contains(l, "Watchdog timeout") {
			tw, _ = strconv.ParseFloat(strings.Fields(l)[0], 64)
			break
		}
	}
	if tw == 0 {
		t.Fatalf("no watchdog timeout in the journal:\n%s", j)
	}
	limit, _ := strconv.ParseFloat(strings.TrimSuffix(u["WatchdogUSec"], "s"), 64)
	b.fig(t, "watchdog: SIGSTOP to kill", "%.1f s (WatchdogSec %s)", tw-t0, u["WatchdogUSec"])
	b.fig(t, "watchdog: SIGSTOP to running again", "%.1f s", t1-t0)
	if limit > 0 && tw-t0 > limit+5 {
		t.Errorf("systemd noticed the stopped daemon %.1f s after SIGSTOP, WatchdogSec is %.0f s", tw-t0, limit)
	}
	if nu["NRestarts"] == u["NRestarts"] {
		t.Errorf("NRestarts still %s", nu["NRestarts"])
	}
	f.Stop()
	b.acked = append(b.acked, f.Acked()...)
	b.fig(t, "watchdog: readings acknowledged", "%d", f.AckedCount())
	b.waitUpstream(t, f.Acked(), 5*time.Minute)
}

// 4. Power cuts: devices publish QoS 1 (8 × 250 msg/s) while the upstream comes and goes,
// and QEMU is killed at random moments; every PUBACKed id ends up upstream, re-sent batches
// carry the same bytes, the store needs no manual repair and reports no lost records.
func (b *board) stepPowerCuts(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	f := StartFleet(b.vm.MQTT, "pc", 8, 250, 32)
	defer f.Stop()
	// The upstream goes down now and then (a third of the time or so).
	flapDone := make(chan struct{})
	flapStop := make(chan struct{})
	flapRng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	go func() {
		defer close(flapDone)
		for {
			select {
			case <-flapStop:
				return
			case <-time.After(time.Duration(5+flapRng.IntN(15)) * time.Second):
			}
			if b.up.IsUp() && flapRng.IntN(3) == 0 {
				b.up.Down()
			} else {
				_ = b.up.Up()
			}
		}
	}()
	defer func() {
		select {
		case <-flapStop:
		default:
			close(flapStop)
		}
		<-flapDone
		_ = b.up.Up()
	}()

	var readies []time.Duration
	var lost float64
	lastReady := 60 * time.Second
	stepStart := time.Now()
	for cut := 1; cut <= b.s.cuts; cut++ {
		// The moment is counted from QEMU's start, or from the devices' for the first cut.
		ref := b.vm.Started()
		if ref.Before(stepStart) {
			ref = stepStart
		}
		// A random moment: mostly while running, sometimes while it boots.
		at := time.Duration(float64(lastReady)*0.7) + time.Duration(rng.Int64N(int64(lastReady*3/10+40*time.Second)))
		readyCh := make(chan time.Duration, 1)
		go func() {
			d, err := b.vm.WaitReady(at + time.Minute)
			if err == nil {
				readyCh <- d
			}
			close(readyCh)
		}()
		for time.Since(ref) < at && !b.vm.Exited() {
			time.Sleep(100 * time.Millisecond)
		}
		acked := f.AckedCount()
		cutAt := time.Since(b.vm.Started())
		b.vm.PowerCut(t)
		d, ok := <-readyCh
		state := "while booting"
		if ok {
			state = fmt.Sprintf("%.0f s after ready", (cutAt - d).Seconds())
		}
		t.Logf("cut %d at %.1f s of its boot (%s), %d readings acknowledged so far, upstream up: %v", cut, cutAt.Seconds(), state, acked, b.up.IsUp())
		b.vm.Start(t, BootOptions{})
		d, err := b.vm.WaitReady(10 * time.Minute)
		if err != nil {
			t.Fatalf("after cut %d: %v (console in %s)", cut, err, b.s.run)
		}
		readies = append(readies, d)
		lastReady = d
		if n, err := b.vm.Metric("edgegate_buffer_lost_records_total"); err == nil {
			lost += n
			if n > 0 {
				t.Errorf("after cut %d the store reported %.0f lost records", cut, n)
			}
		} else {
			t.Errorf("after cut %d: %v", cut, err)
		}
	}
	b.vm.WaitSSH(t, 5*time.Minute)
	f.Stop()
	close(flapStop)
	<-flapDone
	if err := b.up.Up(); err != nil {
		t.Fatal(err)
	}
	acked := f.Acked()
	b.acked = append(b.acked, acked...)
	b.fig(t, "power cuts", "%d", b.s.cuts)
	b.fig(t, "power cuts: readings acknowledged", "%d (device reconnects %d)", len(acked), f.reconnects.Load())
	slices.Sort(readies)
	b.fig(t, "power cuts: boot to ready after a cut", "median %.1f s, max %.1f s (QEMU start to /readyz 200)",
		readies[len(readies)/2].Seconds(), readies[len(readies)-1].Seconds())
	b.waitUpstream(t, acked, 15*time.Minute)
	_, miss := b.up.Missing(acked, 0)
	b.fig(t, "power cuts: acknowledged readings lost", "%d", miss)
	b.fig(t, "power cuts: lost records reported", "%.0f (edgegate_buffer_lost_records_total after each boot)", lost)
	resent, differing := b.up.Resends()
	batches, records := b.up.Counts()
	b.fig(t, "power cuts: batches re-sent", "%d of %d (same id, different bytes: %d)", resent, batches, len(differing))
	t.Logf("upstream: %d batches, %d distinct records", batches, records)
	if len(differing) > 0 {
		t.Errorf("batches re-sent with different bytes: %v", differing[:min(5, len(differing))])
	}
	j := b.vm.MustRun(t, "journalctl -u edgegate.service --no-pager -o cat | grep -ci 'lost' || true")
	t.Logf("journal lines mentioning lost records (all boots kept): %s", strings.TrimSpace(j))

	// The store, stopped cleanly now, opens read-only without -repair, and is clean.
	b.vm.MustRun(t, "systemctl stop edgegate.service")
	stats, err := b.vm.Run("runuser -u edgegate -- edgegate buffer stats -d /var/lib/edgegate")
	if err != nil {
		t.Errorf("edgegate buffer stats: %v\n%s", err, stats)
	} else {
		t.Logf("edgegate buffer stats:\n%s", stats)
		_ = os.WriteFile(filepath.Join(b.s.run, "buffer-stats.txt"), []byte(stats), 0o644)
	}
	b.vm.MustRun(t, "systemctl start edgegate.service")
}

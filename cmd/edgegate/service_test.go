package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
)

// mainEnv makes the test binary run main's command line instead of the tests, so the tests
// can run the real daemon as a child process and signal it.
const mainEnv = "EDGEGATE_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	// Every goroutine the commands and the daemon start must be gone when the tests end.
	goleak.VerifyTestMain(m,
		// OpenCensus (a dependency of the Pub/Sub client this binary links) starts its
		// stats worker in an init function: it lives as long as the process.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// daemon is the edgegate daemon running in a child process.
type daemon struct {
	t        *testing.T
	cmd      *exec.Cmd
	cfg      string
	dir      string
	broker   string
	opsAddr  string
	notify   *gatewaytest.NotifySocket
	stderr   *testutil.SyncBuffer
	exited   chan struct{}
	exitCode int
	edit     func(config string) string // rewrites the config before it is written
}

const daemonConfig = `
gateway: {id: gw-svc, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
sensors:
  - {name: sim-1, driver: sim, interval: 200ms, topic: "sensors/{name}/temperature"}
uplinks:
  - name: archive
    type: file
    path: %q
    batch: {max_records: %d, linger: 100ms}
ops:
  listen: %q
  log: {level: info}
  flush_timeout: 5s
  clock: {mode: trust}   # test machines often run no NTP daemon (the kernel says unsynchronised)
%s`

// writeDaemonConfig writes the config; extra is appended (more routes, say), then the
// daemon's edit, if any, rewrites it.
func (d *daemon) writeConfig(maxRecords int, extra string) {
	y := fmt.Sprintf(daemonConfig, filepath.Join(d.dir, "data"), d.broker, filepath.Join(d.dir, "uplink.jsonl"), maxRecords, d.opsAddr, extra)
	if d.edit != nil {
		y = d.edit(y)
	}
	if err := os.WriteFile(d.cfg, []byte(y), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// startDaemon runs `edgegate run` with a fake systemd: NOTIFY_SOCKET, and a watchdog of
// watchdog (none when 0).
func startDaemon(t *testing.T, watchdog time.Duration) *daemon {
	t.Helper()
	return startDaemonWith(t, watchdog, nil)
}

// startDaemonWith is startDaemon with the config rewritten by edit (nil: as is).
func startDaemonWith(t *testing.T, watchdog time.Duration, edit func(config string) string) *daemon {
	t.Helper()
	d := &daemon{t: t, dir: t.TempDir(), broker: testutil.FreeAddr(t), opsAddr: testutil.FreeAddr(t),
		notify: gatewaytest.NewNotifySocket(t), stderr: &testutil.SyncBuffer{}, exited: make(chan struct{}), edit: edit}
	d.cfg = filepath.Join(d.dir, "edgegate.yaml")
	d.writeConfig(500, "")
	d.cmd = testutil.SelfCommand("run", "-c", d.cfg)
	d.cmd.Env = append(os.Environ(), mainEnv+"=1", "NOTIFY_SOCKET="+d.notify.Path)
	if watchdog > 0 {
		d.cmd.Env = append(d.cmd.Env, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()))
	}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		d.exitCode = d.cmd.ProcessState.ExitCode()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", d.stderr.String())
		}
	})
	testutil.Eventually(t, 30*time.Second, "READY=1 from the daemon", func() bool { return d.notify.Count("READY=1") > 0 })
	return d
}

func (d *daemon) signal(s os.Signal) {
	if err := d.cmd.Process.Signal(s); err != nil {
		d.t.Fatal(err)
	}
}

// wait waits for the exit and returns how long it took.
func (d *daemon) wait(limit time.Duration) time.Duration {
	start := time.Now()
	select {
	case <-d.exited:
		return time.Since(start)
	case <-time.After(limit):
		d.t.Fatalf("daemon still running %s after SIGTERM", limit)
		return 0
	}
}

func (d *daemon) get(path string) (int, string) {
	res, err := http.Get("http://" + d.opsAddr + path)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// unitTimeoutStopSec reads TimeoutStopSec from the shipped unit: the bound a stop must meet.
func unitTimeoutStopSec(t *testing.T) time.Duration {
	b, err := os.ReadFile("../../systemd/edgegate.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("the unit sets no TimeoutStopSec")
	}
	d, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", m[1], err)
	}
	return d
}

// TestDaemonSignals: the real daemon, a fake systemd (NOTIFY_SOCKET, WATCHDOG_USEC): main
// wires the process to the gateway's service (gateway's TestServiceNotifyProtocol and
// TestServiceReload test it in-process). READY once running, WATCHDOG pings while
// healthy, SIGHUP reloads the -c file (RELOADING, then READY), SIGTERM stops (STOPPING)
// with exit code 0, in that order.
func TestDaemonSignals(t *testing.T) {
	d := startDaemon(t, 400*time.Millisecond)
	testutil.Eventually(t, 30*time.Second, "two WATCHDOG=1 pings", func() bool { return d.notify.Count("WATCHDOG=1") >= 2 })
	if code, body := d.get("/readyz"); code != 200 {
		t.Errorf("/readyz while running: %d %s", code, body)
	}
	y, _ := os.ReadFile(d.cfg)
	if err := os.WriteFile(d.cfg, []byte(strings.Replace(string(y), "max_records: 500", "max_records: 2", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	testutil.Eventually(t, 20*time.Second, "READY=1 after the reload", func() bool { return d.notify.Count("READY=1") > 1 })
	if !regexp.MustCompile(`reload: applied" file=\S+edgegate.yaml changed=uplinks\[archive\].limits`).MatchString(d.stderr.String()) {
		t.Errorf("no applied reload in the log:\n%s", d.stderr.String())
	}
	d.signal(syscall.SIGTERM)
	d.wait(unitTimeoutStopSec(t))
	if d.exitCode != 0 {
		t.Errorf("exit code %d", d.exitCode)
	}
	// READY first, then RELOADING, READY, then STOPPING and nothing after it, with only
	// WATCHDOG pings between.
	states := d.notify.States()
	phase := 0 // 0: expect READY, 1: watchdog pings, 2: reloading, 3: reloaded, 4: stopped
	for i, s := range states {
		switch {
		case phase == 0 && s == "READY=1":
			phase = 1
		case phase != 0 && s == "WATCHDOG=1":
		case phase == 1 && s == "RELOADING=1":
			phase = 2
		case phase == 2 && s == "READY=1":
			phase = 3
		case phase == 3 && s == "STOPPING=1":
			phase = 4
		default:
			t.Fatalf("notification %d %q out of order in %q", i, s, states)
		}
	}
	if phase != 4 {
		t.Fatalf("notifications %q: no RELOADING=1, READY=1 and STOPPING=1", states)
	}
	if !strings.Contains(d.notify.Messages()[0], "STATUS=broker on "+d.broker) {
		t.Errorf("READY carries no useful STATUS: %q", d.notify.Messages()[0])
	}
}

// TestGracefulShutdownUnderLoad: publishers at full speed, then SIGTERM. Every message the
// daemon acknowledged reaches the (reachable) uplink before the process exits, and the
// stop fits in the unit's TimeoutStopSec.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	d := startDaemon(t, 0)
	const publishers = 4
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := paho.NewClientOptions().AddBroker("tcp://" + d.broker).SetClientID(fmt.Sprintf("load-%d", p)).
				SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
			c := paho.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("connect: %v", tok.Error())
				return
			}
			defer c.Disconnect(0)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("p%d-%d", p, i)
				tok := c.Publish(fmt.Sprintf("devices/p%d/temperature", p), 1, false, fmt.Sprintf(`{"value": %d, "id": %q}`, i, id))
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					return // the daemon is stopping: this one was not acknowledged
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
				if i > 200000 {
					return
				}
			}
		}()
	}
	testutil.Eventually(t, 30*time.Second, "load", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 2000
	})
	d.signal(syscall.SIGTERM)
	took := d.wait(unitTimeoutStopSec(t))
	close(stop)
	wg.Wait()
	if d.exitCode != 0 {
		t.Fatalf("exit code %d", d.exitCode)
	}
	sent := uplinkIDs(t, filepath.Join(d.dir, "uplink.jsonl"))
	lost := 0
	for id := range acked {
		if !sent[id] {
			lost++
		}
	}
	t.Logf("%d messages acknowledged, %d records upstream, stop took %s (TimeoutStopSec %s)", len(acked), len(sent), took.Round(time.Millisecond), unitTimeoutStopSec(t))
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages are not upstream after a graceful stop", lost, len(acked))
	}
}

// uplinkIDs returns the record ids in a file uplink's batches.
func uplinkIDs(t *testing.T, path string) map[string]bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var b struct {
			Records []struct {
				ID string `json:"id"`
			} `json:"records"`
		}
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
			t.Fatalf("uplink line: %v", err)
		}
		for _, r := range b.Records {
			ids[r.ID] = true
		}
	}
	return ids
}

package gateway_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
)

const serviceConfig = `
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
    batch: {max_records: 500, linger: 100ms}
ops:
  listen: %q
  log: {level: info}
  flush_timeout: 5s
`

// service is a gateway run in-process as the daemon (Options.Service), with a fake
// systemd (NOTIFY_SOCKET) and its log in text.
type service struct {
	t       *testing.T
	r       *gatewaytest.Running
	dir     string
	cfg     string
	broker  string
	opsAddr string
	notify  *gatewaytest.NotifySocket
	log     *testutil.SyncBuffer
	reload  chan struct{}
	level   *slog.LevelVar
}

// startService runs the service with a systemd watchdog of watchdog (none when 0) until
// READY=1. The environment it sets keeps the test from running in parallel.
func startService(t *testing.T, watchdog time.Duration) *service {
	t.Helper()
	s := &service{t: t, dir: t.TempDir(), broker: testutil.FreeAddr(t), opsAddr: testutil.FreeAddr(t),
		notify: gatewaytest.NewNotifySocket(t), log: &testutil.SyncBuffer{}, reload: make(chan struct{})}
	t.Setenv("NOTIFY_SOCKET", s.notify.Path)
	if watchdog > 0 {
		t.Setenv("WATCHDOG_USEC", fmt.Sprint(watchdog.Microseconds()))
	} else {
		t.Setenv("WATCHDOG_USEC", "")
	}
	s.cfg = filepath.Join(s.dir, "edgegate.yaml")
	y := fmt.Sprintf(serviceConfig, filepath.Join(s.dir, "data"), s.broker, filepath.Join(s.dir, "uplink.jsonl"), s.opsAddr)
	if err := os.WriteFile(s.cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := gatewaytest.Load(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.level = new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(s.log, testWriter{t}), &slog.HandlerOptions{Level: s.level}))
	s.r = gatewaytest.Start(t, cfg, gateway.Options{Logger: log, Service: &gateway.Service{
		Reload: s.reload,
		Load:   func() (*config.Config, error) { return gatewaytest.Load(s.cfg) },
		File:   s.cfg,
		Level:  s.level,
	}})
	testutil.Eventually(t, 30*time.Second, "READY=1 from the service", func() bool { return s.notify.Count("READY=1") > 0 })
	return s
}

func (s *service) get(path string) (int, string) {
	res, err := http.Get("http://" + s.opsAddr + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServiceNotifyProtocol: a fake NOTIFY_SOCKET: READY once running, WATCHDOG pings
// while healthy, STOPPING at the stop, in that order; the stop returns no error.
func TestServiceNotifyProtocol(t *testing.T) {
	s := startService(t, 400*time.Millisecond)
	testutil.Eventually(t, 30*time.Second, "two WATCHDOG=1 pings", func() bool { return s.notify.Count("WATCHDOG=1") >= 2 })
	if code, body := s.get("/readyz"); code != 200 {
		t.Errorf("/readyz while running: %d %s", code, body)
	}
	if err := s.r.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// READY first, then only WATCHDOG pings, then STOPPING and nothing after it.
	states := s.notify.States()
	phase := 0 // 0: expect READY, 1: watchdog pings, 2: stopped
	for i, st := range states {
		switch {
		case phase == 0 && st == "READY=1":
			phase = 1
		case phase == 1 && st == "WATCHDOG=1":
		case phase == 1 && st == "STOPPING=1":
			phase = 2
		default:
			t.Fatalf("notification %d %q out of order in %q", i, st, states)
		}
	}
	if phase != 2 {
		t.Fatalf("notifications %q: no STOPPING=1", states)
	}
	if m := s.notify.Messages()[0]; !strings.Contains(m, "STATUS=broker on "+s.broker) || !strings.Contains(m, "status page http://"+s.opsAddr+"/") {
		t.Errorf("READY carries no useful STATUS: %q", m)
	}
	if !strings.Contains(s.log.String(), "systemd watchdog enabled") {
		t.Errorf("the watchdog is not logged:\n%s", s.log.String())
	}
}

// TestServiceReload: routes and uplink limits apply at once; other changes are logged as
// needing a restart; a broken config keeps the running one.
func TestServiceReload(t *testing.T) {
	s := startService(t, 0)
	addRoute := `routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
  - {topic: "plain/+device", format: number, series: "{device}/plain", unit: V}
`
	// A second routes: key would be a duplicate: rewrite the whole file instead.
	y, _ := os.ReadFile(s.cfg)
	c := strings.Replace(string(y), "routes:\n  - {topic: \"devices/+device/+metric\", format: json, series: \"{device}/{metric}\"}\n", addRoute, 1)
	c = strings.Replace(c, "max_records: 500", "max_records: 2", 1)
	c = strings.Replace(c, "allow_anonymous: true", "allow_anonymous: true\n  max_clients: 10", 1)
	if err := os.WriteFile(s.cfg, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	before := s.notify.Count("READY=1")
	s.reload <- struct{}{}
	testutil.Eventually(t, 20*time.Second, "READY=1 after the reload", func() bool { return s.notify.Count("READY=1") > before })
	if s.notify.Count("RELOADING=1") != 1 {
		t.Errorf("notifications %q: want one RELOADING=1", s.notify.States())
	}
	logs := s.log.String()
	applied := regexp.MustCompile(`reload: applied.* changed="([^"]*)"`).FindStringSubmatch(logs)
	if applied == nil || !regexp.MustCompile(`\broutes\b`).MatchString(applied[1]) || !strings.Contains(applied[1], "uplinks[archive].limits") {
		t.Errorf("no applied reload in the log:\n%s", logs)
	}
	if !regexp.MustCompile(`need a restart.*keys=broker`).MatchString(logs) {
		t.Errorf("the broker change is not logged as needing a restart:\n%s", logs)
	}

	// The new route works without a restart.
	p := testutil.Paho(t, s.broker, "reload-pub")
	if tok := p.Publish("plain/d9", 1, false, "3.25"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	testutil.Eventually(t, 20*time.Second, "the reading of the new route upstream", func() bool {
		b, _ := os.ReadFile(filepath.Join(s.dir, "uplink.jsonl"))
		return bytes.Contains(b, []byte(`"series":"d9/plain"`))
	})

	// A broken config is refused whole, with its problems logged.
	os.WriteFile(s.cfg, []byte("gateway: {id: gw-svc}\nbroker: {nope: 1}\n"), 0o644)
	before = s.notify.Count("READY=1")
	s.reload <- struct{}{}
	testutil.Eventually(t, 20*time.Second, "READY=1 after the failed reload", func() bool { return s.notify.Count("READY=1") > before })
	if !strings.Contains(s.log.String(), "keeping the running config") || !strings.Contains(s.log.String(), `unknown key \"nope\"`) {
		t.Errorf("failed reload not logged with its problem:\n%s", s.log.String())
	}
	_, metrics := s.get("/metrics")
	fams := testutil.ParseText(t, metrics)
	r := fams["edgegate_config_reloads_total"].Samples
	if r[`{result="applied"}`] != 1 || r[`{result="failed"}`] != 1 {
		t.Errorf("reload counters %v", r)
	}

	// ops.log.level applies to the daemon's logger.
	os.WriteFile(s.cfg, []byte(strings.Replace(c, "level: info", "level: warn", 1)), 0o644)
	before = s.notify.Count("READY=1")
	s.reload <- struct{}{}
	testutil.Eventually(t, 20*time.Second, "READY=1 after the level's reload", func() bool { return s.notify.Count("READY=1") > before })
	if got := s.level.Level(); got != slog.LevelWarn {
		t.Errorf("log level after the reload: %v, want WARN", got)
	}
}

// TestServiceClosesOpsPort: a service built but never run releases the ops port it
// bound (Close), and so does one whose start fails (the broker's port in use).
func TestServiceClosesOpsPort(t *testing.T) {
	for _, run := range []bool{false, true} {
		t.Run(fmt.Sprintf("run=%v", run), func(t *testing.T) {
			dir := t.TempDir()
			brokerAddr := testutil.FreeAddr(t)
			opsAddr := testutil.FreeAddr(t)
			path := filepath.Join(dir, "edgegate.yaml")
			y := fmt.Sprintf(serviceConfig, filepath.Join(dir, "data"), brokerAddr, filepath.Join(dir, "uplink.jsonl"), opsAddr)
			if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := gatewaytest.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			g, err := gateway.New(cfg, gateway.Options{Logger: testLogger(t), Service: &gateway.Service{}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := net.Listen("tcp", opsAddr); err == nil {
				t.Fatalf("the ops port %s is not bound by New", opsAddr)
			}
			if run {
				busy, err := net.Listen("tcp", brokerAddr)
				if err != nil {
					t.Fatal(err)
				}
				defer busy.Close()
				if err := g.Run(t.Context()); err == nil {
					t.Fatal("Run started on a broker port in use")
				}
			} else if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", opsAddr)
			if err != nil {
				t.Fatalf("the ops port is still bound: %v", err)
			}
			ln.Close()
		})
	}
}

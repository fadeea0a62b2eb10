package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/internal/testutil"
)

// TestRefusedLogTail (issue 16, item 10): Debian's mosquitto_pub (MQTT 3.1.1, QoS 1) waits
// for its PUBACK; a reading refused for good is acknowledged, so it returns, and the
// reading is kept with its reason: `edgegate buffer tail --log refused` lists it after the
// daemon stops; the raw log, which uplinks forward, does not hold it.
func TestRefusedLogTail(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon as a child process; skipped with -short")
	}
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub is not installed (Debian: mosquitto-clients; .ci/run installs it)")
	}
	dir := t.TempDir()
	d := &e2eDaemon{t: t, cfg: filepath.Join(dir, "edgegate.yaml"), addr: testutil.FreeAddr(t), logPath: filepath.Join(dir, "daemon.log")}
	h, err := bcrypt.GenerateFromPassword([]byte("dev-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
gateway: {id: refused, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  users: [{username: dev, password_hash: %q, publish: ["devices/{username}/#"]}]
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
ops: {log: {level: warn}, clock: {mode: trust}, listen: "off"}
`, filepath.Join(dir, "data"), d.addr, string(h))
	if err := os.WriteFile(d.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	host, port, _ := net.SplitHostPort(d.addr)
	for _, m := range []struct{ topic, payload string }{
		{"devices/dev/temperature", "warm"},       // malformed for its json route
		{"devices/other/temperature", `{"v": 1}`}, // outside the grants
		{"devices/dev/temperature", `{"value": 21.5}`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, pub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "dev", "-P", "dev-pw",
			"-i", "pub-refused", "-q", "1", "-t", m.topic, "-m", m.payload).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("mosquitto_pub -q 1 %s %q: %v (no PUBACK?)\n%s", m.topic, m.payload, err, out)
		}
	}
	d.stop()

	code, out, errOut := runCmd("buffer", "tail", "-d", filepath.Join(dir, "data"), "--log", "refused")
	if code != 0 {
		t.Fatalf("buffer tail --log refused: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("refused log holds %d entries, want 2:\n%s", len(lines), out)
	}
	var got []string
	for _, l := range lines {
		var r struct{ Reason, Topic, Payload, Client, User string }
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("refused entry %q: %v", l, err)
		}
		got = append(got, r.Reason+" "+r.Topic+" "+r.Payload+" "+r.Client+" "+r.User)
	}
	want := []string{"malformed devices/dev/temperature warm pub-refused dev", `not_authorized devices/other/temperature {"v": 1} pub-refused dev`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("refused log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	code, out, _ = runCmd("buffer", "tail", "-d", filepath.Join(dir, "data"))
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"value":21.5`) {
		t.Errorf("raw log: exit %d:\n%s", code, out)
	}
}

package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// MQTT.js (npm mqtt 5.x) is a client nobody here wrote, with behaviours of its own: it
// replays its offline queue at once, resends unacknowledged messages at every reconnect,
// and treats an MQTT 5 reason code >= 0x80 as final. testdata/mqttjs/client.js drives it;
// .ci/run installs it (npm ci). Tests skip, saying so, when node or npm is missing.

const mqttjsDir = "testdata/mqttjs"

var mqttjsInstall struct {
	once sync.Once
	err  error
	out  []byte
}

// runMQTTjs runs one scenario of client.js and returns its events.
func runMQTTjs(t *testing.T, opts map[string]any) []map[string]any {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the MQTT.js tests need node and npm (.ci/run installs them)")
	}
	if _, err := os.Stat(filepath.Join(mqttjsDir, "node_modules", "mqtt")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Skip("npm is not installed: the MQTT.js tests need node and npm (.ci/run installs them)")
		}
		mqttjsInstall.once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
			cmd.Dir = mqttjsDir
			mqttjsInstall.out, mqttjsInstall.err = cmd.CombinedOutput()
		})
		if mqttjsInstall.err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", mqttjsDir, mqttjsInstall.err, mqttjsInstall.out)
		}
	}
	arg, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.js", string(arg))
	cmd.Dir = mqttjsDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			evs = append(evs, ev)
		}
	}
	if err != nil {
		t.Fatalf("MQTT.js %v: %v\nstdout:\n%s\nstderr:\n%s", opts["scenario"], err, out, stderr.Bytes())
	}
	return evs
}

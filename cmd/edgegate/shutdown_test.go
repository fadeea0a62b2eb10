package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
)

// publishReading publishes one reading with its id at QoS 1 and waits for the PUBACK: it
// is stored.
func publishReading(t *testing.T, d *daemon, client, id string) {
	t.Helper()
	c := testutil.Paho(t, d.broker, client)
	defer c.Disconnect(0)
	tok := c.Publish("devices/d1/temperature", 1, false, fmt.Sprintf(`{"value": 1, "id": %q}`, id))
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", id, tok.Error())
	}
}

// delivered reports whether the file uplink has sent the record with this id.
func delivered(t *testing.T, d *daemon, id string) bool {
	path := filepath.Join(d.dir, "uplink.jsonl")
	if _, err := os.Stat(path); err != nil {
		return false
	}
	return uplinkIDs(t, path)[id]
}

// notDrained returns the uplinks the shutdown logged as not drained.
func notDrained(logs string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`did not drain[^\n]*uplink=(\S+)`).FindAllStringSubmatch(logs, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestSIGTERMStopsOnceDrained: with everything stored already delivered, SIGTERM stops the
// daemon as soon as its uplinks have nothing left to send, not after flush_timeout (60 s
// here; the exit must come within the unit's TimeoutStopSec, half of it). Before, the empty
// aggregate log (no pipeline) never counted as sent, and every stop waited the whole
// flush_timeout and logged "uplinks did not drain in time".
func TestSIGTERMStopsOnceDrained(t *testing.T) {
	d := startDaemonWith(t, 0, func(y string) string {
		return strings.Replace(y, "flush_timeout: 5s", "flush_timeout: 60s", 1)
	})
	publishReading(t, d, "drain-pub", "drain-1")
	testutil.Eventually(t, 30*time.Second, "the reading upstream", func() bool {
		return delivered(t, d, "drain-1")
	})
	d.signal(syscall.SIGTERM)
	took := d.wait(unitTimeoutStopSec(t))
	t.Logf("stopped %s after SIGTERM (flush_timeout 60s)", took.Round(time.Millisecond))
	logs := d.stderr.String()
	if d.exitCode != 0 || !strings.Contains(logs, "stopped") {
		t.Fatalf("exit code %d, logs:\n%s", d.exitCode, logs)
	}
	if u := notDrained(logs); len(u) > 0 || strings.Contains(logs, "did not drain") {
		t.Fatalf("the stop waited for uplinks %v with nothing to send:\n%s", u, logs)
	}
}

// TestSIGTERMWithAnUnreachableUpstream: an uplink whose upstream is unreachable (nothing
// listens) or stalled (it accepts the request and never answers) really has a backlog.
// The stop does not wait for it beyond flush_timeout (the unreachable one, backing off, is
// not waited for at all), logs by name that it did not drain, and only it (the file uplink
// beside it drained).
func TestSIGTERMWithAnUnreachableUpstream(t *testing.T) {
	for _, tc := range []struct{ name, why string }{
		{"unreachable", "backing off"},
		{"stalled", "flush_timeout reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testutil.FreeAddr(t) // nothing listens there
			if tc.name == "stalled" {
				addr = testutil.StalledServer(t)
			}
			d := startDaemonWith(t, 0, func(y string) string {
				y = strings.Replace(y, "flush_timeout: 5s", "flush_timeout: 3s", 1)
				return strings.Replace(y, "uplinks:\n", fmt.Sprintf("uplinks:\n  - {name: cloud, type: http, url: \"http://%s/in\", timeout: 10m, batch: {linger: 100ms}, backoff: {min: 100ms, max: 500ms}}\n", addr), 1)
			})
			publishReading(t, d, "backlog-pub", "backlog-1")
			testutil.Eventually(t, 30*time.Second, "the reading in the file, and the http uplink behind", func() bool {
				if !delivered(t, d, "backlog-1") {
					return false
				}
				_, body := d.get("/status")
				var st struct {
					Uplinks []struct {
						Name    string
						Errors  uint64
						Backlog uint64
					}
				}
				if err := json.Unmarshal([]byte(body), &st); err != nil {
					t.Fatalf("/status: %v", err)
				}
				for _, u := range st.Uplinks {
					if u.Name == "cloud" && u.Backlog > 0 && (u.Errors > 0 || tc.name == "stalled") {
						return true
					}
				}
				return false
			})
			d.signal(syscall.SIGTERM)
			d.wait(unitTimeoutStopSec(t))
			logs := d.stderr.String()
			if d.exitCode != 0 {
				t.Fatalf("exit code %d, logs:\n%s", d.exitCode, logs)
			}
			if u := notDrained(logs); len(u) != 1 || u[0] != "cloud" || !strings.Contains(logs, tc.why) {
				t.Fatalf("uplinks logged as not drained: %v, want [cloud] (%s); logs:\n%s", u, tc.why, logs)
			}
		})
	}
}

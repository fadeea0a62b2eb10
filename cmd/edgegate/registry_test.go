package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/uplink"
)

// pubsubConfig is a valid config with one pubsub uplink; its type's value is on line 4,
// column 12.
const pubsubConfig = `gateway: {id: gw}
broker: {allow_anonymous: true}
uplinks:
  - {type: pubsub, name: cloud, project: my-project, topic: readings}
`

// TestValidateMatchesBuild: validate checks a config against the registry of the binary it
// runs in. A default build accepts a pubsub uplink; a -tags nopubsub build (built here)
// refuses it at its position, with why, as its run would.
func TestValidateMatchesBuild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pubsub.yaml")
	if err := os.WriteFile(path, []byte(pubsubConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := pubsubSink(); ok {
		if code, out, errOut := runCmd("validate", "-c", path); code != 0 || errOut != "" {
			t.Fatalf("default build: exit %d, out %q, err %q", code, out, errOut)
		}
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the nopubsub binary")
	}
	bin := filepath.Join(t.TempDir(), "edgegate-nopubsub")
	build := exec.Command(goBin, "build", "-tags", "nopubsub", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nopubsub: %v\n%s", err, out)
	}
	for _, cmd := range []string{"validate", "run"} {
		var stdout, stderr bytes.Buffer
		c := testutil.BinCommand(bin, cmd, "-c", path)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitUser {
			t.Fatalf("nopubsub %s: %v, want exit %d\nstdout %s\nstderr %s", cmd, err, exitUser, &stdout, &stderr)
		}
		want := path + `:4:12: uplinks[0].type "pubsub": not built into this binary (built with -tags nopubsub); expected one of mqtt, http, file`
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("nopubsub %s: stderr lacks\n%s\ngot\n%s", cmd, want, &stderr)
		}
	}
}

// TestRegistryMatchesTests: the registry tests load configs with (gatewaytest) has what
// this binary has, in the same order, but the sinks it leaves out, so the messages the
// tests check are the daemon's.
func TestRegistryMatchesTests(t *testing.T) {
	got, want := registry(), gatewaytest.Registry()
	if g, w := sensors.Names(got.Sensors), sensors.Names(want.Sensors); !slices.Equal(g, w) {
		t.Errorf("drivers: binary %v, tests %v", g, w)
	}
	var sinks []string
	for _, n := range uplink.SinkNames(got.Sinks) {
		if _, out := want.Omitted[n]; !out {
			sinks = append(sinks, n)
		}
	}
	if w := uplink.SinkNames(want.Sinks); !slices.Equal(sinks, w) {
		t.Errorf("sinks: binary %v (less gatewaytest's omitted), tests %v", sinks, w)
	}
}

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
)

// runUntilExit runs `edgegate run -c cfg` in a child process that must fail at start, and
// returns its exit code and output.
func runUntilExit(t *testing.T, cfg string) (int, string) {
	t.Helper()
	cmd := testutil.SelfCommand("run", "-c", cfg)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("edgegate run still running after 60s, want a failed start:\n%s", out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func bindConfig(t *testing.T, brokerAddr, opsAddr string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "edgegate.yaml")
	y := fmt.Sprintf(`
gateway: {id: gw-bind, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
ops: {listen: %q, clock: {mode: trust}}
`, filepath.Join(dir, "data"), brokerAddr, opsAddr)
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunNamesMosquittoOnTheBrokerPort (issue 22): with Debian's mosquitto on the broker's
// port (as `apt-get install mosquitto` leaves it on 1883), `edgegate run` fails at start
// with the listener, the address, the holder and the fix, not a bare "bind: address
// already in use".
func TestRunNamesMosquittoOnTheBrokerPort(t *testing.T) {
	m := testutil.StartMosquitto(t)
	code, out := runUntilExit(t, bindConfig(t, m.Addr, testutil.FreeAddr(t)))
	if code != exitUser {
		t.Errorf("exit %d, want %d", code, exitUser)
	}
	_, port, _ := net.SplitHostPort(m.Addr)
	for _, want := range []string{
		"broker listener 0 (tcp): listen on " + m.Addr + " (broker.listeners[0].address)",
		"address already in use",
		"mosquitto (pid ", ") holds port " + port,
		"sudo systemctl disable --now mosquitto",
		"or set broker.listeners[0].address to another port",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestRunNamesTheOpsPortHolder: the same for the ops HTTP port, held here by a listener of
// the test process.
func TestRunNamesTheOpsPortHolder(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, out := runUntilExit(t, bindConfig(t, testutil.FreeAddr(t), held.Addr().String()))
	if code != exitUser {
		t.Errorf("exit %d, want %d", code, exitUser)
	}
	_, port, _ := net.SplitHostPort(held.Addr().String())
	for _, want := range []string{
		"ops: listen on " + held.Addr().String() + " (ops.listen)",
		"address already in use",
		fmt.Sprintf("(pid %d) holds port %s", os.Getpid(), port),
		"set ops.listen to another port",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

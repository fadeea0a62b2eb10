package bindhint

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/internal/testutil"
)

const childEnv = "BINDHINT_TEST_LISTEN"

// TestMain runs Listen on $BINDHINT_TEST_LISTEN and prints its error when the test binary
// is started as that child.
func TestMain(m *testing.M) {
	if addr := os.Getenv(childEnv); addr != "" {
		ln, err := Listen(Listener{What: "broker listener 2 (ws)", Key: "broker.listeners[2].address", Addr: addr})
		if err != nil {
			os.Stdout.WriteString(err.Error())
			os.Exit(1)
		}
		ln.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPrivilegedPortForReal binds a port below 1024 as an unprivileged user (a child of
// the test run as nobody, which needs the test to run as root): the kernel says EACCES,
// and the error gives the capability fix.
func TestPrivilegedPortForReal(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a child as nobody")
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Skip("net.ipv4.ip_unprivileged_port_start is 0: every user may bind any port here")
	}
	// nobody must be able to run a copy of the test binary.
	dir, err := os.MkdirTemp("", "bindhint") // t.TempDir's parent is closed to others
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bindhint.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.BinCommand(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=127.0.0.1:443")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err == nil {
		t.Fatalf("nobody bound 127.0.0.1:443")
	} else if !errors.As(err, &exit) {
		t.Fatalf("run the child as nobody: %v", err)
	}
	for _, want := range []string{
		"broker listener 2 (ws): listen on 127.0.0.1:443 (broker.listeners[2].address): listen tcp 127.0.0.1:443: bind: permission denied: ",
		"ports below 1024 need the CAP_NET_BIND_SERVICE capability",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"or set broker.listeners[2].address to a port of 1024 or more",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child's error lacks %q:\n%s (%v)", want, out, err)
		}
	}
}

package board

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/edgegate/edgegate/internal/testutil"
)

// VM is the emulated board: one disk image, booted as often as the checks need, with
// QEMU's user-mode network (host ports forwarded to the guest's ssh, broker and ops
// server; the guest reaches the host's loopback at 10.0.2.2).
type VM struct {
	cache string // vmlinuz, initrd.img, id_ed25519
	dir   string // the disk and the consoles of this run
	disk  string
	key   ssh.Signer

	SSH, MQTT, Ops string // host addresses forwarded to the guest's 22, 1883, 9464

	mu      sync.Mutex // guards cmd, exited, client, boots
	cmd     *exec.Cmd
	exited  chan struct{}
	client  *ssh.Client
	boots   int
	started time.Time
	hostKey ssh.PublicKey // pinned at the first login
}

// GuestHost is where the guest reaches the host's loopback (QEMU's gateway).
const GuestHost = "10.0.2.2"

// NewVM copies the cached base image into dir; Cleanup kills QEMU if it still runs.
func NewVM(t testing.TB, cache, dir string) *VM {
	t.Helper()
	keyPEM, err := os.ReadFile(filepath.Join(cache, "id_ed25519"))
	if err != nil {
		t.Fatalf("board image: %v (make test-board builds it)", err)
	}
	key, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{cache: cache, dir: dir, disk: filepath.Join(dir, "disk.img"), key: key,
		SSH: testutil.FreeAddr(t), MQTT: testutil.FreeAddr(t), Ops: testutil.FreeAddr(t)}
	// A sparse copy: the image is 4 GiB with about a third of it used.
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(cache, "base.img"), v.disk).CombinedOutput(); err != nil {
		t.Fatalf("copy the base image: %v: %s", err, out)
	}
	t.Cleanup(func() { v.Kill() })
	return v
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// BootOptions vary a boot.
type BootOptions struct {
	// RTC is QEMU's -rtc base: "utc" (the host's time) or a date such as 2019-06-01.
	RTC string
}

// Start starts QEMU without waiting for the guest.
func (v *VM) Start(t testing.TB, o BootOptions) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		t.Fatal("board: QEMU already runs")
	}
	if o.RTC == "" {
		o.RTC = "utc"
	}
	v.boots++
	console := filepath.Join(v.dir, fmt.Sprintf("console-%02d.log", v.boots))
	netdev := fmt.Sprintf("user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:%s-:22,hostfwd=tcp:127.0.0.1:%s-:1883,hostfwd=tcp:127.0.0.1:%s-:9464",
		port(v.SSH), port(v.MQTT), port(v.Ops))
	args := []string{
		"-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
		"-display", "none", "-monitor", "none", "-serial", "file:" + console, "-no-reboot",
		"-pidfile", filepath.Join(v.dir, "qemu.pid"),
		"-kernel", filepath.Join(v.cache, "vmlinuz"), "-initrd", filepath.Join(v.cache, "initrd.img"),
		"-append", "root=/dev/vda ro console=ttyAMA0 panic=-1",
		// cache=writeback honours the guest's flushes (QEMU fdatasyncs the image on each);
		// what a power cut loses is what the guest kept in its own memory.
		"-drive", "if=none,id=hd,file=" + v.disk + ",format=raw,cache=writeback",
		"-device", "virtio-blk-pci,drive=hd",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
		"-device", "virtio-rng-pci",
		"-rtc", "base=" + o.RTC + ",clock=host",
	}
	cmd := exec.Command("qemu-system-aarch64", args...)
	// QEMU dies with the test process, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	errlog, err := os.Create(filepath.Join(v.dir, fmt.Sprintf("qemu-%02d.err", v.boots)))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errlog
	if err := cmd.Start(); err != nil {
		errlog.Close()
		t.Fatalf("start qemu: %v", err)
	}
	v.cmd, v.exited, v.started = cmd, make(chan struct{}), time.Now()
	exited := v.exited
	go func() {
		_ = cmd.Wait()
		errlog.Close()
		close(exited)
	}()
}

// Boot starts QEMU and waits until root can log in over ssh.
func (v *VM) Boot(t testing.TB, o BootOptions) time.Duration {
	t.Helper()
	v.Start(t, o)
	return v.WaitSSH(t, 10*time.Minute)
}

// Started is when the current boot's QEMU started.
func (v *VM) Started() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.started
}

// WaitSSH waits for the guest's sshd and returns the time since QEMU started.
func (v *VM) WaitSSH(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if v.Exited() {
			t.Fatalf("board: QEMU exited during boot %d (see %s)", v.boots, v.dir)
		}
		c, err := v.dial()
		if err == nil {
			v.mu.Lock()
			v.client = c
			d := time.Since(v.started)
			v.mu.Unlock()
			return d
		}
		last = err
		time.Sleep(time.Second)
	}
	t.Fatalf("board: no ssh login within %s of boot %d: %v (console in %s)", timeout, v.boots, last, v.dir)
	return 0
}

func (v *VM) dial() (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User: "root",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(v.key)},
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			v.mu.Lock()
			defer v.mu.Unlock()
			if v.hostKey == nil {
				v.hostKey = k
				return nil
			}
			if !bytes.Equal(v.hostKey.Marshal(), k.Marshal()) {
				return errors.New("board: the guest's host key changed")
			}
			return nil
		},
		Timeout: 20 * time.Second,
	}
	return ssh.Dial("tcp", v.SSH, cfg)
}

// Exited reports whether QEMU has exited.
func (v *VM) Exited() bool {
	v.mu.Lock()
	ch := v.exited
	v.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// PowerCut kills QEMU (SIGKILL): the guest loses everything it had not written to its
// virtual disk.
func (v *VM) PowerCut(t testing.TB) {
	t.Helper()
	v.mu.Lock()
	cmd, exited, c := v.cmd, v.exited, v.client
	v.cmd, v.client = nil, nil
	v.mu.Unlock()
	if cmd == nil {
		return
	}
	if c != nil {
		c.Close()
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatal("board: QEMU did not die within a minute of SIGKILL")
	}
}

// Kill is PowerCut without a test to report to (Cleanup).
func (v *VM) Kill() {
	v.mu.Lock()
	cmd, exited, c := v.cmd, v.exited, v.client
	v.cmd, v.client = nil, nil
	v.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Shutdown powers the guest off cleanly and waits for QEMU to exit.
func (v *VM) Shutdown(t testing.TB) {
	t.Helper()
	_, _ = v.Run("systemctl poweroff --no-block")
	v.mu.Lock()
	exited, c := v.exited, v.client
	v.client = nil
	v.mu.Unlock()
	if c != nil {
		c.Close()
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Minute):
		t.Log("board: the guest did not power off within 5 minutes; killing QEMU")
	}
	v.Kill()
	v.mu.Lock()
	v.cmd = nil
	v.mu.Unlock()
}

// Run runs a shell command as root in the guest and returns its combined output.
func (v *VM) Run(cmd string) (string, error) {
	return v.RunInput(cmd, nil)
}

// RunInput is Run with stdin.
func (v *VM) RunInput(cmd string, stdin io.Reader) (string, error) {
	v.mu.Lock()
	c := v.client
	v.mu.Unlock()
	if c == nil {
		return "", errors.New("board: not logged in")
	}
	s, err := c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	s.Stdin = stdin
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

// MustRun is Run that fails the test on error.
func (v *VM) MustRun(t testing.TB, cmd string) string {
	t.Helper()
	out, err := v.Run(cmd)
	if err != nil {
		t.Fatalf("guest: %s: %v\n%s", cmd, err, out)
	}
	return out
}

// Put writes a file in the guest.
func (v *VM) Put(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	cmd := fmt.Sprintf("cat > %s.tmp && chmod %o %s.tmp && mv %s.tmp %s", path, mode, path, path, path)
	if out, err := v.RunInput(cmd, bytes.NewReader(data)); err != nil {
		t.Fatalf("guest: write %s: %v\n%s", path, err, out)
	}
}

// Get fetches a path of the daemon's ops server through the forwarded port.
func (v *VM) Get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+v.Ops+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// WaitReady polls /readyz until it answers 200 and returns the time since QEMU started.
func (v *VM) WaitReady(timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if v.Exited() {
			return 0, errors.New("QEMU exited")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, _, err := v.Get(ctx, "/readyz")
		cancel()
		if err == nil && code == http.StatusOK {
			return time.Since(v.Started()), nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return 0, fmt.Errorf("/readyz not 200 within %s", timeout)
}

// Metric reads one sample of the daemon's /metrics (the first line with that name and
// labels prefix).
func (v *VM) Metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := v.Get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

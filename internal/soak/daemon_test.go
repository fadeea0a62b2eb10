package soak

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// edgegateBinary builds the daemon once per test process (no race detector: the soak is
// about behaviour under faults, and the daemon's own tests run with -race).
func edgegateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "soak-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "edgegate")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/edgegate/edgegate/cmd/edgegate")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemon is edgegate running as a child process on one config and data directory, started
// again after every kill or stop.
type daemon struct {
	t       *testing.T
	bin     string
	cfg     string
	dataDir string
	opsAddr string
	logPath string

	mu     sync.Mutex // guards cmd and exited
	cmd    *exec.Cmd
	exited chan struct{}

	starts, kills, terms int
	slowStops            []time.Duration // SIGTERMs that took longer than flush_timeout
	stoppedAt            time.Time       // when the last SIGTERM was sent

	// epoch counts starts and stops: two reads that are equal saw one run of the daemon
	// between them (the attacks compare its counters only within one run).
	epoch atomic.Int64
}

func newDaemon(t *testing.T, cfg, dataDir, opsAddr string) *daemon {
	d := &daemon{t: t, bin: edgegateBinary(t), cfg: cfg, dataDir: dataDir, opsAddr: opsAddr,
		logPath: filepath.Join(filepath.Dir(cfg), "daemon.log")}
	if dir := os.Getenv("SOAK_LOGDIR"); dir != "" { // keep the daemon's output past the test
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("SOAK_LOGDIR: %v", err)
		}
		d.logPath = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log")
		_ = os.Remove(d.logPath)
	}
	t.Cleanup(func() {
		if d.running() {
			d.kill9()
		}
	})
	return d
}

func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exited == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// start runs the daemon and waits until /readyz answers 200. It fails the test if the
// daemon exits or is not ready within a minute (opening a store after a kill replays its
// write-ahead log).
func (d *daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	fmt.Fprintf(logf, "\n===== start %d at %s =====\n", d.starts+1, time.Now().Format(time.RFC3339Nano))
	d.epoch.Add(1)
	cmd := exec.Command(d.bin, "run", "-c", d.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The daemon dies with the soak, however the soak ends (a timeout, a kill).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.t.Fatalf("start daemon: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	d.starts++
	deadline := time.Now().Add(time.Minute)
	for {
		if code, _ := d.get("/readyz"); code == http.StatusOK {
			return
		}
		select {
		case <-exited:
			d.t.Fatalf("daemon exited at start %d: %s\n%s", d.starts, cmd.ProcessState, d.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon not ready a minute after start %d\n%s", d.starts, d.logTail(40))
		}
	}
}

// pid is the running daemon's process id (0 when it is not running).
func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	select {
	case <-d.exited:
		return 0
	default:
		return d.cmd.Process.Pid
	}
}

// kill9 kills the daemon with SIGKILL and waits for it to be gone.
func (d *daemon) kill9() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	d.epoch.Add(1)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	d.kills++
}

// sigterm stops the daemon gracefully. A stop must finish within flush_timeout and a
// margin for closing the store; one that does not is recorded (a wedged shutdown) and
// killed.
func (d *daemon) sigterm(flushTimeout time.Duration) {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	t0 := time.Now()
	d.stoppedAt = t0
	d.epoch.Add(1)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if el := time.Since(t0); el > flushTimeout+5*time.Second {
			d.slowStops = append(d.slowStops, el)
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			d.t.Errorf("daemon exited %d after SIGTERM\n%s", code, d.logTail(30))
		}
	case <-time.After(flushTimeout + 60*time.Second):
		d.t.Errorf("daemon still running %s after SIGTERM (flush_timeout %s): killed\n%s", time.Since(t0), flushTimeout, d.logTail(30))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	d.terms++
}

// get fetches a path of the ops server.
func (d *daemon) get(path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.opsAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// cli runs an edgegate subcommand (the daemon stopped) and returns its stdout.
func (d *daemon) cli(args ...string) string {
	d.t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(d.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		d.t.Fatalf("edgegate %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// logTail is the end of the daemon's output, for failure messages.
func (d *daemon) logTail(lines int) string {
	b, _ := os.ReadFile(d.logPath)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

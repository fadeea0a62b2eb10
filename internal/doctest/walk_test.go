package doctest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A walkthrough is a sequence of commands in a page that a test runs as written. Its steps
// are marked by HTML comments, which the rendered page does not show:
//
//	<!-- test:NAME run [timeout=DUR] [status=N] -->   the next fenced block runs to its end in
//	                                                 a terminal of its own (bash -e -o pipefail);
//	                                                 it must exit with status N (default 0)
//	<!-- test:NAME output -->   the next fenced block is the whole output of the previous run
//	                            block, as a template (see match_test.go)
//	<!-- test:NAME term T -->   the next fenced block starts in the background terminal T
//	                            (a command the reader leaves running in a terminal of its own)
//	<!-- test:NAME wait T [timeout=DUR] -->   wait until terminal T has shown the lines of
//	                                          the next fenced block, in order
//	<!-- test:NAME ctrl-c T -->   press Ctrl-C in terminal T, and wait for it to end
//	<!-- test:NAME file PATH -->  the reader saves the next fenced block as PATH
//
// Every block runs under a pseudo-terminal (script(1)), so programs buffer, colour and take
// Ctrl-C as they do for the reader; colours are stripped before matching. Each walkthrough
// runs in a fresh copy of the repository (what `git ls-files` lists, uncommitted edits
// included), in network, PID and (for operations) mount namespaces of its own when the
// kernel allows, so that its fixed ports meet nothing else on the machine and every
// process it started ends with it.

type step struct {
	Page, Kind, Arg string
	Line            int
	Attrs           map[string]string
	Body            string // the fenced block's content
	Want            string // run: the expected output, if the page shows one
	HasWant         bool
	WantLine        int
}

func (s *step) at() string { return fmt.Sprintf("%s:%d", s.Page, s.Line) }

var markerRE = regexp.MustCompile(`^\s*<!--\s*test:([a-z0-9-]+)\s+([a-z-]+)((?:\s+[^\s]+)*)\s*-->\s*$`)

// markers returns the steps of every walkthrough in a page, by walkthrough name.
func markers(t *testing.T, rel string) map[string][]*step {
	t.Helper()
	p := readPage(t, rel)
	out := map[string][]*step{}
	for i, l := range p.Lines {
		// A marker is a line of its own: one quoted in a code span is prose.
		if !p.prose[i] || !strings.Contains(codeSpanRE.ReplaceAllString(l, ""), "<!-- test:") {
			continue
		}
		m := markerRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s:%d: malformed marker %q", rel, i+1, l)
		}
		s := &step{Page: rel, Line: i + 1, Kind: m[2], Attrs: map[string]string{}}
		for _, f := range strings.Fields(m[3]) {
			if k, v, ok := strings.Cut(f, "="); ok {
				s.Attrs[k] = v
			} else if s.Arg == "" {
				s.Arg = f
			} else {
				t.Fatalf("%s: unexpected %q in marker", s.at(), f)
			}
		}
		needArg := map[string]bool{"term": true, "wait": true, "ctrl-c": true, "file": true}
		block := map[string]bool{"run": true, "output": true, "term": true, "wait": true, "file": true}
		if _, known := block[s.Kind]; !known && s.Kind != "ctrl-c" {
			t.Fatalf("%s: unknown step kind %q", s.at(), s.Kind)
		}
		if needArg[s.Kind] != (s.Arg != "") {
			t.Fatalf("%s: %s wants %s", s.at(), s.Kind, map[bool]string{true: "a name", false: "no name"}[needArg[s.Kind]])
		}
		if block[s.Kind] {
			f, ok := p.fenceAfter(i)
			if !ok {
				t.Fatalf("%s: marker %q is not followed by a fenced block", s.at(), s.Kind)
			}
			s.Body = f.Content
		}
		steps := out[m[1]]
		if s.Kind == "output" {
			if len(steps) == 0 || steps[len(steps)-1].Kind != "run" || steps[len(steps)-1].HasWant {
				t.Fatalf("%s: an output block must follow a run block", s.at())
			}
			prev := steps[len(steps)-1]
			prev.Want, prev.HasWant, prev.WantLine = s.Body, true, s.Line
			continue
		}
		out[m[1]] = append(steps, s)
	}
	return out
}

// TestMarkers: every walkthrough marker in README.md and docs/ is well formed, and names a
// walkthrough that a test runs.
func TestMarkers(t *testing.T) {
	known := map[string]bool{}
	for _, w := range walkthroughs {
		known[w.name] = true
	}
	n := 0
	for _, rel := range docPages(t) {
		for name, steps := range markers(t, rel) {
			if !known[name] {
				t.Errorf("%s: walkthrough %q is run by no test", rel, name)
			}
			n += len(steps)
		}
	}
	for _, w := range walkthroughs {
		if len(markers(t, w.page)[w.name]) == 0 {
			t.Errorf("%s has no steps of walkthrough %q", w.page, w.name)
		}
	}
	t.Logf("%d steps", n)
}

// walkthrough says where a walkthrough is and what it needs.
type walkthrough struct {
	name, page string
	tools      []string // commands it needs on PATH (or /usr/sbin)
	ports      []int    // fixed ports it takes, checked free when it runs on the host's network
	// A system walkthrough installs into the system: it runs only as root, with overlays
	// on systemDirs (writes go to a scratch copy), /run/systemd/system made (so that it
	// sees a systemd host) and test doubles for sudo and systemctl.
	system bool
}

var systemDirs = []string{"/etc", "/usr/local", "/var/lib", "/run"}

var walkthroughs = []walkthrough{
	{name: "tour", page: "README.md", tools: []string{"make", "go", "jq", "curl", "mosquitto_sub", "mosquitto_pub", "mosquitto"}, ports: []int{1883, 1884, 9464}},
	{name: "devices", page: "docs/devices.md", tools: []string{"make", "go", "jq", "curl", "openssl", "node", "mosquitto_sub", "mosquitto_pub", "base64", "od"}, ports: []int{1883, 8883, 8080, 9464}},
	{name: "operations", page: "docs/operations.md", tools: []string{"make", "go", "tar", "curl", "jq", "mosquitto_pub", "systemd-sysusers", "setpriv"}, ports: []int{1883, 9464}, system: true},
}

// TestTour runs the README's tour as written, against `make run`'s daemon and Debian's
// mosquitto, mosquitto_sub and mosquitto_pub.
func TestTour(t *testing.T) { runWalkthrough(t, walkthroughs[0]) }

// TestDevicesWalkthrough runs docs/devices.md's walkthrough: passwords, a CA and device
// certificates made with openssl, TLS and WebSocket clients, raw binary payloads.
func TestDevicesWalkthrough(t *testing.T) { runWalkthrough(t, walkthroughs[1]) }

// TestOperationsWalkthrough runs docs/operations.md's walkthrough: make install, the
// service, backing up and restoring the buffer, make uninstall.
func TestOperationsWalkthrough(t *testing.T) { runWalkthrough(t, walkthroughs[2]) }

const (
	envEnable = "EDGEGATE_TOUR"          // set by make tour-test
	envChild  = "EDGEGATE_DOCTEST_CHILD" // the walkthrough a re-executed test binary runs
	envDir    = "EDGEGATE_DOCTEST_DIR"   // its scratch directory
	envNS     = "EDGEGATE_DOCTEST_NS"    // "1" when it runs in namespaces of its own
	envMark   = "EDGEGATE_DOCTEST_RUN"   // set in every process a walkthrough starts
)

func runWalkthrough(t *testing.T, w walkthrough) {
	if os.Getenv(envChild) != "" {
		if os.Getenv(envChild) == w.name {
			runChild(t, w)
		}
		return
	}
	if os.Getenv(envEnable) == "" {
		t.Skipf("runs with %s=1: make tour-test", envEnable)
	}
	steps := markers(t, w.page)[w.name]
	if len(steps) == 0 {
		t.Fatalf("%s: no steps of walkthrough %q", w.page, w.name)
	}
	if w.system && os.Geteuid() != 0 {
		t.Skipf("walkthrough %q installs into the system: it runs as root only", w.name)
	}
	var missing []string
	for _, tool := range append([]string{"script", "bash", "git"}, w.tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				missing = append(missing, tool)
			}
		}
	}
	if len(missing) > 0 {
		t.Fatalf("walkthrough %q needs %s (Debian: apt-get install mosquitto mosquitto-clients jq curl openssl nodejs)", w.name, strings.Join(missing, ", "))
	}

	scratch := t.TempDir()
	src := filepath.Join(scratch, "edgegate")
	copyRepo(t, src)
	// The first build fetches modules, which the walkthrough's network namespace cannot.
	if out, err := runIn(src, nil, "make", "build"); err != nil {
		t.Fatalf("make build in the copy: %v\n%s", err, out)
	}

	args := []string{"-test.run=^" + t.Name() + "$", "-test.v", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	child := exec.Command(os.Args[0], args...)
	child.Env = append(os.Environ(), envChild+"="+w.name, envDir+"="+scratch, envNS+"=1")
	child.Stdout, child.Stderr = os.Stdout, os.Stderr
	child.SysProcAttr = namespaces()
	err := child.Start()
	if err != nil {
		if w.system {
			t.Fatalf("walkthrough %q needs mount namespaces: %v", w.name, err)
		}
		t.Logf("no namespaces (%v): the walkthrough runs on this machine's network", err)
		for _, p := range w.ports {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatalf("port %d, which walkthrough %q takes, is in use: %v", p, w.name, err)
			}
			l.Close()
		}
		child = exec.Command(os.Args[0], args...)
		child.Env = append(os.Environ(), envChild+"="+w.name, envDir+"="+scratch)
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("walkthrough %q: %v (its steps' log is above)", w.name, err)
	}
}

// namespaces are a network, a PID and a mount namespace (for a /proc of that PID
// namespace, and overlays), in a user namespace for a user other than root.
func namespaces() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		a.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN}
	}
	return a
}

// copyRepo copies what git tracks, and the files it would track, to dst.
func copyRepo(t *testing.T, dst string) {
	t.Helper()
	out, err := runIn(repoRoot, nil, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		t.Fatalf("git ls-files: %v\n%s", err, out)
	}
	for _, rel := range strings.Split(strings.TrimRight(out, "\x00"), "\x00") {
		src := filepath.Join(repoRoot, rel)
		fi, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the worktree
		} else if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(l, to)
			}
			if err != nil {
				t.Fatal(err)
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(src)
			if err == nil {
				err = os.WriteFile(to, b, fi.Mode().Perm())
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func runIn(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// harness runs one walkthrough's steps (in the re-executed test binary).
type harness struct {
	t       *testing.T
	w       walkthrough
	dir     string // the repository copy: every block's working directory
	scratch string
	env     []string
	mark    string
	n       int
	terms   map[string]*terminal
	all     []*terminal
}

type terminal struct {
	name, label string
	cmd         *exec.Cmd
	in          io.WriteCloser
	mu          sync.Mutex
	buf         bytes.Buffer
	done        chan struct{}
	err         error // from Wait, once done
}

func (tm *terminal) Write(b []byte) (int, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.Write(b)
}

func (tm *terminal) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return cleanTerminal(tm.buf.Bytes())
}

func (tm *terminal) exited() bool {
	select {
	case <-tm.done:
		return true
	default:
		return false
	}
}

func runChild(t *testing.T, w walkthrough) {
	scratch := os.Getenv(envDir)
	h := &harness{t: t, w: w, dir: filepath.Join(scratch, "edgegate"), scratch: scratch, terms: map[string]*terminal{}}
	if os.Getenv(envNS) == "1" {
		if err := loopbackUp(); err != nil {
			t.Fatalf("bring lo up in the walkthrough's network namespace: %v", err)
		}
		h.mounts()
	}
	h.setEnv()
	t.Cleanup(h.cleanup)
	steps := markers(t, w.page)[w.name]
	start := time.Now()
	for _, s := range steps {
		h.do(s)
		if t.Failed() {
			h.dump()
			return
		}
	}
	t.Logf("walkthrough %q: %d steps in %s", w.name, len(steps), time.Since(start).Round(100*time.Millisecond))
}

// loopbackUp brings up lo, which a new network namespace starts with down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// mounts gives this mount namespace a /proc of its PID namespace, and a system
// walkthrough a scratch overlay on each of systemDirs: what it installs there disappears
// with it.
func (h *harness) mounts() {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		h.t.Fatalf("make / private: %v", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		h.t.Fatalf("mount /proc: %v", err)
	}
	if !h.w.system {
		return
	}
	for i, d := range systemDirs {
		up := filepath.Join(h.scratch, "overlay", strconv.Itoa(i))
		for _, s := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(up, s), 0o755); err != nil {
				h.t.Fatal(err)
			}
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", d, up, up)
		if err := unix.Mount("overlay", d, "overlay", 0, opts); err != nil {
			h.t.Fatalf("overlay on %s: %v", d, err)
		}
	}
	if err := os.MkdirAll("/run/systemd/system", 0o755); err != nil {
		h.t.Fatal(err)
	}
}

// setEnv builds the environment of every block: the reader's, minus what would make it
// differ between machines (their HOME, sbin directories on PATH).
func (h *harness) setEnv() {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		h.t.Fatal(err)
	}
	h.mark = hex.EncodeToString(b)
	home := filepath.Join(h.scratch, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		h.t.Fatal(err)
	}
	goenv := func(k string) string {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			h.t.Fatalf("go env %s: %v", k, err)
		}
		return strings.TrimSpace(string(out))
	}
	var path []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if !strings.HasSuffix(d, "/sbin") {
			path = append(path, d)
		}
	}
	if h.w.system {
		shims := h.shims()
		path = append([]string{shims}, path...)
	}
	h.env = []string{
		"PATH=" + strings.Join(path, ":"),
		"HOME=" + home,
		"SHELL=/bin/bash",
		"TERM=dumb",
		"LANG=C.UTF-8",
		"USER=" + os.Getenv("USER"),
		"GOCACHE=" + goenv("GOCACHE"),
		"GOMODCACHE=" + goenv("GOMODCACHE"),
		"GOPATH=" + goenv("GOPATH"),
		"GOPROXY=off",
		"GOTOOLCHAIN=local",
		"NODE_PATH=" + filepath.Join(mustAbs(h.t, repoRoot), "cmd", "edgegate", "testdata", "mqttjs", "node_modules"),
		envMark + "=" + h.mark,
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// shims writes test doubles for sudo (the walkthrough already runs as root: it resets the
// environment as Debian's sudo does) and systemctl (it runs the installed unit's ExecStart
// as its User, in the background).
func (h *harness) shims() string {
	dir := filepath.Join(h.scratch, "shims")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	sudo := `#!/bin/sh
# Test double of sudo for the docs' walkthroughs: the test already runs as root. Resets
# the environment as Debian's sudoers does (env_reset, secure_path).
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root TERM="$TERM" LANG="$LANG" ` + envMark + `="$` + envMark + `" \
	PATH_SHIMS="` + dir + `" sh -c 'PATH="$PATH_SHIMS:$PATH" exec "$@"' sudo "$@"
`
	systemctl := `#!/bin/bash
# Test double of systemctl for the docs' walkthroughs: runs edgegate.service's ExecStartPre
# and ExecStart (as its User and Group) in the background, stops it with SIGTERM.
set -e
unit=""
for d in /etc/systemd/system /usr/local/lib/systemd/system /usr/lib/systemd/system; do
	[ -f "$d/edgegate.service" ] && { unit="$d/edgegate.service"; break; }
done
pidfile=/run/edgegate-doctest.pid
log=/run/edgegate-doctest.log
now=0
args=()
for a in "$@"; do
	case "$a" in --now) now=1 ;; *) args+=("$a") ;; esac
done
cmd=${args[0]}
[ "$cmd" = daemon-reload ] && exit 0
name=${args[1]%.service}
[ "$name" = edgegate ] || { echo "systemctl double: only edgegate.service, not $name" >&2; exit 1; }
[ -n "$unit" ] || { echo "Unit edgegate.service could not be found." >&2; exit 5; }
get() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
# Running, and not a zombie: in the walkthrough's PID namespace the test binary is init,
# which reaps no orphans.
running() {
	[ -f "$pidfile" ] || return 1
	local st
	st=$(sed 's/.*) //' "/proc/$(cat "$pidfile")/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$st" ] && [ "$st" != Z ]
}
start() {
	running && return 0
	user=$(get User); group=$(get Group)
	install -d -m "$(get StateDirectoryMode)" -o "$user" -g "$group" /var/lib/$(get StateDirectory)
	pre=$(get ExecStartPre); main=$(get ExecStart)
	: > "$log" # this start's lines only: the wait below looks for its "running"
	# As systemd does, the unit's output goes to its log (the journal), not to systemctl's.
	setpriv --reuid "$user" --regid "$group" --init-groups $pre >>"$log" 2>&1 || { cat "$log" >&2; return 1; }
	GOMEMLIMIT=96MiB setsid setpriv --reuid "$user" --regid "$group" --init-groups $main >>"$log" 2>&1 </dev/null &
	echo $! > "$pidfile"
	for i in $(seq 300); do
		grep -q 'msg="edgegate running"' "$log" 2>/dev/null && return 0
		running || { cat "$log" >&2; return 1; }
		sleep 0.2
	done
	echo "edgegate did not start in 60 s" >&2; return 1
}
stop() {
	running || return 0
	pid=$(cat "$pidfile"); kill -TERM "$pid"
	for i in $(seq 300); do running || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
	echo "edgegate did not stop in 30 s" >&2; return 1
}
case "$cmd" in
	start) start ;;
	stop) stop ;;
	restart) stop; start ;;
	enable) [ "$now" = 1 ] && start; true ;;
	disable) [ "$now" = 1 ] && stop; true ;;
	is-active) running && echo active || { echo inactive; exit 3; } ;;
	*) echo "systemctl double: $cmd is not supported" >&2; exit 1 ;;
esac
`
	for name, body := range map[string]string{"sudo": sudo, "systemctl": systemctl} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			h.t.Fatal(err)
		}
	}
	return dir
}

func (h *harness) deadline(s *step, def time.Duration) time.Duration {
	if v := s.Attrs["timeout"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			h.t.Fatalf("%s: timeout=%s: %v", s.at(), v, err)
		}
		return d
	}
	return def
}

func (h *harness) start(name, body string, strict bool) *terminal {
	h.n++
	file := filepath.Join(h.scratch, "blocks", fmt.Sprintf("%02d-%s.sh", h.n, name))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		h.t.Fatal(err)
	}
	shell := "bash " + file
	if strict {
		shell = "bash -e -o pipefail " + file
	}
	tm := &terminal{name: name, label: fmt.Sprintf("%s (block %02d)", name, h.n), done: make(chan struct{})}
	tm.cmd = exec.Command("script", "-qfec", shell, "/dev/null")
	tm.cmd.Dir = h.dir
	tm.cmd.Env = h.env
	tm.cmd.Stdout, tm.cmd.Stderr = tm, tm
	tm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := tm.cmd.StdinPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	tm.in = in
	if err := tm.cmd.Start(); err != nil {
		h.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		tm.err = tm.cmd.Wait()
		close(tm.done)
	}()
	h.all = append(h.all, tm)
	return tm
}

func (h *harness) do(s *step) {
	t := h.t
	t.Logf("%s: %s %s", s.at(), s.Kind, s.Arg)
	switch s.Kind {
	case "file":
		p := filepath.Join(h.dir, s.Arg)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s.Body), 0o644); err != nil {
			t.Fatal(err)
		}
	case "run":
		tm := h.start("run", s.Body, true)
		select {
		case <-tm.done:
		case <-time.After(h.deadline(s, 3*time.Minute)):
			t.Errorf("%s: still running after %s:\n%s", s.at(), h.deadline(s, 3*time.Minute), tm.output())
			return
		}
		want := 0
		if v := s.Attrs["status"]; v != "" {
			want, _ = strconv.Atoi(v)
		}
		got := 0
		var ee *exec.ExitError
		if errors.As(tm.err, &ee) {
			got = ee.ExitCode()
		} else if tm.err != nil {
			t.Errorf("%s: %v", s.at(), tm.err)
			return
		}
		out := tm.output()
		if got != want {
			t.Errorf("%s: exit status %d, want %d; it printed:\n%s", s.at(), got, want, out)
			return
		}
		if s.HasWant && !matchWhole(templateLines(s.Want), templateLines(out)) {
			t.Errorf("%s: the output is not what %s:%d shows.\nshown:\n%s\nprinted:\n%s", s.at(), s.Page, s.WantLine, s.Want, out)
		}
	case "term":
		if tm := h.terms[s.Arg]; tm != nil && !tm.exited() {
			t.Errorf("%s: terminal %s still runs its previous command", s.at(), s.Arg)
			return
		}
		h.terms[s.Arg] = h.start(s.Arg, s.Body, false)
	case "wait":
		tm := h.term(s)
		if tm == nil {
			return
		}
		want := templateLines(s.Body)
		limit := time.Now().Add(h.deadline(s, 3*time.Minute))
		for !matchWithin(want, templateLines(tm.output())) {
			if tm.exited() {
				if !matchWithin(want, templateLines(tm.output())) {
					t.Errorf("%s: terminal %s ended (%v) without showing:\n%s", s.at(), s.Arg, tm.err, s.Body)
				}
				return
			}
			if time.Now().After(limit) {
				t.Errorf("%s: terminal %s has not shown in %s:\n%s", s.at(), s.Arg, h.deadline(s, 3*time.Minute), s.Body)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	case "ctrl-c":
		tm := h.term(s)
		if tm == nil {
			return
		}
		if _, err := tm.in.Write([]byte{3}); err != nil {
			t.Errorf("%s: Ctrl-C to %s: %v", s.at(), s.Arg, err)
			return
		}
		select {
		case <-tm.done:
		case <-time.After(h.deadline(s, time.Minute)):
			t.Errorf("%s: terminal %s still runs %s after Ctrl-C", s.at(), s.Arg, h.deadline(s, time.Minute))
		}
	}
}

func (h *harness) term(s *step) *terminal {
	tm := h.terms[s.Arg]
	if tm == nil {
		h.t.Errorf("%s: no terminal %s was started before", s.at(), s.Arg)
	}
	return tm
}

func (h *harness) dump() {
	for _, tm := range h.all {
		h.t.Logf("---- terminal %s:\n%s", tm.label, tm.output())
	}
}

// cleanup ends what the walkthrough left running: Ctrl-C first, as the reader would, then
// SIGKILL for its terminals and any process that carries its mark.
func (h *harness) cleanup() {
	for _, tm := range h.all {
		if !tm.exited() {
			_, _ = tm.in.Write([]byte{3})
		}
	}
	limit := time.After(15 * time.Second)
	for _, tm := range h.all {
		select {
		case <-tm.done:
		case <-limit:
		}
	}
	for _, tm := range h.all {
		if !tm.exited() {
			_ = syscall.Kill(-tm.cmd.Process.Pid, syscall.SIGKILL)
		}
		_ = tm.in.Close()
	}
	if h.mark == "" {
		return
	}
	self, _ := os.Readlink("/proc/self")
	for i := 0; i < 10; i++ {
		left := marked(h.mark, self)
		if len(left) == 0 {
			return
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Errorf("processes of the walkthrough survive SIGKILL: %v", marked(h.mark, self))
}

// marked lists the processes whose environment carries mark.
func marked(mark, self string) []int {
	ents, _ := os.ReadDir("/proc")
	want := []byte(envMark + "=" + mark + "\x00")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || e.Name() == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue // a zombie, already dead
			}
		}
		out = append(out, pid)
	}
	return out
}

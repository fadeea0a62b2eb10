package loadgen_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/loadgen"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestMain plays the daemon when a benchmark re-executes this binary with
// LOADGEN_DAEMON=<config>: the real gateway until SIGTERM, writing a CPU profile of the
// whole run to LOADGEN_CPUPROFILE if set, and a heap profile to LOADGEN_HEAPPROFILE at each
// SIGUSR1 (the last one stays). (The release binary has no profiling flag.)
func TestMain(m *testing.M) {
	if path := os.Getenv("LOADGEN_DAEMON"); path != "" {
		os.Exit(daemonChild(path, os.Getenv("LOADGEN_CPUPROFILE"), os.Getenv("LOADGEN_HEAPPROFILE")))
	}
	os.Exit(m.Run())
}

func daemonChild(path, profile, heap string) int {
	cfg, err := gatewaytest.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := gateway.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	g, err := gateway.New(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if heap != "" {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		profiled := make(chan struct{})
		defer func() { stop(); <-profiled }() // stop ends the goroutine when Run failed
		go func() {
			defer close(profiled)
			for {
				select {
				case <-ctx.Done():
					return
				case <-usr1:
					if err := writeHeapProfile(heap); err != nil {
						fmt.Fprintln(os.Stderr, err)
					}
				}
			}
		}()
	}
	// The ops server, as the daemon's service runs it: the benchmark reads /metrics.
	reg := ops.NewRegistry()
	srv := ops.New(ops.Options{Listen: cfg.Ops.Listen, Registry: reg, Clock: clock.Real{}, Logger: opts.Logger, AllowedHosts: cfg.Ops.AllowedHosts})
	if err := srv.Listen(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	g.Register(reg)
	srv.SetSource(g)
	auxCtx, auxCancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Run(auxCtx)
	}()
	defer func() {
		auxCancel()
		<-served
	}()
	if err := g.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// writeHeapProfile writes the heap profile (in use as of the last collection, and
// allocated since the start) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuConfig is the case of issue 20: readings routed per device, one pipeline with a 10 s
// tumbling count/mean/min/max per series, one file uplink forwarding only the panes, and
// the buffer's defaults (sync: always).
const cpuConfig = `
gateway: {id: gw-bench, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
  max_clients: 1000
  max_connections_per_ip: 1000
  max_connect_rate_per_ip: 1000
  max_rate_per_client: 1000000
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
unrouted: drop
dedup: {ttl: 24h}
buffer: {sync: %s}
pipelines:
  - name: agg10s
    input: "devices/#"
    window: {type: tumbling, size: 10s}
    aggregates: [count, mean, min, max]
    out_of_order: 2s
    idle: 5s
uplinks:
  - name: archive
    type: file
    path: %q
    forward: ["agg/#"]
    batch: {max_records: 500, linger: 1s}
ops: {log: {level: warn}, listen: %q, clock: {mode: trust}}
`

// nowPayload is a 100-byte JSON reading stamped with the current time, so the pipeline's
// windows fire as a device's would.
func nowPayload(prefix string, pub, n int) []byte {
	const size = 100
	b := fmt.Appendf(nil, `{"value":%d.5,"unit":"Cel","ts":%d,"id":"%s-%d-%d","pad":"`, 15+n%10, time.Now().UnixMilli(), prefix, pub, n)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// BenchmarkCPUPerReading is issue 20's end-to-end cost: 20 devices publishing QoS 0, one
// topic each, at 2k and 10k msg/s in all (LOADGEN_RATES="2000,10000"), for LOADGEN_SECONDS
// (default 30), into a daemon running cpuConfig (buffer.sync: LOADGEN_SYNC, default
// always). It reports the daemon's CPU time (utime+stime from /proc/PID/stat, from the
// load's start until every reading is in the raw log) per reading, and the commits and
// fsyncs per reading. LOADGEN_CPUPROFILE=DIR writes a CPU profile of each daemon there
// (cpu-<rate>.pprof; the profile covers the daemon's whole life).
func BenchmarkCPUPerReading(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	secs := 30
	if s, err := strconv.Atoi(os.Getenv("LOADGEN_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	rates := []int{2000, 10000}
	if l := os.Getenv("LOADGEN_RATES"); l != "" {
		rates = rates[:0]
		for _, f := range strings.Split(l, ",") {
			r, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("LOADGEN_RATES: %v", err)
			}
			rates = append(rates, r)
		}
	}
	sync := "always"
	if s := os.Getenv("LOADGEN_SYNC"); s != "" {
		sync = s
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, rate := range rates {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				cpuRun(b, self, sync, rate, time.Duration(secs)*time.Second)
			}
		})
	}
}

func cpuRun(b *testing.B, self, sync string, rate int, d time.Duration) {
	dir := b.TempDir()
	addr := testutil.FreeAddr(b)
	opsAddr := testutil.FreeAddr(b)
	cfgPath := filepath.Join(dir, "edgegate.yaml")
	text := fmt.Sprintf(cpuConfig, dir, addr, sync, filepath.Join(dir, "agg.jsonl"), opsAddr)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "LOADGEN_DAEMON="+cfgPath, "LOADGEN_CPUPROFILE=")
	if p := os.Getenv("LOADGEN_CPUPROFILE"); p != "" {
		cmd.Env = append(cmd.Env, "LOADGEN_CPUPROFILE="+filepath.Join(p, fmt.Sprintf("cpu-%d.pprof", rate)))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	defer stop()
	pid := cmd.Process.Pid
	set := connect(b, addr, 20)
	waitOps(b, opsAddr)
	commits0 := metric(b, opsAddr, "edgegate_buffer_commits_total")
	fsyncs0 := metric(b, opsAddr, "edgegate_buffer_fsyncs_total")
	cpu0 := procCPU(b, pid)
	res := run(b, set, loadgen.Config{Publishers: 20, Window: 1000, Rate: float64(rate), Duration: d,
		Topic: durableTopic, QoS0: true, Payload: nowPayload})
	// The uplink has read past every reading (forwarded or not), or the deadline passed.
	deadline := time.Now().Add(30 * time.Second)
	for labelled(b, opsAddr, "edgegate_uplink_backlog_records", `uplink="archive"`) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	settled := time.Since(deadline.Add(-30 * time.Second))
	cpu := procCPU(b, pid) - cpu0
	commits := metric(b, opsAddr, "edgegate_buffer_commits_total") - commits0
	fsyncs := metric(b, opsAddr, "edgegate_buffer_fsyncs_total") - fsyncs0
	stop()
	b.ReportMetric(res.Throughput(), "msg/s")
	b.ReportMetric(settled.Seconds(), "settle-s")
	b.ReportMetric(cpu.Seconds()*1e6/float64(res.Acked), "cpu-µs/reading")
	b.ReportMetric(commits/float64(res.Acked), "commits/reading")
	b.ReportMetric(fsyncs/float64(res.Acked), "fsyncs/reading")
}

// procCPU is the user and system CPU time of process pid so far (/proc/PID/stat).
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces: count after it.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	const hz = 100 // USER_HZ: 100 on every Linux port Go supports
	return time.Duration(utime+stime) * time.Second / hz
}

// labelled reads the sample of name with the given labels (`log="raw"`) from /metrics.
func labelled(b *testing.B, opsAddr, name, labels string) float64 {
	prefix := name + "{" + labels + "} "
	for _, line := range strings.Split(scrape(b, opsAddr), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// waitOps waits until the daemon's ops server answers.
func waitOps(b *testing.B, opsAddr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + opsAddr + "/metrics")
		if err == nil {
			res.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

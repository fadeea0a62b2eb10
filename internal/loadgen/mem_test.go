package loadgen_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/loadgen"
	"github.com/edgegate/edgegate/internal/testutil"
)

// memLoad is one load of BenchmarkMemory.
type memLoad struct {
	name       string
	publishers int
	rate       float64 // msg/s in all; 0: as fast as the publishers go
	qos0       bool
}

var memLoads = []memLoad{
	{"qos1-10k", 100, 10000, false},
	{"qos0-10k", 20, 10000, true},
	{"qos1-flood", 100, 0, false},
	{"qos0-flood", 20, 0, true},
}

// BenchmarkMemory is issue 20's goal 2: the daemon's memory (cpuConfig: durable ingest,
// one pipeline, one file uplink; the daemon is this binary re-executed, see TestMain) at
// 10k msg/s QoS 1 (100 publishers) and QoS 0 (20 devices), and overloaded: 100 QoS 1
// publishers with 1000 in flight each, and 20 QoS 0 devices, as fast as they go. Each
// without GOMEMLIMIT and with the systemd unit's (read from systemd/edgegate.service;
// LOADGEN_GOMEMLIMITS="none,64MiB" picks others), for LOADGEN_SECONDS (default 30);
// LOADGEN_LOADS="qos0-flood,..." picks loads. It samples /proc/PID/status every 250 ms
// during the load and until the uplink has read every reading (at most 30 s more) and
// reports peak RSS (VmHWM), the steady RSS (median VmRSS over the load's second half) and
// the steady anonymous part of it (RssAnon: what is not file-backed), the largest Go heap
// seen (go_memstats_heap_alloc_bytes of /metrics), the rate reached and the daemon's CPU
// time per reading (utime+stime from the load's start until the uplink has read every
// reading: what a low GOMEMLIMIT costs).
// LOADGEN_HEAPPROFILE=DIR writes a heap profile of each daemon at the load's end
// (heap-<load>-<limit>.pprof). With the unit's GOMEMLIMIT, a peak RSS above maxPeakRatio of
// the unit's MemoryMax fails the benchmark (peak/MemoryMax).
func BenchmarkMemory(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	secs := 30
	if s, err := strconv.Atoi(os.Getenv("LOADGEN_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	unitLimit, memoryMax := unitMemory(b)
	limits := []string{"", unitLimit}
	if l := os.Getenv("LOADGEN_GOMEMLIMITS"); l != "" {
		limits = strings.Split(strings.ReplaceAll(l, "none", ""), ",")
	}
	loads := memLoads
	if l := os.Getenv("LOADGEN_LOADS"); l != "" {
		loads = nil
		for _, name := range strings.Split(l, ",") {
			i := slices.IndexFunc(memLoads, func(m memLoad) bool { return m.name == name })
			if i < 0 {
				b.Fatalf("LOADGEN_LOADS: no load %q", name)
			}
			loads = append(loads, memLoads[i])
		}
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, ld := range loads {
		for _, limit := range limits {
			b.Run(fmt.Sprintf("%s/gomemlimit=%s", ld.name, cmpOr(limit, "none")), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					peak := memRun(b, self, ld, limit, time.Duration(secs)*time.Second)
					// The unit's ceiling, with a margin for what this machine does not
					// show (a slower board, more clients): it must not be reached.
					ratio := peak / float64(memoryMax)
					b.ReportMetric(ratio, "peak/MemoryMax")
					if limit == unitLimit && ratio > maxPeakRatio {
						b.Errorf("peak RSS %.0f MiB with the unit's GOMEMLIMIT=%s is %.2f of its MemoryMax (%d MiB), above %.2f",
							peak/(1<<20), limit, ratio, memoryMax>>20, maxPeakRatio)
					}
				}
			})
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// maxPeakRatio is the most of the unit's MemoryMax a run may reach with its GOMEMLIMIT.
const maxPeakRatio = 0.85

// unitMemory reads the GOMEMLIMIT and MemoryMax (bytes) that systemd/edgegate.service sets.
func unitMemory(b *testing.B) (gomemlimit string, memoryMax int64) {
	text, err := os.ReadFile(filepath.Join("..", "..", "systemd", "edgegate.service"))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, "Environment=GOMEMLIMIT="); ok {
			gomemlimit = v
		}
		if v, ok := strings.CutPrefix(line, "MemoryMax="); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(v, "M"), 10, 64)
			if err != nil || !strings.HasSuffix(v, "M") {
				b.Fatalf("MemoryMax=%s: want a size in M", v)
			}
			memoryMax = n << 20
		}
	}
	if gomemlimit == "" || memoryMax == 0 {
		b.Fatal("systemd/edgegate.service sets no GOMEMLIMIT or MemoryMax")
	}
	return gomemlimit, memoryMax
}

// memRun runs one load and returns the daemon's peak RSS in bytes.
func memRun(b *testing.B, self string, ld memLoad, limit string, d time.Duration) float64 {
	dir := b.TempDir()
	addr := testutil.FreeAddr(b)
	opsAddr := testutil.FreeAddr(b)
	cfgPath := filepath.Join(dir, "edgegate.yaml")
	text := fmt.Sprintf(cpuConfig, dir, addr, "always", filepath.Join(dir, "agg.jsonl"), opsAddr)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "LOADGEN_DAEMON="+cfgPath, "LOADGEN_CPUPROFILE=", "LOADGEN_HEAPPROFILE=", "GOMEMLIMIT=")
	if limit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+limit)
	}
	heap := ""
	if p := os.Getenv("LOADGEN_HEAPPROFILE"); p != "" {
		heap = filepath.Join(p, fmt.Sprintf("heap-%s-%s.pprof", ld.name, cmpOr(limit, "none")))
		cmd.Env = append(cmd.Env, "LOADGEN_HEAPPROFILE="+heap)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	set := connect(b, addr, ld.publishers)
	waitOps(b, opsAddr)

	type sampling struct {
		rss  []int64 // KiB, during the load
		anon []int64 // KiB of it anonymous (RssAnon: not the binary's or Badger's mapped files)
		heap float64 // the largest heap_alloc seen
		err  error
	}
	var (
		smp      sampling
		loadDone = make(chan struct{})
		quit     = make(chan struct{})
		sampled  = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			v, err := testutil.ProcField(pid, "status", "VmRSS")
			if err != nil {
				smp.err = err
				return
			}
			anon, err := testutil.ProcField(pid, "status", "RssAnon")
			if err != nil {
				smp.err = err
				return
			}
			select {
			case <-loadDone:
			default:
				smp.rss = append(smp.rss, v)
				smp.anon = append(smp.anon, anon)
			}
			if h, err := heapAlloc(opsAddr); err == nil {
				smp.heap = max(smp.heap, h)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cpu0 := procCPU(b, pid)
	loads++
	cfg := loadgen.Config{Publishers: ld.publishers, Window: 1000, Rate: ld.rate, Duration: d,
		Topic: durableTopic, QoS0: ld.qos0, Payload: nowPayload, IDPrefix: fmt.Sprintf("l%d", loads)}
	if ld.rate == 0 {
		cfg.Messages = 1 << 40 // until ctx ends
	}
	res, err := loadgen.Run(ctx, set, cfg)
	if err != nil {
		b.Fatal(err)
	}
	close(loadDone)
	if heap != "" {
		cmd.Process.Signal(syscall.SIGUSR1)
	}
	deadline := time.Now().Add(30 * time.Second)
	for labelled(b, opsAddr, "edgegate_uplink_backlog_records", `uplink="archive"`) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	cpu := procCPU(b, pid) - cpu0
	close(quit)
	<-sampled
	if smp.err != nil {
		b.Fatal(smp.err)
	}
	if len(smp.rss) < 2 {
		b.Fatalf("%d RSS samples: the run is too short", len(smp.rss))
	}
	peak := procStatus(b, pid, "VmHWM")
	b.ReportMetric(res.Throughput(), "msg/s")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(steady(smp.rss))/1024, "steady-RSS-MiB")
	// File-backed pages (the binary, Badger's tables and logs) the kernel can reclaim are
	// the rest of the RSS.
	b.ReportMetric(float64(steady(smp.anon))/1024, "steady-anon-MiB")
	b.ReportMetric(smp.heap/(1<<20), "peak-heap-MiB")
	// What a GOMEMLIMIT below the live heap costs: the collector's CPU.
	b.ReportMetric(cpu.Seconds()*1e6/float64(max(res.Acked, 1)), "cpu-µs/reading")
	return float64(peak) * 1024
}

// heapAlloc reads go_memstats_heap_alloc_bytes from the daemon's /metrics.
func heapAlloc(opsAddr string) (float64, error) {
	v := labelledOK(opsAddr, "go_memstats_heap_alloc_bytes")
	if v < 0 {
		return 0, fmt.Errorf("no heap in /metrics")
	}
	return v, nil
}

// labelledOK reads a sample without labels from the daemon's /metrics; -1 if it cannot.
// Unlike metric it may run off the benchmark's goroutine.
func labelledOK(opsAddr, name string) float64 {
	res, err := http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	text, err := io.ReadAll(res.Body)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// steady is the median of the second half of samples.
func steady(samples []int64) int64 {
	half := slices.Clone(samples[len(samples)/2:])
	slices.Sort(half)
	return half[len(half)/2]
}

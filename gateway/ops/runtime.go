package ops

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RuntimeMetrics are the Go runtime and process families. They keep the go_ and process_
// names every Go exporter uses, so existing dashboards and alerts work unchanged.
var RuntimeMetrics = []Desc{
	{Name: "go_info", Type: Gauge, Help: "Go version the binary was built with.", Labels: []string{"version"}},
	{Name: "go_goroutines", Type: Gauge, Help: "Goroutines that currently exist."},
	{Name: "go_memstats_heap_alloc_bytes", Type: Gauge, Help: "Bytes of allocated heap objects."},
	{Name: "go_memstats_sys_bytes", Type: Gauge, Help: "Bytes of memory obtained from the OS by the Go runtime."},
	{Name: "go_gc_cycles_total", Type: Counter, Help: "Completed GC cycles."},
	{Name: "go_gc_gomemlimit_bytes", Type: Gauge, Help: "The Go soft memory limit (GOMEMLIMIT)."},
	{Name: "process_resident_memory_bytes", Type: Gauge, Help: "Resident set size of the process."},
	{Name: "process_cpu_seconds_total", Type: Counter, Help: "User and system CPU time spent."},
	{Name: "process_open_fds", Type: Gauge, Help: "Open file descriptors."},
	{Name: "process_start_time_seconds", Type: Gauge, Help: "Start time of the process, in unix seconds."},
}

var runtimeSamples = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/gc/cycles/total:gc-cycles",
	"/gc/gomemlimit:bytes",
}

// RuntimeCollector reports the Go runtime and process figures; start is the process start.
func RuntimeCollector(start time.Time) Collector {
	return func(w *Writer) {
		s := make([]metrics.Sample, len(runtimeSamples))
		for i, n := range runtimeSamples {
			s[i].Name = n
		}
		metrics.Read(s)
		val := func(i int) float64 {
			switch s[i].Value.Kind() {
			case metrics.KindUint64:
				return float64(s[i].Value.Uint64())
			case metrics.KindFloat64:
				return s[i].Value.Float64()
			}
			return 0
		}
		w.Add("go_info", 1, runtime.Version())
		w.Add("go_goroutines", val(0))
		w.Add("go_memstats_heap_alloc_bytes", val(1))
		w.Add("go_memstats_sys_bytes", val(2))
		w.Add("go_gc_cycles_total", val(3))
		w.Add("go_gc_gomemlimit_bytes", val(4))
		if rss, ok := residentBytes(); ok {
			w.Add("process_resident_memory_bytes", float64(rss))
		}
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			w.Add("process_cpu_seconds_total", cpu.Seconds())
		}
		if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
			w.Add("process_open_fds", float64(len(fds)))
		}
		w.Add("process_start_time_seconds", float64(start.UnixMilli())/1e3)
	}
}

// residentBytes reads the RSS from /proc/self/statm (Linux).
func residentBytes() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * uint64(os.Getpagesize()), true
}

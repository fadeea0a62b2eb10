package loadgen_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/loadgen"
	"github.com/edgegate/edgegate/internal/testutil"
)

// The gateway under load: its buffer with the defaults (sync: always, 512 MiB), the
// per-client rate and per-address connection limits lifted (the publishers are benchmark
// clients on one address, not hostile devices), readings
// routed from devices/+device/+metric, and unrouted topics dropped — which makes a publish
// on bench/... go through the same broker and ingest hook without reaching the store: the
// no-op baseline of every ratio below.
const benchConfig = `
gateway: {id: gw-bench, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  allow_anonymous: true
  max_clients: 1000
  max_connections_per_ip: 1000    # every publisher is on 127.0.0.1
  max_connect_rate_per_ip: 1000   # and connects at once
  max_rate_per_client: 1000000    # a benchmark client is no flood
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
unrouted: drop
dedup: {ttl: 24h}
buffer: {sync: %s}
ops: {log: {level: warn}, listen: %q, clock: {mode: trust}}
`

func durableTopic(i int) string { return fmt.Sprintf("devices/bench-%d/temperature", i) }
func noopTopic(i int) string    { return fmt.Sprintf("bench/noop-%d/temperature", i) }

// writeConfig writes benchConfig for a gateway listening on addr, with buffer.sync and
// ops.listen ("off": no ops server).
func writeConfig(b *testing.B, dir, addr, sync, opsListen string) string {
	p := filepath.Join(dir, "edgegate.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(benchConfig, dir, addr, sync, opsListen)), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// startGateway runs the real gateway in this process with the given buffer.sync.
func startGateway(b *testing.B, sync string) string {
	dir := b.TempDir()
	addr := testutil.FreeAddr(b)
	cfg, err := gatewaytest.Load(writeConfig(b, dir, addr, sync, "off"))
	if err != nil {
		b.Fatal(err)
	}
	gatewaytest.Start(b, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler)})
	return addr
}

var loads int

func run(b *testing.B, clients []paho.Client, cfg loadgen.Config) loadgen.Result {
	loads++
	cfg.IDPrefix = fmt.Sprintf("l%d", loads)
	res, err := loadgen.Run(context.Background(), clients, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkIngestQoS1 is durable QoS 1 ingest from 1, 10 and 100 paho publishers of
// 100-byte JSON readings, each keeping 20 messages in flight, next to the same broker and
// hook with nothing to store in the same run: ratio = durable msg/s ÷ no-op msg/s (target
// ≥ 0.8). With sync: always each PUBACK waits for the fsync of its group; with sync: 10ms
// for the write-ahead log only.
func BenchmarkIngestQoS1(b *testing.B) {
	for _, sync := range []string{"always", "10ms"} {
		addr := startGateway(b, sync)
		for _, pubs := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("sync=%s/publishers=%d", sync, pubs), func(b *testing.B) {
				set := connect(b, addr, pubs)
				cfg := loadgen.Config{Publishers: pubs, Window: 20, Messages: b.N}
				// Alternate so that neither side gets the warmer machine.
				var durable, noop loadgen.Result
				for round := 0; round < 2; round++ {
					cfg.Topic = noopTopic
					r := run(b, set, cfg)
					noop.Acked += r.Acked
					noop.Elapsed += r.Elapsed
					cfg.Topic = durableTopic
					r = run(b, set, cfg)
					durable.Acked += r.Acked
					durable.Elapsed += r.Elapsed
				}
				reportRatio(b, durable, noop)
			})
		}
	}
}

// reportRatio reports durable and no-op throughput and their ratio. An iteration is
// messages of two kinds, some in two rounds: ns/op would read as a rate nothing measured.
func reportRatio(b *testing.B, durable, noop loadgen.Result) {
	b.ReportMetric(durable.Throughput(), "durable-msg/s")
	b.ReportMetric(noop.Throughput(), "noop-msg/s")
	b.ReportMetric(durable.Throughput()/noop.Throughput(), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkIngestOneConnection: what one connection gets from the durable path as it keeps
// more QoS 1 messages in flight (the acker lets up to 64 wait for the store at once, and
// they share fsyncs), against the same connection on the no-op topic.
func BenchmarkIngestOneConnection(b *testing.B) {
	addr := startGateway(b, "always")
	set := connect(b, addr, 1)
	for _, window := range []int{1, 20, 100} {
		b.Run(fmt.Sprintf("in-flight=%d", window), func(b *testing.B) {
			cfg := loadgen.Config{Publishers: 1, Window: window, Messages: b.N}
			cfg.Topic = noopTopic
			noop := run(b, set, cfg)
			cfg.Topic = durableTopic
			reportRatio(b, run(b, set, cfg), noop)
		})
	}
}

// BenchmarkLatencyAt5k is publish→PUBACK latency at a fixed 5,000 msg/s (50 publishers at
// 100 msg/s each, for 10 s per side), durable and no-op.
func BenchmarkLatencyAt5k(b *testing.B) {
	addr := startGateway(b, "always")
	set := connect(b, addr, 50)
	cfg := loadgen.Config{Publishers: 50, Window: 1000, Rate: 5000, Duration: 10 * time.Second}
	for i := 0; i < b.N; i++ {
		cfg.Topic = noopTopic
		noop := run(b, set, cfg)
		cfg.Topic = durableTopic
		durable := run(b, set, cfg)
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		b.ReportMetric(durable.Throughput(), "durable-msg/s")
		b.ReportMetric(ms(durable.Percentile(50)), "durable-p50-ms")
		b.ReportMetric(ms(durable.Percentile(99)), "durable-p99-ms")
		b.ReportMetric(ms(noop.Percentile(50)), "noop-p50-ms")
		b.ReportMetric(ms(noop.Percentile(99)), "noop-p99-ms")
		b.ReportMetric(ms(max(durable.MaxLag, noop.MaxLag)), "max-send-lag-ms")
	}
}

// BenchmarkDaemonAt10k runs the edgegate binary as its own process (built for this run),
// drives 10,000 durable msg/s into it for 60 s (LOADGEN_SECONDS overrides) from 100
// publishers, and reads its memory and its disk writes from /proc: peak RSS (VmHWM),
// steady RSS (the median VmRSS of the second half, and of its two parts: RssAnon, the
// heap and stacks, and RssFile, resident file-backed pages: the binary's and those of
// Badger's memory-mapped files), bytes the process caused to be written to storage per
// acknowledged reading, and readings per fsync (from its /metrics). Without GOMEMLIMIT
// and with the systemd unit's GOMEMLIMIT=96MiB (LOADGEN_GOMEMLIMITS="none,64MiB" picks
// others).
func BenchmarkDaemonAt10k(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	bin := buildDaemon(b)
	secs := 60
	if s, err := strconv.Atoi(os.Getenv("LOADGEN_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	limits := []string{"", "96MiB"}
	if l := os.Getenv("LOADGEN_GOMEMLIMITS"); l != "" { // e.g. "none,64MiB"
		limits = strings.Split(strings.ReplaceAll(l, "none", ""), ",")
	}
	for _, limit := range limits {
		name := "gomemlimit=" + limit
		if limit == "" {
			name = "gomemlimit=none"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				daemonRun(b, bin, limit, time.Duration(secs)*time.Second)
			}
		})
	}
}

func daemonRun(b *testing.B, bin, gomemlimit string, d time.Duration) {
	dir := b.TempDir()
	addr := testutil.FreeAddr(b)
	opsAddr := testutil.FreeAddr(b) // for /metrics: the fsyncs
	cmd := exec.Command(bin, "run", "-c", writeConfig(b, dir, addr, "always", opsAddr))
	cmd.Env = os.Environ()
	if gomemlimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+gomemlimit)
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
	set := connect(b, addr, 100)
	written0 := procIO(b, pid, "write_bytes")
	fsyncs0 := metric(b, opsAddr, "edgegate_buffer_fsyncs_total")
	// The sampler keeps its own slice, so every sample of however long a run is kept; a
	// failed read (the daemon died) is reported by the benchmark goroutine.
	type sampling struct {
		rss, anon, file []int64 // KiB
		err             error
	}
	stop := make(chan struct{})
	sampled := make(chan sampling, 1)
	go func() {
		var s sampling
		defer func() { sampled <- s }()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				for _, f := range []struct {
					key string
					to  *[]int64
				}{{"VmRSS", &s.rss}, {"RssAnon", &s.anon}, {"RssFile", &s.file}} {
					var v int64
					if v, s.err = testutil.ProcField(pid, "status", f.key); s.err != nil {
						return
					}
					*f.to = append(*f.to, v)
				}
			}
		}
	}()
	res := run(b, set, loadgen.Config{Publishers: 100, Window: 1000, Rate: 10000, Duration: d, Topic: durableTopic})
	close(stop)
	smp := <-sampled
	if smp.err != nil {
		b.Fatal(smp.err)
	}
	rss := smp.rss
	if len(rss) < 2 {
		b.Fatalf("%d RSS samples: the run is too short to tell a steady RSS", len(rss))
	}
	peak := procStatus(b, pid, "VmHWM")
	written := procIO(b, pid, "write_bytes") - written0
	fsyncs := metric(b, opsAddr, "edgegate_buffer_fsyncs_total") - fsyncs0
	steady := func(kib []int64) float64 { // MiB
		second := slices.Clone(kib[len(kib)/2:])
		slices.Sort(second)
		return float64(second[len(second)/2]) / 1024
	}
	b.ReportMetric(res.Throughput(), "msg/s")
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
	b.ReportMetric(steady(rss), "steady-RSS-MiB")
	b.ReportMetric(steady(smp.anon), "steady-anon-MiB")
	b.ReportMetric(steady(smp.file), "steady-file-MiB")
	b.ReportMetric(float64(written)/float64(res.Acked), "disk-bytes/record")
	b.ReportMetric(float64(res.Acked)/fsyncs, "records/fsync")
	b.ReportMetric(float64(res.Percentile(99))/1e6, "p99-ms")
	b.ReportMetric(float64(res.MaxLag)/1e6, "max-send-lag-ms")
}

func buildDaemon(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "edgegate")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "build", "-trimpath", "-o", bin, "github.com/edgegate/edgegate/cmd/edgegate").CombinedOutput()
	if err != nil {
		b.Fatalf("build edgegate: %v\n%s", err, out)
	}
	return bin
}

// scrape returns the daemon's /metrics.
func scrape(b *testing.B, opsAddr string) string {
	res, err := http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	text, err := io.ReadAll(res.Body)
	if err != nil {
		b.Fatal(err)
	}
	return string(text)
}

// metric reads a sample without labels from the daemon's /metrics.
func metric(b *testing.B, opsAddr, name string) float64 {
	f := testutil.ParseText(b, scrape(b, opsAddr))[name]
	if f == nil {
		b.Fatalf("no %s in /metrics", name)
	}
	return f.Samples[""]
}

// procStatus reads a "Vm..." line of /proc/PID/status, in KiB.
func procStatus(b *testing.B, pid int, key string) int64 {
	n, err := testutil.ProcField(pid, "status", key)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// procIO reads a line of /proc/PID/io, in bytes.
func procIO(b *testing.B, pid int, key string) int64 {
	n, err := testutil.ProcField(pid, "io", key)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

package loadgen_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/loadgen"
	"github.com/edgegate/edgegate/internal/testutil"
)

// BenchmarkIngestVsNoWrites is issue 20's goal 4: durable QoS 1 ingest (paho publishers,
// 100-byte JSON readings, 20 in flight each) into this build's daemon, against the same
// daemon built with the edgegate_nowrites tag (buffer/nowrites.go: the writer forms its
// groups and fsyncs a plain file per group as usual, but writes nothing to Badger), the
// two running side by side and loaded in turn, the order swapped every round:
// ratio = normal msg/s ÷ nowrites msg/s per publisher count (target ≥ 0.9 with
// sync: always). With sync: 10ms it also loads the normal daemon's no-op topic (through
// the broker and hook, stored nowhere) at 100 publishers: noop-ratio = normal ÷ no-op
// (target ≥ 0.8). Each sub-benchmark reports the median and range of its rounds' ratios
// and the median msg/s of each side, and of each daemon's CPU time (utime+stime; and the
// publishers', this process's) and
// fsyncs per message during its loads and its mean fsync; every round is logged.
//
// LOADGEN_ROUNDS (default 5), LOADGEN_MESSAGES (per load, default 20000), LOADGEN_SYNCS
// (default "always,10ms"), LOADGEN_NOWRITES_BIN (a test binary of this package built with
// -tags edgegate_nowrites; built into a temporary directory if unset), LOADGEN_CPUPROFILE=DIR
// (each daemon's CPU profile of its whole life: cpu-<build>-<sync>.pprof). Run it with
// -test.benchtime 1x: the rounds are the repetitions.
func BenchmarkIngestVsNoWrites(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("the baseline fdatasyncs")
	}
	rounds := envInt(b, "LOADGEN_ROUNDS", 5)
	msgs := envInt(b, "LOADGEN_MESSAGES", 20000)
	syncs := []string{"always", "10ms"}
	if s := os.Getenv("LOADGEN_SYNCS"); s != "" {
		syncs = strings.Split(s, ",")
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	nowrites := os.Getenv("LOADGEN_NOWRITES_BIN")
	if nowrites == "" {
		nowrites = buildNoWrites(b)
	}
	pubs := []int{1, 10, 100}
	for _, sync := range syncs {
		// Both daemons run for the whole sync mode; each has 100 publishers connected and
		// a load uses the first n of them.
		normal := startDaemon(b, self, "normal", sync)
		base := startDaemon(b, nowrites, "nowrites", sync)
		// Per round: msg/s, and the daemon's CPU µs and fsyncs per message during the load.
		// and the mean fsync in ms.
		type side struct {
			normal, nowrites, noop                     []float64
			cpuNormal, cpuNowrites                     []float64
			pubNormal, pubNowrites                     []float64 // the publishers' CPU (this process)
			fsNormal, fsNowrites, msNormal, msNowrites []float64
		}
		got := map[int]*side{}
		for _, n := range pubs {
			got[n] = &side{}
		}
		for round := 0; round < rounds; round++ {
			for _, n := range pubs {
				s := got[n]
				cfg := loadgen.Config{Publishers: n, Window: 20, Messages: msgs, Topic: durableTopic}
				load := func(d *daemon, topic func(int) string) (rate, cpu, pub, fsyncs, ms float64) {
					c := cfg
					c.Topic = topic
					cpu0, pub0 := procCPU(b, d.cmd.Process.Pid), procCPU(b, os.Getpid())
					fs0, sec0 := metric(b, d.ops, "edgegate_buffer_fsyncs_total"), metric(b, d.ops, "edgegate_buffer_fsync_seconds_total")
					res := run(b, d.set[:n], c)
					cpu = float64(procCPU(b, d.cmd.Process.Pid)-cpu0) / 1e3 / float64(res.Acked)
					pub = float64(procCPU(b, os.Getpid())-pub0) / 1e3 / float64(res.Acked)
					fs := metric(b, d.ops, "edgegate_buffer_fsyncs_total") - fs0
					sec := metric(b, d.ops, "edgegate_buffer_fsync_seconds_total") - sec0
					return res.Throughput(), cpu, pub, fs / float64(res.Acked), sec * 1e3 / max(fs, 1)
				}
				loadNormal := func() {
					r, c, p, f, m := load(normal, durableTopic)
					s.normal, s.cpuNormal, s.pubNormal = append(s.normal, r), append(s.cpuNormal, c), append(s.pubNormal, p)
					s.fsNormal, s.msNormal = append(s.fsNormal, f), append(s.msNormal, m)
				}
				loadNowrites := func() {
					r, c, p, f, m := load(base, durableTopic)
					s.nowrites, s.cpuNowrites, s.pubNowrites = append(s.nowrites, r), append(s.cpuNowrites, c), append(s.pubNowrites, p)
					s.fsNowrites, s.msNowrites = append(s.fsNowrites, f), append(s.msNowrites, m)
				}
				// Swapped every round so that neither build gets the warmer machine.
				if round%2 == 0 {
					loadNormal()
					loadNowrites()
				} else {
					loadNowrites()
					loadNormal()
				}
				line := fmt.Sprintf("sync=%s publishers=%d round %d: normal %.0f nowrites %.0f msg/s ratio %.3f; cpu-µs/msg %.1f / %.1f (publishers %.1f / %.1f); fsyncs/msg %.4f / %.4f; fsync %.2f / %.2f ms",
					sync, n, round+1, s.normal[round], s.nowrites[round], s.normal[round]/s.nowrites[round],
					s.cpuNormal[round], s.cpuNowrites[round], s.pubNormal[round], s.pubNowrites[round], s.fsNormal[round], s.fsNowrites[round], s.msNormal[round], s.msNowrites[round])
				if sync != "always" && n == 100 {
					r, _, _, _, _ := load(normal, noopTopic)
					s.noop = append(s.noop, r)
					line += fmt.Sprintf(" noop %.0f msg/s noop-ratio %.3f", s.noop[round], s.normal[round]/s.noop[round])
				}
				b.Log(line)
			}
		}
		normal.stop()
		base.stop()
		for _, n := range pubs {
			s := got[n]
			b.Run(fmt.Sprintf("sync=%s/publishers=%d", sync, n), func(b *testing.B) {
				ratios := make([]float64, len(s.normal))
				for i := range ratios {
					ratios[i] = s.normal[i] / s.nowrites[i]
				}
				b.ReportMetric(median(s.normal), "normal-msg/s")
				b.ReportMetric(median(s.nowrites), "nowrites-msg/s")
				b.ReportMetric(median(ratios), "ratio")
				b.ReportMetric(median(s.cpuNormal), "normal-cpu-µs/msg")
				b.ReportMetric(median(s.cpuNowrites), "nowrites-cpu-µs/msg")
				b.ReportMetric(median(s.pubNormal), "normal-publishers-cpu-µs/msg")
				b.ReportMetric(median(s.pubNowrites), "nowrites-publishers-cpu-µs/msg")
				b.ReportMetric(median(s.fsNormal), "normal-fsyncs/msg")
				b.ReportMetric(median(s.fsNowrites), "nowrites-fsyncs/msg")
				b.ReportMetric(median(s.msNormal), "normal-fsync-ms")
				b.ReportMetric(median(s.msNowrites), "nowrites-fsync-ms")
				b.ReportMetric(slices.Min(ratios), "ratio-min")
				b.ReportMetric(slices.Max(ratios), "ratio-max")
				if len(s.noop) > 0 {
					noop := make([]float64, len(s.noop))
					for i := range noop {
						noop[i] = s.normal[i] / s.noop[i]
					}
					b.ReportMetric(median(s.noop), "noop-msg/s")
					b.ReportMetric(median(noop), "noop-ratio")
					b.ReportMetric(slices.Min(noop), "noop-ratio-min")
					b.ReportMetric(slices.Max(noop), "noop-ratio-max")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// daemon is a gateway process under load, with 100 publishers connected.
type daemon struct {
	cmd     *exec.Cmd
	ops     string // its ops server: /metrics
	set     []paho.Client
	stopped bool
}

// startDaemon runs bin (a test binary of this package) as the daemon with benchConfig and
// the given buffer.sync; build names it in its CPU profile.
func startDaemon(b *testing.B, bin, build, sync string) *daemon {
	dir := b.TempDir()
	addr := testutil.FreeAddr(b)
	ops := testutil.FreeAddr(b)
	cfg := writeConfig(b, dir, addr, sync, ops)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "LOADGEN_DAEMON="+cfg, "LOADGEN_CPUPROFILE=", "EDGEGATE_BENCHMARK_NOWRITES=")
	if build == "nowrites" {
		cmd.Env = append(cmd.Env, "EDGEGATE_BENCHMARK_NOWRITES=1")
	}
	if p := os.Getenv("LOADGEN_CPUPROFILE"); p != "" {
		cmd.Env = append(cmd.Env, "LOADGEN_CPUPROFILE="+filepath.Join(p, fmt.Sprintf("cpu-%s-%s.pprof", build, sync)))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d := &daemon{cmd: cmd, ops: ops}
	b.Cleanup(d.stop)
	d.set = connect(b, addr, 100)
	waitOps(b, ops)
	return d
}

// stop disconnects the publishers and ends the daemon (SIGTERM: it writes its profile).
func (d *daemon) stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	loadgen.Disconnect(d.set)
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
}

// buildNoWrites builds this package's test binary with the edgegate_nowrites tag.
func buildNoWrites(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "nowrites.test")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "test", "-c", "-tags", "edgegate_nowrites", "-o", bin,
		"github.com/edgegate/edgegate/internal/loadgen").CombinedOutput()
	if err != nil {
		b.Fatalf("build the nowrites baseline: %v\n%s", err, out)
	}
	return bin
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: a positive number", name, s)
	}
	return n
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

package uplink_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/filesink"
	"github.com/edgegate/edgegate/uplink/httpsink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
	"github.com/edgegate/edgegate/uplink/pubsubsink"
)

var discard = slog.New(slog.DiscardHandler)

func openStore(t testing.TB, dir string) *buffer.Store {
	t.Helper()
	s, err := buffer.Open(buffer.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill appends n records on topic to the raw log.
func fill(t *testing.T, s *buffer.Store, topic string, from, n int) {
	t.Helper()
	fillIDs(t, s, "r", topic, from, n)
}

// registry has every sink (gatewaytest's leaves pubsub out).
var registry = config.Registry{Sinks: []uplink.SinkType{mqttsink.Type(), httpsink.Type(), pubsubsink.Type(), filesink.Type()}}

func uplinkConfig(y string) uplink.Config {
	c, err := config.Parse("t.yml", []byte("gateway: {id: gw}\nbroker: {allow_anonymous: true}\nuplinks:\n  - "+y), registry)
	if err != nil {
		panic(err)
	}
	return c.Uplinks[0]
}

func run(t *testing.T, u *uplink.Uplink) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("uplink: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func readFileBatches(t *testing.T, path string) []testutil.Batch {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []testutil.Batch
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		b, _ := testutil.DecodeBatch(t, sc.Bytes())
		out = append(out, b)
	}
	return out
}

func TestBatchesRespectLimitsAndFilters(t *testing.T) {
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 1100)
	fill(t, s, "other/x", 1100, 50) // not forwarded
	fill(t, s, "devices/d/t", 1150, 100)
	path := filepath.Join(t.TempDir(), "out.jsonl")
	cfg := uplinkConfig(fmt.Sprintf(`{name: arch, type: file, path: %q, forward: ["sensors/#", "devices/#"], batch: {max_records: 500, linger: 10ms}}`, path))
	sink, _ := filesink.New(&cfg)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "all 1200 records", func() bool { return u.Stats().Records.Load() == 1200 })
	batches := readFileBatches(t, path)
	var sizes []int
	for _, b := range batches {
		sizes = append(sizes, len(b.Records))
		for _, r := range b.Records {
			if strings.Contains(string(r), "other/x") {
				t.Fatalf("filtered topic forwarded: %s", r)
			}
		}
	}
	if fmt.Sprint(sizes) != "[500 500 200]" {
		t.Errorf("batch sizes = %v, want [500 500 200]", sizes)
	}
	if c, _ := s.Cursor("raw", "arch"); c != 1251 {
		t.Errorf("cursor = %d, want 1251 (past the filtered entries too)", c)
	}
	if batches[0].Batch != record.BatchID("gw", "arch", "raw", 1, 500) {
		t.Errorf("batch id %s is not BatchID of its range", batches[0].Batch)
	}
}

func TestMaxBytesSplitsBatches(t *testing.T) {
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 100)
	path := filepath.Join(t.TempDir(), "out.jsonl")
	cfg := uplinkConfig(fmt.Sprintf(`{name: arch, type: file, path: %q, batch: {max_bytes: 4KiB, linger: 10ms}}`, path))
	sink, _ := filesink.New(&cfg)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "all records", func() bool { return u.Stats().Records.Load() == 100 })
	data, _ := os.ReadFile(path)
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if len(line) > 4096 {
			t.Errorf("batch %d is %d bytes, over max_bytes 4096", i, len(line))
		}
	}
}

// payloads returns the payload of every publish up received, in order.
func payloads(up *testutil.Upstream) [][]byte {
	ms := up.Messages()
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = m.Payload
	}
	return out
}

// stopInFlight runs an uplink "cloud" (batches of 10) on s against an upstream that
// receives but never acknowledges, until the first batch is upstream, then stops it and the
// upstream as a crash would: its batches stay in flight.
func stopInFlight(t *testing.T, s *buffer.Store) (*testutil.Upstream, uplink.Config) {
	t.Helper()
	up := testutil.StartUpstream(t)
	up.Withhold.Store(true)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: %q, batch: {max_records: 10, linger: 10ms}}`, up.URL()))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	stop := run(t, uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard))
	testutil.Eventually(t, 10*time.Second, "the first batch upstream", func() bool { return len(up.Messages()) >= 1 })
	stop()
	sink.Close()
	up.Stop()
	return up, cfg
}

// resume starts a new uplink of cfg on s against up, at the same address, now
// acknowledging: what up gets from here on is the new uplink's.
func resume(t *testing.T, s *buffer.Store, up *testutil.Upstream, cfg uplink.Config) *uplink.Uplink {
	t.Helper()
	up.Withhold.Store(false)
	up.Start(t)
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	u.MinBackoff = 10 * time.Millisecond
	run(t, u)
	return u
}

// TestCommitOnlyAfterAckAndResendSameBatch: an upstream receives a batch but never acks
// it; the uplink stops (as in a crash) without committing; a new uplink on the same store
// sends the very same batch — same id, same bytes — to a working upstream.
func TestCommitOnlyAfterAckAndResendSameBatch(t *testing.T) {
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 30)
	up, cfg := stopInFlight(t, s)
	if c, _ := s.Cursor("raw", "cloud"); c != 0 {
		t.Fatalf("cursor moved to %d without an ack", c)
	}
	before := payloads(up)
	first := before[0]

	u2 := resume(t, s, up, cfg)
	testutil.Eventually(t, 10*time.Second, "30 records acked", func() bool { return u2.Stats().Records.Load() == 30 })
	got := payloads(up)[len(before):]
	if string(got[0]) != string(first) {
		t.Fatalf("resent batch differs:\nfirst  %s\nresent %s", first, got[0])
	}
	if c, _ := s.Cursor("raw", "cloud"); c != 31 {
		t.Errorf("cursor = %d, want 31 (sequence numbers start at 1)", c)
	}
}

// TestResentBatchAfterADropHasTheIDOfWhatItHolds: a batch in flight at a stop is rebuilt
// from its recorded range, but the disk budget may have dropped the head of that range
// meanwhile. SPEC §3.3: a batch id always names the same records, so the rebuilt batch
// gets the id of the range it still covers, and a range dropped whole is not sent at all.
func TestResentBatchAfterADropHasTheIDOfWhatItHolds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		below uint64 // entries below this sequence number are dropped while the uplink is down
		want  string // the first batch after the restart: its range, "" when none may be re-sent
	}{
		{"head of the range dropped", 4, "4-10"},
		{"whole range dropped", 11, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			fill(t, s, "sensors/a/t", 0, 30)
			up, cfg := stopInFlight(t, s)
			first, frecs := testutil.DecodeBatch(t, payloads(up)[0])
			if len(frecs) != 10 || frecs[0].ID != "r000000" {
				t.Fatalf("first batch: %d records from %s, want entries 1-10", len(frecs), frecs[0].ID)
			}
			before := len(up.Messages())
			if _, err := s.Trim(context.Background(), "raw", tc.below); err != nil {
				t.Fatal(err)
			}
			u2 := resume(t, s, up, cfg)
			left := 30 - int(tc.below-1)
			testutil.Eventually(t, 10*time.Second, "the records left acked", func() bool { return u2.Stats().Records.Load() == uint64(left) })

			// Same id, same bytes: over both runs, an id never names two payloads.
			seen := map[string]string{}
			for _, p := range payloads(up) {
				b, _ := testutil.DecodeBatch(t, p)
				if q, ok := seen[b.Batch]; ok && q != string(p) {
					t.Errorf("batch %s sent with different records:\n%s\n%s", b.Batch, q, p)
				}
				seen[b.Batch] = string(p)
			}
			resent, recs := testutil.DecodeBatch(t, payloads(up)[before])
			if tc.want == "" {
				if resent.Batch == first.Batch || recs[0].ID != fmt.Sprintf("r%06d", tc.below-1) {
					t.Errorf("after the restart the first batch is %s starting at %s, want the next range's, from r%06d", resent.Batch, recs[0].ID, tc.below-1)
				}
			} else {
				var lo, hi uint64
				fmt.Sscanf(tc.want, "%d-%d", &lo, &hi)
				if want := record.BatchID("gw", "cloud", "raw", lo, hi); resent.Batch != want || len(recs) != int(hi-lo+1) || recs[0].ID != fmt.Sprintf("r%06d", lo-1) {
					t.Errorf("resent batch %s with %d records from %s, want %s (range %s) with %d from r%06d", resent.Batch, len(recs), recs[0].ID, want, tc.want, hi-lo+1, lo-1)
				}
			}
			if c, _ := s.Cursor("raw", "cloud"); c != 31 {
				t.Errorf("cursor = %d, want 31", c)
			}
		})
	}
}

// TestOfflineThenOnline: the upstream is down at start; records wait; once it is up they
// all arrive, and the errors were counted.
func TestOfflineThenOnline(t *testing.T) {
	s := openStore(t, t.TempDir())
	addr := testutil.FreeAddr(t)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: "tcp://%s", batch: {linger: 10ms}}`, addr))
	sink, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	u.MinBackoff, u.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	run(t, u)
	fill(t, s, "sensors/a/t", 0, 20)
	testutil.Eventually(t, 10*time.Second, "send errors while offline", func() bool { return u.Stats().Errors.Load() >= 3 })
	if u.Stats().Records.Load() != 0 {
		t.Fatal("records acknowledged while the upstream is down")
	}
	up := &testutil.Upstream{Addr: addr}
	up.Start(t)
	t.Cleanup(up.Stop)
	fill(t, s, "sensors/a/t", 20, 20)
	testutil.Eventually(t, 10*time.Second, "40 records upstream", func() bool { return u.Stats().Records.Load() == 40 })
	n := 0
	for _, b := range payloads(up) {
		_, recs := testutil.DecodeBatch(t, b)
		n += len(recs)
	}
	if n != 40 {
		t.Errorf("upstream got %d records, want 40", n)
	}
}

// TestLingerWithFakeClock: a partial batch waits for linger on the injected clock.
func TestLingerWithFakeClock(t *testing.T) {
	s := openStore(t, t.TempDir())
	path := filepath.Join(t.TempDir(), "out.jsonl")
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	cfg := uplinkConfig(fmt.Sprintf(`{name: arch, type: file, path: %q, batch: {max_records: 100, linger: 5s}}`, path))
	sink, _ := filesink.New(&cfg)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clk, discard)
	run(t, u)
	fill(t, s, "sensors/a/t", 0, 3)
	testutil.Eventually(t, 5*time.Second, "the uplink waiting on its linger timer", func() bool { return clk.Timers() > 0 })
	clk.Advance(4 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if u.Stats().Batches.Load() != 0 {
		t.Fatal("batch sent before linger elapsed")
	}
	clk.Advance(time.Second)
	testutil.Eventually(t, 5*time.Second, "batch after linger", func() bool { return u.Stats().Records.Load() == 3 })
}

// own closes a sink the test created when the test ends: an uplink does not close its
// sink (its creator does). A sink New refused (nil) is left alone.
func own[S uplink.Sink](t testing.TB, s S) {
	t.Helper()
	t.Cleanup(func() {
		if v := reflect.ValueOf(s); v.Kind() == reflect.Pointer && v.IsNil() {
			return
		}
		s.Close()
	})
}

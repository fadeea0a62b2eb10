package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

var leakOpts = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
	goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"), // the pubsub sink's dependencies
}

// recSink records what it was sent (and every attempt); fail decides, per call, whether
// Send fails.
type recSink struct {
	mu       sync.Mutex
	sent     []Batch
	attempts []Batch
	calls    int
	fail     func(b *Batch, call int) error
	closed   int
}

func (s *recSink) Send(_ context.Context, b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.attempts = append(s.attempts, *b)
	if s.fail != nil {
		if err := s.fail(b, s.calls); err != nil {
			return err
		}
	}
	s.sent = append(s.sent, *b)
	return nil
}

func (s *recSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	return nil
}

func (s *recSink) batches() []Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Batch(nil), s.sent...)
}

func testStore(t *testing.T, dir string) *buffer.Store {
	t.Helper()
	st, err := buffer.Open(buffer.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func appendN(t *testing.T, st *buffer.Store, log string, vals ...string) {
	t.Helper()
	es := make([]buffer.Entry, len(vals))
	for i, v := range vals {
		es[i] = buffer.Entry{Value: []byte(v)}
	}
	if _, err := st.Append(context.Background(), log, es); err != nil {
		t.Fatal(err)
	}
}

func rec(topic string, i int) string {
	r := record.Record{ID: fmt.Sprint("r", i), Topic: topic, Series: topic, TS: time.Unix(1e9, 0), Value: float64(i)}
	return string(r.AppendJSON(nil))
}

func pane(pipeline string, i int) string {
	return fmt.Sprintf(`{"id":"p-%d","pipeline":%q,"key":"k","count":%d}`, i, pipeline, i)
}

func testUplink(st *buffer.Store, sink Sink, forward ...string) *Uplink {
	cfg := Config{Name: "up", Type: "file", Forward: forward,
		Batch: BatchLimits{MaxRecords: 2, MaxBytes: 1 << 20, Linger: 0}}
	if len(forward) == 0 {
		cfg.Forward = []string{"#"}
	}
	srcs := []Source{
		{Log: "agg", Kind: record.KindAggregates, Topic: func(v []byte) string {
			var p struct{ Pipeline string }
			json.Unmarshal(v, &p)
			return "agg/" + p.Pipeline
		}},
		{Log: "raw", Kind: record.KindRecords},
	}
	u := NewMulti(cfg, "gw", srcs, sink, st, clock.Real{}, slog.New(slog.DiscardHandler))
	u.MinBackoff, u.MaxBackoff = time.Millisecond, 5*time.Millisecond
	return u
}

func run(u *Uplink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

// payloadItems returns the records of a batch payload as strings.
func payloadItems(t *testing.T, b Batch) []string {
	t.Helper()
	var env struct {
		Kind    string            `json:"kind"`
		Batch   string            `json:"batch"`
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(b.Payload, &env); err != nil {
		t.Fatalf("batch %s: %v", b.ID, err)
	}
	if env.Kind != string(b.Kind) || env.Batch != b.ID {
		t.Fatalf("envelope kind %q id %q, batch %s %s", env.Kind, env.Batch, b.Kind, b.ID)
	}
	var out []string
	for _, r := range env.Records {
		out = append(out, string(r))
	}
	return out
}

func TestUplinkForwardsAggregatesFirst(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	st := testStore(t, t.TempDir())
	defer st.Close()
	appendN(t, st, "raw", rec("sensors/a", 1), rec("sensors/b", 2), rec("devices/c", 3))
	appendN(t, st, "agg", pane("p1", 1), pane("p2", 2), pane("p1", 3))
	sink := &recSink{}
	u := testUplink(st, sink, "agg/p1", "sensors/#")
	stop := run(u)
	testutil.Eventually(t, 10*time.Second, "both logs committed", func() bool { return u.Drained(map[string]uint64{"agg": 3, "raw": 3}) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var got []string
	ids := map[string]bool{}
	for _, b := range sink.batches() {
		got = append(got, fmt.Sprintf("%s %d-%d %v", b.Kind, b.First, b.Last, payloadItems(t, b)))
		ids[b.ID] = true
	}
	want := []string{
		// max_records counts what the filters select; the range covers what they skip.
		fmt.Sprintf("aggregates 1-3 %v", []string{pane("p1", 1), pane("p1", 3)}),
		fmt.Sprintf("records 1-2 %v", []string{rec("sensors/a", 1), rec("sensors/b", 2)}),
		// raw 3 (devices/c) is filtered out: committed without a send.
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sent:\n%v\nwant:\n%v", got, want)
	}
	if len(ids) != 2 {
		t.Fatalf("batch ids not distinct: %v", ids)
	}
	for log, want := range map[string]uint64{"agg": 4, "raw": 4} {
		if c, _ := st.Cursor(log, "up"); c != want {
			t.Fatalf("cursor %s = %d, want %d", log, c, want)
		}
	}
	// The sink is its creator's to close: the uplink only sent through it.
	if u.Stats().Batches.Load() != 2 || sink.closed != 0 {
		t.Fatalf("stats batches %d, sink closed %d times by the uplink", u.Stats().Batches.Load(), sink.closed)
	}
}

// TestUplinkResendAfterRestart: the records batch in flight at a stop (sent, never
// acked) is sent again after the restart with the same id and bytes, before anything new;
// then new aggregates go before new records.
func TestUplinkResendAfterRestart(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	dir := t.TempDir()
	st := testStore(t, dir)
	appendN(t, st, "raw", rec("s/1", 1), rec("s/2", 2))
	appendN(t, st, "agg", pane("p", 1))
	failing := &recSink{fail: func(b *Batch, _ int) error {
		if b.Kind == record.KindRecords {
			return errors.New("no ack")
		}
		return nil
	}}
	u := testUplink(st, failing)
	stop := run(u)
	testutil.Eventually(t, 10*time.Second, "the records batch to be tried twice", func() bool {
		failing.mu.Lock()
		defer failing.mu.Unlock()
		return failing.calls >= 3
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	failing.mu.Lock()
	acked := failing.sent
	tried := failing.attempts[len(failing.attempts)-1]
	failing.mu.Unlock()
	if len(acked) != 1 || acked[0].Kind != record.KindAggregates || tried.Kind != record.KindRecords {
		t.Fatalf("before restart: acked %+v, last try %s", acked, tried.Kind)
	}
	st.Close()

	st = testStore(t, dir)
	defer st.Close()
	appendN(t, st, "raw", rec("s/3", 3))
	appendN(t, st, "agg", pane("p", 2))
	good := &recSink{}
	u = testUplink(st, good)
	stop = run(u)
	testutil.Eventually(t, 10*time.Second, "everything committed", func() bool { return u.Drained(map[string]uint64{"agg": 2, "raw": 3}) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sent := good.batches()
	if len(sent) != 3 {
		t.Fatalf("sent %d batches after restart", len(sent))
	}
	if b := sent[0]; b.ID != tried.ID || string(b.Payload) != string(tried.Payload) {
		t.Fatalf("first send after restart: %s %s, the unacked batch was %s", b.Kind, b.ID, tried.ID)
	}
	if items := payloadItems(t, sent[1]); sent[1].Kind != record.KindAggregates || fmt.Sprint(items) != fmt.Sprint([]string{pane("p", 2)}) {
		t.Fatalf("second: %s %v", sent[1].Kind, items)
	}
	if items := payloadItems(t, sent[2]); fmt.Sprint(items) != fmt.Sprint([]string{rec("s/3", 3)}) {
		t.Fatalf("new records %v", items)
	}
}

// TestDrainedWithAnEmptyLog: an uplink over the aggregate and raw logs, with no pipeline
// (the aggregate log empty), has nothing left once the raw records are sent. Before,
// Drained said otherwise (its cursor 0 is not past the empty log's last sequence number
// 0), and every shutdown waited the whole flush_timeout.
func TestDrainedWithAnEmptyLog(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	st := testStore(t, t.TempDir())
	defer st.Close()
	sink := &recSink{}
	u := testUplink(st, sink)
	if !u.Drained(map[string]uint64{"agg": 0, "raw": 0}) {
		t.Error("not drained with nothing ever stored")
	}
	appendN(t, st, "raw", rec("sensors/a", 1), rec("sensors/b", 2), rec("devices/c", 3))
	if u.Drained(map[string]uint64{"agg": 0, "raw": 3}) {
		t.Error("drained before anything was sent")
	}
	stop := run(u)
	testutil.Eventually(t, 10*time.Second, "the raw records sent, with the aggregate log empty", func() bool {
		return u.Drained(map[string]uint64{"agg": 0, "raw": 3})
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.batches()); n != 2 {
		t.Errorf("%d batches, want 2", n)
	}
}

// TestFlushEndsLinger: a partial batch waits for its linger (an hour here, on a clock
// that does not move) until Flush, which the gateway calls when it stops; then it goes at
// once.
func TestFlushEndsLinger(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	st := testStore(t, t.TempDir())
	defer st.Close()
	sink := &recSink{}
	cfg := Config{Name: "up", Type: "file", Forward: []string{"#"},
		Batch: BatchLimits{MaxRecords: 100, MaxBytes: 1 << 20, Linger: conf.Duration(time.Hour)}}
	clk := clock.NewFake(time.Unix(1e9, 0))
	u := New(cfg, "gw", "raw", record.KindRecords, sink, st, clk, slog.New(slog.DiscardHandler))
	appendN(t, st, "raw", rec("sensors/a", 1))
	stop := run(u)
	// The uplink has seen the record and sleeps on its linger.
	testutil.Eventually(t, 10*time.Second, "the uplink waiting on its linger", func() bool { return clk.Timers() > 0 })
	if n := len(sink.batches()); n != 0 {
		t.Fatalf("%d batches sent before the linger", n)
	}
	u.Flush()
	u.Flush() // idempotent
	testutil.Eventually(t, 10*time.Second, "the partial batch sent after Flush", func() bool { return u.Drained(nil) })
	appendN(t, st, "raw", rec("sensors/a", 2))
	testutil.Eventually(t, 10*time.Second, "a later record sent at once too", func() bool { return u.Drained(nil) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.batches()); n != 2 {
		t.Errorf("%d batches, want 2", n)
	}
}

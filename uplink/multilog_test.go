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
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/record"
)

var leakOpts = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
}

// recSink records what it was sent; fail decides, per call, whether Send fails.
type recSink struct {
	mu     sync.Mutex
	sent   []Batch
	calls  int
	fail   func(b *Batch, call int) error
	closed int
}

func (s *recSink) Send(_ context.Context, b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
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
	cfg := config.Uplink{Name: "up", Forward: forward,
		Batch: config.Batch{MaxRecords: 2, MaxBytes: 1 << 20, Linger: 0}}
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
	u := New(cfg, "gw", srcs, sink, st, clock.Real{}, slog.New(slog.DiscardHandler))
	u.MinBackoff, u.MaxBackoff = time.Millisecond, 5*time.Millisecond
	return u
}

func run(u *Uplink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	return func() error { cancel(); return <-done }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
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
	waitFor(t, "both logs committed", func() bool {
		a, _ := u.Position("agg")
		r, _ := u.Position("raw")
		return a == 4 && r == 4
	})
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
		fmt.Sprintf("aggregates 0-3 %v", []string{pane("p1", 1), pane("p1", 3)}),
		fmt.Sprintf("records 0-2 %v", []string{rec("sensors/a", 1), rec("sensors/b", 2)}),
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
	if u.Stats().Position.Load() != 4 || u.Stats().Batches.Load() != 2 || sink.closed != 1 {
		t.Fatalf("stats position %d batches %d, sink closed %d", u.Stats().Position.Load(), u.Stats().Batches.Load(), sink.closed)
	}
}

// TestUplinkResendAfterRestart: a batch of each log was cut (its range recorded) and sent
// without an ack; after a restart each is sent again with the same id and bytes, before
// anything new, aggregates first.
func TestUplinkResendAfterRestart(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	dir := t.TempDir()
	st := testStore(t, dir)
	appendN(t, st, "raw", rec("s/1", 1), rec("s/2", 2))
	appendN(t, st, "agg", pane("p", 1))
	failing := &recSink{fail: func(b *Batch, call int) error {
		if b.Kind == record.KindRecords || call > 1 {
			return errors.New("no ack")
		}
		return nil
	}}
	// The first aggregates batch is acked; the records batch never is.
	u := testUplink(st, failing)
	stop := run(u)
	waitFor(t, "the records batch to be tried", func() bool {
		failing.mu.Lock()
		defer failing.mu.Unlock()
		return failing.calls >= 3
	})
	// A new pane arrives while the records batch is failing: its batch is cut (aggregates
	// first) and fails too.
	appendN(t, st, "agg", pane("p", 2))
	waitFor(t, "a second aggregates batch to be pending", func() bool {
		v, ok, _ := st.Get("uplink/up/agg/pending")
		return ok && len(v) == 16
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	tried := map[string]Batch{}
	failing.mu.Lock()
	first := failing.sent
	failing.mu.Unlock()
	if len(first) != 1 || first[0].Kind != record.KindAggregates {
		t.Fatalf("acked before restart: %+v", first)
	}
	for _, log := range []string{"raw", "agg"} {
		v, ok, _ := st.Get("uplink/up/" + log + "/pending")
		if !ok {
			t.Fatalf("no pending range for %s", log)
		}
		tried[log] = Batch{First: uint64FromBE(v[:8]), Last: uint64FromBE(v[8:])}
	}
	st.Close()

	st = testStore(t, dir)
	defer st.Close()
	appendN(t, st, "raw", rec("s/3", 3))
	good := &recSink{}
	u = testUplink(st, good)
	stop = run(u)
	waitFor(t, "everything committed", func() bool {
		a, _ := u.Position("agg")
		r, _ := u.Position("raw")
		return a == 3 && r == 4
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sent := good.batches()
	if len(sent) != 3 {
		t.Fatalf("sent %d batches after restart", len(sent))
	}
	for i, want := range []struct {
		kind record.Kind
		log  string
	}{{record.KindAggregates, "agg"}, {record.KindRecords, "raw"}} {
		b := sent[i]
		r := tried[want.log]
		if b.Kind != want.kind || b.First != r.First || b.Last != r.Last || b.ID != record.BatchID("gw", "up", want.log, r.First, r.Last) {
			t.Fatalf("resend %d: %s %d-%d id %s; recorded range %d-%d", i, b.Kind, b.First, b.Last, b.ID, r.First, r.Last)
		}
	}
	if items := payloadItems(t, sent[1]); fmt.Sprint(items) != fmt.Sprint([]string{rec("s/1", 1), rec("s/2", 2)}) {
		t.Fatalf("resent records %v", items)
	}
	if items := payloadItems(t, sent[2]); fmt.Sprint(items) != fmt.Sprint([]string{rec("s/3", 3)}) {
		t.Fatalf("new records %v", items)
	}
}

func uint64FromBE(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

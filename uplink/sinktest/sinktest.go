// Package sinktest is the contract suite of uplink sinks: what uplink.Sink promises, checked
// against a real upstream that each sink's own tests run (Run). Every sink runs it.
package sinktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
)

// Harness builds the sink under test against upstreams its package runs.
type Harness struct {
	// Up builds a sink sending to a working upstream, and a function returning the ids of
	// the records that upstream has received so far (duplicates included).
	Up func(t *testing.T) (s uplink.Sink, received func() []string)
	// Unreachable builds a sink whose upstream cannot be reached (nothing listens there).
	Unreachable func(t *testing.T) uplink.Sink
	// Stalled, if set, builds a sink whose upstream takes the batch and never answers,
	// with a timeout far longer than the test: a Send must then end with its context.
	// Nil for a sink with no remote side to wait for (the file sink).
	Stalled func(t *testing.T) uplink.Sink
	// Refusing, if set, builds a sink whose upstream refuses every batch for good. Nil for
	// a sink whose upstream has no such answer.
	Refusing func(t *testing.T) uplink.Sink
}

// deadline bounds every wait of the suite: generous, for a loaded machine.
const deadline = 30 * time.Second

// Run checks uplink.Sink's promises: Send returns nil only once the upstream has every
// record of the batch, and the same batch may be sent again; SendAll (uplink.MultiSender)
// acknowledges batches in order; a sink builds without network; an unreachable or
// stalled upstream gives an error that is retried (not uplink.ErrPermanent), a refusal
// for good one that is not; Send honours its context's end; Close is idempotent.
func Run(t *testing.T, h Harness) {
	t.Run("SendAcknowledgesEveryRecord", func(t *testing.T) { testSend(t, h) })
	t.Run("SendAllInOrder", func(t *testing.T) { testSendAll(t, h) })
	t.Run("UnreachableIsRetryable", func(t *testing.T) { testUnreachable(t, h) })
	t.Run("ContextEndsSend", func(t *testing.T) { testContext(t, h) })
	t.Run("RefusalIsPermanent", func(t *testing.T) { testRefusing(t, h) })
	t.Run("CloseIdempotent", func(t *testing.T) { testClose(t, h) })
}

// Batch builds batch n of the suite: records kind, with records ids "<n>-0"… as the
// uplink builds batches (record.AppendBatch for the payload, each record's JSON in Items).
func Batch(n, records int) *uplink.Batch {
	b := &uplink.Batch{ID: fmt.Sprintf("%016x", n+1), Kind: record.KindRecords, Log: "raw",
		First: uint64(n * 100), Last: uint64(n*100 + records - 1), Records: records}
	ts := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for i := range records {
		r := record.Record{ID: fmt.Sprintf("%d-%d", n, i), Topic: "sensors/s/t", Series: "s/t",
			TS: ts.Add(time.Duration(i) * time.Second), Value: float64(i) + 0.5, Unit: "C"}
		b.Items = append(b.Items, r.AppendJSON(nil))
		b.Seqs = append(b.Seqs, b.First+uint64(i))
	}
	b.Payload = record.AppendBatch(nil, "gw", b.ID, b.Kind, b.Items)
	return b
}

func ids(b *uplink.Batch) []string {
	var out []string
	for _, it := range b.Items {
		var r record.Record
		if err := r.UnmarshalJSON(it); err != nil {
			panic(err) // built by Batch
		}
		out = append(out, r.ID)
	}
	return out
}

// PayloadIDs returns the ids of the records of a batch's payload (SPEC §3.3), for an
// upstream that receives whole batches.
func PayloadIDs(payload []byte) ([]string, error) {
	b, err := record.DecodeBatch(payload)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, it := range b.Records {
		var r record.Record
		if err := r.UnmarshalJSON(it); err != nil {
			return nil, fmt.Errorf("batch %s: %w", b.Batch, err)
		}
		out = append(out, r.ID)
	}
	return out, nil
}

// missing returns the ids of want that got lacks.
func missing(got, want []string) []string {
	var out []string
	for _, id := range want {
		if !slices.Contains(got, id) {
			out = append(out, id)
		}
	}
	return out
}

func send(t *testing.T, s uplink.Sink, b *uplink.Batch) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	return s.Send(ctx, b)
}

func testSend(t *testing.T, h Harness) {
	s, received := h.Up(t)
	b := Batch(0, 3)
	if err := send(t, s, b); err != nil {
		t.Fatalf("Send to a working upstream: %v", err)
	}
	// Acknowledged means the upstream has them: no waiting.
	if m := missing(received(), ids(b)); len(m) > 0 {
		t.Fatalf("Send returned nil, and the upstream lacks records %v (has %v)", m, received())
	}
	// The same batch again (a resend after an error the sink could not see the end of).
	if err := send(t, s, b); err != nil {
		t.Fatalf("resend of the same batch: %v", err)
	}
	b2 := Batch(1, 2)
	if err := send(t, s, b2); err != nil {
		t.Fatalf("Send of the next batch: %v", err)
	}
	if m := missing(received(), append(ids(b), ids(b2)...)); len(m) > 0 {
		t.Fatalf("the upstream lacks records %v", m)
	}
}

func testSendAll(t *testing.T, h Harness) {
	s, received := h.Up(t)
	ms, ok := s.(uplink.MultiSender)
	if !ok {
		t.Skip("the sink sends one batch at a time (no uplink.MultiSender)")
	}
	bs := []*uplink.Batch{Batch(2, 2), Batch(3, 1), Batch(4, 3)}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	acked, err := ms.SendAll(ctx, bs)
	if err != nil || acked != len(bs) {
		t.Fatalf("SendAll of %d batches: %d acknowledged, %v", len(bs), acked, err)
	}
	var want []string
	for _, b := range bs {
		want = append(want, ids(b)...)
	}
	if m := missing(received(), want); len(m) > 0 {
		t.Fatalf("SendAll returned nil, and the upstream lacks records %v", m)
	}
}

func testUnreachable(t *testing.T, h Harness) {
	s := h.Unreachable(t) // built without network
	err := send(t, s, Batch(5, 1))
	if err == nil {
		t.Fatal("Send to an unreachable upstream returned nil")
	}
	if errors.Is(err, uplink.ErrPermanent) {
		t.Fatalf("an unreachable upstream is permanent: %v (it must be retried)", err)
	}
	// Still usable: the uplink retries through the same sink.
	if err := send(t, s, Batch(5, 1)); err == nil || errors.Is(err, uplink.ErrPermanent) {
		t.Fatalf("second Send to an unreachable upstream: %v", err)
	}
}

func testContext(t *testing.T, h Harness) {
	if h.Stalled == nil {
		t.Skip("no remote side to wait for")
	}
	s := h.Stalled(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, Batch(6, 1)) }()
	select {
	case err := <-done:
		t.Fatalf("Send to a stalled upstream returned before its context ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Send returned nil when its context ended")
		}
		if errors.Is(err, uplink.ErrPermanent) {
			t.Fatalf("an ended context is permanent: %v", err)
		}
	case <-time.After(deadline):
		t.Fatalf("Send still running %s after its context ended", deadline)
	}
}

func testRefusing(t *testing.T, h Harness) {
	if h.Refusing == nil {
		t.Skip("the upstream has no refusal for good")
	}
	s := h.Refusing(t)
	err := send(t, s, Batch(7, 1))
	if !errors.Is(err, uplink.ErrPermanent) {
		t.Fatalf("a refusal for good: %v, want an error wrapping uplink.ErrPermanent", err)
	}
}

func testClose(t *testing.T, h Harness) {
	s, _ := h.Up(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close of a sink that never sent: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, _ = h.Up(t)
	if err := send(t, s, Batch(8, 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close %d after a Send: %v", i+1, err)
		}
	}
}

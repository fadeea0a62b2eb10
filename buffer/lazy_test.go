package buffer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
)

// TestLazyAppendsShareACommit: QoS 0 readings (lazy appends: nobody waits for them) wait
// for company instead of taking a commit and an fsync each; an update joins them; the next
// other append ends the wait, is fsynced before it returns (a QoS 1 PUBACK), and the lazy ones are released with
// it, after that fsync, in one group. (A delay of an hour: the test does not depend on
// time; DefaultLazyDelay bounds the wait in the daemon.)
func TestLazyAppendsShareACommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{LazyDelay: time.Hour})
	ctx := context.Background()
	const n = lazyGroup - 1 // one more would end the wait
	lazy := make([]*Pending, n)
	var readyAtSync atomic.Int64 // lazy appends released before an fsync
	orig := s.syncFn
	s.syncFn = func() error {
		for _, p := range lazy {
			if p.Ready() {
				readyAtSync.Add(1)
			}
		}
		return orig()
	}
	st := s.Stats()
	groups, syncs := st.Groups.Load(), st.Syncs.Load()
	for i := range lazy {
		lazy[i] = s.AppendArrived(ctx, "raw", []Entry{{Value: fmt.Appendf(nil, "qos0-%d", i)}}, Arrival{Lazy: true})
	}
	// The writer has taken them all, and waits for company.
	testutil.Eventually(t, time.Minute, "the writer took the lazy appends", func() bool { return len(s.reqs) == 0 })
	for i, p := range lazy {
		if p.Ready() {
			t.Fatalf("lazy append %d was committed alone", i)
		}
	}
	// A pipeline's step joins the waiting group rather than taking a commit of its own
	// (queued as Update queues it, so the test knows when the writer has it).
	upd := &request{kind: reqUpdate, tx: &Tx{}, done: make(chan struct{})}
	upd.tx.Put("state/p", []byte("step"))
	if err := s.enqueue(ctx, upd); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, "the writer took the update", func() bool { return len(s.reqs) == 0 })
	select {
	case <-upd.done:
		t.Fatalf("the update was committed alone (%v)", upd.err)
	default:
	}
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("qos1")}}); err != nil {
		t.Fatal(err)
	}
	if st.Syncs.Load() == syncs {
		t.Fatal("the QoS 1 append returned before an fsync")
	}
	if n := readyAtSync.Load(); n != 0 {
		t.Fatalf("%d lazy appends were released before the fsync of their group", n)
	}
	for i, p := range lazy {
		if _, err := p.Wait(); err != nil {
			t.Fatalf("lazy append %d: %v", i, err)
		}
	}
	<-upd.done
	if upd.err != nil {
		t.Fatalf("the update: %v", upd.err)
	}
	if g := st.Groups.Load() - groups; g != 1 {
		t.Fatalf("%d groups committed for %d lazy appends, an update and a QoS 1 append, want 1", g, n)
	}
	if _, vals := readAll(t, s, "raw", 0); len(vals) != n+1 || vals[0] != "qos0-0" || vals[n] != "qos1" {
		t.Fatalf("the log holds %q", vals)
	}
}

// TestLazyAppendCompletesAtClose: a lazy append waiting for company is committed when the
// store closes, not left behind.
func TestLazyAppendCompletesAtClose(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{LazyDelay: time.Hour})
	p := s.AppendArrived(context.Background(), "raw", []Entry{{Value: []byte("qos0")}}, Arrival{Lazy: true})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatalf("the lazy append: %v", err)
	}
	s = open(t, dir, Options{})
	if _, vals := readAll(t, s, "raw", 0); len(vals) != 1 || vals[0] != "qos0" {
		t.Fatalf("after a reopen the log holds %q", vals)
	}
}

// TestLazyGroupEndsWhenLarge: lazyGroup QoS 0 readings share a commit without waiting for
// the delay (a connection's waiting messages are bounded: it would be held to one round per
// delay).
func TestLazyGroupEndsWhenLarge(t *testing.T) {
	s := open(t, t.TempDir(), Options{LazyDelay: time.Hour})
	ctx := context.Background()
	ps := make([]*Pending, lazyGroup)
	for i := range ps {
		ps[i] = s.AppendArrived(ctx, "raw", []Entry{{Value: fmt.Appendf(nil, "qos0-%d", i)}}, Arrival{Lazy: true})
	}
	for i, p := range ps {
		testutil.Eventually(t, time.Minute, fmt.Sprintf("lazy append %d of %d committed without the delay", i, lazyGroup), p.Ready)
		if _, err := p.Wait(); err != nil {
			t.Fatalf("lazy append %d: %v", i, err)
		}
	}
}

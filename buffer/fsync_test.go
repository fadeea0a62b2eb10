package buffer

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errDisk = errors.New("EIO")

// TestFailedFsyncBreaksTheStore: once an fsync fails, nothing more is acknowledged — not
// the append whose fsync failed, not a group committed while it ran (even though the
// next fsync succeeds), and no later append.
func TestFailedFsyncBreaksTheStore(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	entered, fail := make(chan struct{}), make(chan struct{})
	calls := 0
	s.syncFn = func() error { // only the syncer calls it from here on
		calls++
		if calls == 1 {
			close(entered)
			<-fail
			return errDisk
		}
		return nil // a later fsync "succeeds": the failed pages are gone
	}
	first := s.AppendAsync(ctx, "raw", []Entry{{Value: []byte("a")}})
	<-entered
	second := s.AppendAsync(ctx, "raw", []Entry{{Value: []byte("b")}})
	deadline := time.Now().Add(5 * time.Second)
	for len(s.synced) == 0 { // the writer committed it and handed it to the syncer
		if time.Now().After(deadline) {
			t.Fatal("the second append never reached the syncer")
		}
		time.Sleep(time.Millisecond)
	}
	close(fail)
	for name, p := range map[string]*Pending{"the append whose fsync failed": first, "the group committed meanwhile": second} {
		if _, err := p.Wait(); !errors.Is(err, errDisk) {
			t.Errorf("%s: %v, want the fsync error", name, err)
		}
	}
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("c")}}); !errors.Is(err, errDisk) {
		t.Errorf("append after the failure: %v, want the fsync error", err)
	}
	if err := s.Err(); !errors.Is(err, errDisk) {
		t.Errorf("Err() = %v, want the fsync error (readiness reports it)", err)
	}
	if last, _ := s.LastSeq("raw"); last != 1 {
		t.Errorf("last durable sequence %d, want 1 (only what was acknowledged)", last)
	}
	if seqs, vals := readAll(t, s, "raw", 0); len(seqs) != 1 || vals[0] != "ok" {
		t.Errorf("readers see %q, want only the acknowledged entry (the others are in Badger, not durable)", vals)
	}
}

// TestFailedIntervalFsyncBreaksTheStore: with sync: <interval> appends are acknowledged
// before their fsync; when that fsync fails, later appends are refused.
func TestFailedIntervalFsyncBreaksTheStore(t *testing.T) {
	s := open(t, t.TempDir(), Options{SyncInterval: 5 * time.Millisecond})
	ctx := context.Background()
	failed := make(chan struct{})
	s.syncFn = func() error {
		select {
		case <-failed:
		default:
			close(failed)
		}
		return errDisk
	}
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("a")}}); err != nil {
		t.Fatal(err) // acknowledged before the fsync, as the interval policy says
	}
	<-failed
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Append(ctx, "raw", []Entry{{Value: []byte("b")}})
		if errors.Is(err, errDisk) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("append after a failed interval fsync: %v, want the fsync error", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFsyncTimeCounted: the time spent in fsyncs is counted, so that /metrics can show the
// mean fsync an operator chooses buffer.sync by.
func TestFsyncTimeCounted(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("warm")}}); err != nil {
		t.Fatal(err)
	}
	sync := s.syncFn
	s.syncFn = func() error { // a slow card: only the syncer calls it from here on
		time.Sleep(20 * time.Millisecond)
		return sync()
	}
	st := s.Stats()
	syncs, nanos := st.Syncs.Load(), st.SyncNanos.Load()
	for i := 0; i < 3; i++ {
		if _, err := s.Append(ctx, "raw", []Entry{{Value: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	n, d := st.Syncs.Load()-syncs, time.Duration(st.SyncNanos.Load()-nanos)
	if n < 3 || d < time.Duration(n)*20*time.Millisecond {
		t.Errorf("%d fsyncs took %v by the counters, want at least 3 taking 20ms each", n, d)
	}
}

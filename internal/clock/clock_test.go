package clock

import (
	"testing"
	"time"
)

func TestFakeTimersFireInOrderOnAdvance(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := f.NewTimer(2 * time.Second)
	b := f.After(time.Second)
	f.Advance(999 * time.Millisecond)
	select {
	case <-b:
		t.Fatal("fired early")
	default:
	}
	f.Advance(time.Millisecond)
	if got := <-b; !got.Equal(start.Add(time.Second)) {
		t.Fatalf("fired at %v", got)
	}
	if !a.Stop() {
		t.Fatal("Stop of an armed timer = false")
	}
	f.Advance(time.Hour)
	select {
	case <-a.C():
		t.Fatal("stopped timer fired")
	default:
	}
	a.Reset(time.Second)
	f.Advance(time.Second)
	<-a.C()
	if f.Timers() != 0 {
		t.Fatalf("%d timers left", f.Timers())
	}
}

func TestFakeZeroDurationFiresAtOnce(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	select {
	case <-f.After(0):
	default:
		t.Fatal("After(0) did not fire")
	}
}

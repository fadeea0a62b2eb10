package backoff

import (
	"testing"
	"time"
)

func TestStepDoublesToTheCap(t *testing.T) {
	p := Policy{Min: time.Second, Max: 10 * time.Second}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 1000: 10 * time.Second} {
		if got := p.Step(n); got != want {
			t.Errorf("Step(%d) = %s, want %s", n, got, want)
		}
	}
	if got := (Policy{Min: time.Second}).Step(5); got != time.Second {
		t.Errorf("no Max: Step(5) = %s, want Min", got)
	}
	if got := (Policy{Min: time.Second, Max: time.Millisecond}).Step(1); got != time.Millisecond {
		t.Errorf("Max below Min: Step(1) = %s, want Max", got)
	}
}

// TestJitterBounds: every policy stays within its spread of the step, and the spread is
// used (not always the same value).
func TestJitterBounds(t *testing.T) {
	const d = 8 * time.Second
	p := Policy{Min: time.Second, Max: time.Minute}
	for _, tc := range []struct {
		j      Jitter
		lo, hi time.Duration
	}{
		{None, d, d},
		{Full, 0, d},
		{Equal, d / 2, d},
		{Tenth, d - d/10, d + d/10},
	} {
		p.Jitter = tc.j
		seen := map[time.Duration]bool{}
		for range 500 {
			got := p.Wait(4)
			if got < tc.lo || got > tc.hi {
				t.Fatalf("jitter %d: Wait(4) = %s, want within [%s, %s]", tc.j, got, tc.lo, tc.hi)
			}
			seen[got] = true
		}
		if tc.lo != tc.hi && len(seen) < 10 {
			t.Errorf("jitter %d: only %d distinct waits in 500", tc.j, len(seen))
		}
	}
}

package timesync

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

type fakeSource struct {
	synced atomic.Bool
	err    error
}

func (f *fakeSource) Synced() (bool, error) { return f.synced.Load(), f.err }

// fakeMono is CLOCK_MONOTONIC under test control: it moves only by Advance, never by a
// step of the wall clock.
type fakeMono struct{ d atomic.Int64 }

func (m *fakeMono) now() time.Duration      { return time.Duration(m.d.Load()) }
func (m *fakeMono) advance(d time.Duration) { m.d.Add(int64(d)) }

var (
	floor  = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	real   = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) // the true time at boot + 10 s
	epoch0 = time.Unix(0, 0).UTC()                          // what a Pi without RTC starts at
)

func TestStates(t *testing.T) {
	tests := []struct {
		name    string
		wall    time.Time
		synced  bool
		srcErr  error
		trust   bool
		maxWait time.Duration
		elapsed time.Duration
		want    string
	}{
		{name: "kernel synced, plausible", wall: real, synced: true, want: StateSynced},
		{name: "kernel unsynced", wall: real, want: StateWaiting},
		{name: "kernel synced but before the build", wall: epoch0, synced: true, want: StateWaiting},
		{name: "adjtimex fails", wall: real, synced: true, srcErr: errors.New("EPERM"), want: StateWaiting},
		{name: "trust", wall: epoch0, trust: true, want: StateTrusted},
		{name: "max_wait passed, plausible", wall: real, maxWait: time.Minute, elapsed: time.Minute, want: StateTrusted},
		{name: "max_wait not passed", wall: real, maxWait: time.Minute, elapsed: 59 * time.Second, want: StateWaiting},
		{name: "max_wait passed, before the build", wall: epoch0, maxWait: time.Minute, elapsed: time.Hour, want: StateWaiting},
		{name: "wait forever", wall: real, maxWait: 0, elapsed: 1000 * time.Hour, want: StateWaiting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{err: tc.srcErr}
			src.synced.Store(tc.synced)
			mono := &fakeMono{}
			mono.advance(5 * time.Second)
			k, err := New(Options{Trust: tc.trust, MaxWait: tc.maxWait, Floor: floor, Source: src,
				Mono: mono.now, Boot: "b1", Clock: clock.NewFake(tc.wall)})
			if err != nil {
				t.Fatal(err)
			}
			mono.advance(tc.elapsed)
			if got := k.Check(); got != tc.want {
				t.Errorf("state %s, want %s", got, tc.want)
			}
		})
	}
}

// A board boots at 1970, stamps readings, then NTP steps the clock: the stamps are
// corrected to boot start + monotonic time, to the nanosecond.
func TestCorrectionAfterStep(t *testing.T) {
	src := &fakeSource{}
	mono := &fakeMono{}
	mono.advance(3 * time.Second) // the kernel booted 3 s ago
	wall := clock.NewFake(epoch0.Add(3 * time.Second))
	k, err := New(Options{Floor: floor, Source: src, Mono: mono.now, Boot: "b1", Clock: wall})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Waiting() {
		t.Fatal("not waiting at 1970")
	}
	mono.advance(7 * time.Second)
	wall.Advance(7 * time.Second)
	s1 := k.Now() // truly boot + 10 s = real
	mono.advance(90 * time.Second)
	wall.Advance(90 * time.Second)
	s2 := k.Now() // real + 90 s

	// NTP steps the clock to the true time, 20 s later in monotonic time.
	mono.advance(20 * time.Second)
	wall.Set(real.Add(110 * time.Second))
	src.synced.Store(true)
	if got := k.Check(); got != StateSynced {
		t.Fatalf("state %s", got)
	}
	boot, start, ok := k.Anchor()
	if !ok || boot != "b1" || !start.Equal(real.Add(-10*time.Second)) {
		t.Fatalf("anchor %s %v %v", boot, start, ok)
	}
	anchors := map[string]time.Time{boot: start}
	for _, tc := range []struct {
		s    Stamp
		want time.Time
	}{{s1, real}, {s2, real.Add(90 * time.Second)}} {
		d, ok := Correction(tc.s, anchors)
		if !ok || !tc.s.Wall.Add(d).Equal(tc.want) {
			t.Errorf("stamp %+v corrected to %v (%v), want %v", tc.s, tc.s.Wall.Add(d), ok, tc.want)
		}
	}
	// A stamp of another boot that never synced cannot be corrected.
	if _, ok := Correction(Stamp{Boot: "b0", Mono: time.Second, Wall: epoch0}, anchors); ok {
		t.Error("corrected a stamp of an unknown boot")
	}
	// Losing sync later does not undo it.
	src.synced.Store(false)
	if got := k.Check(); got != StateSynced {
		t.Errorf("state after losing sync: %s", got)
	}
}

func TestClamp(t *testing.T) {
	if got := Clamp(epoch0, floor); !got.Equal(floor) {
		t.Errorf("1970 clamped to %v", got)
	}
	if got := Clamp(real, floor); !got.Equal(real) {
		t.Errorf("a plausible time moved to %v", got)
	}
	if got := Clamp(epoch0, time.Time{}); !got.Equal(epoch0) {
		t.Errorf("no floor: %v", got)
	}
}

func TestRealSources(t *testing.T) {
	if _, err := (Adjtimex{}).Synced(); err != nil {
		t.Errorf("adjtimex: %v", err)
	}
	a := Monotonic()
	b := Monotonic()
	if a <= 0 || b < a {
		t.Errorf("monotonic %v then %v", a, b)
	}
	id, err := BootID()
	if err != nil || len(id) != 36 {
		t.Errorf("boot id %q %v", id, err)
	}
}

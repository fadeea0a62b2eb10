// Package timesync decides whether the wall clock of a board without a real-time clock can
// be trusted, and corrects timestamps taken before it could (DESIGN invariant 6). While the
// clock is unsynchronised a stamp keeps the boot's monotonic time beside the wall time;
// once the clock syncs, boot start in wall time is known, and every stamp of that boot can
// be rewritten to boot start + monotonic time.
package timesync

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/internal/clock"
)

// Source tells whether the system clock is synchronised.
type Source interface {
	Synced() (bool, error)
}

// Adjtimex asks the kernel (adjtimex(2)): synchronised unless the clock state is TIME_ERROR
// or STA_UNSYNC is set. NTP daemons (systemd-timesyncd, chrony, ntpd) clear it once synced.
type Adjtimex struct{}

// Synced reports the kernel's view.
func (Adjtimex) Synced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, nil
}

// Monotonic returns CLOCK_MONOTONIC: time since boot that NTP steps never move, shared by
// every process of one boot (so a restart keeps its stamps correctable).
func Monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// BootID returns the kernel's id of this boot.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// States of the clock.
const (
	// StateWaiting: not synchronised; readings are stamped for later correction.
	StateWaiting = "waiting"
	// StateSynced: synchronised; boot start in wall time is known.
	StateSynced = "synced"
	// StateTrusted: taken as it is (mode trust, or max_wait passed with a plausible clock).
	StateTrusted = "trusted"
)

// Options configure a Keeper.
type Options struct {
	// Trust takes the clock as it is (ops.clock.mode: trust).
	Trust bool
	// MaxWait: after this long waiting, a clock that reads at or after Floor is trusted;
	// 0 waits forever.
	MaxWait time.Duration
	// Floor is a time the clock cannot be before (the build's commit time); zero: none.
	Floor  time.Time
	Source Source
	// Mono is the monotonic clock (Monotonic); injected by tests.
	Mono func() time.Duration
	// Boot identifies this boot (BootID).
	Boot  string
	Clock clock.Clock
}

// Stamp is when something happened by this gateway's clocks.
type Stamp struct {
	Boot string        `json:"boot"`
	Mono time.Duration `json:"mono"`
	Wall time.Time     `json:"wall"`
}

// Keeper tracks the clock's state. Safe for concurrent use.
type Keeper struct {
	opts  Options
	start time.Duration // monotonic time at construction

	mu     sync.Mutex // guards state and anchor
	state  string
	anchor time.Time // wall time of this boot's start; set once synced
}

// New builds a keeper and checks the clock once.
func New(o Options) (*Keeper, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Mono == nil {
		o.Mono = Monotonic
	}
	if o.Source == nil && !o.Trust {
		return nil, errors.New("timesync: no source")
	}
	k := &Keeper{opts: o, start: o.Mono(), state: StateWaiting}
	if o.Trust {
		k.state = StateTrusted
	}
	k.Check()
	return k, nil
}

// Check updates the state from the source and returns it. A synced clock that reads before
// Floor is not believed. Once synced or trusted, the state stays (a later loss of sync
// does not make the clock jump back by more than NTP slews).
func (k *Keeper) Check() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.state != StateWaiting {
		return k.state
	}
	wall := k.opts.Clock.Now()
	mono := k.opts.Mono()
	plausible := k.opts.Floor.IsZero() || !wall.Before(k.opts.Floor)
	if ok, err := k.opts.Source.Synced(); err == nil && ok && plausible {
		k.state = StateSynced
		k.anchor = wall.Add(-mono)
		return k.state
	}
	if k.opts.MaxWait > 0 && mono-k.start >= k.opts.MaxWait && plausible {
		k.state = StateTrusted
	}
	return k.state
}

// State is the last state Check found.
func (k *Keeper) State() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// Waiting reports whether readings stamped now need correcting later.
func (k *Keeper) Waiting() bool { return k.State() == StateWaiting }

// Now stamps the present.
func (k *Keeper) Now() Stamp {
	return Stamp{Boot: k.opts.Boot, Mono: k.opts.Mono(), Wall: k.opts.Clock.Now()}
}

// Anchor returns this boot's start in wall time, known once the clock synced.
func (k *Keeper) Anchor() (boot string, start time.Time, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.opts.Boot, k.anchor, k.state == StateSynced
}

// Floor is the earliest plausible time (zero when unknown).
func (k *Keeper) Floor() time.Time { return k.opts.Floor }

// Boot is this boot's id.
func (k *Keeper) Boot() string { return k.opts.Boot }

// Correction is what a stamp's wall time is off by: the true time of the stamp minus its
// wall time. ok is false when the stamp's boot never synced (anchors holds the known boot
// starts, this boot's included once synced).
func Correction(s Stamp, anchors map[string]time.Time) (time.Duration, bool) {
	a, ok := anchors[s.Boot]
	if !ok {
		return 0, false
	}
	return a.Add(s.Mono).Sub(s.Wall), true
}

// Clamp returns t, or floor when t is before it: a time that cannot be corrected is never
// reported as earlier than the build (1970 on a board that booted without a clock).
func Clamp(t, floor time.Time) time.Time {
	if !floor.IsZero() && t.Before(floor) {
		return floor
	}
	return t
}

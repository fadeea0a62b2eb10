// Package sdnotify speaks systemd's notify protocol for edgegate (Type=notify): READY,
// RELOADING, STOPPING and STATUS through go-systemd, and a watchdog that pings only while
// the components it probes make progress.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/internal/clock"
)

// Notifier sends states to systemd. Outside systemd (no NOTIFY_SOCKET) every call is a
// no-op that returns nil, so the daemon runs the same by hand.
type Notifier struct{}

func send(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", strings.SplitN(state, "\n", 2)[0], err)
	}
	return nil
}

// Ready tells systemd the service is up; status is a one-line summary for systemctl status.
func (Notifier) Ready(status string) error {
	return send(daemon.SdNotifyReady + "\nSTATUS=" + oneLine(status))
}

// Reloading tells systemd a reload started; Ready must follow when it is done.
func (Notifier) Reloading() error {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1e6 + ts.Nsec/1e3
	return send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, usec))
}

// Stopping tells systemd the shutdown began.
func (Notifier) Stopping(status string) error {
	return send(daemon.SdNotifyStopping + "\nSTATUS=" + oneLine(status))
}

// Status updates the one-line status.
func (Notifier) Status(status string) error { return send("STATUS=" + oneLine(status)) }

// ExtendStart asks systemd for d more to start (EXTEND_TIMEOUT_USEC, systemd ≥ 236: the
// start timeout becomes d from now) and shows status.
func (Notifier) ExtendStart(d time.Duration, status string) error {
	return send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d\nSTATUS=%s", d.Microseconds(), oneLine(status)))
}

// Watchdog pings the watchdog.
func (Notifier) Watchdog() error { return send(daemon.SdNotifyWatchdog) }

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// WatchdogInterval returns how often to ping: half of WatchdogSec, as sd_watchdog_enabled(3)
// advises; ok is false when systemd runs no watchdog for this process.
func WatchdogInterval() (time.Duration, bool) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d / 2, true
}

// Probe checks that one component makes progress. Check is called from one goroutine
// and must return within ctx.
type Probe struct {
	Name  string
	Check func(ctx context.Context) error
}

// Watchdog runs the probes every Interval and pings systemd only when all of them pass.
// A stuck component then gets the process restarted by systemd (WatchdogSec, Restart=).
type Watchdog struct {
	Interval time.Duration
	Probes   []Probe
	// Ping sends the keep-alive (Notifier.Watchdog).
	Ping func() error
	// OnStall is called for every failed probe (metrics); may be nil.
	OnStall func(probe string, err error)
	Clock   clock.Clock
	Logger  *slog.Logger
}

// Run checks and pings until ctx ends. The first ping goes out at once, so a slow start
// cannot be mistaken for a hang.
func (w *Watchdog) Run(ctx context.Context) error {
	if w.Interval <= 0 {
		return errors.New("watchdog: interval must be > 0")
	}
	if w.Clock == nil {
		w.Clock = clock.Real{}
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "watchdog")
	stuck := map[string]bool{}
	if err := w.Ping(); err != nil {
		log.Warn("watchdog ping", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Clock.After(w.Interval):
		}
		ok := true
		for _, p := range w.Probes {
			pctx, cancel := context.WithTimeout(ctx, w.Interval)
			err := p.Check(pctx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				ok = false
				if w.OnStall != nil {
					w.OnStall(p.Name, err)
				}
				if !stuck[p.Name] {
					log.Error("component makes no progress; not pinging the systemd watchdog", "probe", p.Name, "err", err)
				}
				stuck[p.Name] = true
			} else if stuck[p.Name] {
				log.Info("component makes progress again", "probe", p.Name)
				stuck[p.Name] = false
			}
		}
		if ok {
			if err := w.Ping(); err != nil {
				log.Warn("watchdog ping", "err", err)
			}
		}
	}
}

package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/timesync"
)

// runDaemon runs the gateway as a service (gateway.Service: the ops HTTP server, systemd
// notifications and watchdog, reloads) until SIGINT/SIGTERM; SIGHUP asks for a reload.
func runDaemon(path string, cfg *config.Config, stderr io.Writer) int {
	level := new(slog.LevelVar)
	log := newLogger(cfg.Ops.Log, level, stderr)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fwdCtx, fwdCancel := context.WithCancel(ctx)
	fwdDone := make(chan struct{})
	go func() { defer close(fwdDone); forwardReloads(fwdCtx, hup, reload) }()
	defer func() { fwdCancel(); <-fwdDone }()

	keeper, err := newTimeKeeper(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return exitUser
	}
	g, err := gateway.New(cfg, gateway.Options{
		Logger: log, Clock: clock.Real{}, Version: version, TimeKeeper: keeper,
		Service: &gateway.Service{
			Reload: reload,
			Load:   func() (*config.Config, error) { return config.Load(path, registry()) },
			File:   path,
			Level:  level,
		},
	})
	if err != nil {
		log.Error("start failed", "err", err)
		return exitUser
	}
	if err := g.Run(ctx); err != nil {
		log.Error("stopped with error", "err", err)
		return exitUser
	}
	return exitOK
}

// forwardReloads turns each SIGHUP into a reload request until ctx ends; a request
// already waiting absorbs the next signal.
func forwardReloads(ctx context.Context, hup <-chan os.Signal, reload chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}
}

func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	o := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// newTimeKeeper watches the clock per ops.clock: the kernel's sync state, and the build's
// time as a floor.
func newTimeKeeper(cfg *config.Config, log *slog.Logger) (*timesync.Keeper, error) {
	boot, err := timesync.BootID()
	if err != nil {
		return nil, err
	}
	k, err := timesync.New(timesync.Options{
		Trust:   cfg.Ops.Clock.Mode == "trust",
		MaxWait: cfg.Ops.Clock.MaxWait.D(),
		Floor:   buildTime(),
		Source:  timesync.Adjtimex{},
		Boot:    boot,
	})
	if err != nil {
		return nil, err
	}
	if k.Waiting() {
		log.Warn("the system clock is not synchronised: readings stamped by edgegate are held and corrected once it syncs (ops.clock)",
			"now", time.Now().UTC().Format(time.RFC3339), "max_wait", cfg.Ops.Clock.MaxWait.D())
	}
	return k, nil
}

// buildTime is when the source was committed (linker flag, else the VCS stamp of go build):
// a clock that reads earlier is certainly wrong.
func buildTime() time.Time {
	if s, err := strconv.ParseInt(buildEpoch, 10, 64); err == nil && s > 0 {
		return time.Unix(s, 0).UTC()
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					return t
				}
			}
		}
	}
	return time.Time{}
}

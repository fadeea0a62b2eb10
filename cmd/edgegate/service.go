package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/gateway/sdnotify"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/timesync"
)

// runDaemon runs the gateway as a service: the ops HTTP server, systemd notifications and
// watchdog, SIGHUP reloads, and a graceful stop on SIGINT/SIGTERM.
func runDaemon(path string, cfg *config.Config, stderr io.Writer) int {
	level := new(slog.LevelVar)
	log := newLogger(cfg.Ops.Log, level, stderr)
	slog.SetDefault(log)
	notify := sdnotify.Notifier{}
	clk := clock.Real{}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Bind the ops port before opening anything, so a conflict fails the start cleanly.
	var srv *ops.Server
	reg := ops.NewRegistry()
	if cfg.Ops.Listen != "off" {
		srv = ops.New(ops.Options{Listen: cfg.Ops.Listen, Registry: reg, Clock: clk, Logger: log, AllowedHosts: cfg.Ops.AllowedHosts})
		if err := srv.Listen(); err != nil {
			log.Error("start failed", "err", err)
			return exitUser
		}
	}
	keeper, err := newTimeKeeper(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return exitUser
	}
	g, err := gateway.New(cfg, gateway.Options{
		Logger: log, Clock: clk, Version: version, TimeKeeper: keeper,
		// A long step (a buffer conversion after an upgrade) keeps TimeoutStartSec from
		// killing a start that progresses.
		Starting: func(status string) {
			if err := notify.ExtendStart(30*time.Second, status); err != nil {
				log.Warn("systemd notify", "err", err)
			}
		},
	})
	if err != nil {
		log.Error("start failed", "err", err)
		return exitUser
	}
	g.Register(reg)

	var wg sync.WaitGroup
	auxCtx, auxCancel := context.WithCancel(context.Background())
	defer func() {
		auxCancel()
		wg.Wait()
	}()
	if srv != nil {
		srv.SetSource(g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Run(auxCtx); err != nil {
				log.Error("ops http stopped", "err", err)
			}
		}()
	}

	// systemd: READY once every component runs, STOPPING when the shutdown begins.
	wg.Add(1)
	go func() {
		defer wg.Done()
		notifySystemd(auxCtx, g, srv, notify, clk, log)
	}()

	// SIGHUP: reload what can be reloaded, log what needs a restart.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-auxCtx.Done():
				return
			case <-hup:
				reload(path, g, level, notify, srv, log)
			}
		}
	}()

	err = g.Run(ctx)
	if err != nil {
		log.Error("stopped with error", "err", err)
		return exitUser
	}
	return exitOK
}

// notifySystemd tells systemd READY once g runs, pings its watchdog (when the unit has one)
// while g runs, and STOPPING when g's shutdown begins; it returns when ctx ends.
func notifySystemd(ctx context.Context, g *gateway.Gateway, srv *ops.Server, notify sdnotify.Notifier, clk clock.Clock, log *slog.Logger) {
	select {
	case <-g.Ready():
	case <-ctx.Done():
		return
	}
	if err := notify.Ready(summary(g, srv)); err != nil {
		log.Warn("systemd notify", "err", err)
	}
	// The watchdog runs while the gateway does; a stop is bounded by TimeoutStopSec.
	wdCtx, wdCancel := context.WithCancel(ctx)
	defer wdCancel()
	var wdDone chan struct{}
	if iv, ok := sdnotify.WatchdogInterval(); ok {
		wd := &sdnotify.Watchdog{
			Interval: iv, Probes: g.Probes(), Ping: notify.Watchdog, Clock: clk, Logger: log,
			OnStall: func(p string, _ error) { g.Stalled(p) },
		}
		wdDone = make(chan struct{})
		go func() {
			defer close(wdDone)
			wd.Run(wdCtx)
		}()
		log.Info("systemd watchdog enabled", "ping_every", iv)
	}
	stopping := false
	select {
	case <-g.Stopping():
		stopping = true
	case <-ctx.Done():
	}
	// No ping after STOPPING: systemd is then timing the stop, not the watchdog.
	wdCancel()
	if wdDone != nil {
		<-wdDone
	}
	if stopping {
		if err := notify.Stopping("stopping: flushing uplinks and closing the buffer"); err != nil {
			log.Warn("systemd notify", "err", err)
		}
	}
}

func reload(path string, g *gateway.Gateway, level *slog.LevelVar, notify sdnotify.Notifier, srv *ops.Server, log *slog.Logger) {
	notify.Reloading()
	defer notify.Ready(summary(g, srv))
	next, err := config.Load(path, registry())
	if err != nil {
		g.ReloadFailed()
		var es conf.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				log.Error("reload: config problem; keeping the running config", "problem", e.Error())
			}
			return
		}
		log.Error("reload: keeping the running config", "err", err)
		return
	}
	res, err := g.Reload(next)
	if err != nil {
		log.Error("reload: keeping the running config", "err", err)
		return
	}
	_ = level.UnmarshalText([]byte(next.Ops.Log.Level)) // validated by config
	if len(res.Applied) == 0 {
		log.Info("reload: nothing to apply", "file", path)
	} else {
		log.Info("reload: applied", "file", path, "changed", strings.Join(res.Applied, ", "))
	}
	if len(res.NeedRestart) > 0 {
		log.Warn("reload: these changes need a restart (systemctl restart edgegate); they keep their old values until then",
			"keys", strings.Join(res.NeedRestart, ", "))
	}
}

func summary(g *gateway.Gateway, srv *ops.Server) string {
	s := fmt.Sprintf("broker on %s", strings.Join(g.BrokerAddrs(), ", "))
	if srv != nil {
		s += fmt.Sprintf("; status page http://%s/", srv.Addr())
	}
	return s
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

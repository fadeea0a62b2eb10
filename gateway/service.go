package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/gateway/sdnotify"
	"github.com/edgegate/edgegate/internal/conf"
)

// Service makes the gateway run as the daemon (Options.Service): Run then also serves
// the ops HTTP server (ops.listen), speaks systemd's notify protocol (READY, RELOADING,
// STOPPING, EXTEND_TIMEOUT during a long start) and pings its watchdog while the probes
// pass, and reloads the config on request.
type Service struct {
	// Reload delivers reload requests (the daemon: SIGHUP); nil: none.
	Reload <-chan struct{}
	// Load reads the config again for a reload (the daemon: the -c file, checked against
	// the binary's registry).
	Load func() (*config.Config, error)
	// File names the config file in the reload's log lines.
	File string
	// Level is the logger's level, which a reload sets (ops.log.level); nil: not set.
	Level *slog.LevelVar
}

// service is what the gateway keeps to run as a Service.
type service struct {
	Service
	log    *slog.Logger // the daemon's logger, as is (no component)
	notify sdnotify.Notifier
	srv    *ops.Server // nil when ops.listen is off
	reg    *ops.Registry
}

// newService binds the ops port, so that a conflict fails the start before anything is
// opened, and sets Options.Starting to extend systemd's start timeout.
func (g *Gateway) newService() error {
	s := &service{Service: *g.opts.Service, log: g.opts.Logger, reg: ops.NewRegistry()}
	if g.cfg.Ops.Listen != "off" {
		srv := ops.New(ops.Options{Listen: g.cfg.Ops.Listen, Registry: s.reg, Clock: g.opts.Clock, Logger: s.log, AllowedHosts: g.cfg.Ops.AllowedHosts})
		if err := srv.Listen(); err != nil {
			return err
		}
		s.srv = srv
	}
	g.svc = s
	if g.opts.Starting == nil {
		// A long step (a buffer conversion after an upgrade) keeps TimeoutStartSec from
		// killing a start that progresses.
		g.opts.Starting = func(status string) {
			if err := s.notify.ExtendStart(30*time.Second, status); err != nil {
				s.log.Warn("systemd notify", "err", err)
			}
		}
	}
	return nil
}

// initService gives the ops server the gateway to report on, once New has built it.
func (g *Gateway) initService() {
	if g.svc == nil || g.svc.srv == nil {
		return
	}
	g.Register(g.svc.reg)
	g.svc.srv.SetSource(g)
}

// closeService releases the ops port of a server that never ran.
func (g *Gateway) closeService() {
	if g.svc != nil && g.svc.srv != nil {
		if err := g.svc.srv.Close(); err != nil {
			g.log.Warn("close ops http", "err", err)
		}
	}
}

// opsStage serves the ops HTTP server from the first stage to the last.
func (g *Gateway) opsStage() []stage {
	srv := g.svc.srv
	if srv == nil {
		return nil
	}
	return []stage{g.goStage("ops", func(ctx context.Context) {
		if err := srv.Run(ctx); err != nil {
			g.svc.log.Error("ops http stopped", "err", err)
		}
	})}
}

// reloadStage reloads the config at each request, once the gateway runs.
func (g *Gateway) reloadStage() stage {
	return g.goStage("reload", func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-g.svc.Reload:
				g.reloadService()
			}
		}
	})
}

// systemdStage tells systemd READY once the gateway runs and pings its watchdog (when the
// unit has one) while it runs; its stop tells systemd STOPPING, after the last ping.
func (g *Gateway) systemdStage() stage {
	s := g.svc
	gs := newGoroutines()
	return stage{
		name: "systemd",
		start: func() error {
			if err := s.notify.Ready(g.summary()); err != nil {
				s.log.Warn("systemd notify", "err", err)
			}
			if iv, ok := sdnotify.WatchdogInterval(); ok {
				wd := &sdnotify.Watchdog{
					Interval: iv, Probes: g.Probes(), Ping: s.notify.Watchdog, Clock: g.opts.Clock, Logger: s.log,
					OnStall: func(p string, _ error) { g.Stalled(p) },
				}
				gs.spawn(func(ctx context.Context) { wd.Run(ctx) })
				s.log.Info("systemd watchdog enabled", "ping_every", iv)
			}
			return nil
		},
		stop: func() {
			// No ping after STOPPING: systemd is then timing the stop, not the watchdog.
			gs.stop()
			if err := s.notify.Stopping("stopping: flushing uplinks and closing the buffer"); err != nil {
				s.log.Warn("systemd notify", "err", err)
			}
		},
	}
}

// reloadService reads the config again and applies it (Reload), telling systemd
// RELOADING then READY, and logs what was applied and what needs a restart.
func (g *Gateway) reloadService() {
	s := g.svc
	log := s.log
	s.notify.Reloading()
	defer func() { s.notify.Ready(g.summary()) }()
	next, err := s.Load()
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
	if s.Level != nil {
		_ = s.Level.UnmarshalText([]byte(next.Ops.Log.Level)) // validated by config
	}
	if len(res.Applied) == 0 {
		log.Info("reload: nothing to apply", "file", s.File)
	} else {
		log.Info("reload: applied", "file", s.File, "changed", strings.Join(res.Applied, ", "))
	}
	if len(res.NeedRestart) > 0 {
		log.Warn("reload: these changes need a restart (systemctl restart edgegate); they keep their old values until then",
			"keys", strings.Join(res.NeedRestart, ", "))
	}
}

// summary is systemd's one-line status: where the broker and the status page listen.
func (g *Gateway) summary() string {
	s := fmt.Sprintf("broker on %s", strings.Join(g.BrokerAddrs(), ", "))
	if g.svc.srv != nil {
		s += fmt.Sprintf("; status page http://%s/", g.svc.srv.Addr())
	}
	return s
}

// Package gateway is edgegate's composition root: from a config it opens the store, builds
// the broker, sensors and uplinks, and runs them as one unit with an ordered start and a
// graceful, flushing stop (DESIGN "Lifecycle").
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/broker"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/timesync"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/uplink"
)

// Options are what the daemon gets besides its config.
type Options struct {
	Logger *slog.Logger
	Clock  clock.Clock
	// FlushTimeout bounds how long uplinks may drain at shutdown (default: ops.flush_timeout).
	FlushTimeout time.Duration
	// Version is reported in metrics and /status.
	Version string
	// TimeKeeper says whether the wall clock can be trusted (a board without an RTC); nil
	// trusts it.
	TimeKeeper *timesync.Keeper
	// Starting, if set, hears from a start step that takes long (the buffer converting a
	// store written by an earlier version), at most once a second.
	Starting func(status string)
	// Service, if set, makes Run serve as the daemon: the ops HTTP server, systemd's
	// notifications and watchdog, and reloads. New then binds the ops port first.
	Service *Service
}

// Gateway is one running edgegate.
type Gateway struct {
	cfg     *config.Config
	opts    Options
	log     *slog.Logger
	store   *buffer.Store
	hook    *broker.IngestHook
	recent  *ops.Recent // the status page's last values, fed by hook
	broker  *broker.Broker
	poller  *sensors.Poller
	uplinks []*uplink.Uplink
	sinks   []uplink.Sink // the uplinks' sinks, created and closed here

	pipelines []*pipeline.Runner
	closing   atomic.Bool                       // set before the broker closes: panes are no longer published locally
	outputs   atomic.Pointer[map[string]string] // pipeline → output topic (uplinks' filters); replaced on reload

	ingestCtx    context.Context // lives until shutdown begins; bounds ingest's store waits
	ingestCancel context.CancelFunc

	ready    chan struct{}
	stopping chan struct{}
	ops      opsState
	hold     *clockHold
	svc      *service // nil unless Options.Service
	failures *failures

	drivers   []sensors.Sensor // opened by New; the poller's once it is built
	closeOnce sync.Once
	closeErr  error
}

// New opens the store and builds every component of cfg, with the drivers and sinks of the
// registry cfg was checked against. It starts no goroutine that outlives it and dials
// nothing. On error, what was opened is closed (Close); otherwise Run, or Close without
// Run, releases it.
func New(cfg *config.Config, opts Options) (g *Gateway, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = cfg.Ops.FlushTimeout.D()
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 5 * time.Second
	}
	g = &Gateway{cfg: cfg, opts: opts, log: opts.Logger.With("component", "gateway"), ready: make(chan struct{}), stopping: make(chan struct{}), failures: newFailures()}
	self := g // g is nil once an error is returned
	defer func() {
		if err != nil {
			self.Close()
		}
	}()

	// Bind the ops port before opening anything, so a conflict fails the start cleanly.
	if opts.Service != nil {
		if err := g.newService(); err != nil {
			return nil, err
		}
	}

	// Sensors first: a missing device is the most likely start-up error.
	g.drivers, err = sensors.Open(cfg.Sensors, cfg.Registry().Sensors, opts.Clock, opts.Logger)
	if err != nil {
		return nil, err
	}

	routes := append(SensorRoutes(cfg.Sensors), cfg.Routes...)
	router, err := ingest.NewRouter(routes, cfg.Unrouted)
	if err != nil {
		return nil, err
	}

	bo := BufferOptions(cfg, opts.Logger, opts.Clock)
	bo.Progress = g.opts.Starting
	g.store, err = buffer.Open(bo)
	if err != nil {
		return nil, err
	}

	if err := g.initClock(); err != nil {
		return nil, err
	}
	g.ingestCtx, g.ingestCancel = context.WithCancel(context.Background())
	g.recent = ops.NewRecent(ops.RecentSeries, ops.RecentPoints)
	g.broker, err = broker.New(cfg.Broker, broker.IngestOptions{
		Ctx: g.ingestCtx, Router: router, Store: g.store, Clock: opts.Clock, Observer: g.recent, Holder: g.hold,
	}, opts.Logger)
	if err != nil {
		return nil, err
	}
	g.hook = g.broker.Ingest()
	g.poller = sensors.NewPoller(g.drivers, g.broker, opts.Clock, opts.Logger)

	if err := g.newPipelines(); err != nil {
		return nil, err
	}
	if err := g.newUplinks(); err != nil {
		return nil, err
	}
	g.initOps()
	g.initService()
	return g, nil
}

// newPipelines builds a runner per pipeline, and the map of their output topics (the
// uplinks' forward filters).
func (g *Gateway) newPipelines() error {
	outputs := map[string]string{}
	for _, pc := range g.cfg.Pipelines {
		spec, err := pipeline.SpecFromConfig(pc)
		if err != nil {
			return err
		}
		r, err := pipeline.NewRunner(spec, pipeline.RunnerOptions{
			Store: g.store, Input: logs.Raw, Output: logs.Agg,
			Publisher: localPublisher{closing: &g.closing, publish: g.broker.PublishLocal}, Clock: g.opts.Clock, Logger: g.opts.Logger,
		})
		if err != nil {
			return err
		}
		g.pipelines = append(g.pipelines, r)
		outputs[pc.Name] = spec.Output
	}
	g.outputs.Store(&outputs)
	return nil
}

// newUplinks builds each uplink with its sink, which the gateway owns (Close).
func (g *Gateway) newUplinks() error {
	cfg := g.cfg
	// Aggregates go first: fewer, and worth more than the raw records they summarise.
	sources := []uplink.Source{
		{Log: logs.Agg, Kind: record.KindAggregates, Topic: func(v []byte) string {
			name := record.PipelineOf(v)
			if t, ok := (*g.outputs.Load())[name]; ok {
				return t
			}
			return "agg/" + name // a pipeline removed from the config: its default output
		}},
		{Log: logs.Raw, Kind: record.KindRecords},
	}
	for i := range cfg.Uplinks {
		uc := &cfg.Uplinks[i]
		t := uplink.FindSink(cfg.Registry().Sinks, uc.Type)
		if t == nil {
			return fmt.Errorf("uplink %q: type %q is not built into this binary", uc.Name, uc.Type)
		}
		sink, err := t.New(uc, cfg.Gateway.ID, g.opts.Logger)
		if err != nil {
			return err
		}
		g.sinks = append(g.sinks, sink)
		g.uplinks = append(g.uplinks, uplink.NewMulti(*uc, cfg.Gateway.ID, sources, sink, g.store, g.opts.Clock, g.opts.Logger))
	}
	return nil
}

// SensorRoutes returns the implicit route of each sensor: its topic, with {metric} as a
// named wildcard, to series "<name>/<metric>" (or "<name>" when the topic has no {metric}).
func SensorRoutes(ss []sensors.Config) []config.Route {
	var out []config.Route
	for _, s := range ss {
		pattern := strings.ReplaceAll(s.Topic, "{name}", s.Name)
		series := s.Name
		if strings.Contains(pattern, "{metric}") {
			pattern = strings.ReplaceAll(pattern, "{metric}", "+metric")
			series = s.Name + "/{metric}"
		}
		out = append(out, config.Route{Topic: pattern, Format: "json", Series: series})
	}
	return out
}

// Ready is closed once the broker listens and every component runs.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Stopping is closed when the shutdown begins (a cancelled context or a failed component).
func (g *Gateway) Stopping() <-chan struct{} { return g.stopping }

// BrokerAddrs returns the broker's bound addresses (valid after Ready).
func (g *Gateway) BrokerAddrs() []string { return g.broker.Addrs() }

// Store exposes the store (tests and inspection).
func (g *Gateway) Store() *buffer.Store { return g.store }

// IngestStats exposes the ingest counters.
func (g *Gateway) IngestStats() *broker.IngestStats { return g.hook.Stats() }

// Refusals exposes the broker's refusal counters, by reason (SPEC §2, metrics).
func (g *Gateway) Refusals() *broker.Refusals { return g.hook.Refusals() }

// Sensors returns the state of every sensor (for /status): up, down with the last error, counters.
func (g *Gateway) Sensors() []sensors.Status { return g.poller.Status() }

// Uplinks exposes the uplinks (status and tests).
func (g *Gateway) Uplinks() []*uplink.Uplink { return g.uplinks }

// Pipelines exposes the pipelines' runners (status and tests).
func (g *Gateway) Pipelines() []*pipeline.Runner { return g.pipelines }

// localPublisher publishes pipeline output on the local broker until shutdown begins.
type localPublisher struct {
	closing *atomic.Bool // set before the broker closes
	publish func(topic string, payload []byte) error
}

func (p localPublisher) PublishLocal(topic string, payload []byte) error {
	if p.closing.Load() {
		return nil // shutting down: the panes are in the aggregate log, uplinks send them
	}
	return p.publish(topic, payload)
}

// Run starts the stages in order (stages) — the ops server, store maintenance, the clock
// holder, uplinks, pipelines, broker listeners, sensors, then (Ready) reloads and systemd's
// notifications — and runs until ctx ends or a component fails. Then it stops them in
// reverse: systemd hears STOPPING, sensors and listeners stop (no new data), in-flight
// appends finish, pipelines get FlushTimeout to process what was ingested, uplinks get
// FlushTimeout to send what is buffered, and the store closes last.
//
// When Run returns, what New opened is closed (Close), even when the start failed (a
// listener's port in use): the sensors' buses, the broker, the store.
func (g *Gateway) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := g.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	ss := g.stages()
	if err := startStages(ss); err != nil {
		return err
	}

	var cause error
	select {
	case <-ctx.Done():
		g.log.Info("shutting down")
	case <-g.failures.failed():
		cause = g.failures.firstErr()
		g.log.Error("component failed; shutting down", "err", cause)
	}
	close(g.stopping)
	stopStages(ss, true)
	g.log.Info("stopped")
	return g.failures.result(cause)
}

// Close releases what New opened: the sensors' drivers (closed by the poller instead if
// it ran), the broker, the ingest context, the uplinks' sinks, the ops port of a service
// and the store. Run calls it when it returns; call it yourself for a gateway built but
// never run. Not while Run runs. Idempotent: it
// returns the first call's error (the store's).
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.closing.Store(true)
		if g.poller != nil {
			g.poller.Close()
		} else {
			sensors.CloseAll(g.drivers)
		}
		if g.broker != nil {
			if err := g.broker.Close(); err != nil {
				g.log.Warn("close broker", "err", err)
			}
		}
		if g.ingestCancel != nil {
			g.ingestCancel()
		}
		for _, s := range g.sinks {
			if err := s.Close(); err != nil {
				g.log.Warn("close uplink sink", "err", err)
			}
		}
		g.closeService()
		if g.store != nil {
			if err := g.store.Close(); err != nil {
				g.closeErr = fmt.Errorf("close store: %w", err)
			}
		}
	})
	return g.closeErr
}

// BufferOptions are the store's options for cfg: the buffer section, the dedup window, and
// the logs' schema (internal/logs): the bulk log, what drop_oldest drops first and last,
// and the consumers whose committed positions bound trimming.
func BufferOptions(cfg *config.Config, log *slog.Logger, clk clock.Clock) buffer.Options {
	var uplinks, pipelines []string
	for _, u := range cfg.Uplinks {
		uplinks = append(uplinks, u.Name)
	}
	for _, p := range cfg.Pipelines {
		pipelines = append(pipelines, pipeline.ConsumerName(p.Name))
	}
	return buffer.Options{
		Dir:          filepath.Join(cfg.Gateway.DataDir, "buffer"),
		SyncInterval: cfg.Buffer.Sync.Interval(),
		DedupTTL:     cfg.Dedup.TTL.D(),
		MaxBytes:     int64(cfg.Buffer.MaxBytes),
		ReserveFree:  int64(cfg.Buffer.ReserveFree),
		OnFull:       buffer.OnFull(cfg.Buffer.OnFull),
		Retention:    cfg.Buffer.Retention.D(),
		BulkLog:      logs.Bulk,
		Expendable:   logs.Expendable(),
		Precious:     logs.Precious(),
		// Messages refused for good have their own room (bounded by refused_log), so they
		// never displace readings and a full buffer still keeps them.
		Reserved:  map[string]int64{logs.Refused: broker.RefusedRoom(cfg.Broker.RefusedLog)},
		Consumers: logs.Consumers(uplinks, pipelines),
		Logger:    log,
		Clock:     clk,
	}
}

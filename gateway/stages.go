package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgegate/edgegate/internal/logs"
)

// A stage is one part of the running gateway. Run starts the stages in order and stops
// them in reverse: what consumes the store starts before what feeds it, and stops after.
type stage struct {
	name string
	// start starts the stage's goroutines (which report their end through the gateway's
	// failures); an error aborts the start, and the stages started before are stopped.
	start func() error
	// drain, if set, lets the stage finish its work before stop, within the flush budget;
	// only a stop after a complete start drains.
	drain func()
	// stop stops the stage and returns once its goroutines have.
	stop func()
}

// stages are the gateway's stages in start order: the service's ops server first, then
// what consumes the store (its maintenance, the clock holder, the uplinks, the
// pipelines), then what feeds it (the broker's listeners, the sensors), then, once
// Ready, the service's reloads and its systemd notifications.
func (g *Gateway) stages() []stage {
	var ss []stage
	if g.svc != nil {
		ss = append(ss, g.opsStage()...)
	}
	ss = append(ss,
		g.goStage("maintenance", func(ctx context.Context) { g.failures.report("maintenance", g.store.Maintain(ctx)) }),
		g.goStage("clock", func(ctx context.Context) { g.failures.report("clock", g.hold.run(ctx)) }),
		g.uplinksStage(),
		g.pipelinesStage(),
		g.brokerStage(),
		g.goStage("sensors", func(ctx context.Context) { g.failures.report("sensors", g.poller.Run(ctx)) }),
		stage{name: "ready", start: g.markReady, stop: func() {}},
	)
	if g.svc != nil {
		ss = append(ss, g.reloadStage(), g.systemdStage())
	}
	return ss
}

// markReady closes Ready: the broker listens and every component runs.
func (g *Gateway) markReady() error {
	close(g.ready)
	g.log.Info("edgegate running", "gateway", g.cfg.Gateway.ID, "broker", g.broker.Addrs(),
		"sensors", len(g.cfg.Sensors), "pipelines", len(g.pipelines), "uplinks", len(g.uplinks), "data_dir", g.cfg.Gateway.DataDir)
	return nil
}

// goroutines are a stage's goroutines: they run under one context, and stop cancels it
// and waits for them.
type goroutines struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGoroutines() *goroutines {
	ctx, cancel := context.WithCancel(context.Background())
	return &goroutines{ctx: ctx, cancel: cancel}
}

func (gs *goroutines) spawn(f func(ctx context.Context)) {
	gs.wg.Add(1)
	go func() { defer gs.wg.Done(); f(gs.ctx) }()
}

func (gs *goroutines) stop() { gs.cancel(); gs.wg.Wait() }

// goStage is a stage of one goroutine running f until the stage stops.
func (g *Gateway) goStage(name string, f func(ctx context.Context)) stage {
	gs := newGoroutines()
	return stage{name: name, start: func() error { gs.spawn(f); return nil }, stop: gs.stop}
}

// uplinksStage runs every uplink; its drain lets them send what is buffered (flush).
func (g *Gateway) uplinksStage() stage {
	gs := newGoroutines()
	return stage{
		name: "uplinks",
		start: func() error {
			for _, u := range g.uplinks {
				g.ops.running[u.Name()].Store(true)
				gs.spawn(func(ctx context.Context) {
					defer g.ops.running[u.Name()].Store(false)
					g.failures.report("", u.Run(ctx)) // `uplink "u": ...`
				})
			}
			return nil
		},
		drain: func() { g.flush(g.opts.FlushTimeout) },
		stop:  gs.stop,
	}
}

// pipelinesStage runs every pipeline; its drain lets them process what was ingested.
func (g *Gateway) pipelinesStage() stage {
	gs := newGoroutines()
	return stage{
		name: "pipelines",
		start: func() error {
			for _, p := range g.pipelines {
				gs.spawn(func(ctx context.Context) { g.failures.report("", p.Run(ctx)) }) // `pipeline "p": ...`
			}
			return nil
		},
		drain: func() { g.drainPipelines(g.opts.FlushTimeout) },
		stop:  gs.stop,
	}
}

// brokerStage starts the broker's listeners. Its stop closes the broker, which waits for
// its client goroutines and for the acknowledgements they queued: every append in flight
// completes (acked, if its client is still connected) or fails (not acked).
func (g *Gateway) brokerStage() stage {
	return stage{
		name:  "broker",
		start: g.broker.Start,
		stop: func() {
			g.closing.Store(true)
			if err := g.broker.Close(); err != nil {
				g.log.Warn("close broker", "err", err)
			}
			g.ingestCancel()
		},
	}
}

// startStages starts ss in order. When one fails to start, it (which may have started a
// part of itself) and those started before are stopped in reverse, without draining, and
// its error is returned.
func startStages(ss []stage) error {
	for i, s := range ss {
		if err := s.start(); err != nil {
			stopStages(ss[:i+1], false)
			return err
		}
	}
	return nil
}

// stopStages stops ss in reverse order, draining each first when drain is set.
func stopStages(ss []stage, drain bool) {
	for i := len(ss) - 1; i >= 0; i-- {
		if drain && ss[i].drain != nil {
			ss[i].drain()
		}
		ss[i].stop()
	}
}

// failures collects the errors the stages' goroutines end with; the first one stops the
// gateway.
type failures struct {
	mu    sync.Mutex
	errs  []error
	first chan struct{} // closed at the first error
}

func newFailures() *failures { return &failures{first: make(chan struct{})} }

// report records err, if any, prefixed by name (for a component whose errors do not name
// it).
func (f *failures) report(name string, err error) {
	if err == nil {
		return
	}
	if name != "" {
		err = fmt.Errorf("%s: %w", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
	if len(f.errs) == 1 {
		close(f.first)
	}
}

// failed is closed once a component has failed.
func (f *failures) failed() <-chan struct{} { return f.first }

// firstErr returns the first error reported.
func (f *failures) firstErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[0]
}

// result is Run's error for a stop that cause started (nil: the context ended): cause,
// else the first error but a cancellation reported while stopping.
func (f *failures) result(cause error) error {
	if cause != nil {
		return cause
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.errs {
		if !errors.Is(e, context.Canceled) {
			return e
		}
	}
	return nil
}

// drainPipelines waits until every pipeline has committed the end of the raw log, or
// timeout; what is left is processed at the next start.
func (g *Gateway) drainPipelines(timeout time.Duration) {
	last, err := g.store.LastSeq(logs.Raw)
	if err != nil || last == 0 || len(g.pipelines) == 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		done := true
		for _, p := range g.pipelines {
			if p.Stats().Position.Load() <= last {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.log.Warn("shutdown: pipelines did not catch up in time; they continue at the next start", "timeout", timeout)
}

// flush lets every uplink send what the logs it forwards hold now, and returns as soon as
// none has anything left to send, or at timeout. Partial batches no longer linger. An
// uplink that is backing off (upstream unreachable) is not waited for. Each uplink left
// with a backlog is logged: it stays in the buffer for the next start.
func (g *Gateway) flush(timeout time.Duration) {
	if len(g.uplinks) == 0 {
		return
	}
	lasts := map[string]uint64{}
	for _, log := range []string{logs.Agg, logs.Raw} {
		last, err := g.store.LastSeq(log)
		if err != nil {
			g.log.Warn("shutdown: uplinks not flushed", "err", err)
			return
		}
		lasts[log] = last
	}
	for _, u := range g.uplinks {
		u.Flush()
	}
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, u := range g.uplinks {
			if !u.Drained(lasts) && !u.Stats().BackoffNow.Load() {
				done = false
			}
		}
		if done || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, u := range g.uplinks {
		if u.Drained(lasts) {
			continue
		}
		why := "flush_timeout reached"
		if u.Stats().BackoffNow.Load() {
			why = "upstream unreachable (backing off)"
		}
		g.log.Warn("shutdown: uplink did not drain; the rest stays buffered for the next start",
			"uplink", u.Name(), "backlog", u.Status().Backlog, "reason", why, "timeout", timeout)
	}
}

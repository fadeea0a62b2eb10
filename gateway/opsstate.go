package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/gateway/sdnotify"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/pipeline"
)

// opsState is what the gateway keeps for operations: start time, which uplinks run, the
// reload and watchdog counters, and the progress marks of the watchdog probes.
type opsState struct {
	started time.Time
	running map[string]*atomic.Bool // by uplink name; fixed after New
	reloads map[string]*atomic.Uint64
	stalls  map[string]*atomic.Uint64

	reloadMu sync.Mutex     // serialises reloads; guards live
	live     *config.Config // the config as reloaded (g.cfg stays the one started with)

	// Progress marks, each owned by the one watchdog goroutine that calls the probes.
	storeGroups    uint64
	ingestFinished uint64
	pipelineMarks  map[string]pipelineMark
}

// pipelineMark is what a pipeline had done at the previous watchdog check.
type pipelineMark struct{ position, commits, errors uint64 }

const (
	reloadApplied   = "applied"
	reloadUnchanged = "unchanged"
	reloadFailed    = "failed"
)

var reloadResults = []string{reloadApplied, reloadUnchanged, reloadFailed}

// Probe names: the components the watchdog requires to make progress.
const (
	ProbeIngest = "ingest"
	ProbeStore  = "store"
)

func (g *Gateway) initOps() {
	g.ops = opsState{
		started: g.opts.Clock.Now(),
		running: map[string]*atomic.Bool{},
		reloads: map[string]*atomic.Uint64{},
		stalls:  map[string]*atomic.Uint64{},
		live:    g.cfg,

		pipelineMarks: map[string]pipelineMark{},
	}
	for _, u := range g.uplinks {
		g.ops.running[u.Name()] = new(atomic.Bool)
	}
	for _, r := range reloadResults {
		g.ops.reloads[r] = new(atomic.Uint64)
	}
	for _, p := range g.Probes() {
		g.ops.stalls[p.Name] = new(atomic.Uint64)
	}
}

// Register declares the gateway's metric families and collectors in r, with the Go
// runtime's.
func (g *Gateway) Register(r *ops.Registry) {
	r.Describe(Metrics...)
	r.Describe(ops.RuntimeMetrics...)
	r.Register(g.Collect)
	r.Register(ops.RuntimeCollector(g.ops.started))
}

// Probes are the systemd watchdog's checks (pinged only while every one passes): the
// ingest path, the store and every pipeline make progress.
func (g *Gateway) Probes() []sdnotify.Probe {
	ps := []sdnotify.Probe{
		{Name: ProbeIngest, Check: g.probeIngest},
		{Name: ProbeStore, Check: g.probeStore},
	}
	for _, r := range g.pipelines {
		ps = append(ps, sdnotify.Probe{Name: "pipeline/" + r.Name(), Check: func(context.Context) error { return g.probePipeline(r) }})
	}
	return ps
}

// probePipeline fails when the pipeline has input to process and neither committed nor
// failed a step since the previous check: it hangs (on a hung disk, typically). A
// pipeline that keeps failing is alive (its errors are counted and logged), and one
// with nothing to do is idle, not stuck. The first check only takes the marks.
func (g *Gateway) probePipeline(r *pipeline.Runner) error {
	st := r.Stats()
	now := pipelineMark{position: st.Position.Load(), commits: st.Commits.Load(), errors: st.Errors.Load()}
	prev, seen := g.ops.pipelineMarks[r.Name()]
	g.ops.pipelineMarks[r.Name()] = now
	if !seen || now != prev {
		return nil
	}
	last, err := g.store.LastSeq(logs.Raw)
	if err != nil {
		return fmt.Errorf("read the input log: %w", err)
	}
	if last > 0 && last >= now.position {
		return fmt.Errorf("input up to %d waits and the pipeline has stayed at %d since the last check", last, now.position)
	}
	return nil
}

// Stalled counts a probe failure (the watchdog calls it).
func (g *Gateway) Stalled(probe string) {
	if c, ok := g.ops.stalls[probe]; ok {
		c.Add(1)
	}
}

func (g *Gateway) stallCount(probe string) uint64 {
	if c, ok := g.ops.stalls[probe]; ok {
		return c.Load()
	}
	return 0
}

// probeIngest fails when a message has been in the ingest path since the previous check
// and none finished meanwhile: publishers are stuck waiting (on a hung disk, typically).
func (g *Gateway) probeIngest(context.Context) error {
	inflight, finished := g.hook.Sources().Progress()
	prev := g.ops.ingestFinished
	g.ops.ingestFinished = finished
	if inflight > 0 && finished == prev {
		return fmt.Errorf("%d message(s) in the ingest path and none finished since the last check", inflight)
	}
	return nil
}

// probeStore passes when the store committed a write group since the previous check;
// otherwise it commits a tiny one itself, which must finish before ctx ends.
func (g *Gateway) probeStore(ctx context.Context) error {
	groups := g.store.Stats().Groups.Load()
	prev := g.ops.storeGroups
	g.ops.storeGroups = groups
	if groups != prev {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(g.opts.Clock.Now().UnixMilli()))
	if err := g.store.Update(ctx, func(tx *buffer.Tx) { tx.Put("ops/watchdog", b[:]) }); err != nil {
		return fmt.Errorf("probe write: %w", err)
	}
	g.ops.storeGroups = g.store.Stats().Groups.Load()
	return nil
}

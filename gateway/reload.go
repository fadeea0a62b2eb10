package gateway

import (
	"fmt"
	"reflect"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/uplink"
)

// ReloadResult says what a reload changed.
type ReloadResult struct {
	// Applied lists what now runs with the new config (e.g. "routes", "uplinks[cloud].batch").
	Applied []string
	// NeedRestart lists the changed keys that only a restart applies; they keep their old
	// values until then.
	NeedRestart []string
}

// Reload applies what can change while running (SPEC §1: routes, pipelines' outputs,
// uplink limits; also ops.log.level through SetLogLevel) from next, a validated config, and
// reports every other change as needing a restart. Nothing is applied when building the new
// routes fails.
func (g *Gateway) Reload(next *config.Config) (ReloadResult, error) {
	g.ops.reloadMu.Lock()
	defer g.ops.reloadMu.Unlock()
	var res ReloadResult
	cur := g.ops.live

	// Build first, apply after: a failure leaves everything as it was.
	var router *ingest.Router
	if !reflect.DeepEqual(cur.Routes, next.Routes) || cur.Unrouted != next.Unrouted {
		r, err := ingest.NewRouter(append(SensorRoutes(cur.Sensors), next.Routes...), next.Unrouted)
		if err != nil {
			g.ops.reloads[reloadFailed].Add(1)
			return res, fmt.Errorf("reload routes: %w", err)
		}
		router = r
	}

	restart := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			res.NeedRestart = append(res.NeedRestart, key)
		}
	}
	restart("gateway", cur.Gateway, next.Gateway)
	restart("broker", cur.Broker, next.Broker)
	restart("dedup", cur.Dedup, next.Dedup)
	restart("sensors", cur.Sensors, next.Sensors)
	restart("buffer", cur.Buffer, next.Buffer)
	restart("ops.listen", cur.Ops.Listen, next.Ops.Listen)
	restart("ops.log.format", cur.Ops.Log.Format, next.Ops.Log.Format)
	restart("ops.flush_timeout", cur.Ops.FlushTimeout, next.Ops.FlushTimeout)
	restart("ops.clock", cur.Ops.Clock, next.Ops.Clock)

	// Uplinks: the batch limits and max_rate apply to the next batch; anything else (a new
	// or removed uplink, another url or topic) needs a restart.
	type batchChange struct {
		i int
		b config.Batch
		r int
	}
	var batches []batchChange
	if len(cur.Uplinks) != len(next.Uplinks) {
		res.NeedRestart = append(res.NeedRestart, "uplinks (added or removed)")
	} else {
		for i := range cur.Uplinks {
			a, b := cur.Uplinks[i], next.Uplinks[i]
			if a.Name != b.Name {
				res.NeedRestart = append(res.NeedRestart, fmt.Sprintf("uplinks[%d].name", i))
				continue
			}
			if a.Batch != b.Batch || a.MaxRate != b.MaxRate {
				batches = append(batches, batchChange{i, b.Batch, b.MaxRate})
			}
			a.Batch, b.Batch = config.Batch{}, config.Batch{}
			a.MaxRate, b.MaxRate = 0, 0
			restart(fmt.Sprintf("uplinks[%s]", a.Name), a, b)
		}
	}

	// Apply.
	if router != nil {
		g.hook.SetRouter(router)
		res.Applied = append(res.Applied, "routes")
	}
	if len(batches) > 0 {
		nc := *cur
		nc.Uplinks = append([]config.Uplink(nil), cur.Uplinks...)
		for _, c := range batches {
			g.uplinks[c.i].SetLimits(uplink.Limits{Batch: c.b, MaxRate: c.r})
			nc.Uplinks[c.i].Batch, nc.Uplinks[c.i].MaxRate = c.b, c.r
			res.Applied = append(res.Applied, fmt.Sprintf("uplinks[%s].limits", nc.Uplinks[c.i].Name))
		}
		cur = &nc
	}
	if cur.Ops.Log.Level != next.Ops.Log.Level {
		res.Applied = append(res.Applied, "ops.log.level")
	}
	// Keep what was applied as the current config, so the next reload compares against
	// what runs.
	applied := *cur
	if router != nil {
		applied.Routes, applied.Unrouted = next.Routes, next.Unrouted
	}
	applied.Ops.Log.Level = next.Ops.Log.Level
	g.ops.live = &applied

	if len(res.Applied) > 0 {
		g.ops.reloads[reloadApplied].Add(1)
	} else {
		g.ops.reloads[reloadUnchanged].Add(1)
	}
	return res, nil
}

// ReloadFailed counts a reload that could not even load its config.
func (g *Gateway) ReloadFailed() { g.ops.reloads[reloadFailed].Add(1) }

package gateway

import (
	"fmt"
	"maps"
	"reflect"
	"slices"

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
	res.restartSections(cur, next)
	batches := res.uplinkChanges(cur, next)
	outputs := res.pipelineChanges(cur, next)

	// Apply, and keep what was applied as the current config, so the next reload compares
	// against what runs.
	applied := *cur
	g.applyOutputs(&res, &applied, outputs)
	if router != nil {
		g.hook.SetRouter(router)
		applied.Routes, applied.Unrouted = next.Routes, next.Unrouted
		res.Applied = append(res.Applied, "routes")
	}
	g.applyLimits(&res, &applied, batches)
	if cur.Ops.Log.Level != next.Ops.Log.Level {
		applied.Ops.Log.Level = next.Ops.Log.Level
		res.Applied = append(res.Applied, "ops.log.level")
	}
	g.ops.live = &applied

	if len(res.Applied) > 0 {
		g.ops.reloads[reloadApplied].Add(1)
	} else {
		g.ops.reloads[reloadUnchanged].Add(1)
	}
	return res, nil
}

// restart records key as needing a restart when a and b differ.
func (res *ReloadResult) restart(key string, a, b any) {
	if !reflect.DeepEqual(a, b) {
		res.NeedRestart = append(res.NeedRestart, key)
	}
}

// restartSections records the sections only a restart applies.
func (res *ReloadResult) restartSections(cur, next *config.Config) {
	res.restart("gateway", cur.Gateway, next.Gateway)
	res.restart("broker", cur.Broker, next.Broker)
	res.restart("dedup", cur.Dedup, next.Dedup)
	res.restart("sensors", cur.Sensors, next.Sensors)
	res.restart("buffer", cur.Buffer, next.Buffer)
	res.restart("ops.listen", cur.Ops.Listen, next.Ops.Listen)
	res.restart("ops.log.format", cur.Ops.Log.Format, next.Ops.Log.Format)
	res.restart("ops.flush_timeout", cur.Ops.FlushTimeout, next.Ops.FlushTimeout)
	res.restart("ops.clock", cur.Ops.Clock, next.Ops.Clock)
}

// batchChange is new limits for uplink i.
type batchChange struct {
	i int
	b uplink.BatchLimits
	r int
}

// uplinkChanges returns the uplinks whose batch limits or max_rate changed: they apply to
// the next batch. Anything else (a new or removed uplink, another url or topic) needs a
// restart.
func (res *ReloadResult) uplinkChanges(cur, next *config.Config) []batchChange {
	var batches []batchChange
	for _, i := range res.sameNames("uplinks", len(cur.Uplinks), len(next.Uplinks), func(i int) (string, string) {
		return cur.Uplinks[i].Name, next.Uplinks[i].Name
	}) {
		a, b := cur.Uplinks[i], next.Uplinks[i]
		if a.Batch != b.Batch || a.MaxRate != b.MaxRate {
			batches = append(batches, batchChange{i, b.Batch, b.MaxRate})
		}
		a.Batch, b.Batch = uplink.BatchLimits{}, uplink.BatchLimits{}
		a.MaxRate, b.MaxRate = 0, 0
		res.restart(fmt.Sprintf("uplinks[%s]", a.Name), a, b)
	}
	return batches
}

// pipelineChanges returns the new output topics, by pipeline: they apply to the next pane.
// Anything else (a new or removed pipeline, another window or aggregate) needs a restart.
func (res *ReloadResult) pipelineChanges(cur, next *config.Config) map[string]string {
	var outputs map[string]string
	for _, i := range res.sameNames("pipelines", len(cur.Pipelines), len(next.Pipelines), func(i int) (string, string) {
		return cur.Pipelines[i].Name, next.Pipelines[i].Name
	}) {
		a, b := cur.Pipelines[i], next.Pipelines[i]
		if a.OutputTopic() != b.OutputTopic() {
			if outputs == nil {
				outputs = map[string]string{}
			}
			outputs[a.Name] = b.OutputTopic()
		}
		a.Output, b.Output = "", ""
		res.restart(fmt.Sprintf("pipelines[%s]", a.Name), a, b)
	}
	return outputs
}

// applyOutputs sets the pipelines' new output topics.
func (g *Gateway) applyOutputs(res *ReloadResult, applied *config.Config, outputs map[string]string) {
	if outputs == nil {
		return
	}
	all := maps.Clone(*g.outputs.Load())
	applied.Pipelines = slices.Clone(applied.Pipelines)
	for i, p := range applied.Pipelines {
		if t, ok := outputs[p.Name]; ok {
			g.pipelines[i].SetOutput(t)
			all[p.Name] = t
			applied.Pipelines[i].Output = t
			res.Applied = append(res.Applied, fmt.Sprintf("pipelines[%s].output", p.Name))
		}
	}
	g.outputs.Store(&all)
}

// applyLimits sets the uplinks' new batch limits and max_rate.
func (g *Gateway) applyLimits(res *ReloadResult, applied *config.Config, batches []batchChange) {
	if len(batches) == 0 {
		return
	}
	applied.Uplinks = slices.Clone(applied.Uplinks)
	for _, c := range batches {
		g.uplinks[c.i].SetLimits(uplink.Limits{Batch: c.b, MaxRate: c.r})
		applied.Uplinks[c.i].Batch, applied.Uplinks[c.i].MaxRate = c.b, c.r
		res.Applied = append(res.Applied, fmt.Sprintf("uplinks[%s].limits", applied.Uplinks[c.i].Name))
	}
}

// sameNames compares two lists of named parts that a reload cannot add to, remove from or
// reorder: it records a restart for a different length or a renamed index, and returns the
// indexes whose names match, for the caller to compare further. names gives the current
// and next name at index i.
func (res *ReloadResult) sameNames(kind string, nCur, nNext int, names func(i int) (string, string)) []int {
	if nCur != nNext {
		res.NeedRestart = append(res.NeedRestart, kind+" (added or removed)")
		return nil
	}
	var same []int
	for i := range nCur {
		if a, b := names(i); a != b {
			res.NeedRestart = append(res.NeedRestart, fmt.Sprintf("%s[%d].name", kind, i))
			continue
		}
		same = append(same, i)
	}
	return same
}

// ReloadFailed counts a reload that could not even load its config.
func (g *Gateway) ReloadFailed() { g.ops.reloads[reloadFailed].Add(1) }

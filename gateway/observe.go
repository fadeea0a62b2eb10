package gateway

import (
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/broker"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/uplink"
)

// Metrics are the edgegate_ families a gateway exposes (SPEC §6). The README's metrics
// table lists exactly these, plus ops.RuntimeMetrics; a test keeps the two in step.
var Metrics = []ops.Desc{
	{Name: "edgegate_build_info", Type: ops.Gauge, Help: "Always 1; the labels say which build runs.", Labels: []string{"version", "goarch"}},
	{Name: "edgegate_ready", Type: ops.Gauge, Help: "1 when the broker listens, the buffer is open and every uplink runs."},
	{Name: "edgegate_ingest_messages_total", Type: ops.Counter, Help: "Messages that entered the ingest path, by source (mqtt, sensor) and outcome (stored, duplicate, raw, dropped, refused).", Labels: []string{"source", "outcome"}},
	{Name: "edgegate_ingest_records_total", Type: ops.Counter, Help: "Records appended to the raw log (duplicates excluded)."},
	{Name: "edgegate_ingest_refusals_total", Type: ops.Counter, Help: "Refused messages, by reason.", Labels: []string{"reason"}},
	{Name: "edgegate_refused_log_records_total", Type: ops.Counter, Help: "Permanently refused messages by what became of them in the refused log: kept, trimmed (the oldest, past refused_log's bounds), failed (the store could not take them).", Labels: []string{"result"}},
	{Name: "edgegate_broker_sessions", Type: ops.Gauge, Help: "Persistent MQTT sessions stored durably (clean:false, or a session expiry)."},
	{Name: "edgegate_broker_session_messages", Type: ops.Gauge, Help: "QoS 1/2 messages stored for persistent sessions: queued while offline, or sent and not yet acknowledged."},
	{Name: "edgegate_broker_session_message_bytes", Type: ops.Gauge, Help: "Payload bytes of those messages."},
	{Name: "edgegate_broker_session_writes_pending", Type: ops.Gauge, Help: "Session changes queued for the store, not yet committed."},
	{Name: "edgegate_broker_pending_connections", Type: ops.Gauge, Help: "Connections open whose CONNECT was not read yet (bounded by max_pending_connections, max_pending_per_ip)."},
	{Name: "edgegate_broker_password_checks_total", Type: ops.Counter, Help: "Passwords checked: by bcrypt for sources without recent failures (clean) or with (failing), or against a cached digest (cached).", Labels: []string{"kind"}},
	{Name: "edgegate_broker_login_backoffs", Type: ops.Gauge, Help: "Source addresses (of=source) and users (of=user) whose logins are refused unchecked now after repeated failures.", Labels: []string{"of"}},
	{Name: "edgegate_broker_client_id_bindings", Type: ops.Gauge, Help: "Client ids bound to the first user that held them."},
	{Name: "edgegate_broker_queued_messages", Type: ops.Gauge, Help: "QoS 1/2 messages awaiting a subscriber's acknowledgement, online or queued for an offline session."},
	{Name: "edgegate_broker_queued_bytes", Type: ops.Gauge, Help: "Their cost in memory (payload, topic and overhead), bounded by max_queued_bytes."},
	{Name: "edgegate_broker_queue_drops_total", Type: ops.Counter, Help: "Messages not delivered to a subscriber at its queue bound (limit=session) or at the total one (limit=total).", Labels: []string{"limit"}},
	{Name: "edgegate_broker_retained_messages", Type: ops.Gauge, Help: "Retained messages of clients (wills included)."},
	{Name: "edgegate_broker_retained_bytes", Type: ops.Gauge, Help: "Their payload bytes."},
	{Name: "edgegate_broker_wills_total", Type: ops.Counter, Help: "Wills that fired, by result: stored (and published), refused, cancelled (a delayed will whose client came back).", Labels: []string{"result"}},
	{Name: "edgegate_dedup_hits_total", Type: ops.Counter, Help: "Records dropped because their id was seen within the dedup TTL."},
	{Name: "edgegate_dedup_lookups_total", Type: ops.Counter, Help: "Record ids looked up in the dedup index on disk: those the in-memory cache and filter could not answer."},
	{Name: "edgegate_dedup_filter_bytes", Type: ops.Gauge, Help: "Memory taken by the in-memory filter of stored record ids."},
	{Name: "edgegate_dedup_evicted_total", Type: ops.Counter, Help: "Record ids forgotten before the dedup TTL: the oldest, to keep the index within its share of the buffer."},
	{Name: "edgegate_dedup_resends_total", Type: ops.Counter, Help: "Publishes recognised as resends by client, packet id and payload, and given the arrival time of their first copy."},
	{Name: "edgegate_buffer_bytes", Type: ops.Gauge, Help: "Bytes the buffer's store takes on disk."},
	{Name: "edgegate_buffer_budget_bytes", Type: ops.Gauge, Help: "The buffer's disk budget (buffer.max_bytes)."},
	{Name: "edgegate_buffer_log_records", Type: ops.Gauge, Help: "Records kept in a log of the buffer.", Labels: []string{"log"}},
	{Name: "edgegate_buffer_oldest_age_seconds", Type: ops.Gauge, Help: "Age of the oldest record kept in a log (by its timestamp).", Labels: []string{"log"}},
	{Name: "edgegate_buffer_dropped_records_total", Type: ops.Counter, Help: "Records dropped to keep the buffer within its budget, by policy.", Labels: []string{"policy"}},
	{Name: "edgegate_buffer_missed_records_total", Type: ops.Counter, Help: "Records a consumer (an uplink, a pipeline) never had: deleted for room or by the retention before it committed past them. Durable: kept across restarts.", Labels: []string{"log", "consumer", "reason"}},
	{Name: "edgegate_buffer_lost_records_total", Type: ops.Counter, Help: "Committed records found missing when the store was opened (a damaged write-ahead log after a power cut), since the start."},
	{Name: "edgegate_buffer_commits_total", Type: ops.Counter, Help: "Write groups committed (group commit: many appends share one)."},
	{Name: "edgegate_buffer_fsyncs_total", Type: ops.Counter, Help: "fsyncs of the buffer."},
	{Name: "edgegate_buffer_fsync_seconds_total", Type: ops.Counter, Help: "Time spent in the buffer's fsyncs; divided by edgegate_buffer_fsyncs_total, the mean fsync."},
	{Name: "edgegate_pipeline_panes_total", Type: ops.Counter, Help: "Window panes emitted, by timing (EARLY, ON_TIME, LATE).", Labels: []string{"pipeline", "timing"}},
	{Name: "edgegate_pipeline_late_dropped_total", Type: ops.Counter, Help: "Records too late for their window (past allowed_lateness), sent to the late topic.", Labels: []string{"pipeline"}},
	{Name: "edgegate_pipeline_dropped_total", Type: ops.Counter, Help: "Records dropped from aggregation for another reason than lateness: max_open_windows reached, or oversized (their window state could not be committed at once).", Labels: []string{"pipeline", "reason"}},
	{Name: "edgegate_pipeline_watermark_seconds", Type: ops.Gauge, Help: "The pipeline's watermark, in unix seconds.", Labels: []string{"pipeline"}},
	{Name: "edgegate_pipeline_watermark_lag_seconds", Type: ops.Gauge, Help: "How far the watermark is behind the gateway clock.", Labels: []string{"pipeline"}},
	{Name: "edgegate_uplink_batches_total", Type: ops.Counter, Help: "Batches the upstream acknowledged.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_records_total", Type: ops.Counter, Help: "Records the upstream acknowledged.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_errors_total", Type: ops.Counter, Help: "Failed sends.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_backlog_records", Type: ops.Gauge, Help: "Log entries not yet acknowledged by the upstream.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_oldest_unsent_age_seconds", Type: ops.Gauge, Help: "Age of the oldest record not yet acknowledged (by its timestamp); 0 when none.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_dead_letter_batches_total", Type: ops.Counter, Help: "Batches the upstream refused permanently, kept in the dead-letter log.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_connected", Type: ops.Gauge, Help: "1 when the last send was acknowledged.", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_backoffs_total", Type: ops.Counter, Help: "Waits after a failed send (exponential backoff with jitter).", Labels: []string{"uplink"}},
	{Name: "edgegate_uplink_draining", Type: ops.Gauge, Help: "1 while a backlog drains at max_rate beside fresh data.", Labels: []string{"uplink"}},
	{Name: "edgegate_sensor_reads_total", Type: ops.Counter, Help: "Sensor read attempts.", Labels: []string{"sensor"}},
	{Name: "edgegate_sensor_errors_total", Type: ops.Counter, Help: "Failed sensor reads.", Labels: []string{"sensor"}},
	{Name: "edgegate_sensor_up", Type: ops.Gauge, Help: "1 when the sensor's last read succeeded.", Labels: []string{"sensor"}},
	{Name: "edgegate_clock_synchronized", Type: ops.Gauge, Help: "1 when the wall clock is synchronised (or trusted by config)."},
	{Name: "edgegate_clock_held_records", Type: ops.Gauge, Help: "Readings held until the clock syncs."},
	{Name: "edgegate_clock_corrected_records_total", Type: ops.Counter, Help: "Held readings rewritten to wall time after the clock synced."},
	{Name: "edgegate_clock_uncorrected_records_total", Type: ops.Counter, Help: "Held readings released without a correction, flagged with the label clock=unsynced."},
	{Name: "edgegate_config_reloads_total", Type: ops.Counter, Help: "SIGHUP reloads, by result (applied, unchanged, failed).", Labels: []string{"result"}},
	{Name: "edgegate_watchdog_stalls_total", Type: ops.Counter, Help: "Watchdog checks that found a component stuck (systemd's watchdog was not pinged).", Labels: []string{"component"}},
}

// Collect writes the gateway's figures (the families of Metrics) into w.
func (g *Gateway) Collect(w *ops.Writer) {
	w.Add("edgegate_build_info", 1, g.opts.Version, runtime.GOARCH)
	w.AddBool("edgegate_ready", ops.Ready(g.Checks()))
	g.collectIngest(w)
	g.collectBroker(w)
	g.collectBuffer(w)
	g.collectUplinks(w)
	g.collectSensorsAndPipelines(w)
	g.collectClockAndOps(w)
}

// collectIngest: messages by source and outcome, records, refusals and the refused log.
func (g *Gateway) collectIngest(w *ops.Writer) {
	for _, src := range broker.Sources {
		for _, oc := range broker.Outcomes {
			w.AddUint("edgegate_ingest_messages_total", g.hook.Sources().Count(src, oc), src.String(), oc.String())
		}
	}
	w.AddUint("edgegate_ingest_records_total", g.IngestedRecords())
	for reason, n := range g.refusals() {
		w.AddUint("edgegate_ingest_refusals_total", n, reason)
	}

	rs := g.hook.RefusedStats()
	w.AddUint("edgegate_refused_log_records_total", rs.Kept.Load(), "kept")
	w.AddUint("edgegate_refused_log_records_total", rs.Trimmed.Load(), "trimmed")
	w.AddUint("edgegate_refused_log_records_total", rs.Failed.Load(), "failed")
	if ss := g.broker.Sessions(); ss != nil {
		w.Add("edgegate_broker_sessions", float64(ss.Sessions.Load()))
		w.Add("edgegate_broker_session_messages", float64(ss.Messages.Load()))
		w.Add("edgegate_broker_session_message_bytes", float64(ss.MessageBytes.Load()))
		w.Add("edgegate_broker_session_writes_pending", float64(ss.Pending.Load()))
	}
}

// collectBroker: the broker's security and queue figures.
func (g *Gateway) collectBroker(w *ops.Writer) {
	sec := g.broker.Security()
	w.Add("edgegate_broker_pending_connections", float64(sec.PendingConnections))
	w.AddUint("edgegate_broker_password_checks_total", sec.PasswordChecks, "clean")
	w.AddUint("edgegate_broker_password_checks_total", sec.PasswordChecksFailing, "failing")
	w.AddUint("edgegate_broker_password_checks_total", sec.PasswordCached, "cached")
	w.Add("edgegate_broker_login_backoffs", float64(sec.BackedOffSources), "source")
	w.Add("edgegate_broker_login_backoffs", float64(sec.BackedOffUsers), "user")
	w.Add("edgegate_broker_client_id_bindings", float64(sec.ClientIDBindings))
	w.Add("edgegate_broker_queued_messages", float64(sec.QueuedMessages))
	w.Add("edgegate_broker_queued_bytes", float64(sec.QueuedBytes))
	w.AddUint("edgegate_broker_queue_drops_total", sec.QueueDropsSession, "session")
	w.AddUint("edgegate_broker_queue_drops_total", sec.QueueDropsTotal, "total")
	w.Add("edgegate_broker_retained_messages", float64(sec.RetainedMessages))
	w.Add("edgegate_broker_retained_bytes", float64(sec.RetainedBytes))
	w.AddUint("edgegate_broker_wills_total", sec.WillsStored, "stored")
	w.AddUint("edgegate_broker_wills_total", sec.WillsRefused, "refused")
	w.AddUint("edgegate_broker_wills_total", sec.WillsCancelled, "cancelled")
}

// collectBuffer: dedup, commits, size, logs, drops and what consumers missed.
func (g *Gateway) collectBuffer(w *ops.Writer) {
	st := g.store.Stats()
	w.AddUint("edgegate_dedup_hits_total", st.DedupHits.Load())
	w.AddUint("edgegate_dedup_lookups_total", st.DedupLookups.Load())
	w.Add("edgegate_dedup_filter_bytes", float64(st.DedupFilterBytes.Load()))
	w.AddUint("edgegate_dedup_evicted_total", st.DedupEvicted.Load())
	w.AddUint("edgegate_dedup_resends_total", st.Resends.Load())
	w.AddUint("edgegate_buffer_lost_records_total", st.Lost.Load())
	w.AddUint("edgegate_buffer_commits_total", st.Groups.Load())
	w.AddUint("edgegate_buffer_fsyncs_total", st.Syncs.Load())
	w.Add("edgegate_buffer_fsync_seconds_total", float64(st.SyncNanos.Load())/1e9)
	b := g.bufferStatus()
	w.Add("edgegate_buffer_bytes", float64(b.Bytes))
	w.Add("edgegate_buffer_budget_bytes", float64(b.BudgetBytes))
	for _, l := range b.Logs {
		w.AddUint("edgegate_buffer_log_records", l.Records, l.Name)
		if l.OldestAgeS != nil {
			w.Add("edgegate_buffer_oldest_age_seconds", *l.OldestAgeS, l.Name)
		}
	}
	for policy, n := range g.drops() {
		w.AddUint("edgegate_buffer_dropped_records_total", n, policy)
	}
	for _, l := range b.Logs {
		missed, err := g.store.MissedBy(l.Name)
		if err != nil {
			continue
		}
		for _, c := range slices.Sorted(maps.Keys(missed)) {
			w.AddUint("edgegate_buffer_missed_records_total", missed[c].Room, l.Name, c, "room")
			w.AddUint("edgegate_buffer_missed_records_total", missed[c].Retention, l.Name, c, "retention")
		}
	}
}

// collectUplinks: each uplink's figures.
func (g *Gateway) collectUplinks(w *ops.Writer) {
	for i, u := range g.uplinkStatus() {
		st := g.uplinks[i].Stats()
		w.AddUint("edgegate_uplink_dead_letter_batches_total", st.DeadLetters.Load(), u.Name)
		w.AddUint("edgegate_uplink_backoffs_total", st.Backoffs.Load(), u.Name)
		w.AddUint("edgegate_uplink_batches_total", u.Batches, u.Name)
		w.AddUint("edgegate_uplink_records_total", u.Records, u.Name)
		w.AddUint("edgegate_uplink_errors_total", u.Errors, u.Name)
		w.AddUint("edgegate_uplink_backlog_records", u.Backlog, u.Name)
		age := 0.0
		if u.OldestUnsentAgeS != nil {
			age = *u.OldestUnsentAgeS
		}
		w.Add("edgegate_uplink_oldest_unsent_age_seconds", age, u.Name)
		w.AddBool("edgegate_uplink_connected", u.State == "sending", u.Name)
		w.AddBool("edgegate_uplink_draining", u.Draining, u.Name)
	}
}

// collectSensorsAndPipelines: each sensor's and each pipeline's figures.
func (g *Gateway) collectSensorsAndPipelines(w *ops.Writer) {
	for _, s := range g.sensorStatus() {
		w.AddUint("edgegate_sensor_reads_total", s.Reads, s.Name)
		w.AddUint("edgegate_sensor_errors_total", s.Errors, s.Name)
		w.AddBool("edgegate_sensor_up", s.Up, s.Name)
	}

	for _, p := range g.pipelineStatus() {
		for timing, n := range p.Panes {
			w.AddUint("edgegate_pipeline_panes_total", n, p.Name, timing)
		}
		w.AddUint("edgegate_pipeline_late_dropped_total", p.LateDropped, p.Name)
		if p.Watermark != nil {
			w.Add("edgegate_pipeline_watermark_seconds", float64(p.Watermark.UnixMilli())/1e3, p.Name)
		}
		if p.WatermarkLag != nil {
			w.Add("edgegate_pipeline_watermark_lag_seconds", *p.WatermarkLag, p.Name)
		}
	}
	for _, r := range g.pipelines {
		w.AddUint("edgegate_pipeline_dropped_total", r.Stats().CapDrops.Load(), r.Name(), "max_open_windows")
		w.AddUint("edgegate_pipeline_dropped_total", r.Stats().Oversized.Load(), r.Name(), "oversized")
	}
}

// collectClockAndOps: the clock, reloads and watchdog stalls.
func (g *Gateway) collectClockAndOps(w *ops.Writer) {
	c := g.clockStatus()
	w.AddBool("edgegate_clock_synchronized", c.Synced)
	w.AddUint("edgegate_clock_held_records", c.Held)
	w.AddUint("edgegate_clock_corrected_records_total", c.Corrected)
	w.AddUint("edgegate_clock_uncorrected_records_total", c.Uncorrected)

	for _, r := range reloadResults {
		w.AddUint("edgegate_config_reloads_total", g.ops.reloads[r].Load(), r)
	}
	for _, p := range g.Probes() {
		w.AddUint("edgegate_watchdog_stalls_total", g.stallCount(p.Name), p.Name)
	}
}

// Status is the /status document (without the rates and checks the ops server adds).
func (g *Gateway) Status() ops.Status {
	now := g.opts.Clock.Now()
	is := g.hook.Stats()
	refusals := g.refusals()
	var refused uint64
	for _, n := range refusals {
		refused += n
	}
	var msgs uint64
	for _, src := range broker.Sources {
		for _, oc := range broker.Outcomes {
			msgs += g.hook.Sources().Count(src, oc)
		}
	}
	return ops.Status{
		Gateway: g.cfg.Gateway.ID,
		Version: g.opts.Version,
		Time:    now.UTC(),
		UptimeS: now.Sub(g.ops.started).Seconds(),
		Clock:   g.clockStatus(),
		Ingest: ops.IngestStatus{
			Messages:   msgs,
			Records:    g.IngestedRecords(),
			Duplicates: is.Dups.Load(),
			Refused:    refused,
			Refusals:   refusals,
		},
		Buffer:    g.bufferStatus(),
		Uplinks:   g.uplinkStatus(),
		Pipelines: g.pipelineStatus(),
		Sensors:   g.sensorStatus(),
		Series:    g.recent.Snapshot(),
	}
}

var _ ops.Source = (*Gateway)(nil)

// IngestedRecords is Status().Ingest.Records without the rest of the snapshot (the ops
// server samples it for the ingest rate).
func (g *Gateway) IngestedRecords() uint64 { return g.hook.Stats().Records.Load() }

// Checks are the readiness conditions of /readyz (SPEC §6): the broker listens, the buffer
// is open, every uplink runs (an uplink backing off from an unreachable upstream still
// runs: being offline is normal for a gateway).
func (g *Gateway) Checks() []ops.Check {
	var cs []ops.Check
	select {
	case <-g.ready:
		select {
		case <-g.stopping:
			cs = append(cs, ops.Check{Name: "broker", OK: false, Detail: "shutting down"})
		default:
			cs = append(cs, ops.Check{Name: "broker", OK: true, Detail: "listening on " + strings.Join(g.broker.Addrs(), ", ")})
		}
	default:
		cs = append(cs, ops.Check{Name: "broker", OK: false, Detail: "starting"})
	}
	if err := g.storeErr(); err != nil {
		cs = append(cs, ops.Check{Name: "buffer", OK: false, Detail: err.Error()})
	} else {
		cs = append(cs, ops.Check{Name: "buffer", OK: true, Detail: "open"})
	}
	for _, u := range g.uplinks {
		st := g.uplinkState(u)
		cs = append(cs, ops.Check{Name: "uplink " + u.Name(), OK: st != "stopped", Detail: st})
	}
	return cs
}

// refusals are the refusal counters by reason.
func (g *Gateway) refusals() map[string]uint64 {
	out := map[string]uint64{}
	for reason, n := range g.hook.Refusals().Snapshot() {
		out[string(reason)] = n
	}
	return out
}

// drops are the records the buffer deleted before every consumer had them: to stay within
// its budget (drop_oldest) or for their age (retention). Refused appends (reject) are
// counted by ingest, as refusals with reason buffer_full.
func (g *Gateway) drops() map[string]uint64 {
	st := g.store.Stats()
	return map[string]uint64{"drop_oldest": st.Dropped.Load(), "retention": st.Expired.Load()}
}

// budget is the buffer's disk budget in bytes (0: none configured).
func (g *Gateway) budget() int64 { return int64(g.cfg.Buffer.MaxBytes) }

// logs lists the buffer's logs the gateway writes.
func (g *Gateway) logs() []string {
	return logs.Listed()
}

// storeErr says why the buffer cannot take data: closed, broken by a failed fsync, or
// unreadable.
func (g *Gateway) storeErr() error {
	if err := g.store.Err(); err != nil {
		return err
	}
	_, _, err := g.store.Get("ops/probe")
	return err
}

func (g *Gateway) bufferStatus() ops.BufferStatus {
	now := g.opts.Clock.Now()
	b := ops.BufferStatus{BudgetBytes: g.budget()}
	b.Open = g.storeErr() == nil
	// The store's own measurement (what the budget uses), not a walk of the directory on
	// every scrape.
	b.Bytes = g.store.Stats().DiskBytes.Load()
	for _, name := range g.logs() {
		ls := ops.LogStatus{Name: name}
		if n, err := g.store.Count(name); err == nil && n > 0 {
			ls.Records = uint64(n)
			if ts, ok := g.oldestEntry(name); ok {
				age := now.Sub(ts).Seconds()
				ls.OldestAgeS = &age
			}
		}
		b.Logs = append(b.Logs, ls)
	}
	for _, d := range g.drops() {
		b.Dropped += d
	}
	return b
}

// oldestEntry returns the timestamp of the first entry kept in log (record.TimeOf; the
// clock's time for an entry that has none).
func (g *Gateway) oldestEntry(log string) (ts time.Time, ok bool) {
	_, _ = g.store.Read(log, 0, 1, func(_ uint64, v []byte) error {
		ok = true
		ts, _ = record.TimeOf(v)
		return buffer.ErrStop
	})
	if ok && ts.IsZero() {
		ts = g.opts.Clock.Now()
	}
	return ts, ok
}

func (g *Gateway) uplinkStatus() []ops.UplinkStatus {
	var out []ops.UplinkStatus
	for _, u := range g.uplinks {
		st := u.Status()
		us := ops.UplinkStatus{
			Name: st.Name, Type: st.Type, State: g.uplinkState(u),
			Backlog: st.Backlog, Batches: st.Batches, Records: st.Records, Errors: st.Errors,
			LastError: st.LastError, Draining: st.Draining,
		}
		if st.Backlog > 0 && !st.OldestUnsent.IsZero() {
			age := st.OldestUnsentAge.Seconds()
			us.OldestUnsentAgeS = &age
		}
		out = append(out, us)
	}
	return out
}

// uplinkState is sending (the last send was acknowledged), backoff (the upstream is
// unreachable), idle (nothing sent yet) or stopped (its goroutine ended). It reads only
// counters: unlike Uplink.Status, no store read for the backlog.
func (g *Gateway) uplinkState(u *uplink.Uplink) string {
	if r, ok := g.ops.running[u.Name()]; ok && !r.Load() {
		return "stopped"
	}
	st := u.Stats()
	connected := st.Connected.Load()
	switch {
	case st.BackoffNow.Load() || st.Errors.Load() > 0 && !connected:
		return "backoff"
	case connected:
		return "sending"
	default:
		return "idle"
	}
}

func (g *Gateway) sensorStatus() []ops.SensorStatus {
	var out []ops.SensorStatus
	for _, st := range g.poller.Status() {
		out = append(out, ops.SensorStatus{
			Name: st.Name, Driver: st.Driver, State: st.State, LastError: st.LastError,
			Up:    st.State == sensors.StateUp || st.State == sensors.StatePartial,
			Reads: st.Reads, Errors: st.Errors,
		})
	}
	return out
}

// pipelineStatus reports the pipelines: panes by timing, late drops, the watermark (absent
// before the first reading) and its lag behind the gateway clock, the last panes.
func (g *Gateway) pipelineStatus() []ops.PipelineStatus {
	now := g.opts.Clock.Now()
	out := make([]ops.PipelineStatus, 0, len(g.pipelines))
	for _, r := range g.pipelines {
		st := r.Stats()
		ps := ops.PipelineStatus{
			Name: r.Name(),
			Panes: map[string]uint64{
				pipeline.Early.String():  st.PanesEarly.Load(),
				pipeline.OnTime.String(): st.PanesOnTime.Load(),
				pipeline.Late.String():   st.PanesLate.Load(),
			},
			LateDropped: st.TooLate.Load(),
			LastPanes:   []ops.PaneStatus{},
		}
		if w := st.Watermark.Load(); w != pipeline.NegInf && w != pipeline.PosInf {
			t := time.UnixMilli(w).UTC()
			lag := now.Sub(t).Seconds()
			ps.Watermark, ps.WatermarkLag = &t, &lag
		}
		for _, p := range r.LastPanes() {
			ps.LastPanes = append(ps.LastPanes, ops.PaneStatus{Key: p.Key, Start: time.UnixMilli(p.Start).UTC(),
				End: time.UnixMilli(p.End).UTC(), Timing: p.Timing.String(), Count: uint64(p.Count)})
		}
		out = append(out, ps)
	}
	return out
}

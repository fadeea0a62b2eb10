package ops

import "time"

// Status is the /status JSON document, also what the status page renders. Ages and lags are
// seconds; a figure a component cannot give yet is omitted (null), never invented.
type Status struct {
	Gateway   string           `json:"gateway"`
	Version   string           `json:"version"`
	Time      time.Time        `json:"time"`
	UptimeS   float64          `json:"uptime_s"`
	Ready     bool             `json:"ready"`
	Checks    []Check          `json:"checks"`
	Clock     ClockStatus      `json:"clock"`
	Ingest    IngestStatus     `json:"ingest"`
	Buffer    BufferStatus     `json:"buffer"`
	Uplinks   []UplinkStatus   `json:"uplinks"`
	Pipelines []PipelineStatus `json:"pipelines"`
	Sensors   []SensorStatus   `json:"sensors"`
	// Series is the data itself: the last values of the series updated most recently
	// (at most RecentSeries, newest first), from memory.
	Series []SeriesStatus `json:"series"`
}

// Check is one readiness condition.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Ready says whether checks make the gateway ready: there are some, and every one is OK.
func Ready(checks []Check) bool {
	for _, c := range checks {
		if !c.OK {
			return false
		}
	}
	return len(checks) > 0
}

// ClockStatus says whether the wall clock is trusted (DESIGN invariant 6).
type ClockStatus struct {
	Synced bool `json:"synced"`
	// State is synced, waiting (readings are held for correction) or trusted (the clock
	// was never confirmed; held readings were released flagged).
	State string `json:"state"`
	// Held is the number of readings waiting for the clock.
	Held        uint64 `json:"held"`
	Corrected   uint64 `json:"corrected"`
	Uncorrected uint64 `json:"uncorrected"`
}

// IngestStatus sums up what entered the gateway.
type IngestStatus struct {
	// RecordsPerS is the rate of stored records over the last few seconds (filled by the
	// server from successive samples).
	RecordsPerS float64           `json:"records_per_s"`
	Messages    uint64            `json:"messages"`
	Records     uint64            `json:"records"`
	Duplicates  uint64            `json:"duplicates"`
	Refused     uint64            `json:"refused"`
	Refusals    map[string]uint64 `json:"refusals,omitempty"`
}

// BufferStatus is the disk buffer's depth against its budget.
type BufferStatus struct {
	Open        bool        `json:"open"`
	Bytes       int64       `json:"bytes"`
	BudgetBytes int64       `json:"budget_bytes"`
	Dropped     uint64      `json:"dropped"`
	Logs        []LogStatus `json:"logs"`
}

// LogStatus is one log of the buffer.
type LogStatus struct {
	Name       string   `json:"name"`
	Records    uint64   `json:"records"`
	OldestAgeS *float64 `json:"oldest_age_s,omitempty"`
}

// UplinkStatus is one uplink.
type UplinkStatus struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// State is sending (last send acknowledged), backoff (upstream unreachable, retrying),
	// idle (nothing sent yet) or stopped.
	State            string   `json:"state"`
	Backlog          uint64   `json:"backlog"`
	OldestUnsentAgeS *float64 `json:"oldest_unsent_age_s,omitempty"`
	Batches          uint64   `json:"batches"`
	Records          uint64   `json:"records"`
	Errors           uint64   `json:"errors"`
	LastError        string   `json:"last_error,omitempty"`
	// Draining: a backlog drains at max_rate beside fresh data (fresh-first).
	Draining bool `json:"draining"`
}

// PipelineStatus is one pipeline.
type PipelineStatus struct {
	Name         string            `json:"name"`
	Watermark    *time.Time        `json:"watermark,omitempty"`
	WatermarkLag *float64          `json:"watermark_lag_s,omitempty"`
	Panes        map[string]uint64 `json:"panes"`
	LateDropped  uint64            `json:"late_dropped"`
	LastPanes    []PaneStatus      `json:"last_panes"`
}

// PaneStatus is one recently emitted pane.
type PaneStatus struct {
	Key    string    `json:"key"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Timing string    `json:"timing"`
	Count  uint64    `json:"count"`
}

// SensorStatus is one local sensor.
type SensorStatus struct {
	Name   string `json:"name"`
	Driver string `json:"driver"`
	Up     bool   `json:"up"`
	// State is starting, up, partial, down or stopped.
	State     string `json:"state"`
	Reads     uint64 `json:"reads"`
	Errors    uint64 `json:"errors"`
	LastError string `json:"last_error,omitempty"`
}

// SeriesStatus is one series' last value and its recent values (Recent).
type SeriesStatus struct {
	Series string `json:"series"`
	Unit   string `json:"unit,omitempty"`
	// Value is the last value received, at event time Time.
	Value float64   `json:"value"`
	Time  time.Time `json:"time"`
	// Values are the last values received (at most RecentPoints), oldest first, the
	// first at event time From.
	Values []float64 `json:"values"`
	From   time.Time `json:"from"`
}

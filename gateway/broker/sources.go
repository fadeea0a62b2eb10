package broker

import (
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/record"
)

// Source says where an ingested message came from.
type Source uint8

// Sources of messages.
const (
	SourceMQTT   Source = iota // a device publishing to the broker
	SourceSensor               // a local sensor read by the poller
	numSources
)

// Sources lists every source, for metrics.
var Sources = []Source{SourceMQTT, SourceSensor}

func (s Source) String() string {
	if s == SourceSensor {
		return "sensor"
	}
	return "mqtt"
}

// Outcome is what ingest did with one message.
type Outcome uint8

// Outcomes of one message.
const (
	OutcomeStored    Outcome = iota // at least one record appended
	OutcomeDuplicate                // every record was a duplicate
	OutcomeRaw                      // unrouted, forwarded raw
	OutcomeDropped                  // unrouted, dropped by config
	OutcomeRefused                  // refused (see the reasons)
	numOutcomes
)

// Outcomes lists every outcome, for metrics.
var Outcomes = []Outcome{OutcomeStored, OutcomeDuplicate, OutcomeRaw, OutcomeDropped, OutcomeRefused}

func (o Outcome) String() string {
	return [...]string{"stored", "duplicate", "raw", "dropped", "refused"}[o]
}

// SourceCounts counts messages by source and outcome (refusals by reason are in Refusals).
// Safe for concurrent use.
type SourceCounts struct {
	n        [numSources][numOutcomes]atomic.Uint64
	inflight atomic.Int64
}

// Count returns the messages of src that had outcome o.
func (c *SourceCounts) Count(src Source, o Outcome) uint64 { return c.n[src][o].Load() }

// begin counts a message entering the ingest path; done counts it out with its outcome.
func (c *SourceCounts) begin() { c.inflight.Add(1) }

func (c *SourceCounts) done(src Source, o Outcome) {
	c.inflight.Add(-1)
	c.n[src][o].Add(1)
}

// Progress returns the messages in the ingest path now and how many finished so far (the
// watchdog's view of ingest). Every finished message has exactly one outcome, so finished
// is the sum of the outcome counters rather than one more shared counter per message.
func (c *SourceCounts) Progress() (inflight int64, finished uint64) {
	inflight = c.inflight.Load()
	for src := range c.n {
		for o := range c.n[src] {
			finished += c.n[src][o].Load()
		}
	}
	return inflight, finished
}

// Holder diverts the records of a message to another log than the raw one: the gateway
// holds readings it stamped itself while the wall clock cannot be trusted. Hold runs on the
// publisher's goroutine before the PUBACK and must be quick; ok false means "append to the
// raw log as usual". arrival is the time the message was stamped with on arrival.
type Holder interface {
	Hold(src Source, recs []record.Record, arrival time.Time) (log string, entries []buffer.Entry, ok bool)
}

// Observer sees every reading once it is stored (not duplicates, not raw messages): the
// status page's recent values. Observe runs on the publisher's goroutine, once per record,
// and must be quick and safe for concurrent use.
type Observer interface {
	Observe(series, unit string, value float64, ts, arrival time.Time)
}

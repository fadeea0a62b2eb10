// Package logs is the schema of the buffer's logs, in one place: the name of each log,
// what it holds, who writes it, who reads it (the consumers whose committed positions bound
// its trimming) and how the buffer treats it under drop_oldest. The packages that write and
// read a log name it by these constants, and the gateway builds the buffer's options from
// Schema, so renaming a log renames it everywhere: the bulk log the buffer keys apart
// (Bulk) cannot drift from the log readings go to.
package logs

import (
	"cmp"
	"slices"
)

// The logs.
const (
	// Raw keeps every accepted reading (SPEC §2): written by the broker's ingest hook (the
	// sensors publish through it) and by the clock holder when it releases; read by every
	// uplink and every pipeline.
	Raw = "raw"
	// Agg keeps the panes of the pipelines (SPEC §6): written by the pipeline runners; read
	// by every uplink, as batches of kind aggregates.
	Agg = "agg"
	// Hold keeps readings stamped by this gateway while its clock is not synchronised,
	// until they can be rewritten to wall time (DESIGN invariant 6): written by the ingest
	// hook, read by the clock holder, which appends what it releases to Raw.
	Hold = "hold"
	// DeadLetter keeps the batches an upstream refused for good (an HTTP 400 or 413, a
	// Pub/Sub InvalidArgument): written by the uplinks; no consumer (`edgegate buffer tail
	// -log deadletter`).
	DeadLetter = "deadletter"
	// Refused keeps the messages the broker refused for good, with their reason (SPEC §2):
	// written by the broker; no consumer (`edgegate buffer tail -log refused`).
	Refused = "refused"
)

// Bulk is the log nearly every entry goes to: the buffer keys its entries apart, below
// every other key, which keeps compactions from rewriting the backlog (buffer's key
// layout; BENCHMARKS.md, "Write amplification"). It must be the log readings go to.
const Bulk = Raw

// DropOrder is when the buffer drops a log's entries to stay within its budget
// (drop_oldest): logs with a negative order go first (expendable), then those with order
// 0, then those with a positive order (precious), the lowest first.
type DropOrder int8

// Readers are the consumers of a log whose committed positions bound its trimming.
type Readers uint8

// Readers.
const (
	Uplinks Readers = 1 << iota
	Pipelines
	// Internal: a consumer inside the gateway that commits its own position (the clock
	// holder), not one of the configured uplinks or pipelines.
	Internal
)

// Log describes one log.
type Log struct {
	Name    string
	Writers string
	Readers Readers
	Drop    DropOrder
	// Status: the log is listed in /status and the buffer's metrics.
	Status bool
}

// Schema lists every log the gateway writes, in the order of /status. Under drop_oldest,
// raw readings go first, then the batches an upstream refused (readings someone may
// re-send), held readings and aggregates (worth more) last. Messages refused for good have
// a room of their own within the budget (buffer.Options.Reserved, sized by the broker's
// refused_log bounds): they never displace readings, and a full buffer still keeps them.
var Schema = []Log{
	{Name: Raw, Writers: "broker ingest, clock holder", Readers: Uplinks | Pipelines, Status: true},
	{Name: Agg, Writers: "pipelines", Readers: Uplinks, Drop: 3, Status: true},
	{Name: Hold, Writers: "broker ingest", Readers: Internal, Drop: 2, Status: true},
	{Name: Refused, Writers: "broker", Status: true}, // its own room: see the gateway's BufferOptions
	{Name: DeadLetter, Writers: "uplinks", Drop: 1},
}

// Listed lists the logs of Schema shown in /status and the metrics, in order.
func Listed() []string {
	var out []string
	for _, l := range Schema {
		if l.Status {
			out = append(out, l.Name)
		}
	}
	return out
}

// Expendable lists the logs dropped before any other (buffer.Options.Expendable), first
// dropped first.
func Expendable() []string { return byDrop(func(o DropOrder) bool { return o < 0 }) }

// Precious lists the logs dropped only when no other has entries left
// (buffer.Options.Precious), first dropped first.
func Precious() []string { return byDrop(func(o DropOrder) bool { return o > 0 }) }

func byDrop(keep func(DropOrder) bool) []string {
	var ls []Log
	for _, l := range Schema {
		if keep(l.Drop) {
			ls = append(ls, l)
		}
	}
	slices.SortStableFunc(ls, func(a, b Log) int { return cmp.Compare(a.Drop, b.Drop) })
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Name
	}
	return out
}

// Consumers returns, per log with uplinks or pipelines among its readers, the consumer
// names that bound its trimming: uplinks by their names, pipelines by their consumer names
// (pipeline.ConsumerName), uplinks first.
func Consumers(uplinks, pipelines []string) map[string][]string {
	out := map[string][]string{}
	for _, l := range Schema {
		var cs []string
		if l.Readers&Uplinks != 0 {
			cs = append(cs, uplinks...)
		}
		if l.Readers&Pipelines != 0 {
			cs = append(cs, pipelines...)
		}
		if l.Readers&(Uplinks|Pipelines) != 0 {
			out[l.Name] = cs
		}
	}
	return out
}

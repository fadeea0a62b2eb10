package uplink

import (
	"encoding/json"
	"fmt"
)

// Fresh-first draining (SPEC §5: "after an outage, backlog drains at a configurable maximum
// rate, while fresh data keeps flowing").
//
// One cursor cannot do it: a cursor says "everything below is acknowledged", so fresh data
// sent ahead of an unsent backlog cannot be recorded with it. Each stream (one log of one
// uplink) therefore keeps, besides its cursor C, a short list of acknowledged ranges above
// C, in one state key written in the same transaction as every commit:
//
//	log:      ... acked | backlog ......... | acked [S1,E1) | backlog | acked [S2,E2) | fresh →
//	                    ^ C (store cursor)                                    the head lane sends from E2
//
//   - The head lane sends new data with the normal linger and no rate cap. Normally it
//     starts at C and commits by moving C; while draining it starts at the end of the last
//     range and commits by growing that range.
//   - The backlog lane sends from C at max_rate records/s, stopping each batch before the
//     next acknowledged range. Acking it moves C; when C reaches a range, the range folds
//     into C; when the last range folds, draining is over and the head lane goes on from C.
//   - A split happens when the uplink starts, or reaches its upstream again after failures,
//     with more than two batches waiting: the head lane jumps to the end of the log (a new
//     empty range [S,S) marks where), what lies before is backlog. A second outage during a
//     drain opens another range, up to maxRanges; past that, the head lane simply catches
//     up without a cap. A split is not written on its own: the next write of the state (a
//     lane's record or commit) carries it; a restart before that splits again.
//
// Crash safety: every batch's range is recorded in the state (Pending for the backlog lane,
// or the head lane when not draining; FreshPending for the head lane while draining) before
// it is sent, and cleared in the transaction that commits it, so after a crash each lane
// resends exactly the batches it had in flight — same ranges, same ids (DESIGN invariants 4
// and 7). C never passes an unacknowledged entry, so trimming by cursor stays safe, and the
// ranges are pure bookkeeping over the same log: nothing is copied.
//
// In flight: a lane may cut several consecutive batches at once (a backlog, or a burst),
// record them in one transaction, send them with several in flight when the sink can, and
// commit the acknowledged prefix in one transaction: fsyncs per group, not per batch, and
// one round trip per group rather than per batch, which is what lets a backlog drain fast
// over a long-RTT link. While a backlog group is in flight the next one is read and
// recorded (appended to Pending), so it goes out as soon as the first is acknowledged —
// unless a head lane has a batch due, which then goes first. The acknowledged group's
// commit then shares the transaction that records the group after (ackBacklog, then the
// new ranges appended): a drain writes one transaction per group, not two. One group is
// in flight at a time and one goroutine at a time uses the sink, so the head lane's latency
// is its linger plus at most one backlog group (kept to a quarter second of max_rate) plus
// its own round trip.

// maxRanges bounds the acknowledged ranges kept above the cursor (one per outage during a
// drain); a state key stays a few hundred bytes.
const maxRanges = 8

// laneState is the durable state of one stream, besides its cursor.
type laneState struct {
	// Acked are half-open ranges [start, end) above the cursor, in order, already
	// acknowledged. Non-empty while draining; the last one is the head lane's.
	Acked [][2]uint64 `json:"acked,omitempty"`
	// Pending are the inclusive ranges of the batches in flight on the backlog lane (or on
	// the head lane when not draining), consecutive, in log order.
	Pending [][2]uint64 `json:"pending,omitempty"`
	// FreshPending are the head lane's batches in flight while draining.
	FreshPending [][2]uint64 `json:"fresh_pending,omitempty"`
}

// clone copies the slices, so a changed copy can be committed before it replaces l.
func (l laneState) clone() laneState {
	l.Acked = append([][2]uint64(nil), l.Acked...)
	l.Pending = append([][2]uint64(nil), l.Pending...)
	l.FreshPending = append([][2]uint64(nil), l.FreshPending...)
	return l
}

func (l *laneState) draining() bool { return len(l.Acked) > 0 }

// headPos is where the head lane's next batch starts.
func (l *laneState) headPos(cursor uint64) uint64 {
	if l.draining() {
		return l.Acked[len(l.Acked)-1][1]
	}
	return cursor
}

// backlogEnd is the first entry the backlog lane must not send (the start of the first
// acknowledged range).
func (l *laneState) backlogEnd() uint64 { return l.Acked[0][0] }

// ackedAbove counts the entries in the acknowledged ranges.
func (l *laneState) ackedAbove() uint64 {
	var n uint64
	for _, r := range l.Acked {
		n += r[1] - r[0]
	}
	return n
}

// ackHead records the head lane's batches up to the one ending at last as acknowledged
// (they are dropped from its in-flight list). It returns the new cursor (unchanged while
// draining).
func (l *laneState) ackHead(cursor, last uint64) uint64 {
	if l.draining() {
		l.Acked[len(l.Acked)-1][1] = last + 1
		l.FreshPending = dropThrough(l.FreshPending, last)
		return cursor
	}
	l.Pending = dropThrough(l.Pending, last)
	return last + 1
}

// dropThrough removes the in-flight ranges that end at or before last.
func dropThrough(p [][2]uint64, last uint64) [][2]uint64 {
	i := 0
	for i < len(p) && p[i][1] <= last {
		i++
	}
	if i == len(p) {
		return nil
	}
	return p[i:]
}

// ackBacklog records the backlog lane's batches up to the one ending at last as
// acknowledged, folds the ranges the cursor reaches, and returns the new cursor. When the
// last range folds the drain is over and the head lane's batches in flight become the only
// lane's.
func (l *laneState) ackBacklog(last uint64) uint64 {
	c := last + 1
	l.Pending = dropThrough(l.Pending, last)
	for len(l.Acked) > 0 && c >= l.Acked[0][0] {
		c = max(c, l.Acked[0][1])
		l.Acked = l.Acked[1:]
	}
	if len(l.Acked) == 0 {
		l.Acked = nil
		l.Pending, l.FreshPending = l.FreshPending, nil
	}
	return c
}

// split starts a drain, or another range of one: from now on the head lane sends from at,
// and everything unacknowledged below it is backlog. It reports false when it cannot
// split now (too many ranges, or the head lane has a batch in flight below at, which would
// then belong to neither lane).
func (l *laneState) split(at uint64) bool {
	if !l.draining() {
		// The batches in flight, if any, start at the cursor: they are the backlog lane's now.
		l.Acked = [][2]uint64{{at, at}}
		return true
	}
	if len(l.Acked) >= maxRanges || len(l.FreshPending) > 0 {
		return false
	}
	last := &l.Acked[len(l.Acked)-1]
	if last[0] == last[1] {
		// The previous head range never got an ack: move it rather than keep an empty one.
		last[0], last[1] = at, at
		return true
	}
	l.Acked = append(l.Acked, [2]uint64{at, at})
	return true
}

func (l *laneState) encode() []byte {
	b, _ := json.Marshal(l)
	return b
}

func decodeLanes(v []byte, cursor uint64) (laneState, error) {
	var l laneState
	if len(v) == 0 {
		return l, nil
	}
	if err := json.Unmarshal(v, &l); err != nil {
		return l, fmt.Errorf("decode lane state: %w", err)
	}
	// Ranges the cursor already passed are stale (a commit that moved the cursor always
	// rewrote the state with it, so this only guards against hand-edited stores).
	for len(l.Acked) > 0 && l.Acked[0][1] <= cursor {
		l.Acked = l.Acked[1:]
	}
	if len(l.Acked) == 0 {
		l.Acked = nil
	}
	for i, r := range l.Acked {
		if r[0] > r[1] || r[0] < cursor || i > 0 && r[0] < l.Acked[i-1][1] {
			return l, fmt.Errorf("decode lane state: bad range %v above cursor %d", r, cursor)
		}
	}
	return l, nil
}

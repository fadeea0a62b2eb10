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
//     up without a cap.
//
// Crash safety: every batch's range is recorded in the state (Pending for the backlog lane,
// or the head lane when not draining; FreshPending for the head lane while draining) before
// it is sent, and cleared in the transaction that commits it, so after a crash each lane
// resends exactly the batch it had in flight — same range, same id (DESIGN invariants 4
// and 7). C never passes an unacknowledged entry, so trimming by cursor stays safe, and the
// ranges are pure bookkeeping over the same log: nothing is copied.
//
// Every lane has at most one batch in flight and the sink is used by one goroutine, so the
// head lane's latency is its linger plus at most one backlog send plus its own round trip.

// maxRanges bounds the acknowledged ranges kept above the cursor (one per outage during a
// drain); a state key stays a few hundred bytes.
const maxRanges = 8

// laneState is the durable state of one stream, besides its cursor.
type laneState struct {
	// Acked are half-open ranges [start, end) above the cursor, in order, already
	// acknowledged. Non-empty while draining; the last one is the head lane's.
	Acked [][2]uint64 `json:"acked,omitempty"`
	// Pending is the inclusive range of the batch in flight on the backlog lane (or on the
	// head lane when not draining).
	Pending *[2]uint64 `json:"pending,omitempty"`
	// FreshPending is the head lane's batch in flight while draining.
	FreshPending *[2]uint64 `json:"fresh_pending,omitempty"`
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

// ackHead records the head lane's batch [first, last] as acknowledged. It returns the new
// cursor (unchanged while draining).
func (l *laneState) ackHead(cursor, last uint64) uint64 {
	if l.draining() {
		l.Acked[len(l.Acked)-1][1] = last + 1
		l.FreshPending = nil
		return cursor
	}
	l.Pending = nil
	return last + 1
}

// ackBacklog records the backlog lane's batch ending at last as acknowledged, folds the
// ranges the cursor reaches, and returns the new cursor. When the last range folds the
// drain is over and the head lane's batch in flight becomes the only lane's.
func (l *laneState) ackBacklog(last uint64) uint64 {
	c := last + 1
	l.Pending = nil
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
		// The batch in flight, if any, starts at the cursor: it is the backlog lane's now.
		l.Acked = [][2]uint64{{at, at}}
		return true
	}
	if len(l.Acked) >= maxRanges || l.FreshPending != nil {
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

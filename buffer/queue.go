// The bytes of appends in flight: what bounds the writer's queue by size, not only by
// count.

package buffer

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

const (
	// maxQueuedBytes bounds the appends queued for the writer or in its groups until they
	// are durable (their entries, ids and records of arrival, appendCost). The queue's
	// 1024 requests alone would let 1024 packets of 256 KiB wait in memory; beyond this an
	// append blocks its caller (AppendAsync), which paces the device that sent it through
	// TCP (the broker reads no more from it). The broker's acker holds at most 8 MiB of
	// QoS 0/1 publishes waiting for their appends: this leaves room for QoS 2, HTTP and
	// sensors besides.
	maxQueuedBytes = 16 << 20
	// requestOverhead is what one queued append costs besides its entries (the request,
	// its staged writes and results); entryOverhead per entry (keys, Result).
	requestOverhead = 512
	entryOverhead   = 96
)

// queueBytes is a byte budget with a count of what is held (for tests and stats).
type queueBytes struct {
	sem  *semaphore.Weighted
	size int64
	held atomic.Int64
}

func newQueueBytes(size int64) queueBytes {
	return queueBytes{sem: semaphore.NewWeighted(size), size: size}
}

// acquire takes n bytes (at most the whole budget: one large append still passes alone),
// waiting for room or until ctx ends.
func (q *queueBytes) acquire(ctx context.Context, n int64) error {
	if err := q.sem.Acquire(ctx, min(n, q.size)); err != nil {
		return err
	}
	q.held.Add(n)
	return nil
}

// release gives back what acquire took for n.
func (q *queueBytes) release(n int64) {
	if n <= 0 {
		return
	}
	q.held.Add(-n)
	q.sem.Release(min(n, q.size))
}

// appendCost is what an append of entries with extra writes holds while queued.
func appendCost(entries []Entry, extra []write) int64 {
	n := int64(requestOverhead)
	for _, e := range entries {
		n += int64(len(e.ID)+len(e.Value)) + entryOverhead
	}
	for _, w := range extra {
		n += int64(len(w.key) + len(w.value))
	}
	return n
}

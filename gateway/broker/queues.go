package broker

import (
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Queued messages (issue 21, item 3). mochi keeps every QoS 1/2 message sent to a
// subscriber in memory until the subscriber acknowledges it, and queues them the same way
// for a persistent session that is offline, for up to max_session_expiry: a few sessions
// subscribed to big messages could hold hundreds of MiB. queueBook counts what each client
// id holds, as a cost in bytes (payload, topic and queueOverhead per message), and the
// guard refuses to deliver to a subscriber whose cost reached max_queued_bytes_per_session,
// or to anyone while the total reached max_queued_bytes. A message not delivered for that
// is counted (QueueStats); it was stored all the same, the publisher got its PUBACK, and
// uplinks forward it: only that local subscriber misses it, as mochi's own max_inflight
// already made it.

// queueOverhead is what one queued message costs besides its payload and topic: mochi's
// packet (~0.8 KB) and inflight entry, the durable session's index and its copy on the way
// to the store. Measured by TestDurableSessionMemory (EDGEGATE_MEASURE=1): 2.7 KB of heap
// per small message queued, 3.2 KB once restored after a restart.
const queueOverhead = 3 << 10

// QueueStats count the queued messages (metrics).
type QueueStats struct {
	Messages      atomic.Int64  // queued or awaiting acknowledgement, all subscribers
	Bytes         atomic.Int64  // their cost
	DroppedClient atomic.Uint64 // not delivered: the subscriber was at max_queued_bytes_per_session
	DroppedTotal  atomic.Uint64 // not delivered: max_queued_bytes was reached
}

// queueBook is the cost of what each client id has queued. Safe for concurrent use.
type queueBook struct {
	perClient, total int64
	stats            QueueStats

	mu  sync.Mutex // guards ids
	ids map[string]*clientQueue
}

type clientQueue struct {
	bytes int64
	msgs  map[uint16]int64 // packet id → cost
}

func newQueueBook(perClient, total int64) *queueBook {
	return &queueBook{perClient: perClient, total: total, ids: map[string]*clientQueue{}}
}

func queueCost(pk packets.Packet) int64 {
	return int64(len(pk.Payload)+len(pk.TopicName)) + queueOverhead
}

// add counts a message queued for id (again: a resend replaces it).
func (q *queueBook) add(id string, packetID uint16, cost int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.ids[id]
	if c == nil {
		c = &clientQueue{msgs: map[uint16]int64{}}
		q.ids[id] = c
	}
	if old, ok := c.msgs[packetID]; ok {
		c.bytes -= old
		q.stats.Bytes.Add(-old)
	} else {
		q.stats.Messages.Add(1)
	}
	c.msgs[packetID] = cost
	c.bytes += cost
	q.stats.Bytes.Add(cost)
}

// done forgets a message acknowledged or dropped.
func (q *queueBook) done(id string, packetID uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.ids[id]
	if c == nil {
		return
	}
	if n, ok := c.msgs[packetID]; ok {
		delete(c.msgs, packetID)
		c.bytes -= n
		q.stats.Bytes.Add(-n)
		q.stats.Messages.Add(-1)
	}
	if len(c.msgs) == 0 {
		delete(q.ids, id)
	}
}

// forget drops everything counted for id (its session ended).
func (q *queueBook) forget(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c := q.ids[id]; c != nil {
		q.stats.Bytes.Add(-c.bytes)
		q.stats.Messages.Add(-int64(len(c.msgs)))
		delete(q.ids, id)
	}
}

// room reports whether one more message may be queued for id, counting a refusal.
func (q *queueBook) room(id string) bool {
	if q.stats.Bytes.Load() >= q.total {
		q.stats.DroppedTotal.Add(1)
		return false
	}
	q.mu.Lock()
	c := q.ids[id]
	full := c != nil && c.bytes >= q.perClient
	q.mu.Unlock()
	if full {
		q.stats.DroppedClient.Add(1)
	}
	return !full
}

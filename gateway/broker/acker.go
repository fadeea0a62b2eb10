package broker

import (
	"context"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/sync/semaphore"
)

// Deferred acknowledgement.
//
// mochi calls OnPublish on the connection's read goroutine and writes the PUBACK when it
// returns. Waiting there for the durable append would let one connection have one message
// in the store at a time, whatever it has in flight: one fsync per message. So the ingest
// hook queues the append (buffer.Store.AppendAsync), hands the message to this connection's
// acker and returns ErrRejectPacket: mochi then neither acknowledges nor delivers it. The
// acker waits for each append in arrival order and only then writes the PUBACK and
// delivers the message to local subscribers, so messages a connection has in flight share
// group commits, and nothing is acknowledged or delivered before it is durable (DESIGN
// invariant 1).
//
// Order: MQTT wants PUBACKs in the order the PUBLISHes came (MQTT 3.1.1 §4.6, 5.0 §4.6).
// Everything that answers a publish while earlier ones of the same connection wait —
// refusals with a reason code, duplicates, messages dropped by config — therefore goes
// through the same queue. When the queue is empty every earlier PUBACK is written, and
// mochi may acknowledge directly.
//
// Memory: at most ackDepth messages per connection, at most ackConnBytes of payload per
// connection, and at most ackBytes over all connections, wait for their appends; beyond
// that the read goroutine blocks, which paces the client through TCP as the synchronous
// path did. The share per connection keeps a few clients whose answers cannot be written
// (they do not read their socket) from holding the whole budget: each holds at most its
// share until the socket's write deadline (broker.write_timeout) disconnects it.
const (
	ackDepth     = 64
	ackBytes     = 8 << 20
	ackConnBytes = ackBytes / 16
	// ackCost is what a waiting message costs besides its payload (packet, records).
	ackCost = 1024
)

// acker keeps one ordered queue per connection with answers waiting to be written.
type acker struct {
	mu      sync.Mutex
	queues  map[*mqtt.Client]*ackQueue // present while the connection has answers waiting
	budget  *semaphore.Weighted
	size    int64          // of the budget
	perConn int64          // the most one connection holds (a single answer may hold more)
	wg      sync.WaitGroup // one per running queue
}

// ackQueue is one connection's answers, oldest first. A goroutine runs while it has any.
type ackQueue struct {
	items []answer
	held  int64     // budget the items hold
	cond  sync.Cond // on acker.mu: room in items, or the queue ended
}

// answer is what to do, in order, for one publish: run waits (for its append) and answers.
type answer struct {
	run   func()
	ready func() bool // whether run would not wait; nil: it never waits
	cost  int64       // taken from the budget (reserve); given back when run returns
}

func newAcker(budget, perConn int64) *acker {
	return &acker{queues: map[*mqtt.Client]*ackQueue{}, budget: semaphore.NewWeighted(budget), size: budget, perConn: perConn}
}

// reserve takes cost bytes from the budget (at most all of it) for cl's next answer: it
// waits while cl's waiting answers hold its share, then while other connections hold the
// budget, and returns what it took: the cost to push with. Only cl's read goroutine
// reserves and pushes for cl, so nothing comes between its reserve and its push.
func (a *acker) reserve(ctx context.Context, cl *mqtt.Client, cost int64) (int64, error) {
	cost = min(cost, a.size)
	a.mu.Lock()
	for q := a.queues[cl]; q != nil && q.held > 0 && q.held+cost > a.perConn; q = a.queues[cl] {
		q.cond.Wait() // its answers are written or fail within the write deadline
	}
	a.mu.Unlock()
	return cost, a.budget.Acquire(ctx, cost)
}

// busy reports whether cl has answers waiting: then its next answer must be queued too.
func (a *acker) busy(cl *mqtt.Client) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	_, ok := a.queues[cl]
	a.mu.Unlock()
	return ok
}

// push queues run as cl's next answer (cost was reserved), starting the queue's goroutine
// if none runs. It blocks while cl has ackDepth answers waiting.
func (a *acker) push(cl *mqtt.Client, cost int64, ready func() bool, run func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		q := a.queues[cl]
		if q == nil { // none, or it ended while this waited for room
			q = &ackQueue{items: make([]answer, 0, 8)}
			q.cond.L = &a.mu
			a.queues[cl] = q
			a.wg.Add(1)
			go a.drain(cl, q)
		}
		if len(q.items) < ackDepth {
			q.items = append(q.items, answer{run: run, ready: ready, cost: cost})
			q.held += cost
			return
		}
		q.cond.Wait()
	}
}

// then runs fn in order after cl's waiting answers, or now when there are none. fn must
// not block: it is for answers that need no append (refusals, duplicates).
func (a *acker) then(cl *mqtt.Client, fn func()) {
	if a != nil {
		a.mu.Lock()
		if _, ok := a.queues[cl]; ok {
			a.mu.Unlock()
			a.push(cl, 0, nil, fn)
			return
		}
		a.mu.Unlock()
	}
	fn()
}

// idle waits until cl has no answers waiting (before a publish that mochi answers itself).
func (a *acker) idle(cl *mqtt.Client) {
	a.mu.Lock()
	for q := a.queues[cl]; q != nil; q = a.queues[cl] {
		q.cond.Wait()
	}
	a.mu.Unlock()
}

// drain runs cl's answers in order until none is left, then ends the queue. An answer is
// removed only after it ran, so busy stays true until the last PUBACK is written. While
// the next answers are ready (their appends became durable together), the connection is
// corked, so their PUBACKs leave in one write; it is uncorked before waiting for an
// append and at the end.
func (a *acker) drain(cl *mqtt.Client, q *ackQueue) {
	defer a.wg.Done()
	lc := baseConn(cl.Net.Conn) // nil for an inline client
	corked := false
	a.mu.Lock()
	for {
		if len(q.items) == 0 {
			if !corked {
				break
			}
			a.mu.Unlock()
			lc.uncork()
			corked = false
			a.mu.Lock()
			continue // more may have come meanwhile
		}
		it := q.items[0]
		a.mu.Unlock()
		if it.ready == nil || it.ready() {
			if !corked && lc != nil {
				lc.cork()
				corked = true
			}
		} else if corked {
			lc.uncork()
			corked = false
		}
		it.run()
		if it.cost > 0 {
			a.budget.Release(it.cost)
		}
		a.mu.Lock()
		q.held -= it.cost
		q.items[0] = answer{}
		q.items = q.items[1:]
		q.cond.Broadcast()
	}
	delete(a.queues, cl)
	q.cond.Broadcast()
	a.mu.Unlock()
}

// wait blocks until every queued answer ran (at shutdown, after the listeners closed).
func (a *acker) wait() { a.wg.Wait() }

// puback acknowledges a QoS 1 publish with success. A closed connection is not an error
// here: the message is stored, and a client that resends it is answered as a duplicate.
func puback(cl *mqtt.Client, pk packets.Packet) error {
	if pk.FixedHeader.Qos != 1 {
		return nil
	}
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    pk.PacketID,
	})
}

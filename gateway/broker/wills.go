package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/ingest"
)

// Wills (issue 21, item 2). mochi publishes a will without calling OnPublish, so by itself
// a will would bypass every limit, never be stored nor forwarded. edgegate publishes wills
// itself, as publishes of their clients: checked at CONNECT (grants, topic limits,
// max_will_bytes, the route's format, the retained quotas), and when one fires, checked
// again (grants, rate, retained quotas), stored through the ingest path like any reading
// (so forwarded upstream), and only then delivered to local subscribers and retained. A
// will refused when it fires is counted and, if resending could not help, kept in the
// refused log. mochi is handed an empty will, which it publishes to nobody.
//
// A will with a delay (MQTT 5) fires when the delay or the session ends, whichever comes
// first, unless its client id connects again before: the delayed ones wait here (one per
// client id, at most maxDelayedWills; past that they fire at once). A delayed will still
// waiting when the daemon stops is not published.

// WillStats count the wills (metrics).
type WillStats struct {
	Stored    atomic.Uint64 // wills stored and published
	Refused   atomic.Uint64 // wills refused when they fired
	Cancelled atomic.Uint64 // delayed wills whose client came back in time
}

// delayedWill is a will waiting for its delay.
type delayedWill struct {
	cl   *mqtt.Client
	will mqtt.Will
	at   time.Time
}

// wills publishes wills and holds the delayed ones; run owns its goroutine.
type wills struct {
	b     *Broker
	max   int
	stats WillStats

	mu      sync.Mutex // guards pending and stopped
	pending map[string]*delayedWill
	stopped bool
	wake    chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup
}

func newWills(b *Broker, max int) *wills {
	return &wills{b: b, max: max, pending: map[string]*delayedWill{}, wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

// fire is the guard's OnWill: it takes the will over and returns the empty one mochi
// publishes instead.
func (w *wills) fire(cl *mqtt.Client, will mqtt.Will) mqtt.Will {
	if cl.Net.Inline {
		return will
	}
	delay := will.WillDelayInterval
	if cl.Properties.ProtocolVersion == 5 {
		delay = min(delay, cl.Properties.Props.SessionExpiryInterval) // the session ends first
	} else {
		delay = 0
	}
	if delay == 0 {
		w.publish(cl, will, true)
		return mqtt.Will{}
	}
	if cl.IsTakenOver() { // its session goes on in the new connection: no will (§3.1.3.2.2)
		w.stats.Cancelled.Add(1)
		return mqtt.Will{}
	}
	now := w.b.ingest.clock.Now()
	w.mu.Lock()
	if w.stopped || len(w.pending) >= w.max {
		w.mu.Unlock()
		w.publish(cl, will, true)
		return mqtt.Will{}
	}
	w.pending[cl.ID] = &delayedWill{cl: cl, will: will, at: now.Add(time.Duration(delay) * time.Second)}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return mqtt.Will{}
}

// cancel drops the delayed will of a client id that connected again.
func (w *wills) cancel(id string) {
	w.mu.Lock()
	_, ok := w.pending[id]
	delete(w.pending, id)
	w.mu.Unlock()
	if ok {
		w.stats.Cancelled.Add(1)
	}
}

// publish checks, stores and delivers a will of cl's; pace says the caller may wait for
// the client's rate (its own connection's goroutine). It reports whether it was published.
func (w *wills) publish(cl *mqtt.Client, will mqtt.Will, pace bool) bool {
	b, g := w.b, w.b.guard
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
	}
	user := string(cl.Properties.Username)
	publish := g.cfg.Anonymous.Publish
	if acc := g.creds.users[user]; acc != nil {
		publish = acc.publish
	}
	refuse := func(reason ingest.Reason, err error) bool {
		w.stats.Refused.Add(1)
		b.ingest.keepRefusedNow(cl, pk, reason, fmt.Errorf("will: %w", err))
		return false
	}
	if !covered(expand(publish, user, cl.ID), pk.TopicName) {
		return refuse(ingest.ReasonNotAuthorized, fmt.Errorf("topic %q outside the publish grants of %s", pk.TopicName, userName(user)))
	}
	if err := g.topicOK(pk.TopicName); err != nil {
		return refuse(ingest.ReasonTopicInvalid, err)
	}
	wait, flood := g.meters.get(user, cl.ID, g.clock.Now()).pace(true, g.clock.Now(), g.cfg.FloodAfter.D())
	if flood {
		return refuse(ReasonFlood, fmt.Errorf("over max_rate_per_client (%g/s) without a pause for flood_after", g.cfg.MaxRatePerClient))
	}
	if wait > 0 && pace {
		<-g.clock.After(wait)
	}
	undo := func() {}
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 {
		var err error
		if undo, err = g.retained.reserve(user, pk.TopicName, int64(len(pk.Payload))); err != nil {
			return refuse(ingest.ReasonOverQuota, err)
		}
	}
	if !pk.FixedHeader.Retain || len(pk.Payload) > 0 { // an empty retained will only clears
		if err := b.ingest.IngestFrom(b.ingest.ctx, SourceMQTT, pk.TopicName, pk.Payload); err != nil {
			undo()
			var ie *ingest.Error
			if !errors.As(err, &ie) {
				ie = &ingest.Error{Reason: ingest.ReasonStore, Err: err}
			}
			return refuse(ie.Reason, ie.Err)
		}
	}
	w.stats.Stored.Add(1)
	if pk.FixedHeader.Qos > 0 {
		pk.PacketID = 1 // mochi checks there is one; an inline publish is never acknowledged
	}
	_ = b.injectPacket(b.relay, pk) // delivered and retained as mochi would have // delivered and retained as mochi would have
	return true
}

// run fires the delayed wills when their time comes, until close.
func (w *wills) run() {
	defer w.wg.Done()
	clk := w.b.ingest.clock
	for {
		w.mu.Lock()
		now := clk.Now()
		var due []*delayedWill
		next := time.Duration(-1)
		for id, d := range w.pending {
			if !d.at.After(now) {
				due = append(due, d)
				delete(w.pending, id)
			} else if left := d.at.Sub(now); next < 0 || left < next {
				next = left
			}
		}
		w.mu.Unlock()
		for _, d := range due {
			w.publish(d.cl, d.will, false)
		}
		var timer <-chan time.Time
		var t interface{ Stop() bool }
		if next >= 0 {
			tm := clk.NewTimer(next)
			timer, t = tm.C(), tm
		}
		select {
		case <-w.quit:
			if t != nil {
				t.Stop()
			}
			return
		case <-w.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (w *wills) start() {
	w.wg.Add(1)
	go w.run()
}

// close stops the runner; delayed wills still waiting are dropped. Idempotent.
func (w *wills) close() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.pending = map[string]*delayedWill{}
	w.mu.Unlock()
	close(w.quit)
	w.wg.Wait()
}

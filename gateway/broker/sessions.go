package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
)

// Durable sessions (SPEC §2): a persistent session (clean:false in MQTT 3.1.1, a session
// expiry in MQTT 5) survives a restart of the daemon — the client record, its
// subscriptions and the QoS 1/2 messages waiting for it (queued while it is offline, or
// sent and not yet acknowledged). sessionHook is a mochi storage hook that keeps them in
// the buffer's state KV, in our one Badger store (mochi's bundled Badger hook would open a
// second one with default, huge options), and gives them back to mochi when it starts.
//
// Keys, under "mqtt/": c/<client id> (the client), s/<client id>/<filter> (a
// subscription), i/<client id>/<packet id> (a message in flight). Client ids cannot hold a
// '/' (config.IdentityOK), so a client's keys are a prefix of their own. Clean sessions
// are not stored: they end with their connection, and a restart ends every connection.
//
// Writes do not wait for an fsync on the hook's caller (a publisher's goroutine): they
// are queued, in order, and a writer goroutine applies what has queued in one
// transaction at a time (group commit). A kill -9 can lose the last milliseconds of
// session changes (a message queued for an offline subscriber, an acknowledgement); a
// clean stop loses none, as Close writes the rest. The readings themselves are in the raw
// log before their PUBACK, whatever happens to a session.
//
// Bounds: a session lives at most max_session_expiry after its disconnect (and its
// expiry restarts when the daemon does); mochi holds at most max_inflight messages for
// one session; the hook's index counts sessions, messages and bytes per client, so limits per
// user or overall can be checked where a write is queued.
const (
	sessionPrefix = "mqtt/"
	sessionClient = sessionPrefix + "c/"
	sessionSub    = sessionPrefix + "s/"
	sessionMsg    = sessionPrefix + "i/"
	// maxSessionQueue bounds the bytes of session writes waiting for the writer; a hook
	// that would pass it waits (the store is far behind).
	maxSessionQueue = 8 << 20
	// maxSessionBatch bounds one transaction of session writes (and the store's own
	// limit, buffer.Store.MaxRequestBytes, smaller on small memtables).
	maxSessionBatch = 1 << 20
	maxSessionOps   = 1000
)

// SessionStats count the durable sessions (metrics).
type SessionStats struct {
	Sessions     atomic.Int64  // persistent sessions stored
	Messages     atomic.Int64  // messages in flight or queued, stored for them
	MessageBytes atomic.Int64  // their payload bytes
	Restored     atomic.Int64  // sessions given back to mochi at the last start
	Pending      atomic.Int64  // writes queued, not yet committed
	Commits      atomic.Uint64 // transactions of session writes
	Errors       atomic.Uint64 // transactions that failed (logged)
}

type sessionOpKind uint8

const (
	opPut  sessionOpKind = iota // key = value
	opDel                       // delete key
	opDrop                      // delete every key of client id
)

type sessionOp struct {
	kind  sessionOpKind
	key   string
	value []byte
}

// size is what the op costs in a transaction, as the store counts it (key with its state
// prefix, value, 16 bytes per write), with room to spare.
func (o sessionOp) size() int64 { return int64(len(o.key)+len(o.value)) + 32 }

// sessionHook is the mochi storage hook of durable sessions.
type sessionHook struct {
	mqtt.HookBase
	store     *buffer.Store
	srv       *mqtt.Server
	clock     clock.Clock
	log       *slog.Logger
	maxExpiry time.Duration
	stats     SessionStats

	batchBytes int64 // the most one transaction of session writes may hold

	// onRestore learns of each message restored for a session (the guard counts them
	// against the queue limits); nil: nobody.
	onRestore func(id string, packetID uint16, cost int64)

	mu       sync.Mutex // guards queue, queued, closed and index
	cond     sync.Cond  // on mu: ops queued, room in the queue, or closed
	queue    []sessionOp
	queued   int64
	closed   bool
	index    map[string]*sessionEntry
	wg       sync.WaitGroup
	loadedAt time.Time
}

// sessionEntry is what is stored for one client. The index holds every client id with
// keys in the store, so that a clean session (most connections) costs no write.
type sessionEntry struct {
	msgs map[uint16]int64 // packet id → payload bytes
}

// storedClient is the stored form of a client: mochi's record and when it disconnected.
type storedClient struct {
	storage.Client
	Disconnected int64 `json:"disconnected,omitempty"` // unix seconds; 0: connected
}

func newSessionHook(s *buffer.Store, c clock.Clock, maxExpiry time.Duration, log *slog.Logger) *sessionHook {
	h := &sessionHook{store: s, clock: c, maxExpiry: maxExpiry, log: log, index: map[string]*sessionEntry{},
		batchBytes: min(maxSessionBatch, s.MaxRequestBytes()/2)}
	h.cond.L = &h.mu
	return h
}

func (h *sessionHook) ID() string { return "edgegate-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages:
		return true
	}
	return false
}

// start runs the writer; close stops it once every queued write is applied.
func (h *sessionHook) start() {
	h.wg.Add(1)
	go h.write()
}

func (h *sessionHook) close() {
	h.mu.Lock()
	h.closed = true
	h.cond.Broadcast()
	h.mu.Unlock()
	h.wg.Wait()
}

// persistent reports whether cl's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// current reports whether cl is the client mochi holds for its id: a connection that was
// taken over must not write over its successor.
func (h *sessionHook) current(cl *mqtt.Client) bool {
	if cl.IsTakenOver() {
		return false
	}
	if h.srv == nil {
		return true
	}
	cur, ok := h.srv.Clients.Get(cl.ID)
	return !ok || cur == cl
}

func (h *sessionHook) enqueue(ops ...sessionOp) {
	var n int64
	for _, o := range ops {
		n += o.size()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.queued > 0 && h.queued+n > maxSessionQueue && !h.closed {
		h.cond.Wait()
	}
	if h.closed {
		return // after Close: mochi's last hooks at shutdown are written by Close itself
	}
	h.queue = append(h.queue, ops...)
	h.queued += n
	h.stats.Pending.Add(int64(len(ops)))
	h.cond.Broadcast()
}

func clientKey(id string) string { return sessionClient + id }
func subKey(id, filter string) string {
	return sessionSub + id + "/" + filter
}
func msgKey(id string, packetID uint16) string {
	return fmt.Sprintf("%s%s/%05d", sessionMsg, id, packetID)
}

func (h *sessionHook) clientRecord(cl *mqtt.Client, disconnected int64) []byte {
	p := cl.Properties.Props
	rec := storedClient{
		Client: storage.Client{
			ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
			Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
			Properties: storage.ClientProperties{
				SessionExpiryInterval: p.SessionExpiryInterval, SessionExpiryIntervalFlag: p.SessionExpiryIntervalFlag,
				AuthenticationMethod: p.AuthenticationMethod, AuthenticationData: p.AuthenticationData,
				RequestProblemInfo: p.RequestProblemInfo, RequestProblemInfoFlag: p.RequestProblemInfoFlag,
				RequestResponseInfo: p.RequestResponseInfo, ReceiveMaximum: p.ReceiveMaximum,
				TopicAliasMaximum: p.TopicAliasMaximum, User: p.User, MaximumPacketSize: p.MaximumPacketSize,
			},
			Will: storage.ClientWill(cl.Properties.Will),
		},
		Disconnected: disconnected,
	}
	b, _ := json.Marshal(rec) // plain data: cannot fail
	return b
}

// drop forgets everything stored for a client id, if anything is.
func (h *sessionHook) drop(id string) {
	h.mu.Lock()
	e := h.index[id]
	if e != nil {
		h.forgetLocked(e)
		delete(h.index, id)
	}
	h.mu.Unlock()
	if e != nil {
		h.enqueue(sessionOp{kind: opDrop, key: id})
	}
}

func (h *sessionHook) forgetLocked(e *sessionEntry) {
	h.stats.Sessions.Add(-1)
	for _, n := range e.msgs {
		h.stats.Messages.Add(-1)
		h.stats.MessageBytes.Add(-n)
	}
}

// entry returns the index entry of a client id, creating it.
func (h *sessionHook) entry(id string) *sessionEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.index[id]
	if e == nil {
		e = &sessionEntry{msgs: map[uint16]int64{}}
		h.index[id] = e
		h.stats.Sessions.Add(1)
	}
	return e
}

// OnSessionEstablished stores a persistent session's client (after a clean start, without
// what an earlier session of that id left), and forgets the stored session of an id that
// connects with a clean session.
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || !h.current(cl) {
		return
	}
	if pk.Connect.Clean || !persistent(cl) {
		h.drop(cl.ID)
	}
	if persistent(cl) {
		h.entry(cl.ID)
		h.enqueue(sessionOp{kind: opPut, key: clientKey(cl.ID), value: h.clientRecord(cl, 0)})
	}
}

// OnDisconnect records when a persistent session went offline, or forgets a session that
// ended with its connection.
func (h *sessionHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline || cl.Net.Conn == nil || !h.current(cl) {
		return // a session mochi restores from the store, or one taken over
	}
	if expire || !persistent(cl) {
		h.drop(cl.ID)
		return
	}
	h.entry(cl.ID)
	h.enqueue(sessionOp{kind: opPut, key: clientKey(cl.ID), value: h.clientRecord(cl, h.clock.Now().Unix())})
}

// OnClientExpired forgets a session mochi expired.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) { h.drop(cl.ID) }

// OnSubscribed stores the granted subscriptions of a persistent session.
func (h *sessionHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	var ops []sessionOp
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue // refused: mochi did not subscribe it
		}
		b, _ := json.Marshal(storage.Subscription{
			ID: subKey(cl.ID, f.Filter), T: storage.SubscriptionKey, Client: cl.ID, Filter: f.Filter,
			Qos: codes[i], Identifier: f.Identifier, NoLocal: f.NoLocal,
			RetainHandling: f.RetainHandling, RetainAsPublished: f.RetainAsPublished,
		})
		ops = append(ops, sessionOp{kind: opPut, key: subKey(cl.ID, f.Filter), value: b})
	}
	if len(ops) > 0 {
		h.entry(cl.ID)
		h.enqueue(ops...)
	}
}

// OnUnsubscribed forgets subscriptions of a persistent session.
func (h *sessionHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	ops := make([]sessionOp, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		ops = append(ops, sessionOp{kind: opDel, key: subKey(cl.ID, f.Filter)})
	}
	h.enqueue(ops...)
}

// OnQosPublish stores a QoS 1/2 message sent or queued to a persistent session (and the
// inbound QoS 2 state mochi keeps in the same table).
func (h *sessionHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if !persistent(cl) {
		return
	}
	p := pk.Properties
	b, _ := json.Marshal(storage.Message{
		ID: msgKey(cl.ID, pk.PacketID), T: storage.InflightKey, Client: cl.ID, Origin: pk.Origin,
		PacketID: pk.PacketID, FixedHeader: pk.FixedHeader, TopicName: pk.TopicName, Payload: pk.Payload,
		Sent: sent, Created: pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat: p.PayloadFormat, MessageExpiryInterval: p.MessageExpiryInterval,
			ContentType: p.ContentType, ResponseTopic: p.ResponseTopic, CorrelationData: p.CorrelationData,
			SubscriptionIdentifier: p.SubscriptionIdentifier, User: p.User,
		},
	})
	// Queued before it is counted: while the gauges show the message, its write is pending
	// or done (what a caller waiting for the writes to settle relies on).
	h.enqueue(sessionOp{kind: opPut, key: msgKey(cl.ID, pk.PacketID), value: b})
	e := h.entry(cl.ID)
	h.mu.Lock()
	if old, ok := e.msgs[pk.PacketID]; ok {
		h.stats.MessageBytes.Add(-old)
	} else {
		h.stats.Messages.Add(1)
	}
	e.msgs[pk.PacketID] = int64(len(pk.Payload))
	h.stats.MessageBytes.Add(int64(len(pk.Payload)))
	h.mu.Unlock()
}

// OnQosComplete forgets a message the client acknowledged.
func (h *sessionHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	h.mu.Lock()
	if e := h.index[cl.ID]; e != nil {
		if n, ok := e.msgs[pk.PacketID]; ok {
			delete(e.msgs, pk.PacketID)
			h.stats.Messages.Add(-1)
			h.stats.MessageBytes.Add(-n)
		}
	}
	h.mu.Unlock()
	h.enqueue(sessionOp{kind: opDel, key: msgKey(cl.ID, pk.PacketID)})
}

// OnQosDropped forgets a message mochi gave up on; not those of a connection whose session
// a new one took over: mochi moved them to it (then clears the old one's, calling this).
func (h *sessionHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	h.OnQosComplete(cl, pk)
}

// StoredClients gives mochi the persistent sessions to restore (at Serve). A session whose
// expiry passed while the daemon was down is forgotten instead.
func (h *sessionHook) StoredClients() ([]storage.Client, error) {
	now := h.clock.Now()
	h.loadedAt = now
	var out []storage.Client
	var expired []string
	err := h.store.ScanState(sessionClient, func(key string, v []byte) error {
		var rec storedClient
		if err := json.Unmarshal(v, &rec); err != nil {
			h.log.Warn("durable session: unreadable client record; forgotten", "key", key, "err", err)
			expired = append(expired, strings.TrimPrefix(key, sessionClient))
			return nil
		}
		expiry := h.maxExpiry
		if rec.ProtocolVersion == 5 {
			expiry = min(expiry, time.Duration(rec.Properties.SessionExpiryInterval)*time.Second)
		}
		if rec.Disconnected > 0 && now.Sub(time.Unix(rec.Disconnected, 0)) > expiry {
			expired = append(expired, rec.ID)
			return nil
		}
		out = append(out, rec.Client)
		h.entry(rec.ID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range expired {
		h.enqueue(sessionOp{kind: opDrop, key: id})
	}
	h.stats.Restored.Store(int64(len(out)))
	if len(out) > 0 || len(expired) > 0 {
		h.log.Info("durable sessions restored", "sessions", len(out), "expired", len(expired))
	}
	return out, nil
}

// restored reports whether a client id's session is being restored.
func (h *sessionHook) restored(id string) *sessionEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.index[id]
}

// StoredSubscriptions gives mochi the subscriptions of the restored sessions.
func (h *sessionHook) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := h.store.ScanState(sessionSub, func(key string, v []byte) error {
		var s storage.Subscription
		if err := json.Unmarshal(v, &s); err != nil {
			return nil // its session is restored without it
		}
		if h.restored(s.Client) != nil {
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

// StoredInflightMessages gives mochi the messages of the restored sessions.
func (h *sessionHook) StoredInflightMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := h.store.ScanState(sessionMsg, func(key string, v []byte) error {
		var m storage.Message
		if err := json.Unmarshal(v, &m); err != nil {
			return nil
		}
		if e := h.restored(m.Client); e != nil {
			h.mu.Lock()
			if _, ok := e.msgs[m.PacketID]; !ok {
				h.stats.Messages.Add(1)
				h.stats.MessageBytes.Add(int64(len(m.Payload)))
			}
			e.msgs[m.PacketID] = int64(len(m.Payload))
			h.mu.Unlock()
			if h.onRestore != nil && m.FixedHeader.Type == packets.Publish {
				h.onRestore(m.Client, m.PacketID, int64(len(m.Payload)+len(m.TopicName))+queueOverhead)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// write applies queued writes, what has queued at once in one transaction (group commit),
// until close and an empty queue.
func (h *sessionHook) write() {
	defer h.wg.Done()
	for {
		h.mu.Lock()
		for len(h.queue) == 0 && !h.closed {
			h.cond.Wait()
		}
		if len(h.queue) == 0 {
			h.mu.Unlock()
			return
		}
		var batch []sessionOp
		var size int64
		n := 0
		for n < len(h.queue) && (n == 0 || size+h.queue[n].size() <= h.batchBytes && n < maxSessionOps) {
			if h.queue[n].kind == opDrop && n > 0 {
				break // a drop scans what is committed: the writes before it first
			}
			size += h.queue[n].size()
			n++
			if h.queue[n-1].kind == opDrop {
				break
			}
		}
		batch = append(batch, h.queue[:n]...)
		h.queue = append(h.queue[:0], h.queue[n:]...)
		h.queued -= size
		h.cond.Broadcast()
		h.mu.Unlock()

		if err := h.apply(batch); err != nil {
			h.stats.Errors.Add(1)
			h.log.Warn("durable sessions: write failed; these session changes are lost at the next restart", "writes", len(batch), "err", err)
		} else {
			h.stats.Commits.Add(1)
		}
		h.stats.Pending.Add(-int64(len(batch)))
	}
}

func (h *sessionHook) apply(batch []sessionOp) error {
	ctx := context.Background() // once queued, Update completes even at shutdown
	if len(batch) == 1 && batch[0].kind == opDrop {
		id := batch[0].key
		keys := []string{clientKey(id)}
		for _, p := range []string{sessionSub + id + "/", sessionMsg + id + "/"} {
			err := h.store.ScanState(p, func(key string, _ []byte) error {
				keys = append(keys, key)
				return nil
			})
			if err != nil {
				return err
			}
		}
		for len(keys) > 0 { // in transactions of at most 1000 deletes
			chunk := keys[:min(len(keys), 1000)]
			keys = keys[len(chunk):]
			if err := h.store.Update(ctx, func(tx *buffer.Tx) {
				for _, k := range chunk {
					tx.Delete(k)
				}
			}); err != nil {
				return fmt.Errorf("forget session %q: %w", id, err)
			}
		}
		return nil
	}
	return h.store.Update(ctx, func(tx *buffer.Tx) {
		for _, o := range batch {
			if o.kind == opPut {
				tx.Put(o.key, o.value)
			} else {
				tx.Delete(o.key)
			}
		}
	})
}

// Stats returns the session counters.
func (h *sessionHook) Stats() *SessionStats { return &h.stats }

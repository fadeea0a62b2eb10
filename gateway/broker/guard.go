package broker

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
)

// guard is the device-facing policy of the broker, as one mochi hook: who may connect
// (credentials, identities, sessions bound to their user, will topics), what each client
// may publish and subscribe to (grants, default deny), and the per-client limits (message
// rate, topic size, subscriptions, retained messages).
//
// mochi calls it on each client's read goroutine for the client's own packets, and on other
// goroutines for ACL checks of deliveries; per-client state that changes lives in session
// and is touched only from the client's read goroutine.
type guard struct {
	mqtt.HookBase
	srv      *mqtt.Server
	cfg      config.Broker
	creds    *credentials
	meters   *meters
	refusals *Refusals
	// refuse answers a refused publish (the ingest hook's refusePublish: counted, kept,
	// answered in order); without an ingest hook (tests) it only counts.
	refuse func(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) error
	clock  clock.Clock
	log    *slog.Logger

	mu       sync.RWMutex // guards sessions, byID, bindings, persist and persistN
	sessions map[*mqtt.Client]*session
	byID     map[string]*mqtt.Client

	retained *retainedBook
	queues   *queueBook

	bindings     *bindings                      // guarded by mu
	persist      map[string]map[string]struct{} // persistent sessions: user → client ids; guarded by mu
	persistN     int                            // their number; guarded by mu
	saveBindings func(ops []bindingOp)          // writes binding changes (nil without a store)

	// restored is closed once the sessions restored from the store are counted (or the
	// broker closes): a CONNECT asking for a persistent session waits for it, since mochi
	// serves its listeners before the broker can count them.
	restored     chan struct{}
	restoreOnce  sync.Once
	waitRestored atomic.Int32 // CONNECTs waiting for restored (tests)

	// Set by the broker: checkPayload decodes a payload as its route would (a will's, at
	// CONNECT); onWill publishes a will (wills.fire); onConnected learns of a client id
	// logged in (a delayed will of it is cancelled).
	checkPayload func(topic string, payload []byte) error
	onWill       func(cl *mqtt.Client, will mqtt.Will) mqtt.Will
	onConnected  func(id string)
}

// session is what the guard knows of one authenticated client.
type session struct {
	user      string   // "" for anonymous
	publish   []string // grant filters with the user name and client id substituted
	subscribe []string

	meter *meter // shared with later connections of the same identity

	// Between OnSubscribe and OnSubscribed: mochi checks the filters with OnACLCheck,
	// which must then not apply the queue limits of deliveries.
	subscribing atomic.Bool

	// Read goroutine only.
	pendingSub   []ingest.Reason
	retainUndo   func() // a retained publish's reservation, until mochi retains it
	invalidTopic string // a publish topic mochi would drop, swapped by OnPacketRead for OnPublish
}

// Client ids nobody may connect with: the broker's own inline clients.
var reservedClientIDs = map[string]bool{SensorClientID: true, InternalClientID: true, RelayClientID: true, mqtt.InlineClientId: true}

// refusedFilter replaces a subscription filter the guard refuses: mochi sees an invalid
// filter and subscribes nothing; OnSubscribed then puts the true reason code in the SUBACK.
const refusedFilter = "#/refused"

func newGuard(cfg config.Broker, refusals *Refusals, c clock.Clock, log *slog.Logger) *guard {
	return &guard{
		cfg: cfg, creds: newCredentials(cfg.Users, c), refusals: refusals, clock: c, log: log,
		bindings: newBindings(16 * cfg.MaxClients),
		refuse: func(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) error {
			refusals.Add(reason, cl.ID, pk.TopicName, err)
			return packets.ErrRejectPacket
		},
		sessions: map[*mqtt.Client]*session{},
		byID:     map[string]*mqtt.Client{},
		retained: newRetainedBook(cfg),
		queues:   newQueueBook(int64(cfg.MaxQueuedBytesPerSession), int64(cfg.MaxQueuedBytes)),
		persist:  map[string]map[string]struct{}{},
		meters:   newMeters(cfg.MaxRatePerClient, 4*cfg.MaxClients),
		restored: make(chan struct{}),
	}
}

// restoreDone lets CONNECTs asking for a persistent session through: the restored
// sessions are counted, or the broker closes.
func (g *guard) restoreDone() { g.restoreOnce.Do(func() { close(g.restored) }) }

func (g *guard) ID() string { return "edgegate-guard" }

func (g *guard) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribe,
		mqtt.OnSubscribed, mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnDisconnect,
		mqtt.OnClientExpired, mqtt.OnPacketEncode, mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
		mqtt.OnPacketProcessed, mqtt.OnWill, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
	}, []byte{b})
}

func (g *guard) session(cl *mqtt.Client) *session {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.sessions[cl]
}

func (g *guard) drop(cl *mqtt.Client) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.sessions, cl)
	if g.byID[cl.ID] == cl {
		delete(g.byID, cl.ID)
	}
}

// OnDisconnect forgets a client whose session ends with its connection, or was taken over.
func (g *guard) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire || cl.IsTakenOver() {
		g.drop(cl)
	}
	if expire && !cl.IsTakenOver() {
		g.endSession(cl)
	}
}

// OnClientExpired forgets a persistent session mochi expired.
func (g *guard) OnClientExpired(cl *mqtt.Client) {
	g.drop(cl)
	g.endSession(cl)
}

// endSession forgets the session of cl's client id: its place among the persistent
// sessions, its queued messages.
func (g *guard) endSession(cl *mqtt.Client) {
	g.mu.Lock()
	if cur := g.byID[cl.ID]; cur == nil || cur == cl {
		g.dropPersistLocked(string(cl.Properties.Username), cl.ID)
	}
	g.mu.Unlock()
	g.queues.forget(cl.ID)
}

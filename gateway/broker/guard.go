package broker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/topic"
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
	}
}

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

// refuseConnect answers a CONNECT with code (its 3.1.1 return code for a 3.1.1 client)
// and returns the error that makes mochi close the connection.
func (g *guard) refuseConnect(cl *mqtt.Client, code packets.Code, reason ingest.Reason, err error) error {
	g.refusals.Add(reason, cl.ID, "", fmt.Errorf("connection from %s: %w", cl.Net.Remote, err))
	if cl.Properties.ProtocolVersion < 5 {
		// mochi passes v5 codes it cannot map through to 3.1.1 clients (0x87 has no
		// meaning there), and maps "bad user name or password" to 0x05.
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3ConnackCode(code)})
	} else {
		_ = g.srv.SendConnack(cl, code, false, nil)
	}
	return code
}

// v3ConnackCode maps a CONNACK reason code of MQTT 5 to a return code of MQTT 3.1.1.
func v3ConnackCode(c packets.Code) byte {
	switch c {
	case packets.ErrUnsupportedProtocolVersion:
		return 0x01
	case packets.ErrClientIdentifierNotValid:
		return 0x02 // identifier rejected
	case packets.ErrServerUnavailable, packets.ErrServerBusy, packets.ErrConnectionRateExceeded:
		return 0x03 // server unavailable: try again later
	case packets.ErrBadUsernameOrPassword:
		return 0x04 // bad user name or password
	default:
		return 0x05 // not authorized
	}
}

// OnConnect decides whether a CONNECT may log in, and opens the client's session. Its
// password is checked before anything that depends on who the user is (issue 21): the
// client id it claims, its will, its sessions. Until then the only answers are about the
// syntax of the identity, and "bad user name or password".
func (g *guard) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	var src netip.Prefix
	if lc := baseConn(cl.Net.Conn); lc != nil {
		lc.markConnected()
		id := cl.ID
		lc.clientID.Store(&id)
		src = lc.key
	}
	user := string(pk.Connect.Username)
	const rule = "1 to 256 bytes without '+', '#', '/', control characters or a leading '$'"
	if reservedClientIDs[cl.ID] || !config.IdentityOK(cl.ID) {
		return g.refuseConnect(cl, packets.ErrClientIdentifierNotValid, ReasonBadIdentity,
			fmt.Errorf("client id %q is reserved or not %s", cl.ID, rule))
	}
	if user != "" && !config.IdentityOK(user) {
		return g.refuseConnect(cl, packets.ErrBadUsernameOrPassword, ReasonBadIdentity,
			fmt.Errorf("user name %q is not %s", user, rule))
	}

	var acc *account
	pub, sub := g.cfg.Anonymous.Publish, g.cfg.Anonymous.Subscribe
	if user == "" {
		if !g.cfg.AllowAnonymous || len(pk.Connect.Password) > 0 {
			return g.refuseConnect(cl, packets.ErrBadUsernameOrPassword, ReasonAuthFailed,
				errors.New("anonymous access is off (broker.allow_anonymous)"))
		}
	} else {
		var err error
		acc, err = g.creds.check(user, pk.Connect.Password, src)
		switch {
		case errors.Is(err, errAuthBackoff):
			return g.refuseConnect(cl, packets.ErrConnectionRateExceeded, ReasonAuthBackoff, err)
		case errors.Is(err, errAuthBusy):
			return g.refuseConnect(cl, packets.ErrServerBusy, ReasonAuthBusy, err)
		case err != nil:
			return g.refuseConnect(cl, packets.ErrBadUsernameOrPassword, ReasonAuthFailed, err)
		}
		pub, sub = acc.publish, acc.subscribe
	}

	// The user is who it says: now what it claims.
	if pk.Connect.WillFlag {
		if code, err := g.willOK(cl, pk, user, pub); err != nil {
			return g.refuseConnect(cl, code, ReasonWillDenied, err)
		}
	}
	if err := g.claim(cl, user, acc, persistent(cl)); err != nil {
		if errors.Is(err, errSessionLimit) {
			return g.refuseConnect(cl, packets.ErrQuotaExceeded, ReasonSessionLimit, err)
		}
		return g.refuseConnect(cl, packets.ErrNotAuthorized, ReasonTakeover, err)
	}
	s := &session{
		user:      user,
		publish:   expand(pub, user, cl.ID),
		subscribe: expand(sub, user, cl.ID),
		meter:     g.meters.get(user, cl.ID, g.clock.Now()),
	}
	g.mu.Lock()
	if old := g.byID[cl.ID]; old != nil && old != cl {
		delete(g.sessions, old) // its session is being taken over by the same user
	}
	g.sessions[cl] = s
	g.byID[cl.ID] = cl
	g.mu.Unlock()
	if g.onConnected != nil {
		g.onConnected(cl.ID)
	}
	return nil
}

// willOK checks a will at CONNECT: topic within the user's publish grants and the topic
// limits, payload within max_will_bytes.
func (g *guard) willOK(cl *mqtt.Client, pk packets.Packet, user string, publish []string) (packets.Code, error) {
	tp := pk.Connect.WillTopic
	if err := g.topicOK(tp); err != nil {
		return packets.ErrNotAuthorized, err
	}
	if !covered(expand(publish, user, cl.ID), tp) {
		return packets.ErrNotAuthorized, fmt.Errorf("will topic %q is not in the publish grants of %s", tp, userName(user))
	}
	payload := pk.Connect.WillPayload
	if n := len(payload); n > int(g.cfg.MaxWillBytes) {
		return packets.ErrPacketTooLarge, fmt.Errorf("will payload of %d bytes is over max_will_bytes (%s)", n, g.cfg.MaxWillBytes)
	}
	if pk.Connect.WillRetain && len(payload) == 0 {
		return packets.CodeSuccess, nil // clears a retained message: nothing to decode or count
	}
	if g.checkPayload != nil {
		if err := g.checkPayload(tp, payload); err != nil {
			return packets.ErrPayloadFormatInvalid, fmt.Errorf("will payload on %q: %w", tp, err)
		}
	}
	if pk.Connect.WillRetain {
		if err := g.retained.check(user, tp, int64(len(payload))); err != nil {
			return packets.ErrQuotaExceeded, fmt.Errorf("retained will on %q: %w", tp, err)
		}
	}
	return packets.CodeSuccess, nil
}

// OnWill hands a will that fires to the broker, which publishes it as a publish of its
// client (wills.go); mochi gets an empty will back.
func (g *guard) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if g.onWill == nil {
		return will, nil
	}
	return g.onWill(cl, will), nil
}

var errSessionLimit = errors.New("persistent sessions limit reached")

// claim checks that the client id is user's to use (users[].client_ids, user names, the
// sessions and bindings of other users) and binds it to user; for a persistent session,
// that the user and the broker have room for one more (max_sessions_per_user,
// max_sessions), and counts it.
func (g *guard) claim(cl *mqtt.Client, user string, acc *account, persist bool) error {
	id := cl.ID
	var own []string
	if acc != nil {
		own = acc.clientIDs
	}
	mine := matchClientID(own, user, id)
	if len(own) > 0 && !mine {
		return fmt.Errorf("client id %q is outside the client_ids of %s", id, userName(user))
	}
	if !mine {
		for _, other := range g.creds.users {
			if other.name != user && matchClientID(other.clientIDs, other.name, id) {
				return fmt.Errorf("client id %q is reserved by the client_ids of user %s", id, other.name)
			}
		}
		if other := g.creds.users[id]; other != nil && id != user {
			return fmt.Errorf("client id %q is the name of another user", id)
		}
	}
	now := g.clock.Now()
	g.mu.Lock()
	if old, ok := g.srv.Clients.Get(id); ok && string(old.Properties.Username) != user {
		g.mu.Unlock()
		return fmt.Errorf("client id %q belongs to a session of another user", id)
	}
	if cur := g.byID[id]; cur != nil && cur != cl {
		if s := g.sessions[cur]; s != nil && s.user != user {
			g.mu.Unlock()
			return fmt.Errorf("client id %q belongs to a connection of another user", id)
		}
	}
	var ops []bindingOp
	if !mine && id != user {
		if owner, ok := g.bindings.owner(id, now); ok && owner != user {
			g.mu.Unlock()
			return fmt.Errorf("client id %q is bound to another user (its first; README \"Client ids belong to users\")", id)
		}
	}
	if _, has := g.persist[user][id]; persist && !has {
		if n := len(g.persist[user]); n >= g.cfg.MaxSessionsPerUser {
			g.mu.Unlock()
			return fmt.Errorf("%w: %s holds %d (max_sessions_per_user)", errSessionLimit, userName(user), n)
		}
		if g.persistN >= g.cfg.MaxSessions {
			g.mu.Unlock()
			return fmt.Errorf("%w: %d held (max_sessions)", errSessionLimit, g.persistN)
		}
	}
	if persist {
		g.addPersistLocked(user, id)
	} else {
		g.dropPersistLocked(user, id) // a clean start ends a stored session
	}
	if !mine && id != user {
		ops = g.bindings.bind(id, user, now, g.heldLocked)
	}
	g.mu.Unlock()
	if g.saveBindings != nil && len(ops) > 0 {
		g.saveBindings(ops)
	}
	return nil
}

func (g *guard) addPersistLocked(user, id string) {
	ids := g.persist[user]
	if ids == nil {
		ids = map[string]struct{}{}
		g.persist[user] = ids
	}
	if _, ok := ids[id]; !ok {
		ids[id] = struct{}{}
		g.persistN++
	}
}

func (g *guard) dropPersistLocked(user, id string) {
	if ids := g.persist[user]; ids != nil {
		if _, ok := ids[id]; ok {
			delete(ids, id)
			g.persistN--
			if len(ids) == 0 {
				delete(g.persist, user)
			}
		}
	}
}

// Sessions returns the persistent sessions counted.
func (g *guard) persistentSessions() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.persistN
}

// restore opens the guard's session for a persistent session mochi restored from the
// store at start, so that it gets what its subscriptions deliver while its client is
// offline, and counts it against the session limits. A session whose user is gone from
// the config gets nothing.
func (g *guard) restore(cl *mqtt.Client) {
	user := string(cl.Properties.Username)
	pub, sub := g.cfg.Anonymous.Publish, g.cfg.Anonymous.Subscribe
	if acc := g.creds.users[user]; acc != nil {
		pub, sub = acc.publish, acc.subscribe
	} else if user != "" || !g.cfg.AllowAnonymous {
		return
	}
	s := &session{user: user, publish: expand(pub, user, cl.ID), subscribe: expand(sub, user, cl.ID),
		meter: g.meters.get(user, cl.ID, g.clock.Now())}
	var ops []bindingOp
	g.mu.Lock()
	if g.byID[cl.ID] != nil {
		g.mu.Unlock()
		return // its client is back already
	}
	g.sessions[cl] = s
	g.byID[cl.ID] = cl
	g.addPersistLocked(user, cl.ID)
	if _, ok := g.bindings.owner(cl.ID, g.clock.Now()); !ok && cl.ID != user {
		ops = g.bindings.bind(cl.ID, user, g.clock.Now(), g.heldLocked)
	}
	g.mu.Unlock()
	if g.saveBindings != nil && len(ops) > 0 {
		g.saveBindings(ops)
	}
}

// heldLocked reports whether a client id is in use: connected, or a stored session. g.mu is
// held.
func (g *guard) heldLocked(id string) bool {
	if g.byID[id] != nil {
		return true
	}
	_, ok := g.srv.Clients.Get(id)
	return ok
}

// matchClientID reports whether one of the client_ids patterns of user matches id.
func matchClientID(patterns []string, user, id string) bool {
	for _, p := range patterns {
		if config.MatchClientID(p, user, id) {
			return true
		}
	}
	return false
}

// OnConnectAuthenticate lets in the clients OnConnect opened a session for.
func (g *guard) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return g.session(cl) != nil
}

// OnACLCheck allows a subscription, or the delivery of a message on a topic, covered by a
// subscribe grant (default deny). Publishes pass here and are checked in OnPublish: mochi
// v2.7.9 disconnects a 3.1.1 client whose QoS 1/2 publish this hook denies, where SPEC §2
// wants no PUBACK and the connection kept.
func (g *guard) OnACLCheck(cl *mqtt.Client, tp string, write bool) bool {
	s := g.session(cl)
	if s == nil || tp == "" {
		return false
	}
	if write {
		return true
	}
	if !covered(s.subscribe, shareFilter(tp)) {
		return false
	}
	// A delivery (or a subscription being checked): the subscriber's queue must have room.
	return s.subscribing.Load() || g.queues.room(cl.ID)
}

// OnSubscribe refuses the filters that are too long or deep, outside the subscribe grants,
// or over max_subscriptions_per_client, by replacing them with an invalid filter.
func (g *guard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := g.session(cl)
	if s == nil || cl.Net.Inline {
		return pk
	}
	s.subscribing.Store(true) // until OnSubscribed: mochi checks the filters with OnACLCheck
	s.pendingSub = make([]ingest.Reason, len(pk.Filters))
	count := cl.State.Subscriptions.Len()
	for i, sub := range pk.Filters {
		f := shareFilter(sub.Filter)
		var err error
		switch {
		case topic.ValidFilter(f) != nil:
			continue // mochi refuses it itself
		case g.topicOK(f) != nil:
			s.pendingSub[i], err = ingest.ReasonTopicInvalid, g.topicOK(f)
		case !covered(s.subscribe, f):
			s.pendingSub[i], err = ingest.ReasonNotAuthorized, fmt.Errorf("subscription outside the grants of %s", userName(s.user))
		default:
			if _, exists := cl.State.Subscriptions.Get(sub.Filter); exists {
				continue
			}
			if count >= g.cfg.MaxSubscriptionsPerClient {
				s.pendingSub[i], err = ReasonSubscription, fmt.Errorf("max_subscriptions_per_client (%d) reached", g.cfg.MaxSubscriptionsPerClient)
				break
			}
			count++
		}
		if s.pendingSub[i] != "" {
			g.refusals.Add(s.pendingSub[i], cl.ID, sub.Filter, err)
			pk.Filters[i].Filter = refusedFilter
		}
	}
	return pk
}

// OnSubscribed puts the true reason of each refused filter into the SUBACK of an MQTT 5
// client (3.1.1 has only "failure", 0x80, which mochi already set). It relies on mochi
// v2.7.9 passing the SUBACK's own reason code slice; TestSubscribeReasonCodes checks it.
func (g *guard) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	s := g.session(cl)
	if s == nil {
		return
	}
	s.subscribing.Store(false)
	if s.pendingSub == nil {
		return
	}
	if cl.Properties.ProtocolVersion == 5 {
		for i, r := range s.pendingSub {
			if r == "" || i >= len(codes) {
				continue
			}
			switch r {
			case ingest.ReasonTopicInvalid:
				codes[i] = packets.ErrTopicFilterInvalid.Code
			case ReasonSubscription:
				codes[i] = packets.ErrQuotaExceeded.Code
			default:
				codes[i] = packets.ErrNotAuthorized.Code
			}
		}
	}
	s.pendingSub = nil
}

// OnPacketRead meters every packet a client initiates. A client over its rate is paced: its
// read goroutine (this call) waits for the token, so its socket is read no faster than
// max_rate_per_client and TCP pushes back on it (SPEC §2: slowed down, not refused); no
// other client waits. A client that stays over its rate without a pause for flood_after is
// disconnected as a flood.
func (g *guard) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Subscribe, packets.Unsubscribe, packets.Pingreq, packets.Auth:
	default:
		return pk, nil // acknowledgements of what the broker sent
	}
	s := g.session(cl)
	if s == nil {
		return pk, nil // the CONNECT itself, or a client being torn down
	}
	wait, flood := s.meter.pace(pk.FixedHeader.Type == packets.Publish, g.clock.Now(), g.cfg.FloodAfter.D())
	if flood {
		g.refusals.Add(ReasonFlood, cl.ID, "", fmt.Errorf("over max_rate_per_client (%g/s) without a pause for flood_after (%v): disconnected", g.cfg.MaxRatePerClient, g.cfg.FloodAfter))
		if cl.Properties.ProtocolVersion == 5 {
			_ = g.srv.DisconnectClient(cl, packets.ErrMessageRateTooHigh)
		} else {
			cl.Stop(packets.ErrMessageRateTooHigh) // 3.1.1 has no server DISCONNECT
		}
		// mochi v2.7.9 ignores any other error from OnPacketRead and would process the packet.
		return pk, packets.ErrRejectPacket
	}
	if wait > 0 {
		var closed <-chan struct{} // nil (never) without a socket of ours
		if lc := baseConn(cl.Net.Conn); lc != nil {
			closed = lc.done()
		}
		select {
		case <-g.clock.After(wait):
		case <-closed: // disconnected or shutting down: mochi drops the packet
			return pk, packets.ErrRejectPacket
		}
	}
	if pk.FixedHeader.Type == packets.Publish && pk.TopicName != "" && !mqtt.IsValidFilter(pk.TopicName, true) {
		// mochi would drop it before any hook, without an answer (and a QoS 1/2 one would
		// stay in the client's in-flight window for good): $SYS/... is the broker's, and a
		// topic name holds no wildcard. An error here would close the connection, so the
		// topic is swapped for one mochi lets through to OnPublish, which refuses it.
		s.invalidTopic = pk.TopicName
		pk.TopicName = invalidTopicStandIn
	}
	return pk, nil
}

// invalidTopicStandIn replaces a topic name mochi would drop silently until OnPublish
// refuses the publish (never delivered: the guard refuses it first).
const invalidTopicStandIn = "edgegate/invalid-topic"

// OnPublish refuses, before the ingest hook sees them, publishes outside the client's
// grants (default deny), on topics too long or deep, and retained messages over the
// retained quotas (overall and per user).
func (g *guard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := g.session(cl)
	if s == nil {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("no session"))
	}
	if s.invalidTopic != "" {
		pk.TopicName, s.invalidTopic = s.invalidTopic, ""
		return pk, g.refuse(cl, pk, ingest.ReasonTopicInvalid, fmt.Errorf("topic %q: no client may publish to $SYS/... or to a name with + or #", pk.TopicName))
	}
	if !covered(s.publish, pk.TopicName) {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("publish outside the grants of %s", userName(s.user)))
	}
	if err := g.topicOK(pk.TopicName); err != nil {
		return pk, g.refuse(cl, pk, ingest.ReasonTopicInvalid, err)
	}
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 {
		undo, err := g.retained.reserve(s.user, pk.TopicName, int64(len(pk.Payload)))
		if err != nil {
			return pk, g.refuse(cl, pk, ingest.ReasonOverQuota, err)
		}
		s.retainUndo = undo // until OnRetainMessage, or undone by OnPacketProcessed
	}
	return pk, nil
}

// OnRetainMessage keeps the reservation of a retained publish mochi retained, or forgets
// the retained message an empty payload cleared.
func (g *guard) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if len(pk.Payload) == 0 {
		g.retained.clear(pk.TopicName)
		return
	}
	if s := g.session(cl); s != nil && !cl.Net.Inline {
		s.retainUndo = nil
	}
}

// OnPacketProcessed undoes the reservation of a retained publish that was refused after
// the guard let it pass (by the ingest hook: malformed, buffer full...).
func (g *guard) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return
	}
	if s := g.session(cl); s != nil && s.retainUndo != nil {
		s.retainUndo()
		s.retainUndo = nil
	}
}

// OnRetainedExpired forgets a retained message mochi expired.
func (g *guard) OnRetainedExpired(topic string) { g.retained.clear(topic) }

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

// OnQosPublish counts a QoS 1/2 message sent or queued to a subscriber.
func (g *guard) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish {
		return // inline clients queue nothing; PUBREC/PUBCOMP are inbound QoS 2 state
	}
	g.queues.add(cl.ID, pk.PacketID, queueCost(pk))
}

// OnQosComplete forgets a message its subscriber acknowledged.
func (g *guard) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish || cl.IsTakenOver() {
		return // a taken-over connection's messages go on in its successor
	}
	g.queues.done(cl.ID, pk.PacketID)
}

// OnQosDropped forgets a message mochi gave up on (expired, or its clean session ended).
func (g *guard) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || cl.IsTakenOver() {
		return
	}
	g.queues.done(cl.ID, pk.PacketID)
}

// OnPacketEncode tells MQTT 5 clients the largest packet the broker accepts (mochi v2.7.9
// does not put it in the CONNACK), so that a compliant client refuses to send a larger
// one rather than being disconnected for it.
func (g *guard) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == 0 {
		pk.Properties.MaximumPacketSize = uint32(g.cfg.MaxPacketBytes)
	}
	return pk
}

// topicOK applies max_topic_bytes and max_topic_levels to a topic name or filter.
func (g *guard) topicOK(t string) error {
	if len(t) > g.cfg.MaxTopicBytes {
		return fmt.Errorf("topic of %d bytes is over max_topic_bytes (%d)", len(t), g.cfg.MaxTopicBytes)
	}
	if n := strings.Count(t, "/") + 1; n > g.cfg.MaxTopicLevels {
		return fmt.Errorf("topic of %d levels is over max_topic_levels (%d)", n, g.cfg.MaxTopicLevels)
	}
	return nil
}

// covered reports whether one of the grants covers the topic name or filter.
func covered(grants []string, t string) bool {
	if t == "" {
		return false
	}
	for _, g := range grants {
		if topic.Covers(g, t) {
			return true
		}
	}
	return false
}

// expand substitutes the identity into grant filters (both checked by OnConnect).
func expand(grants []string, user, clientID string) []string {
	out := make([]string, len(grants))
	for i, g := range grants {
		out[i] = config.ExpandGrant(g, user, clientID)
	}
	return out
}

// shareFilter strips the "$share/<group>/" of a shared subscription: grants apply to the
// topics it delivers.
func shareFilter(f string) string {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, inner, ok := strings.Cut(rest, "/"); ok {
			return inner
		}
	}
	return f
}

func userName(u string) string {
	if u == "" {
		return "anonymous clients"
	}
	return "user " + u
}

package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/gateway/topic"
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

	mu       sync.RWMutex // guards sessions and byID
	sessions map[*mqtt.Client]*session
	byID     map[string]*mqtt.Client

	retainMu sync.Mutex          // guards retained
	retained map[string]struct{} // topics with a retained message from a client (mochi's own $SYS ones aside)
}

// session is what the guard knows of one authenticated client.
type session struct {
	user      string   // "" for anonymous
	publish   []string // grant filters with the user name and client id substituted
	subscribe []string

	meter *meter // shared with later connections of the same identity

	// Read goroutine only.
	pendingSub []ingest.Reason
}

// Client ids nobody may connect with: the broker's own inline clients.
var reservedClientIDs = map[string]bool{SensorClientID: true, InternalClientID: true, RelayClientID: true, mqtt.InlineClientId: true}

// refusedFilter replaces a subscription filter the guard refuses: mochi sees an invalid
// filter and subscribes nothing; OnSubscribed then puts the true reason code in the SUBACK.
const refusedFilter = "#/refused"

func newGuard(cfg config.Broker, refusals *Refusals, c clock.Clock, log *slog.Logger) *guard {
	return &guard{
		cfg: cfg, creds: newCredentials(cfg.Users), refusals: refusals, clock: c, log: log,
		refuse: func(cl *mqtt.Client, pk packets.Packet, reason ingest.Reason, err error) error {
			refusals.Add(reason, cl.ID, pk.TopicName, err)
			return packets.ErrRejectPacket
		},
		sessions: map[*mqtt.Client]*session{},
		byID:     map[string]*mqtt.Client{},
		retained: map[string]struct{}{},
		meters:   newMeters(cfg.MaxRatePerClient, 4*cfg.MaxClients),
	}
}

func (g *guard) ID() string { return "edgegate-guard" }

func (g *guard) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribe,
		mqtt.OnSubscribed, mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnDisconnect,
		mqtt.OnClientExpired, mqtt.OnPacketEncode, mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
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

// refuseConnect answers a CONNECT with code (mochi maps it for 3.1.1 clients) and returns
// the error that makes mochi close the connection.
func (g *guard) refuseConnect(cl *mqtt.Client, code packets.Code, reason ingest.Reason, err error) error {
	g.refusals.Add(reason, cl.ID, "", fmt.Errorf("connection from %s: %w", cl.Net.Remote, err))
	_ = g.srv.SendConnack(cl, code, false, nil)
	return code
}

// OnConnect checks the identity a CONNECT claims, before its password is checked:
// characters that could widen a grant, reserved client ids, a client id held by another
// user's session, and a will topic outside the user's publish grants.
func (g *guard) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if lc := baseConn(cl.Net.Conn); lc != nil {
		lc.connected.Store(true)
		id := cl.ID
		lc.clientID.Store(&id)
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
	if old, ok := g.srv.Clients.Get(cl.ID); ok && string(old.Properties.Username) != user {
		return g.refuseConnect(cl, packets.ErrNotAuthorized, ReasonTakeover,
			fmt.Errorf("client id %q belongs to a session of another user", cl.ID))
	}
	if pk.Connect.WillFlag {
		if err := g.topicOK(pk.Connect.WillTopic); err != nil {
			return g.refuseConnect(cl, packets.ErrNotAuthorized, ReasonWillDenied, err)
		}
		publish, known := g.cfg.Anonymous.Publish, user == ""
		if acc := g.creds.users[user]; acc != nil {
			publish, known = acc.publish, true
		}
		// An unknown user is refused by OnConnectAuthenticate next.
		if known && !covered(expand(publish, user, cl.ID), pk.Connect.WillTopic) {
			return g.refuseConnect(cl, packets.ErrNotAuthorized, ReasonWillDenied,
				fmt.Errorf("will topic %q is not in the publish grants of %s", pk.Connect.WillTopic, userName(user)))
		}
	}
	return nil
}

// OnConnectAuthenticate checks the password (or allows anonymous access when configured)
// and opens the client's session with its grants.
func (g *guard) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	var pub, sub []string
	if user == "" {
		if !g.cfg.AllowAnonymous || len(pk.Connect.Password) > 0 {
			g.refusals.Add(ReasonAuthFailed, cl.ID, "", fmt.Errorf("connection from %s: anonymous access is off (broker.allow_anonymous)", cl.Net.Remote))
			return false
		}
		pub, sub = g.cfg.Anonymous.Publish, g.cfg.Anonymous.Subscribe
	} else {
		acc, err := g.creds.check(user, pk.Connect.Password)
		if err != nil {
			g.refusals.Add(ReasonAuthFailed, cl.ID, "", fmt.Errorf("connection from %s: %w", cl.Net.Remote, err))
			return false
		}
		pub, sub = acc.publish, acc.subscribe
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
	return true
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
	return covered(s.subscribe, shareFilter(tp))
}

// OnSubscribe refuses the filters that are too long or deep, outside the subscribe grants,
// or over max_subscriptions_per_client, by replacing them with an invalid filter.
func (g *guard) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s := g.session(cl)
	if s == nil || cl.Net.Inline {
		return pk
	}
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
	if s == nil || s.pendingSub == nil {
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
	return pk, nil
}

// OnPublish refuses, before the ingest hook sees them, publishes outside the client's grants (default deny), on topics too long or deep, and new retained
// messages over max_retained_messages.
func (g *guard) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := g.session(cl)
	if s == nil {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("no session"))
	}
	if !covered(s.publish, pk.TopicName) {
		return pk, g.refuse(cl, pk, ingest.ReasonNotAuthorized, fmt.Errorf("publish outside the grants of %s", userName(s.user)))
	}
	if err := g.topicOK(pk.TopicName); err != nil {
		return pk, g.refuse(cl, pk, ingest.ReasonTopicInvalid, err)
	}
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 {
		g.retainMu.Lock()
		_, exists := g.retained[pk.TopicName]
		full := len(g.retained) >= g.cfg.MaxRetainedMessages
		g.retainMu.Unlock()
		if !exists && full {
			return pk, g.refuse(cl, pk, ingest.ReasonOverQuota, fmt.Errorf("max_retained_messages (%d) reached", g.cfg.MaxRetainedMessages))
		}
	}
	return pk, nil
}

// OnRetainMessage tracks the retained topics (an empty payload clears one).
func (g *guard) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	g.retainMu.Lock()
	defer g.retainMu.Unlock()
	if len(pk.Payload) > 0 {
		g.retained[pk.TopicName] = struct{}{}
	} else {
		delete(g.retained, pk.TopicName)
	}
}

// OnRetainedExpired forgets a retained message mochi expired.
func (g *guard) OnRetainedExpired(topic string) {
	g.retainMu.Lock()
	defer g.retainMu.Unlock()
	delete(g.retained, topic)
}

// OnDisconnect forgets a client whose session ends with its connection, or was taken over.
func (g *guard) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire || cl.IsTakenOver() {
		g.drop(cl)
	}
}

// OnClientExpired forgets a persistent session mochi expired.
func (g *guard) OnClientExpired(cl *mqtt.Client) { g.drop(cl) }

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

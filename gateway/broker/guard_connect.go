// The guard's connection side: CONNECT, identities and client ids, wills, and the
// persistent sessions bound to their users.

package broker

import (
	"errors"
	"fmt"
	"net/netip"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
)

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
	if persist {
		// The limits count the sessions restored at start: wait until they are.
		select {
		case <-g.restored:
		default:
			g.waitRestored.Add(1)
			<-g.restored
			g.waitRestored.Add(-1)
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

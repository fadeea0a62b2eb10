// Package broker runs the embedded mochi MQTT broker, edgegate's local topic layer (SPEC
// §2): TCP, TLS and WebSocket listeners with connection limits, the guard hook
// (authentication, ACLs, per-client limits) and the ingest hook that makes every accepted
// publish durable before its PUBACK.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/bindhint"
)

// Client ids of the gateway's own inline clients.
const (
	// SensorClientID publishes readings of local sensors (already ingested by Publish).
	SensorClientID = "edgegate-sensors"
	// InternalClientID publishes what the gateway derives (pipeline panes): never ingested.
	InternalClientID = "edgegate-internal"
	// RelayClientID delivers device publishes to local subscribers once they are stored
	// (the ingest hook's acker): already ingested.
	RelayClientID = "edgegate-relay"
)

// receiveMaximum is how many QoS 1/2 publishes a client may have unacknowledged. The
// ingest hook keeps up to ackDepth of them waiting for the store at once; the rest wait in
// the socket.
const receiveMaximum = 256

// Broker is the embedded broker with edgegate's hooks.
type Broker struct {
	srv      *mqtt.Server
	cfg      config.Broker
	ingest   *IngestHook
	guard    *guard
	tls      []*tls.Config // per listener; nil for plain ones
	limiter  *connLimiter
	sessions *sessionHook // nil without a store
	wills    *wills
	log      *slog.Logger
	sensors  *mqtt.Client
	internal *mqtt.Client
	relay    *mqtt.Client

	mu     sync.Mutex // guards addrs and closed
	addrs  []string
	closed bool

	afterServe func() // tests: runs once mochi serves, before the restored sessions are counted
}

// New builds the broker: capabilities from the limits, hooks (the ingest hook from in and
// the broker's side of it: disconnects, deliveries, the refused log), TLS material (read
// now, so a bad certificate fails at start). Nothing listens until Start.
func New(cfg config.Broker, in IngestOptions, log *slog.Logger) (*Broker, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes) // checked before the packet is allocated
	caps.MaximumClients = int64(cfg.MaxClients)
	// Retained messages are force-deleted after this (mochi's default is 24 h). Not 0: mochi
	// also stamps its inbound QoS 2 state with it, and 0 would expire that at once.
	caps.MaximumMessageExpiryInterval = 7 * 24 * 3600
	// Sessions must not live forever on a 512 MiB board.
	caps.MaximumSessionExpiryInterval = uint32(cfg.MaxSessionExpiry.D() / time.Second)
	caps.MaximumClientWritesPending = int32(cfg.MaxQueuedMessages)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.ReceiveMaximum = receiveMaximum
	// No inbound topic aliases: mochi checks ACLs on the topic name before resolving an
	// alias, and each alias would hold a topic in memory.
	caps.TopicAliasMaximum = 0

	mlog := slog.New(mochiLogHandler(log.With("component", "mqtt").Handler(), time.Now))
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		InlineClient:           true,
		Logger:                 mlog,
		SysTopicResendInterval: 60,
	})
	b := &Broker{
		srv: srv, cfg: cfg,
		limiter: newConnLimiter(cfg.MaxClients, cfg.MaxConnectionsPerIP, cfg.MaxPendingConnections, cfg.MaxPendingPerIP),
		log:     log.With("component", "broker"),
	}
	b.limiter.rate = cfg.MaxConnectRatePerIP
	for i, l := range cfg.Listeners {
		var tc *tls.Config
		if l.TLS() {
			var err error
			if tc, err = config.LoadTLS(l); err != nil {
				return nil, fmt.Errorf("broker listener %d (%s %s): %w", i, l.Type, l.Address, err)
			}
		}
		b.tls = append(b.tls, tc)
	}
	side := brokerSide{
		disconnect: func(cl *mqtt.Client) { _ = srv.DisconnectClient(cl, packets.ErrUnspecifiedError) },
		deliver:    b.deliver,
		stats:      new(RefusedStats),
	}
	if in.Store != nil {
		rl, err := newRefusedLog(in.Store, cfg.RefusedLog, side.stats)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		if err := rl.trim(context.Background()); err != nil {
			return nil, fmt.Errorf("broker: refused log: %w", err)
		}
		side.refused = rl
	}
	ingest := newIngestHook(in, side, log)
	b.ingest = ingest
	b.guard = newGuard(cfg, ingest.refusals, ingest.clock, log.With("component", "broker"))
	b.guard.srv = srv
	if err := srv.AddHook(b.guard, nil); err != nil { // before ingest: its refusals come first
		return nil, fmt.Errorf("broker: guard hook: %w", err)
	}
	if err := srv.AddHook(ingest, nil); err != nil {
		return nil, fmt.Errorf("broker: ingest hook: %w", err)
	}
	if ingest.store != nil {
		b.sessions = newSessionHook(ingest.store, ingest.clock, cfg.MaxSessionExpiry.D(), log.With("component", "sessions"))
		b.sessions.srv = srv
		if err := srv.AddHook(b.sessions, nil); err != nil {
			return nil, fmt.Errorf("broker: session hook: %w", err)
		}
		sh := b.sessions
		sh.onRestore = b.guard.queues.add
		b.guard.saveBindings = func(ops []bindingOp) {
			w := make([]sessionOp, len(ops))
			for i, o := range ops {
				w[i] = o.sessionOp()
			}
			sh.enqueue(w...)
		}
	}
	b.sensors = srv.NewClient(nil, mqtt.LocalListener, SensorClientID, true)
	b.internal = srv.NewClient(nil, mqtt.LocalListener, InternalClientID, true)
	b.relay = srv.NewClient(nil, mqtt.LocalListener, RelayClientID, true)
	b.guard.refuse = ingest.refuseForGuard
	b.wills = newWills(b, cfg.MaxClients+cfg.MaxSessions)
	b.guard.onWill = b.wills.fire
	b.guard.onConnected = b.wills.cancel
	b.guard.checkPayload = ingest.checkPayload
	return b, nil
}

// Ingest returns the ingest hook New built (its counters, reloads of the routes).
func (b *Broker) Ingest() *IngestHook { return b.ingest }

// Start opens every listener and starts serving. A listener that cannot bind fails Start
// with the address in the error, and closes what was opened.
func (b *Broker) Start() error {
	for i, l := range b.cfg.Listeners {
		ln, err := bindhint.Listen(bindhint.Listener{
			What: fmt.Sprintf("broker listener %d (%s)", i, l.Type), Key: fmt.Sprintf("broker.listeners[%d].address", i), Addr: l.Address,
		})
		if err != nil {
			b.Close()
			return err // names the listener, the address and the fix
		}
		lim := &limitedListener{
			Listener: ln, lim: b.limiter, connectTimeout: b.cfg.ConnectTimeout.D(), writeTimeout: b.cfg.WriteTimeout.D(),
			refusals: b.ingest.refusals, conns: map[*limitedConn]struct{}{},
		}
		id := fmt.Sprintf("%s-%d", l.Type, i)
		var ml listeners.Listener
		if l.Type == "ws" {
			ml = newWSListener(id, lim, b.tls[i], b.cfg.ConnectTimeout.D(), b.disconnect, b.log)
		} else {
			ml = newNetListener(id, lim, b.tls[i], b.disconnect, b.log)
		}
		if err := b.srv.AddListener(ml); err != nil {
			ln.Close()
			b.Close()
			return fmt.Errorf("broker: listen on %s: %w", l.Address, err)
		}
		b.mu.Lock()
		b.addrs = append(b.addrs, ln.Addr().String())
		b.mu.Unlock()
	}
	if b.sessions != nil {
		b.guard.mu.Lock()
		stale, err := b.guard.bindings.load(b.ingest.store, b.ingest.clock.Now())
		b.guard.mu.Unlock()
		if err != nil {
			b.Close()
			return fmt.Errorf("broker: client id bindings: %w", err)
		}
		b.sessions.start() // Serve restores the stored sessions, and may forget expired ones
		b.guard.saveBindings(stale)
	}
	b.wills.start()
	if err := b.srv.Serve(); err != nil {
		b.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	if b.afterServe != nil {
		b.afterServe()
	}
	// mochi serves the listeners before this counts the sessions it restored: CONNECTs
	// asking for a persistent session wait until then (guard.claim), or the limits would
	// let in one more per session not yet counted.
	for _, cl := range b.srv.Clients.GetAll() { // sessions restored from the store
		if !cl.Net.Inline {
			b.guard.restore(cl)
		}
	}
	b.guard.restoreDone()
	if !b.cfg.AllowAnonymous && len(b.cfg.Users) == 0 {
		b.log.Warn("no broker.users and allow_anonymous is false: no MQTT client can connect (local sensors still work)")
	}
	b.log.Info("broker listening", "addresses", b.Addrs())
	return nil
}

// Addrs returns the bound addresses of the listeners, in config order (with real ports
// for ":0").
func (b *Broker) Addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.addrs...)
}

// Refusals exposes the refusal counters (metrics).
func (b *Broker) Refusals() *Refusals { return b.ingest.refusals }

// Publish ingests a locally produced message (a sensor reading) exactly as a device publish
// would be — routed, decoded, deduplicated, durably appended — and then delivers it to local
// subscribers. It returns the ingest error, if any; nothing is delivered then.
func (b *Broker) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := b.ingest.IngestFrom(ctx, SourceSensor, topic, payload); err != nil {
		return err
	}
	return b.inject(b.sensors, topic, payload)
}

// PublishLocal delivers a message to local subscribers without ingesting it: for what the
// gateway derives from ingested data (pipeline panes), which has its own log.
func (b *Broker) PublishLocal(topic string, payload []byte) error {
	return b.inject(b.internal, topic, payload)
}

func (b *Broker) inject(cl *mqtt.Client, topic string, payload []byte) error {
	return b.injectPacket(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
}

func (b *Broker) injectPacket(cl *mqtt.Client, pk packets.Packet) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errors.New("broker: closed")
	}
	return b.srv.InjectPacket(cl, pk)
}

// deliver hands a stored device publish to local subscribers as mochi would have: same
// QoS and MQTT 5 properties. Its origin becomes the relay client, so a subscription with
// No Local does not filter it. (Retained publishes never come here: the ingest hook
// stores them synchronously and lets mochi deliver and retain them.)
//
// Nothing is injected when no one subscribes to the topic, the usual case for readings:
// the injection would run every hook and publish check again to find nobody. (A
// subscription made meanwhile misses it, as it would in mochi.)
func (b *Broker) deliver(pk packets.Packet) {
	if !b.subscribed(pk.TopicName) {
		return
	}
	pk.FixedHeader.Dup = false
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false // resolved already
	// Not refused once Close began: a publish acknowledged during the shutdown still goes
	// to the persistent sessions of offline subscribers (and so survives the restart).
	// Close waits for these deliveries before mochi stops (IngestHook.OnStopped).
	_ = b.srv.InjectPacket(b.relay, pk)
}

// subscribed reports whether any client, shared group or inline handler subscribes to topic.
func (b *Broker) subscribed(topic string) bool {
	subs := b.srv.Topics.Subscribers(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
}

// disconnect disconnects the clients of a listener that is shutting down (MQTT 5 clients
// are told 0x8B, server shutting down). mochi v2.7.9's own closer lists them with
// Clients.GetByListener, which takes the clients' read lock twice and deadlocks when a
// client connects or leaves in between (mochi-mqtt/server#488, fix still open upstream);
// GetAll takes it once.
func (b *Broker) disconnect(listener string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Server exposes the mochi server (for inline subscriptions).
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Close stops the listeners, disconnects clients and waits for their goroutines. Safe to
// call more than once.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.guard.creds.close() // before mochi waits for the connections: none may wait for a check
	b.guard.restoreDone()
	// mochi closes the listeners and waits for every read goroutine, then calls the ingest
	// hook's OnStopped, which waits until what they queued is answered (or its connection
	// is gone) and delivered, while the server still routes to sessions.
	err := b.srv.Close()
	b.ingest.acks.wait()
	b.wills.close()
	if b.sessions != nil {
		b.sessions.close() // writes what the disconnects changed
	}
	return err
}

// Sessions returns the counters of durable sessions (nil without a store).
func (b *Broker) Sessions() *SessionStats {
	if b.sessions == nil {
		return nil
	}
	return &b.sessions.stats
}

// SecurityStats are the figures of what bounds clients (README "Security"; metrics).
type SecurityStats struct {
	PendingConnections          int    // open, CONNECT not read yet
	PasswordChecks              uint64 // bcrypt checks for sources with no recent failure
	PasswordChecksFailing       uint64 // bcrypt checks for sources with recent failures
	PasswordCached              uint64 // passwords accepted on their cached digest
	BackedOffSources            int    // source addresses whose logins are refused unchecked now
	BackedOffUsers              int    // users whose logins from failing sources are
	ClientIDBindings            int
	QueuedMessages, QueuedBytes int64 // QoS 1/2 messages awaiting subscribers, and their cost
	QueueDropsSession           uint64
	QueueDropsTotal             uint64
	RetainedMessages            int
	RetainedBytes               int64
	WillsStored                 uint64
	WillsRefused                uint64
	WillsCancelled              uint64
}

// Security returns the figures of what bounds clients.
func (b *Broker) Security() SecurityStats {
	g := b.guard
	var s SecurityStats
	s.PendingConnections = b.limiter.Pending()
	s.PasswordChecks = g.creds.stats.Checks.Load()
	s.PasswordChecksFailing = g.creds.stats.Failing.Load()
	s.PasswordCached = g.creds.stats.Cached.Load()
	s.BackedOffSources, s.BackedOffUsers = g.creds.BackedOff()
	g.mu.RLock()
	s.ClientIDBindings = len(g.bindings.m)
	g.mu.RUnlock()
	q := &g.queues.stats
	s.QueuedMessages, s.QueuedBytes = q.Messages.Load(), q.Bytes.Load()
	s.QueueDropsSession, s.QueueDropsTotal = q.DroppedClient.Load(), q.DroppedTotal.Load()
	s.RetainedMessages, s.RetainedBytes = g.retained.Stats()
	w := &b.wills.stats
	s.WillsStored, s.WillsRefused, s.WillsCancelled = w.Stored.Load(), w.Refused.Load(), w.Cancelled.Load()
	return s
}

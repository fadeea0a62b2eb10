// Package broker runs the embedded mochi MQTT broker, edgegate's local topic layer, and its
// hooks: the ingest hook that makes every accepted publish durable before its PUBACK, and
// the connection policy.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
)

// Client ids of the gateway's own inline clients.
const (
	// SensorClientID publishes readings of local sensors (already ingested by Publish).
	SensorClientID = "edgegate-sensors"
	// InternalClientID publishes what the gateway derives (pipeline panes): never ingested.
	InternalClientID = "edgegate-internal"
)

// Broker is the embedded broker with edgegate's hooks.
type Broker struct {
	srv      *mqtt.Server
	cfg      config.Broker
	ingest   *IngestHook
	log      *slog.Logger
	sensors  *mqtt.Client
	internal *mqtt.Client

	mu     sync.Mutex // guards addrs and closed
	addrs  []string
	closed bool
}

// New builds the broker; nothing listens until Start.
func New(cfg config.Broker, ingest *IngestHook, log *slog.Logger) (*Broker, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes)
	caps.MaximumClients = int64(cfg.MaxClients)
	// Retained messages and sessions must not live forever on a 512 MiB board, nor be
	// force-deleted after mochi's 24 h default.
	caps.MaximumMessageExpiryInterval = 7 * 24 * 3600
	caps.MaximumSessionExpiryInterval = 24 * 3600
	// Pending writes per client: 8192 by default, each a whole packet in memory.
	caps.MaximumClientWritesPending = 1024
	caps.ReceiveMaximum = 256
	caps.MaximumInflight = 1024

	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		InlineClient:           true,
		Logger:                 slog.New(quietHandler{log.Handler()}).With("component", "mqtt"),
		SysTopicResendInterval: 60,
	})
	b := &Broker{srv: srv, cfg: cfg, ingest: ingest, log: log.With("component", "broker")}
	if err := srv.AddHook(newAuthHook(cfg), nil); err != nil {
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	if err := srv.AddHook(ingest, nil); err != nil {
		return nil, fmt.Errorf("broker: ingest hook: %w", err)
	}
	ingest.disconnect = func(cl *mqtt.Client) { _ = srv.DisconnectClient(cl, packets.ErrUnspecifiedError) }
	b.sensors = srv.NewClient(nil, mqtt.LocalListener, SensorClientID, true)
	b.internal = srv.NewClient(nil, mqtt.LocalListener, InternalClientID, true)
	return b, nil
}

// Start opens every listener and starts serving. A listener that cannot bind fails Start
// with the address in the error, and closes what was opened.
func (b *Broker) Start() error {
	for i, l := range b.cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			b.Close()
			return fmt.Errorf("broker: listen on %s: %w", l.Address, err)
		}
		addr := ln.Addr().String()
		id := fmt.Sprintf("%s-%d", l.Type, i)
		if err := b.srv.AddListener(listeners.NewNet(id, ln)); err != nil {
			ln.Close()
			b.Close()
			return fmt.Errorf("broker: listen on %s: %w", l.Address, err)
		}
		b.mu.Lock()
		b.addrs = append(b.addrs, addr)
		b.mu.Unlock()
	}
	if err := b.srv.Serve(); err != nil {
		b.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.log.Info("broker listening", "addresses", b.Addrs())
	return nil
}

// Addrs returns the bound addresses of the listeners (with real ports for ":0").
func (b *Broker) Addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.addrs...)
}

// Publish ingests a locally produced message (a sensor reading) exactly as a device publish
// would be — routed, decoded, deduplicated, durably appended — and then delivers it to local
// subscribers. It returns the ingest error, if any; nothing is delivered then.
func (b *Broker) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := b.ingest.Ingest(ctx, topic, payload); err != nil {
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
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errors.New("broker: closed")
	}
	return b.srv.InjectPacket(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	})
}

// Server exposes the mochi server (for inline subscriptions).
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Close stops the listeners and disconnects clients. Safe to call more than once.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	return b.srv.Close()
}

// Package mqttsink sends batches to an MQTT broker with paho (MQTT 3.1.1, QoS 1).
//
// The store, not paho's session, is the source of truth (DESIGN invariant 4): the client
// uses a clean session, no automatic reconnect and an in-memory store; a token counts as
// an ack only when no reconnect happened between publish and completion. Anything else is
// an error, and the uplink resends the same batch from the log.
package mqttsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/topic"
	"github.com/edgegate/edgegate/uplink"
)

// Timeouts of one connection attempt and of one batch's PUBACK.
const (
	connectTimeout = 10 * time.Second
	ackTimeout     = 30 * time.Second
)

// Sink publishes each batch as one QoS 1 message.
type Sink struct {
	name    string
	opts    *paho.ClientOptions
	topic   *topic.Template
	gateway string
	log     *slog.Logger

	mu     sync.Mutex // guards client
	client paho.Client
	epoch  atomic.Uint64 // connections made; a change during a publish voids its token
}

var _ uplink.Sink = (*Sink)(nil)

// New is the uplink.SinkFactory of the mqtt sink. It reads the password file but dials
// nothing: the first Send connects.
func New(cfg config.Uplink, gateway string, log *slog.Logger) (uplink.Sink, error) {
	t, err := topic.ParseTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("uplink %q: topic: %w", cfg.Name, err)
	}
	s := &Sink{name: cfg.Name, topic: t, gateway: gateway, log: log.With("component", "mqttsink", "uplink", cfg.Name)}
	o := paho.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(cfg.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(connectTimeout).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(ackTimeout).
		SetOrderMatters(false).
		SetOnConnectHandler(func(paho.Client) { s.epoch.Add(1) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Warn("upstream connection lost", "err", err)
		})
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: password_file: %w", cfg.Name, err)
		}
		o.SetPassword(strings.TrimRight(string(pw), "\r\n"))
	}
	s.opts = o
	return s, nil
}

// connect returns a connected client, dialing if needed.
func (s *Sink) connect(ctx context.Context) (paho.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil && s.client.IsConnectionOpen() {
		return s.client, nil
	}
	if s.client != nil {
		s.client.Disconnect(0)
		s.client = nil
	}
	c := paho.NewClient(s.opts)
	tok := c.Connect()
	if err := wait(ctx, tok, connectTimeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.client = c
	s.log.Info("connected upstream")
	return c, nil
}

// Send publishes b and returns once its PUBACK arrived on the same connection.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	c, err := s.connect(ctx)
	if err != nil {
		return err
	}
	epoch := s.epoch.Load()
	tp := s.topic.Expand(func(n string) string {
		if n == "gateway" {
			return s.gateway
		}
		return string(b.Kind)
	})
	tok := c.Publish(tp, 1, false, b.Payload)
	if err := wait(ctx, tok, ackTimeout); err != nil {
		s.drop(c)
		return fmt.Errorf("publish batch %s: %w", b.ID, err)
	}
	if s.epoch.Load() != epoch || !c.IsConnectionOpen() {
		s.drop(c)
		return fmt.Errorf("publish batch %s: connection changed before the ack was certain", b.ID)
	}
	return nil
}

// drop closes a client whose state is no longer trusted.
func (s *Sink) drop(c paho.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == c {
		s.client = nil
	}
	c.Disconnect(0)
}

func wait(ctx context.Context, tok paho.Token, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return errors.New("timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects, waiting briefly for in-flight work.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		s.client.Disconnect(250)
		s.client = nil
	}
	return nil
}

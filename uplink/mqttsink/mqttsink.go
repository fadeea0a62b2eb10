// Package mqttsink sends batches to an MQTT broker with paho (MQTT 3.1.1, QoS 1).
//
// The store, not paho's session, is the source of truth (DESIGN invariant 4). paho can
// complete a QoS 1 token without error after an automatic reconnect though no PUBACK came,
// so the sink never lets paho reconnect: one paho client is one connection (clean session,
// AutoReconnect off). When that connection drops, paho fails every token still in flight
// ("connection lost before Publish completed") and the sink discards the client; the next
// Send dials a new one. A token that completes without error on its own, still-open
// connection is therefore a real PUBACK. Anything else is an error, and the uplink resends
// the same batch from the log.
package mqttsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/uplink"
)

// Sink publishes each batch as one QoS 1 message.
type Sink struct {
	name    string
	opts    *paho.ClientOptions
	topic   *topic.Template
	gateway string
	log     *slog.Logger
	// timeout bounds one connection attempt and one batch's PUBACK.
	timeout time.Duration

	mu     sync.Mutex // guards client
	client paho.Client
}

var (
	_ uplink.Sink        = (*Sink)(nil)
	_ uplink.MultiSender = (*Sink)(nil)
)

// New builds the mqtt sink of an uplink. It reads the password file but dials nothing: the
// first Send connects.
func New(cfg *uplink.Config, gateway string, log *slog.Logger) (*Sink, error) {
	c, ok := cfg.Sink.(*Config)
	if !ok {
		return nil, fmt.Errorf("uplink %q: not an mqtt uplink", cfg.Name)
	}
	t, err := topic.ParseTemplate(c.Topic)
	if err != nil {
		return nil, fmt.Errorf("uplink %q: topic: %w", cfg.Name, err)
	}
	s := &Sink{name: cfg.Name, topic: t, gateway: gateway, timeout: cfg.Timeout.D(), log: log.With("component", "mqttsink", "uplink", cfg.Name)}
	o := paho.NewClientOptions().
		AddBroker(c.URL).
		SetClientID(c.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(s.timeout).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(s.timeout).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Warn("upstream connection lost", "err", err)
		})
	if c.Username != "" {
		o.SetUsername(c.Username)
	}
	if c.PasswordFile != "" {
		pw, err := uplink.NewSecret(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: password_file: %w", cfg.Name, err)
		}
		// Read at each connect, so a rotated password needs no restart.
		user := c.Username
		o.SetCredentialsProvider(func() (string, string) { return user, pw.Value() })
	}
	if u, err := url.Parse(c.URL); err == nil && u.Scheme != "tcp" && u.Scheme != "mqtt" {
		tc, err := uplink.TLSConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: %w", cfg.Name, err)
		}
		o.SetTLSConfig(tc)
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
	if err := wait(ctx, tok, s.timeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.client = c
	s.log.Info("connected upstream")
	return c, nil
}

// Send publishes b and returns once its PUBACK arrived on the same connection.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	_, err := s.SendAll(ctx, []*uplink.Batch{b})
	return err
}

// SendAll publishes every batch of bs at once (paho keeps them in flight) and waits for
// their PUBACKs in order. A batch counts as acknowledged only if its PUBACK arrived while
// the connection was still open.
func (s *Sink) SendAll(ctx context.Context, bs []*uplink.Batch) (int, error) {
	c, err := s.connect(ctx)
	if err != nil {
		return 0, err
	}
	toks := make([]paho.Token, len(bs))
	for i, b := range bs {
		tp := s.topic.Expand(func(n string) string {
			if n == "gateway" {
				return s.gateway
			}
			return string(b.Kind)
		})
		toks[i] = c.Publish(tp, 1, false, b.Payload)
	}
	for i, tok := range toks {
		if err := wait(ctx, tok, s.timeout); err != nil {
			s.drop(c)
			return i, fmt.Errorf("publish batch %s: %w", bs[i].ID, err)
		}
		if !c.IsConnectionOpen() {
			// The PUBACK came, but the connection is gone now; resending costs a
			// duplicate with the same batch id, never a loss.
			s.drop(c)
			return i, fmt.Errorf("publish batch %s: connection lost right after the ack", bs[i].ID)
		}
	}
	return len(bs), nil
}

// RecyclesPayloads: once a batch's PUBACK has arrived, paho holds no reference to its
// payload (uplink.Recycler).
func (s *Sink) RecyclesPayloads() bool { return true }

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

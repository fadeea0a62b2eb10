package testutil

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Upstream is an in-process mochi broker standing for the cloud: it records every PUBLISH
// it receives (acknowledged or not), can withhold PUBACKs (a batch that arrived but whose
// ack never came back), and can be stopped and started again on the same address (an
// outage).
type Upstream struct {
	Addr string
	// Withhold, while set, makes the broker receive publishes without acknowledging them.
	Withhold atomic.Bool

	mu   sync.Mutex // guards msgs and srv
	msgs []Message
	srv  *mqtt.Server
}

// StartUpstream starts an Upstream on a free loopback port.
func StartUpstream(t testing.TB) *Upstream {
	t.Helper()
	u := &Upstream{Addr: FreeAddr(t)}
	u.Start(t)
	t.Cleanup(u.Stop)
	return u
}

// URL is the broker's tcp:// URL.
func (u *Upstream) URL() string { return "tcp://" + u.Addr }

// Start (re)starts the broker on its address.
func (u *Upstream) Start(t testing.TB) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(&upstreamHook{u: u}, nil); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	Eventually(t, 10*time.Second, "bind "+u.Addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", u.Addr)
		return err == nil
	})
	if err := srv.AddListener(listeners.NewNet("up", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	u.srv = srv
	u.mu.Unlock()
}

// Stop closes the broker and every connection to it; safe to call when stopped.
func (u *Upstream) Stop() {
	u.mu.Lock()
	srv := u.srv
	u.srv = nil
	u.mu.Unlock()
	if srv == nil {
		return
	}
	// mochi v2.7.9's Close can deadlock when a client detaches while it lists the
	// listener's clients (Clients.GetByListener read-locks twice; mochi-mqtt/server#488):
	// the clients are stopped first, and Close waits (a while) until they are gone.
	for _, cl := range srv.Clients.GetAll() {
		cl.Stop(errors.New("upstream stopped"))
	}
	for end := time.Now().Add(10 * time.Second); !detached(srv) && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	srv.Close()
}

// detached reports whether every client of srv is stopped and done with the client list:
// gone from it, or closed and kept (a persistent session, which mochi does not delete).
func detached(srv *mqtt.Server) bool {
	for _, cl := range srv.Clients.GetAll() {
		// Only the fields set at CONNECT: mochi writes others (the will) as the client ends.
		v := cl.Properties.ProtocolVersion
		expires := v == 5 && cl.Properties.Props.SessionExpiryInterval == 0 || v < 5 && cl.Properties.Clean
		if expires || !cl.Closed() {
			return false
		}
	}
	return true
}

// Messages returns a copy of every publish received so far, in order.
func (u *Upstream) Messages() []Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Message(nil), u.msgs...)
}

type upstreamHook struct {
	mqtt.HookBase
	u *Upstream
}

func (h *upstreamHook) ID() string           { return "upstream" }
func (h *upstreamHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *upstreamHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, "$") {
		return pk, nil
	}
	h.u.mu.Lock()
	h.u.msgs = append(h.u.msgs, Message{Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...), At: time.Now()})
	h.u.mu.Unlock()
	if h.u.Withhold.Load() {
		return pk, packets.ErrRejectPacket // MQTT 3.1.1: no PUBACK
	}
	return pk, nil
}

package broker

import (
	"net"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
)

// TestStartOnAHeldPortSaysWhichListenerAndTheFix (issue 22): a port another process
// holds fails Start with the listener, its address and config key, and what to do, for
// each kind of listener; the listeners opened before it are closed.
func TestStartOnAHeldPortSaysWhichListenerAndTheFix(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		kind string
		l    config.Listener
	}{
		{"tcp", config.Listener{Type: "tcp"}},
		{"tls", config.Listener{Type: "tls", CertFile: p.ServerCert, KeyFile: p.ServerKey}},
		{"ws", config.Listener{Type: "ws"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			first, err := net.Listen("tcp", "127.0.0.1:0") // a free port for listener 0
			if err != nil {
				t.Fatal(err)
			}
			firstAddr := first.Addr().String()
			first.Close()
			c := config.Default()
			c.Gateway.ID, c.Gateway.DataDir = "test", t.TempDir()
			tc.l.Address = held.Addr().String()
			c.Broker.Listeners = []config.Listener{{Type: "tcp", Address: firstAddr}, tc.l}
			c.Broker.AllowAnonymous = true
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			e := newEnvClock(t, clock.Real{}, nil) // a store and an ingest hook
			b, err := New(c.Broker, IngestOptions{Ctx: e.ctx, Router: e.router, Store: e.store, Clock: clock.Real{}}, e.log)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			err = b.Start()
			if err == nil {
				t.Fatalf("Start on %s, held by another listener, succeeded", tc.l.Address)
			}
			for _, want := range []string{
				"broker listener 1 (" + tc.kind + "): listen on " + tc.l.Address + " (broker.listeners[1].address)",
				"address already in use",
				"holds port",
				"set broker.listeners[1].address to another port",
			} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			if c, err := net.Listen("tcp", firstAddr); err != nil { // listener 0 was closed
				t.Errorf("listener 0 still bound after the failed Start: %v", err)
			} else {
				c.Close()
			}
		})
	}
}

package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a client certificate
// (testutil.Certs, whose PEM files the listener config names), plus a client certificate
// signed by a CA the broker does not trust.
type pki struct {
	*testutil.Certs
	pool        *x509.CertPool
	client      tls.Certificate
	otherClient tls.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	c := testutil.NewCerts(t)
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{Certs: c, pool: x509.NewCertPool()}
	if !p.pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate in " + c.CAFile)
	}
	p.client = loadKeyPair(t, c)
	p.otherClient = loadKeyPair(t, testutil.NewCerts(t))
	return p
}

func loadKeyPair(t testing.TB, c *testutil.Certs) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// testUsers are the accounts of every test broker; each password is the user name + "-pw".
var testUsers = []struct {
	name               string
	publish, subscribe []string
}{
	{"dev-1", []string{"devices/{username}/#"}, []string{"devices/%u/#", "agg/#"}},
	{"dev-2", []string{"devices/{username}/#"}, []string{"devices/{username}/#", "agg/#"}},
	{"reader", nil, []string{"#"}},
	{"ops", []string{"#", "$SYS/#"}, []string{"#", "$SYS/#"}},
}

func password(user string) string { return user + "-pw" }

// env is a broker as the daemon runs it: a real mochi server on loopback listeners (TCP,
// TLS, mutual TLS, WebSocket, secure WebSocket), the guard and ingest hooks, and a real
// store on disk.
type env struct {
	b     *Broker
	hook  *IngestHook
	store *buffer.Store
	pki   *pki
	cfg   config.Broker
	addr  map[string]string // by listener name: tcp, tls, mtls, ws, wss

	// What restart needs to build another broker on the same store.
	ctx    context.Context
	router *ingest.Router
	clk    clock.Clock
	log    *slog.Logger
}

var listenerNames = []string{"tcp", "tls", "mtls", "ws", "wss"}

func newEnv(t testing.TB, mutate func(c *config.Config)) *env {
	t.Helper()
	return newEnvClock(t, clock.Real{}, mutate)
}

// newEnvClock is newEnv with the hooks on clk (the store keeps real time).
func newEnvClock(t testing.TB, clk clock.Clock, mutate func(c *config.Config)) *env {
	t.Helper()
	p := newPKI(t)
	c := config.Default()
	c.Gateway.ID = "test"
	c.Gateway.DataDir = t.TempDir()
	c.Broker.Listeners = []config.Listener{
		{Type: "tcp", Address: "127.0.0.1:0"},
		{Type: "tls", Address: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey},
		{Type: "tls", Address: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CAFile},
		{Type: "ws", Address: "127.0.0.1:0"},
		{Type: "ws", Address: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey},
	}
	for _, u := range testUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(password(u.name)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		c.Broker.Users = append(c.Broker.Users, config.User{Username: u.name, PasswordHash: string(h), Publish: u.publish, Subscribe: u.subscribe})
	}
	c.Routes = []config.Route{{Topic: "devices/+device/+metric", Format: "json", Series: "{device}/{metric}"}}
	c.Unrouted = "forward"
	c.Broker.MaxConnectRatePerIP = 1000 // tests open many connections from 127.0.0.1
	if mutate != nil {
		mutate(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() && os.Getenv("EDGEGATE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	store, err := buffer.Open(buffer.Options{Dir: filepath.Join(c.Gateway.DataDir, "buffer"), DedupTTL: time.Hour, Logger: log, Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	router, err := ingest.NewRouter(c.Routes, c.Unrouted)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b, err := New(c.Broker, IngestOptions{Ctx: ctx, Router: router, Store: store, Clock: clk}, log)
	if err != nil {
		t.Fatal(err)
	}
	hook := b.Ingest()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	e := &env{b: b, hook: hook, store: store, pki: p, cfg: c.Broker, ctx: ctx, router: router, clk: clk, log: log}
	t.Cleanup(func() {
		e.b.Close() // the last one, after a restart
		cancel()
		store.Close()
	})
	e.mapAddrs()
	return e
}

func (e *env) mapAddrs() {
	e.addr = map[string]string{}
	for i, a := range e.b.Addrs() {
		if i < len(listenerNames) && len(e.cfg.Listeners) == len(listenerNames) {
			e.addr[listenerNames[i]] = a
		} else if i == 0 {
			e.addr["tcp"] = a
		}
	}
}

// restart closes the broker and starts another, with a new ingest hook, on the same store
// (as a restart of the daemon does); the listeners get new ports.
func (e *env) restart(t testing.TB) { e.restartWith(t, nil) }

// restartWith is restart, with prepare (if not nil) called on the new broker before it
// starts.
func (e *env) restartWith(t testing.TB, prepare func(b *Broker)) {
	t.Helper()
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := New(e.cfg, IngestOptions{Ctx: e.ctx, Router: e.router, Store: e.store, Clock: e.clk}, e.log)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(b)
	}
	e.hook = b.Ingest()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	e.b = b // closed by newEnv's cleanup; the old one is garbage
	e.mapAddrs()
}

// dial opens a transport to one of the env's listeners; clientCert may be nil.
func (e *env) dial(t *testing.T, listener string, clientCert *tls.Certificate) (net.Conn, error) {
	t.Helper()
	addr := e.addr[listener]
	tc := &tls.Config{RootCAs: e.pki.pool, ServerName: "127.0.0.1"}
	if clientCert != nil {
		tc.Certificates = []tls.Certificate{*clientCert}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	switch listener {
	case "tcp":
		return d.Dial("tcp", addr)
	case "tls", "mtls":
		c, err := tls.DialWithDialer(d, "tcp", addr, tc)
		if err != nil {
			return nil, err
		}
		// TLS 1.3 reports a refused client certificate only on the first read.
		return c, nil
	case "ws", "wss":
		wd := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: tc, HandshakeTimeout: 5 * time.Second}
		scheme := "ws"
		if listener == "wss" {
			scheme = "wss"
		}
		ws, _, err := wd.Dial(scheme+"://"+addr+"/mqtt", nil)
		if err != nil {
			return nil, err
		}
		return &wsConn{ws: ws}, nil
	}
	t.Fatalf("no listener %q", listener)
	return nil, nil
}

// records returns what the raw log holds.
// records returns the raw log once no publish waits for its append (they are answered
// after returning from OnPublish).
func (e *env) records(t *testing.T) []record.Record {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "ingest settled", func() bool {
		n, _ := e.b.ingest.Sources().Progress()
		return n == 0
	})
	var out []record.Record
	_, err := e.store.Read(logs.Raw, 0, 0, func(_ uint64, v []byte) error {
		var r record.Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

package broker

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (RFC 6455, subprotocol "mqtt", any path), or over
// secure WebSocket with a TLS config, with the same connection limits as netListener.
// mochi's own WebSocket listener binds its address itself, so it could not be limited.
type wsListener struct {
	id             string
	ln             *limitedListener
	tlsCfg         *tls.Config
	connectTimeout time.Duration
	refusals       *Refusals
	log            *slog.Logger
	srv            *http.Server
	upgrader       websocket.Upgrader
	establish      listeners.EstablishFn // set by Serve before the first request
	conns          connGroup
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id string, ln *limitedListener, tlsCfg *tls.Config, connectTimeout time.Duration, disconnect func(string), log *slog.Logger) *wsListener {
	l := &wsListener{
		id: id, ln: ln, tlsCfg: tlsCfg, connectTimeout: connectTimeout, refusals: ln.refusals, log: log,
		conns: newConnGroup(disconnect),
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: connectTimeout,
			// Browsers may connect from any page: MQTT authenticates with its own
			// credentials, not cookies, so there is nothing for another origin to ride on.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: connectTimeout,
		IdleTimeout:       connectTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return l
}

func (l *wsListener) ID() string      { return l.id }
func (l *wsListener) Address() string { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string {
	if l.tlsCfg != nil {
		return "wss"
	}
	return "ws"
}
func (l *wsListener) Init(*slog.Logger) error { return nil }

// Serve runs the HTTP server until Close; mochi runs it on a goroutine of its own.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	defer l.conns.serve()()
	l.conns.mu.Lock()
	l.establish = establish
	closed := l.conns.closed
	l.conns.mu.Unlock()
	if closed {
		return
	}
	var inner net.Listener = l.ln
	if l.tlsCfg != nil {
		inner = tls.NewListener(l.ln, l.tlsCfg)
	}
	if err := l.srv.Serve(inner); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "err", err)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	if !l.conns.join() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer l.conns.wg.Done()
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered with an HTTP error
	}
	// The HTTP server cleared the accept deadline; the CONNECT gets connectTimeout again.
	_ = ws.NetConn().SetDeadline(time.Now().Add(l.connectTimeout))
	c := &wsConn{ws: ws}
	err = l.establish(l.id, c) // set before Serve started the HTTP server
	c.Close()
	connEnded(l.refusals, c, err)
}

// Close stops the HTTP server, disconnects this listener's clients, closes connections
// still waiting for their CONNECT and waits for every connection handler.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.conns.shutdown(l.id, l.srv.Close, closeClients, l.ln)
}

// wsConn carries an MQTT byte stream in binary WebSocket messages: a packet may span
// messages and a message may hold several packets (MQTT 5 §6). mochi serialises writes.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader // the message being read, if any
}

var _ net.Conn = (*wsConn)(nil)

var errTextMessage = errors.New("websocket: text message where MQTT expects binary")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) NetConn() net.Conn                  { return c.ws.NetConn() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

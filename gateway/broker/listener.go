package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/ingest"
)

// connLimiter caps open connections in total and per source address (IPv4 address, IPv6
// /64, since one IPv6 host may hold a whole /64). Safe for concurrent use.
type connLimiter struct {
	maxTotal, maxPerIP int

	mu    sync.Mutex // guards total and perIP
	total int
	perIP map[netip.Prefix]int
}

func newConnLimiter(maxTotal, maxPerIP int) *connLimiter {
	return &connLimiter{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[netip.Prefix]int{}}
}

func sourcePrefix(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{} // unix sockets and the like share one bucket
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// acquire takes a slot for a connection from a; release gives it back (once).
func (l *connLimiter) acquire(a net.Addr) (release func(), err error) {
	key := sourcePrefix(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal {
		return nil, fmt.Errorf("max_clients (%d) connections open", l.maxTotal)
	}
	if l.perIP[key] >= l.maxPerIP {
		return nil, fmt.Errorf("max_connections_per_ip (%d) connections open from %s", l.maxPerIP, key)
	}
	l.total++
	l.perIP[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perIP[key]--; l.perIP[key] <= 0 {
				delete(l.perIP, key)
			}
		})
	}, nil
}

// limitedListener accepts only what the connLimiter allows, gives every connection
// connectTimeout to complete its handshakes and CONNECT (mochi sets no deadline before the
// CONNECT; after it, mochi's keepalive deadline replaces ours), and tracks open connections
// so that shutdown can close those still waiting for a CONNECT.
type limitedListener struct {
	net.Listener
	lim            *connLimiter
	connectTimeout time.Duration
	writeTimeout   time.Duration // of every write to an accepted connection
	refusals       *Refusals

	mu     sync.Mutex // guards conns and closed
	conns  map[*limitedConn]struct{}
	closed bool
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.lim.acquire(c.RemoteAddr())
		if err != nil {
			c.Close()
			l.refusals.Add(ReasonConnLimit, "", "", fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err))
			continue
		}
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		lc := &limitedConn{Conn: c, release: release, owner: l, writeTimeout: l.writeTimeout, closed: make(chan struct{})}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			lc.Close()
			return nil, net.ErrClosed
		}
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		return lc, nil
	}
}

// closeAll closes the listener and every connection it accepted that is still open.
func (l *limitedListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := make([]*limitedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	_ = l.Listener.Close()
	for _, c := range conns {
		c.Close()
	}
}

// limitedConn gives its limiter slot back when closed. It can also hold writes back
// (cork) so that several packets leave in one write: the ingest hook's acker corks a
// connection while it writes the PUBACKs of a group that became durable together.
//
// Every write has a deadline of writeTimeout. mochi writes under the client's lock with
// no deadline of its own (its keepalive deadline is refreshed by every packet read), so a
// client that stops reading would block every writer of that client, the acker's among
// them, and with them what they hold. A write that times out closes the connection: a
// packet may have been cut in the middle, and the client could not take its answers.
type limitedConn struct {
	net.Conn
	release      func()
	owner        *limitedListener
	writeTimeout time.Duration
	connected    atomic.Bool            // a CONNECT was read (set by the guard hook)
	clientID     atomic.Pointer[string] // set by the guard hook, for the log
	once         sync.Once
	timedOut     sync.Once
	closed       chan struct{} // closed by Close

	wmu    sync.Mutex // orders writes with a flush of held ones
	corked bool
	held   []byte
}

// SetDeadline sets the read deadline only: mochi sets its keepalive deadline with it
// before every read, which must not lift the deadline of a write in progress.
func (c *limitedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored: every write gets writeTimeout (WebSocket and TLS layers
// set their own, possibly none).
func (c *limitedConn) SetWriteDeadline(time.Time) error { return nil }

// write writes p within the write deadline; on a timeout it closes the connection and
// counts it.
func (c *limitedConn) write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.Conn.Write(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.timedOut.Do(func() {
			id := ""
			if p := c.clientID.Load(); p != nil {
				id = *p
			}
			if c.owner != nil {
				c.owner.refusals.Add(ReasonWriteTimeout, id, "", fmt.Errorf("connection from %s took nothing for write_timeout (%v): disconnected", c.RemoteAddr(), c.writeTimeout))
			}
			c.Close()
		})
	}
	return n, err
}

// done is closed once the connection is closed.
func (c *limitedConn) done() <-chan struct{} { return c.closed }

// maxHeld bounds what a corked connection holds before writing it anyway.
const maxHeld = 64 << 10

func (c *limitedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corked && len(c.held)+len(p) <= maxHeld {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.write(p)
}

// cork holds further writes until uncork.
func (c *limitedConn) cork() {
	c.wmu.Lock()
	c.corked = true
	c.wmu.Unlock()
}

// uncork writes what was held, in one write, and stops holding. A failed write is left
// for mochi to find at its next read or write on the connection.
func (c *limitedConn) uncork() {
	c.wmu.Lock()
	c.corked = false
	_ = c.flushLocked()
	c.wmu.Unlock()
}

func (c *limitedConn) flushLocked() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.write(c.held)
	if cap(c.held) > maxHeld {
		c.held = nil
	} else {
		c.held = c.held[:0]
	}
	return err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.closed != nil {
			close(c.closed)
		}
		if c.release != nil {
			c.release()
		}
		if c.owner != nil {
			c.owner.mu.Lock()
			delete(c.owner.conns, c)
			c.owner.mu.Unlock()
		}
	})
	return err
}

// baseConn finds the limitedConn under what mochi holds (the conn itself, a *tls.Conn or
// a WebSocket adapter); nil for inline clients.
func baseConn(c net.Conn) *limitedConn {
	for c != nil {
		switch x := c.(type) {
		case *limitedConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case *wsConn:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// connEnded classifies why a connection's establish call returned, for the refusal counters.
func connEnded(refusals *Refusals, c net.Conn, err error) {
	if err == nil {
		return
	}
	lc := baseConn(c)
	var ne net.Error
	switch {
	case errors.Is(err, packets.ErrPacketTooLarge):
		refusals.Add(ingest.ReasonTooLarge, "", "", fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err))
	case lc != nil && !lc.connected.Load() && errors.As(err, &ne) && ne.Timeout():
		refusals.Add(ReasonConnectTimeout, "", "", fmt.Errorf("connection from %s sent no CONNECT in time", c.RemoteAddr()))
	}
}

// netListener serves MQTT over TCP or TLS; it implements mochi's listeners.Listener with
// edgegate's connection limits, and owns the goroutine of each connection.
type netListener struct {
	id       string
	proto    string
	ln       *limitedListener
	accept   net.Listener // ln, or a TLS listener over it
	refusals *Refusals
	log      *slog.Logger
	conns    connGroup
}

var _ listeners.Listener = (*netListener)(nil)

// connGroup is the shutdown bookkeeping of a listener: the goroutine of each connection
// joins it while the listener is open, and shutdown runs once, waiting for all of them and
// for Serve.
type connGroup struct {
	// disconnect disconnects the listener's clients at shutdown (see Broker.disconnect);
	// nil: mochi's own closer.
	disconnect func(listener string)

	mu      sync.Mutex // guards closed and the Add side of wg
	closed  bool
	wg      sync.WaitGroup
	serving chan struct{} // closed when Serve returns
	started atomic.Bool
}

func newConnGroup(disconnect func(string)) connGroup {
	return connGroup{disconnect: disconnect, serving: make(chan struct{})}
}

// serve marks Serve as running; the caller defers the returned func.
func (g *connGroup) serve() (done func()) {
	g.started.Store(true)
	return func() { close(g.serving) }
}

// join adds one connection goroutine, which calls g.wg.Done; false once shutdown began.
func (g *connGroup) join() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// shutdown, the first time only: stop (no new connections), disconnect the listener's
// clients, close connections still waiting for their CONNECT, then wait for every
// connection goroutine and for Serve.
func (g *connGroup) shutdown(id string, stop func() error, closeClients listeners.CloseFn, ln *limitedListener) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	_ = stop()
	if g.disconnect != nil {
		g.disconnect(id)
	} else {
		closeClients(id)
	}
	ln.closeAll()
	g.wg.Wait()
	if g.started.Load() {
		<-g.serving
	}
}

func newNetListener(id string, ln *limitedListener, tlsCfg *tls.Config, disconnect func(string), log *slog.Logger) *netListener {
	l := &netListener{id: id, proto: "tcp", ln: ln, accept: ln, refusals: ln.refusals, log: log, conns: newConnGroup(disconnect)}
	if tlsCfg != nil {
		l.proto = "tls"
		l.accept = tls.NewListener(ln, tlsCfg)
	}
	return l
}

func (l *netListener) ID() string              { return l.id }
func (l *netListener) Address() string         { return l.ln.Addr().String() }
func (l *netListener) Protocol() string        { return l.proto }
func (l *netListener) Init(*slog.Logger) error { return nil }

// Serve accepts until Close; mochi runs it on a goroutine of its own.
func (l *netListener) Serve(establish listeners.EstablishFn) {
	defer l.conns.serve()()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.accept.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			l.log.Warn("accept failed; retrying", "listener", l.id, "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !l.conns.join() {
			c.Close()
			return
		}
		go func() {
			defer l.conns.wg.Done()
			err := establish(l.id, c)
			c.Close()
			connEnded(l.refusals, c, err)
		}()
	}
}

// Close stops accepting, disconnects this listener's clients, closes connections still
// waiting for their CONNECT and waits for every connection goroutine.
func (l *netListener) Close(closeClients listeners.CloseFn) {
	l.conns.shutdown(l.id, l.accept.Close, closeClients, l.ln)
}

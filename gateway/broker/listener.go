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

	"github.com/edgegate/edgegate/internal/backoff"
)

// connLimiter caps open connections in total and per source address (IPv4 address, IPv6
// /64, since one IPv6 host may hold a whole /64), and the pending ones among them (accepted,
// their CONNECT not read yet) in total and per source address. When a bound is reached, a
// pending connection makes room for the new one (the oldest of the source with the most
// pending): sockets that never log in, from a few addresses, cannot keep the devices that do
// from connecting. Only logged-in connections are never closed for room. New connections
// from one source are also rate-limited (max_connect_rate_per_ip): past it they are closed
// at accept, before anything is read or allocated. Safe for concurrent use.
type connLimiter struct {
	maxTotal, maxPerIP          int
	maxPending, maxPendingPerIP int
	rate                        float64 // new connections per second per source; 0: no limit

	mu           sync.Mutex // guards all below
	total        int
	perIP        map[netip.Prefix]int
	pending      map[*limitedConn]struct{}
	pendingPerIP map[netip.Prefix]int
	seq          uint64 // accept order, for "oldest"
	buckets      map[netip.Prefix]*tokenBucket
}

// maxRateSources bounds the sources whose connection rate is remembered.
const maxRateSources = 4096

func newConnLimiter(maxTotal, maxPerIP, maxPending, maxPendingPerIP int) *connLimiter {
	return &connLimiter{
		maxTotal: maxTotal, maxPerIP: maxPerIP,
		maxPending: min(maxPending, maxTotal), maxPendingPerIP: min(maxPendingPerIP, maxPerIP),
		perIP: map[netip.Prefix]int{}, pending: map[*limitedConn]struct{}{}, pendingPerIP: map[netip.Prefix]int{},
		buckets: map[netip.Prefix]*tokenBucket{},
	}
}

// admit takes a token of the source's connection rate: false means the new connection is
// to be closed at once.
func (l *connLimiter) admit(key netip.Prefix, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxRateSources {
			for k, x := range l.buckets { // full ones are as good as new
				if x.refill(now); x.tokens >= x.burst || len(l.buckets) >= maxRateSources {
					delete(l.buckets, k)
				}
				if len(l.buckets) < maxRateSources*3/4 {
					break
				}
			}
		}
		nb := newTokenBucket(l.rate, max(l.rate, float64(l.maxPendingPerIP)))
		b = &nb
		l.buckets[key] = b
	}
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
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

// acquire takes a slot for the new connection c, pending until settle; it returns the
// pending connections the caller must close to make room (their slots are already given
// back), or an error when there is no room. c.Close gives c's slot back.
//
// A source at its own bound gets no room: its new connection is refused (closing one of
// its older ones instead would only cost more work per attempt). At the bounds over all
// sources, the oldest pending connection of the source with the most pending ones makes
// room, unless that source is the new connection's own.
func (l *connLimiter) acquire(c *limitedConn) (evict []*limitedConn, err error) {
	key := c.key
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[key] >= l.maxPerIP {
		return nil, fmt.Errorf("max_connections_per_ip (%d) connections open from %s", l.maxPerIP, key)
	}
	if l.pendingPerIP[key] >= l.maxPendingPerIP {
		return nil, fmt.Errorf("max_pending_per_ip (%d) connections from %s have not logged in yet", l.maxPendingPerIP, key)
	}
	if len(l.pending) >= l.maxPending {
		v := l.oldestLocked(key)
		if v == nil {
			return nil, fmt.Errorf("max_pending_connections (%d) have not logged in yet", l.maxPending)
		}
		evict = append(evict, v)
	}
	if l.total >= l.maxTotal {
		v := l.oldestLocked(key)
		if v == nil {
			return evict, fmt.Errorf("max_clients (%d) connections open", l.maxTotal)
		}
		evict = append(evict, v)
	}
	l.seq++
	c.seq = l.seq
	l.total++
	l.perIP[key]++
	l.pending[c] = struct{}{}
	l.pendingPerIP[key]++
	c.slot = true
	return evict, nil
}

// oldestLocked detaches and returns the oldest pending connection of the source with the
// most pending ones, if that is not self (a source no busier than the newcomer's own does
// not lose a connection to it); nil when there is none.
func (l *connLimiter) oldestLocked(self netip.Prefix) *limitedConn {
	most := 0
	for _, n := range l.pendingPerIP {
		most = max(most, n)
	}
	if most == 0 || l.pendingPerIP[self] >= most {
		return nil
	}
	var v *limitedConn
	for c := range l.pending {
		if l.pendingPerIP[c.key] == most && (v == nil || c.seq < v.seq) {
			v = c
		}
	}
	if v != nil {
		l.releaseLocked(v)
	}
	return v
}

// settle marks c as logged in (its CONNECT was read): it is no longer pending.
func (l *connLimiter) settle(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pending[c]; ok {
		delete(l.pending, c)
		l.decLocked(l.pendingPerIP, c.key)
	}
}

// release gives c's slot back (once).
func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c)
}

func (l *connLimiter) releaseLocked(c *limitedConn) {
	if !c.slot {
		return
	}
	c.slot = false
	l.total--
	l.decLocked(l.perIP, c.key)
	if _, ok := l.pending[c]; ok {
		delete(l.pending, c)
		l.decLocked(l.pendingPerIP, c.key)
	}
}

func (l *connLimiter) decLocked(m map[netip.Prefix]int, key netip.Prefix) {
	if m[key]--; m[key] <= 0 {
		delete(m, key)
	}
}

// Pending returns the connections open and not logged in yet.
func (l *connLimiter) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
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

	mu      sync.Mutex // guards conns, closed and lingers' Add
	conns   map[*limitedConn]struct{}
	closed  bool
	lingers sync.WaitGroup // lingering closes (conn.go)
}

// linger runs fn, a connection's lingering close, on a goroutine closeAll waits for;
// false when the listener is closing (fn not run).
func (l *limitedListener) linger(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.lingers.Add(1)
	go func() {
		defer l.lingers.Done()
		fn()
	}()
	return true
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := sourcePrefix(c.RemoteAddr())
		if !l.lim.admit(key, time.Now()) {
			c.Close()
			l.refusals.Add(ReasonConnLimit, "", "", fmt.Errorf("connection from %s: over max_connect_rate_per_ip (%g/s)", c.RemoteAddr(), l.lim.rate))
			continue
		}
		lc := &limitedConn{Conn: c, lim: l.lim, key: key, owner: l, writeTimeout: l.writeTimeout, closed: make(chan struct{})}
		evict, err := l.lim.acquire(lc)
		for _, v := range evict {
			l.refusals.Add(ReasonConnLimit, "", "", fmt.Errorf("connection from %s closed before its CONNECT, to make room for one from %s", v.RemoteAddr(), c.RemoteAddr()))
			v.Close()
		}
		if err != nil {
			c.Close()
			l.refusals.Add(ReasonConnLimit, "", "", fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err))
			continue
		}
		// The deadline bounds the reads of the CONNECT; the timer bounds everything before
		// it, whatever resets deadlines meanwhile (an HTTP server between WebSocket
		// requests that never upgrade, a TLS handshake).
		_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		lc.timer = time.AfterFunc(l.connectTimeout, lc.connectExpired)
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
		c.closeNow() // at once, lingering ones too: mochi's Stop flushed those it knew of
	}
	l.lingers.Wait()
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

// acceptBackoff paces a failing accept (out of file descriptors): from 5ms, doubling up to
// 1s, as net/http does; no jitter, nobody else retries with it.
var acceptBackoff = backoff.Policy{Min: 5 * time.Millisecond, Max: time.Second, Jitter: backoff.None}

// Serve accepts until Close; mochi runs it on a goroutine of its own.
func (l *netListener) Serve(establish listeners.EstablishFn) {
	defer l.conns.serve()()
	failures := 0
	for {
		c, err := l.accept.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			l.log.Warn("accept failed; retrying", "listener", l.id, "err", err)
			failures++
			time.Sleep(acceptBackoff.Wait(failures))
			continue
		}
		failures = 0
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

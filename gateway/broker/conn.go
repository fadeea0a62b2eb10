package broker

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/ingest"
)

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
	lim          *connLimiter
	key          netip.Prefix // source address
	owner        *limitedListener
	writeTimeout time.Duration
	connected    atomic.Bool            // a CONNECT was read (set by the guard hook)
	clientID     atomic.Pointer[string] // set by the guard hook, for the log
	timer        *time.Timer            // closes the connection at connect_timeout unless connected
	expired      atomic.Bool            // counted as connect_timeout
	once         sync.Once
	timedOut     sync.Once
	closed       chan struct{} // closed by Close
	signalOnce   sync.Once     // closes closed

	rmu       sync.Mutex    // held by a read in progress, and by the lingering close
	closing   atomic.Bool   // Close began: reads end, deadlines are the close's
	lingerFor time.Duration // how long a lingering close waits at most; 0: lingerTime (tests set it)

	// Guarded by lim.mu.
	seq  uint64
	slot bool // holds a slot of lim

	wmu    sync.Mutex // orders writes with a flush of held ones
	corked bool
	held   []byte
	// awaiting: what to run once the client's host acknowledged every byte written so far
	// (whenDelivered), at most maxAwaiting; guarded by wmu.
	awaiting []func()
}

// maxAwaiting bounds what a connection keeps to run on delivery: a client whose host
// acknowledges nothing (it stopped reading) would otherwise grow it until the write
// deadline. What is dropped is never run, which is the safe side (see whenDelivered).
const maxAwaiting = 4096

// whenDelivered runs fn once every byte written to the connection so far, fn's PUBACK
// among them, was acknowledged by the client's host (TCP): the client then has it, even
// if the connection is reset or the daemon killed next. It runs at once if so already,
// else after a later write finds it so, and never if the connection ends first or the
// platform cannot tell (the store then keeps the record as for a PUBACK lost).
func (c *limitedConn) whenDelivered(fn func()) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.awaiting) == maxAwaiting {
		c.awaiting[0] = nil
		c.awaiting = c.awaiting[1:]
	}
	c.awaiting = append(c.awaiting, fn)
	c.checkDeliveredLocked()
}

// checkDeliveredLocked runs what awaits delivery when nothing is held and the socket has
// no byte the client's host has not acknowledged, unless the connection is closing.
func (c *limitedConn) checkDeliveredLocked() {
	if !c.closing.Load() {
		c.deliverLocked()
	}
}

// deliverLocked is checkDeliveredLocked, closing or not.
func (c *limitedConn) deliverLocked() {
	if len(c.awaiting) == 0 || len(c.held) > 0 {
		return
	}
	if n, ok := unacknowledged(c.Conn); !ok || n > 0 {
		return
	}
	for i, fn := range c.awaiting {
		fn()
		c.awaiting[i] = nil
	}
	c.awaiting = c.awaiting[:0]
}

// SetDeadline sets the read deadline only: mochi sets its keepalive deadline with it
// before every read, which must not lift the deadline of a write in progress.
func (c *limitedConn) SetDeadline(t time.Time) error {
	if c.closing.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// Read reads from the connection until Close begins; then it ends (io.EOF), and what the
// client still sends is the lingering close's to discard.
func (c *limitedConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closing.Load() {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

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
			c.closeNow() // wmu is held: nothing held can be written anyway
		})
	}
	return n, err
}

// markConnected records that the connection's CONNECT was read: the connect deadline no
// longer applies, and it is no longer pending.
func (c *limitedConn) markConnected() {
	if c.connected.Swap(true) {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.lim != nil {
		c.lim.settle(c)
	}
}

// connectExpired closes a connection that sent no CONNECT within connect_timeout.
func (c *limitedConn) connectExpired() {
	if c.connected.Load() {
		return
	}
	if c.expired.CompareAndSwap(false, true) && c.owner != nil {
		c.owner.refusals.Add(ReasonConnectTimeout, "", "", fmt.Errorf("connection from %s sent no CONNECT within connect_timeout (%v)", c.RemoteAddr(), c.owner.connectTimeout))
	}
	c.Close()
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
	n, err := c.write(p)
	if err == nil {
		c.checkDeliveredLocked()
	}
	return n, err
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
	if c.flushLocked() == nil {
		c.checkDeliveredLocked()
	}
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

// Close writes what a corked connection holds, then closes it. The acker corks a
// connection while it writes a group's PUBACKs and runs the answers queued behind them,
// so a transient refusal's disconnect (3.1.1) can come while PUBACKs are held: the acker
// took them for written, and dropping them made the client
// resend readings stored long before, possibly after their records of arrival were given
// up, hence under new ids (the 10-minute soak under on_full: reject). The flush is
// bounded by the write deadline.
func (c *limitedConn) Close() error {
	c.wmu.Lock()
	c.corked = false
	_ = c.flushLocked()
	c.wmu.Unlock()
	tcp, ok := c.Conn.(*net.TCPConn)
	if !ok || c.owner == nil || !c.connected.Load() {
		return c.closeNow()
	}
	if !c.closing.CompareAndSwap(false, true) {
		return nil // lingering already, or closed
	}
	if !c.owner.linger(func() { c.linger(tcp) }) {
		return c.closeNow() // the listener is closing: no lingering at shutdown
	}
	return nil
}

// Lingering close: a client that pipelines its publishes (paho, MQTT.js) still sends when
// the broker closes the connection, and a close with unread data resets it. The client's
// next write then fails, and paho drops the connection with the PUBACKs it had received
// but not yet read. So the connection is half-closed instead: the client reads every
// answer, then the end of the stream, while what it still sends is read and discarded,
// for at most lingerTime and lingerBytes.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// linger half-closes the connection, waits for a read in progress to end (its deadline is
// made past), discards what the client sends until it closes its side, lingerTime passes
// or lingerBytes came, then closes.
func (c *limitedConn) linger(tcp *net.TCPConn) {
	c.signalClosed()
	_ = tcp.CloseWrite()
	_ = tcp.SetReadDeadline(time.Now())
	c.rmu.Lock()
	_ = tcp.SetReadDeadline(time.Now().Add(cmp.Or(c.lingerFor, lingerTime)))
	n, err := io.Copy(io.Discard, io.LimitReader(tcp, lingerBytes))
	c.rmu.Unlock()
	// A client that closed its side cleanly (FIN, not a reset: a socket closed with
	// received data unread sends a reset) read every answer it got: when its host has
	// acknowledged them all, what awaits their delivery runs. Else the records of arrivals
	// of the publishes answered just before a transient refusal's disconnect stayed
	// unanswered ones, and a client refused again and again filled the table with them (the
	// soak, reject: records of publishes never answered were given up, and their resends
	// stored twice).
	if err == nil && n < lingerBytes {
		c.wmu.Lock()
		c.deliverLocked()
		c.wmu.Unlock()
	}
	c.closeNow()
}

// signalClosed closes c.closed (what waits on the connection stops waiting).
func (c *limitedConn) signalClosed() {
	c.signalOnce.Do(func() {
		if c.closed != nil {
			close(c.closed)
		}
	})
}

// closeNow closes the connection, dropping what it holds, and gives its slot back.
func (c *limitedConn) closeNow() error {
	c.closing.Store(true)
	err := c.Conn.Close()
	c.signalClosed()
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		if c.lim != nil {
			c.lim.release(c)
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
	case lc != nil && !lc.connected.Load() && errors.As(err, &ne) && ne.Timeout() && lc.expired.CompareAndSwap(false, true):
		refusals.Add(ReasonConnectTimeout, "", "", fmt.Errorf("connection from %s sent no CONNECT in time", c.RemoteAddr()))
	}
}

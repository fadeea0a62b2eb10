package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
)

// stuckReader is a 3.1.1 client that subscribes to its own topic and publishes 60 KB QoS 1
// readings on it as fast as the broker reads them, and never reads its socket: the
// broker's writes to it (its PUBACKs, its own messages) back up.
type stuckReader struct {
	id   string
	conn net.Conn
	done chan struct{}
}

func startStuckReader(t *testing.T, addr, id string) *stuckReader {
	t.Helper()
	conn := dialFrom(t, "127.0.0.1", addr)
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if code := rawLogin(t, conn, id, "dev-1", "dev-1-pw"); code != 0 {
		t.Fatalf("%s: CONNACK %d", id, code)
	}
	topic := "devices/dev-1/" + id + "/x" // unrouted: kept raw
	sub := binary.BigEndian.AppendUint16(nil, 1)
	sub = appendString(sub, topic)
	sub = append(sub, 0)
	if _, err := conn.Write(append(appendLength([]byte{0x82}, len(sub)), sub...)); err != nil {
		t.Fatal(err)
	}
	s := &stuckReader{id: id, conn: conn, done: make(chan struct{})}
	payload := strings.Repeat("x", 60<<10)
	go func() {
		defer close(s.done)
		for id := 1; ; id = id%65535 + 1 {
			body := appendString(nil, topic)
			body = binary.BigEndian.AppendUint16(body, uint16(id))
			body = append(body, payload...)
			if _, err := conn.Write(append(appendLength([]byte{0x32}, len(body)), body...)); err != nil {
				return // closed by the broker or by the test
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

// held returns the acknowledgement budget the broker holds for the client, and whether
// it is connected.
func (e *env) held(id string) (int64, bool) {
	cl, ok := e.b.srv.Clients.Get(id)
	if !ok || cl.Closed() {
		return 0, false
	}
	a := e.hook.acks
	a.mu.Lock()
	defer a.mu.Unlock()
	if q := a.queues[cl]; q != nil {
		return q.held, true
	}
	return 0, true
}

// honestDevices publish n QoS 1 readings each, one after the other, and return how many
// were acknowledged within the deadline.
func honestDevices(t *testing.T, e *env, devices, n int, deadline time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var mu sync.Mutex
	acked := 0
	var wg sync.WaitGroup
	for d := 0; d < devices; d++ {
		c := e.user(t, "dev-2", fmt.Sprintf("honest-%d", d))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				r, err := c.c.Publish(ctx, &paho.Publish{Topic: "devices/dev-2/t", QoS: 1, Payload: []byte(fmt.Sprintf(`{"value": %d, "id": "h%d-%d"}`, i, d, i))})
				if err != nil || r.ReasonCode != 0 {
					return
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked
}

// TestStuckReadersDoNotStallOthers (issue 16, item 8): three clients that never read their
// socket, each publishing 60 KB readings on a topic it subscribes to, hold what the broker
// has to write them. Four honest devices are acknowledged all the same: each connection
// holds at most its share of the acknowledgement budget. (Before: the three held all of it
// and the honest devices got no PUBACK until the three went away.) write_timeout is long
// here, so the three stay connected throughout.
func TestStuckReadersDoNotStallOthers(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.WriteTimeout = conf.Duration(time.Hour)
		c.Unrouted = "forward"
	})
	var stuck []*stuckReader
	for i := 1; i <= 3; i++ {
		stuck = append(stuck, startStuckReader(t, e.addr["tcp"], fmt.Sprintf("stuck-%d", i)))
	}
	// Wait until each holds its full share: its answers cannot be written.
	testutil.Eventually(t, 30*time.Second, "the stuck readers holding their share of the budget", func() bool {
		for _, s := range stuck {
			if h, _ := e.held(s.id); h < ackConnBytes-(61<<10) {
				return false
			}
		}
		return true
	})
	const devices, n = 4, 100
	if got := honestDevices(t, e, devices, n, 30*time.Second); got != devices*n {
		t.Fatalf("honest devices: %d of %d publishes acknowledged while three clients did not read", got, devices*n)
	}
	for _, s := range stuck {
		h, connected := e.held(s.id)
		if !connected {
			t.Errorf("%s was disconnected (write_timeout is 1 h)", s.id)
		}
		if h > ackConnBytes+(61<<10) {
			t.Errorf("%s holds %d bytes of the acknowledgement budget, over its share %d", s.id, h, ackConnBytes)
		}
	}
}

// TestStuckReaderDisconnected (issue 16, item 8): a client that takes nothing the broker
// writes it for write_timeout is disconnected and counted (write_timeout); what it held is
// given back.
func TestStuckReaderDisconnected(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.WriteTimeout = conf.Duration(500 * time.Millisecond)
		c.Unrouted = "forward"
	})
	var stuck []*stuckReader
	for i := 1; i <= 3; i++ {
		stuck = append(stuck, startStuckReader(t, e.addr["tcp"], fmt.Sprintf("stuck-%d", i)))
	}
	testutil.Eventually(t, 30*time.Second, "the stuck readers disconnected", func() bool {
		for _, s := range stuck {
			if _, connected := e.held(s.id); connected {
				return false
			}
		}
		return true
	})
	for _, s := range stuck {
		select {
		case <-s.done: // its writes fail: the broker closed the socket
		case <-time.After(10 * time.Second):
			t.Errorf("%s: socket still open", s.id)
		}
	}
	if n := e.b.Refusals().Count(ReasonWriteTimeout); n != 3 {
		t.Errorf("write_timeout counted %d, want 3", n)
	}
	if got := honestDevices(t, e, 2, 50, 30*time.Second); got != 100 {
		t.Errorf("honest devices: %d of 100 acknowledged after the stuck ones went", got)
	}
	testutil.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := e.hook.acks.budget.Acquire(ctx, ackBytes); err != nil {
			return false
		}
		e.hook.acks.budget.Release(ackBytes)
		return true
	})
}

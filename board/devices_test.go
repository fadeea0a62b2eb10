package board

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Fleet is a set of devices on the host publishing QoS 1 readings into the guest's broker
// at a fixed rate each. A device that loses its connection (a power cut, a restart) dials
// again and re-sends what was not acknowledged, with the same bytes, as a real device
// would. Every PUBACKed id is recorded: those must reach the upstream.
type Fleet struct {
	addr   string
	prefix string
	n      int
	rate   float64 // per device, msg/s
	window int

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex // guards acked
	acked map[string]bool

	sent, reconnects atomic.Int64
}

// message is one reading with its id.
type message struct {
	id      string
	payload []byte
}

// StartFleet starts n devices publishing rate msg/s each on devices/<prefix>-<i>/value.
func StartFleet(addr, prefix string, n int, rate float64, window int) *Fleet {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{addr: addr, prefix: prefix, n: n, rate: rate, window: window, cancel: cancel, acked: map[string]bool{}}
	for i := range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.device(ctx, i)
		}()
	}
	return f
}

// Stop stops every device and waits for them; unacknowledged messages stay unacknowledged.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

// Acked returns the acknowledged ids.
func (f *Fleet) Acked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.acked))
	for id := range f.acked {
		ids = append(ids, id)
	}
	return ids
}

// AckedCount is how many ids were acknowledged.
func (f *Fleet) AckedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acked)
}

func (f *Fleet) device(ctx context.Context, i int) {
	name := fmt.Sprintf("%s-%d", f.prefix, i)
	topic := "devices/" + name + "/value"
	var (
		pending []message // to (re)send, oldest first
		n       int
	)
	every := time.Duration(float64(time.Second) / f.rate)
	next := time.Now().Add(every * time.Duration(i) / time.Duration(f.n))
	for ctx.Err() == nil {
		o := paho.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID(name).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second).SetKeepAlive(10 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		f.reconnects.Add(1)
		// One connection: a new client each time, so no token can complete on a later
		// connection than the one that carried its publish.
		type inflight struct {
			m   message
			tok paho.Token
		}
		var win []inflight
		broken := false
		resend := pending
		pending = nil
		for ctx.Err() == nil && !broken {
			var m message
			if len(resend) > 0 {
				m, resend = resend[0], resend[1:]
			} else {
				if d := time.Until(next); d > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
					if ctx.Err() != nil {
						break
					}
				}
				next = next.Add(every)
				if time.Since(next) > time.Second {
					next = time.Now() // fell behind (a full window): no burst to catch up
				}
				id := fmt.Sprintf("%s-%07d", name, n)
				m = message{id: id, payload: fmt.Appendf(nil, `{"id":%q,"value":%d,"ts":%d}`, id, n%1000, time.Now().UnixMilli())}
				n++
			}
			win = append(win, inflight{m, c.Publish(topic, 1, false, m.payload)})
			f.sent.Add(1)
			// Keep at most window unacknowledged; take acknowledgements in order.
			for len(win) >= f.window || (len(win) > 0 && win[0].tok.WaitTimeout(0)) {
				w := win[0]
				if !w.tok.WaitTimeout(30*time.Second) || w.tok.Error() != nil {
					broken = true
					break
				}
				f.mu.Lock()
				f.acked[w.m.id] = true
				f.mu.Unlock()
				win = win[1:]
			}
		}
		// Whatever is not acknowledged is sent again on the next connection; on a stop,
		// the window's acknowledgements are awaited first.
		wait := time.Duration(0)
		if !broken {
			wait = 30 * time.Second
		}
		for _, w := range win {
			if w.tok.WaitTimeout(wait) && w.tok.Error() == nil {
				f.mu.Lock()
				f.acked[w.m.id] = true
				f.mu.Unlock()
				continue
			}
			pending = append(pending, w.m)
		}
		pending = append(pending, resend...)
		c.Disconnect(0)
	}
}

package soak

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
)

// arrival is one batch as an upstream received it.
type arrival struct {
	uplink  string
	payload []byte
	refused bool // answered with a permanent refusal (HTTP 4xx): must be dead-lettered
}

// collector gathers what every upstream received.
type collector struct {
	mu       sync.Mutex
	arrivals []arrival
}

func (c *collector) add(a arrival) {
	c.mu.Lock()
	c.arrivals = append(c.arrivals, a)
	c.mu.Unlock()
}

func (c *collector) all() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.arrivals...)
}

// mqttUpstream is the cloud MQTT broker (an in-process mochi) that can go down (flap) or
// take batches without acknowledging them (stall).
type mqttUpstream struct {
	*testutil.Upstream
	down atomic.Bool
}

func startMQTTUpstream(t *testing.T) *mqttUpstream {
	return &mqttUpstream{Upstream: testutil.StartUpstream(t)}
}

func (u *mqttUpstream) setDown(t *testing.T, down bool) {
	if u.down.Swap(down) == down {
		return
	}
	if down {
		u.Stop()
	} else {
		u.Start(t)
	}
}

func (u *mqttUpstream) setStalled(stall bool) { u.Withhold.Store(stall) }

// httpUpstream is the cloud HTTP collector. It refuses a fixed share of batches for good
// (400, chosen by batch id, so a resend is refused again), can be down (connection
// refused), answer 503 (flapping), or stall past the uplink's timeout.
type httpUpstream struct {
	addr    string
	col     *collector
	refuse  func(batchID string) bool
	stall   atomic.Bool
	failing atomic.Bool

	mu  sync.Mutex // guards srv
	srv *http.Server
	wg  sync.WaitGroup
}

func startHTTPUpstream(t *testing.T, col *collector, refuseOneIn int) *httpUpstream {
	u := &httpUpstream{addr: testutil.FreeAddr(t), col: col, refuse: func(id string) bool {
		h := sha256.Sum256([]byte(id))
		return refuseOneIn > 0 && int(h[0])%refuseOneIn == 0
	}}
	u.setDown(t, false)
	t.Cleanup(func() { u.setDown(t, true) })
	return u
}

func (u *httpUpstream) url() string { return "http://" + u.addr + "/ingest" }

func (u *httpUpstream) setDown(t *testing.T, down bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if down {
		if u.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_ = u.srv.Shutdown(ctx) // in-flight requests are cut: their batches are resent
			cancel()
			_ = u.srv.Close()
			u.srv = nil
			u.wg.Wait()
		}
		return
	}
	if u.srv != nil {
		return
	}
	var ln net.Listener
	testutil.Eventually(t, 10*time.Second, "bind "+u.addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", u.addr)
		return err == nil
	})
	srv := &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second}
	u.srv = srv
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http upstream: %v", err)
		}
	}()
}

func (u *httpUpstream) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return // the connection broke: the uplink resends
	}
	if u.stall.Load() {
		select { // past the uplink's timeout: it gives up and resends
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		http.Error(w, "stalled", http.StatusServiceUnavailable)
		return
	}
	if u.failing.Load() {
		http.Error(w, "flapping", http.StatusServiceUnavailable)
		return
	}
	bt, err := record.DecodeBatch(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		u.col.add(arrival{uplink: "collector", payload: b, refused: true})
		return
	}
	if u.refuse(bt.Batch) {
		u.col.add(arrival{uplink: "collector", payload: b, refused: true})
		http.Error(w, "refused by the soak for good", http.StatusBadRequest)
		return
	}
	u.col.add(arrival{uplink: "collector", payload: b})
	w.WriteHeader(http.StatusNoContent)
}

package broker

import (
	"sync"
	"time"
)

// tokenBucket allows rate events per second with bursts of up to burst. Not safe for
// concurrent use.
type tokenBucket struct {
	rate, burst float64
	tokens      float64 // below 0 while a reservation waits for its token
	last        time.Time
}

func newTokenBucket(rate, burst float64) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst}
}

func (b *tokenBucket) refill(now time.Time) {
	if !b.last.IsZero() {
		if d := now.Sub(b.last).Seconds(); d > 0 {
			// float64(…) rounds the product: without it arm64 fuses the multiply-add and
			// the waits come out a nanosecond short of amd64's.
			b.tokens = min(b.burst, b.tokens+float64(d*b.rate))
		}
	}
	if now.After(b.last) {
		b.last = now
	}
}

// reserve spends one token and returns how long to wait until it is there: 0 when the
// bucket had one.
func (b *tokenBucket) reserve(now time.Time) time.Duration {
	b.refill(now)
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// meter rates one client identity (user name and client id): PUBLISH packets and other
// client-initiated packets each at max_rate_per_client, bursts of one second. A packet
// without a token waits for it (pace). Meters outlive connections: a client that
// reconnects finds its buckets, and its pacing, as it left them.
type meter struct {
	mu               sync.Mutex // guards all below: a taken-over connection may still be reading
	publish, control tokenBucket
	pacedSince       time.Time // when the client's packets began to wait, without a pause since; zero: not paced
	lastUsed         time.Time
}

// pace takes a token for one packet and returns how long the packet must wait for it. A
// packet that found its token ends a stretch of pacing; flood is true when the client has
// been paced without a pause for floodAfter.
func (m *meter) pace(publish bool, now time.Time, floodAfter time.Duration) (wait time.Duration, flood bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastUsed = now
	b := &m.control
	if publish {
		b = &m.publish
	}
	wait = b.reserve(now)
	if wait == 0 {
		m.pacedSince = time.Time{}
		return 0, false
	}
	if m.pacedSince.IsZero() {
		m.pacedSince = now
	}
	if now.Sub(m.pacedSince) >= floodAfter {
		b.tokens++ // the packet is not processed: give its token back
		return 0, true
	}
	return wait, false
}

// meters holds the meter of each identity seen recently, at most max of them.
type meters struct {
	rate float64
	max  int

	mu sync.Mutex // guards m
	m  map[string]*meter
}

// meterIdle is how long an unused meter is kept: past it, its buckets would be full again
// anyway (a burst refills in one second).
const meterIdle = 10 * time.Second

func newMeters(rate float64, max int) *meters {
	return &meters{rate: rate, max: max, m: map[string]*meter{}}
}

// get returns the meter of an identity, creating it full.
func (ms *meters) get(user, clientID string, now time.Time) *meter {
	key := user + "\x00" + clientID
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m := ms.m[key]; m != nil {
		return m
	}
	if len(ms.m) >= ms.max {
		for k, m := range ms.m {
			m.mu.Lock()
			idle := now.Sub(m.lastUsed) > meterIdle
			m.mu.Unlock()
			if idle {
				delete(ms.m, k)
			}
		}
	}
	burst := max(ms.rate, 1)
	m := &meter{
		publish:  newTokenBucket(ms.rate, burst),
		control:  newTokenBucket(ms.rate, burst),
		lastUsed: now,
	}
	if len(ms.m) < ms.max { // all busy: this one is not remembered past its connection
		ms.m[key] = m
	}
	return m
}

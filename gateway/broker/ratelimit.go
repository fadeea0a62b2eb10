package broker

import (
	"sync"
	"time"
)

// tokenBucket allows rate events per second with bursts of up to burst. Not safe for
// concurrent use.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate, burst float64) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// take spends one token if there is one.
func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		if d := now.Sub(b.last).Seconds(); d > 0 {
			b.tokens = min(b.burst, b.tokens+d*b.rate)
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// verdict of a meter on one packet.
type verdict int

const (
	admitted verdict = iota // within the rate
	overRate                // over the rate: refuse the message, keep the connection
	flooding                // over the rate and out of strikes: disconnect
)

// meter rates one client identity (user name and client id): PUBLISH packets and other
// client-initiated packets each at max_rate_per_client, bursts of one second; packets over
// the rate spend strikes, refilled at the same rate with room for two seconds' worth, so a
// client that keeps sending at more than twice its rate runs out and is disconnected.
// Meters outlive connections: a client that reconnects finds its buckets as it left them.
type meter struct {
	mu                        sync.Mutex // guards all below: a taken-over connection may still be reading
	publish, control, strikes tokenBucket
	lastUsed                  time.Time
}

func (m *meter) admit(publish bool, now time.Time) verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastUsed = now
	b := &m.control
	if publish {
		b = &m.publish
	}
	switch {
	case b.take(now):
		return admitted
	case m.strikes.take(now):
		return overRate
	default:
		return flooding
	}
}

// meters holds the meter of each identity seen recently, at most max of them.
type meters struct {
	rate float64
	max  int

	mu sync.Mutex // guards m
	m  map[string]*meter
}

// meterIdle is how long an unused meter is kept: past it, its buckets would be full again
// anyway (a burst refills in one second, strikes in two).
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
		strikes:  newTokenBucket(ms.rate, 2*burst),
		lastUsed: now,
	}
	if len(ms.m) < ms.max { // all busy: this one is not remembered past its connection
		ms.m[key] = m
	}
	return m
}

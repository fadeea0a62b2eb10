// Package backoff is the one exponential backoff of edgegate: a wait that doubles per
// consecutive failure up to a cap, spread by a jitter policy so that peers that failed
// together do not retry together. Sensors, uplinks, pipelines and the broker's accept loop
// each pick their bounds and jitter; none writes its own loop.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jitter says how a wait is spread around its exponential step d.
type Jitter uint8

const (
	// None waits exactly d (a local retry with nobody to collide with: an accept loop).
	None Jitter = iota
	// Full waits uniformly in [0, d] (AWS's "full jitter": retries against one upstream).
	Full
	// Equal waits d/2 plus uniformly [0, d/2]: at least half the step, so a failing
	// store is not hammered, yet spread.
	Equal
	// Tenth waits d ± 10%: the schedule stays close to the step (a sensor's next read).
	Tenth
)

// Policy is an exponential backoff: Min after the first failure, doubled per further
// consecutive failure, capped at Max (no cap beyond Min when Max is 0), then spread by
// Jitter.
type Policy struct {
	Min, Max time.Duration
	Jitter   Jitter
}

// Step is the wait after the n-th consecutive failure (n ≥ 1) before jitter.
func (p Policy) Step(failures int) time.Duration {
	d := p.Min
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	return d
}

// Wait is the jittered wait after the n-th consecutive failure (n ≥ 1).
func (p Policy) Wait(failures int) time.Duration {
	d := p.Step(failures)
	if d <= 0 {
		return 0
	}
	switch p.Jitter {
	case Full:
		return time.Duration(rand.Int64N(int64(d) + 1))
	case Equal:
		return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	case Tenth:
		return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
	}
	return d
}

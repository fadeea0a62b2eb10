package sensors

import (
	"sync"
	"sync/atomic"
	"time"
)

// States of a sensor, as /status shows them.
const (
	// StateStarting: opened, not read yet.
	StateStarting = "starting"
	// StateUp: the last read answered.
	StateUp = "up"
	// StatePartial: the last read answered in part (one probe of several failed).
	StatePartial = "partial"
	// StateDown: the device is missing, failing or hung; the poller retries with backoff.
	StateDown = "down"
	// StateStopped: the poller has stopped.
	StateStopped = "stopped"
)

// Stats are the counters and state of one sensor. The counters are updated by the sensor's
// goroutine and may be read from anywhere.
type Stats struct {
	Reads         atomic.Uint64 // read attempts that reached the driver
	Errors        atomic.Uint64 // failed opens, reads, timeouts, partial reads, bad values
	Timeouts      atomic.Uint64 // reads that did not return within the timeout
	Published     atomic.Uint64 // readings handed to the ingest path
	PublishErrors atomic.Uint64 // readings the ingest path refused

	driver string

	mu          sync.Mutex // guards the fields below, which change together
	state       string
	since       time.Time
	lastErr     string
	lastErrAt   time.Time
	lastReading time.Time
	failures    int
	next        time.Time
}

// Status is a snapshot of one sensor for /status.
type Status struct {
	Name   string `json:"name"`
	Driver string `json:"driver"`
	// State is starting, up, partial, down or stopped.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// LastError is the last problem (kept after recovery, with its time).
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	LastReading *time.Time `json:"last_reading,omitempty"`
	// ConsecutiveFailures counts the failed attempts since the last good read.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// NextAttempt is when the poller tries the device next.
	NextAttempt   *time.Time `json:"next_attempt,omitempty"`
	Reads         uint64     `json:"reads"`
	Errors        uint64     `json:"errors"`
	Timeouts      uint64     `json:"timeouts"`
	Published     uint64     `json:"published"`
	PublishErrors uint64     `json:"publish_errors"`
}

func (s *Stats) setState(state string, now time.Time) {
	if s.state != state {
		s.state, s.since = state, now
	}
}

func (s *Stats) setErr(err error, now time.Time) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.lastErr, s.lastErrAt = err.Error(), now
	s.mu.Unlock()
}

func (s *Stats) failed(err error, now time.Time, failures int) {
	s.Errors.Add(1)
	s.mu.Lock()
	s.setState(StateDown, now)
	s.lastErr, s.lastErrAt = err.Error(), now
	s.failures = failures
	s.mu.Unlock()
}

// partial records a read that answered in part, and returns the error count.
func (s *Stats) partial(err error, now time.Time) uint64 {
	n := s.Errors.Add(1)
	s.mu.Lock()
	s.setState(StatePartial, now)
	s.lastErr, s.lastErrAt = err.Error(), now
	s.lastReading = now
	s.failures = 0
	s.mu.Unlock()
	return n
}

func (s *Stats) succeeded(now time.Time) {
	s.mu.Lock()
	s.setState(StateUp, now)
	s.lastReading = now
	s.failures = 0
	s.mu.Unlock()
}

func (s *Stats) nextAttempt(t time.Time) {
	s.mu.Lock()
	s.next = t
	s.mu.Unlock()
}

func (s *Stats) stopped(now time.Time) {
	s.mu.Lock()
	s.setState(StateStopped, now)
	s.next = time.Time{}
	s.mu.Unlock()
}

// State returns the sensor's state.
func (s *Stats) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Stats) snapshot(name string) Status {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	s.mu.Lock()
	st := Status{
		Name: name, Driver: s.driver, State: s.state, Since: s.since.UTC(),
		LastError: s.lastErr, LastErrorAt: opt(s.lastErrAt), LastReading: opt(s.lastReading),
		ConsecutiveFailures: s.failures, NextAttempt: opt(s.next),
	}
	s.mu.Unlock()
	st.Reads, st.Errors, st.Timeouts = s.Reads.Load(), s.Errors.Load(), s.Timeouts.Load()
	st.Published, st.PublishErrors = s.Published.Load(), s.PublishErrors.Load()
	return st
}

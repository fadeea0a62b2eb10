package uplink

import (
	"time"

	"github.com/edgegate/edgegate/record"
)

// Status is a snapshot of one uplink for /status, /readyz and metrics.
type Status struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Connected: the last send succeeded. An uplink that has sent nothing yet (it connects
	// lazily) is neither connected nor backing off.
	Connected bool `json:"connected"`
	// BackingOff: the last send failed and the uplink is waiting before the next try.
	BackingOff  bool      `json:"backing_off"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Backlog counts the log entries not yet acknowledged upstream (entries the forward
	// filters skip included, until the uplink has passed them).
	Backlog uint64 `json:"backlog"`
	// OldestUnsent is the event time of the oldest record not yet acknowledged (zero
	// when none), and OldestUnsentAge its age on the gateway clock.
	OldestUnsent    time.Time     `json:"oldest_unsent,omitzero"`
	OldestUnsentAge time.Duration `json:"oldest_unsent_age_ns"`
	// Draining: a backlog is being sent at max_rate beside fresh data (fresh-first).
	Draining bool `json:"draining"`

	Batches           uint64 `json:"batches"`
	Records           uint64 `json:"records"`
	Errors            uint64 `json:"errors"`
	Backoffs          uint64 `json:"backoffs"`
	DeadLetters       uint64 `json:"dead_letters"`
	DeadLetterRecords uint64 `json:"dead_letter_records"`
	// DeadLetterOmitted counts dead-lettered records too large for a dead-letter entry:
	// the log keeps their positions and the error, not their content.
	DeadLetterOmitted uint64 `json:"dead_letter_omitted"`
}

func (s *Stats) noteError(err error, now time.Time) {
	s.LastError.Store(err.Error())
	s.LastErrorAt.Store(now.UnixNano())
}

// Status returns the uplink's state now. It reads the store (one entry per log), so it is
// meant for status pages and scrapes, not hot paths. Safe to call from any goroutine.
func (u *Uplink) Status() Status {
	st := &u.stats
	s := Status{
		Name: u.name, Type: u.typ,
		Connected: st.Connected.Load(), BackingOff: st.BackoffNow.Load(),
		Batches: st.Batches.Load(), Records: st.Records.Load(), Errors: st.Errors.Load(),
		Backoffs: st.Backoffs.Load(), DeadLetters: st.DeadLetters.Load(), DeadLetterRecords: st.DeadLetterRecords.Load(),
		DeadLetterOmitted: st.DeadLetterOmitted.Load(),
	}
	if e, ok := st.LastError.Load().(string); ok {
		s.LastError = e
		s.LastErrorAt = time.Unix(0, st.LastErrorAt.Load()).UTC()
	}
	var oldest time.Time
	for _, sm := range u.streams {
		pos := sm.position.Load()
		last, err := u.store.LastSeq(sm.Log)
		if err != nil || last < max(pos, 1) {
			continue
		}
		n := last - max(pos, 1) + 1
		if a := sm.acked.Load(); a < n {
			n -= a
		} else {
			n = 0
		}
		s.Backlog += n
		s.Draining = s.Draining || sm.draining.Load()
		if n > 0 {
			if ts, ok := u.firstUnsentTime(sm.Log, pos); ok && (oldest.IsZero() || ts.Before(oldest)) {
				oldest = ts
			}
		}
	}
	if !oldest.IsZero() {
		s.OldestUnsent = oldest
		s.OldestUnsentAge = max(u.clock.Now().Sub(oldest), 0)
	}
	return s
}

// firstUnsentTime is the event time of the first entry at or after pos (record.TimeOf).
func (u *Uplink) firstUnsentTime(log string, pos uint64) (time.Time, bool) {
	var ts time.Time
	var ok bool
	_, _ = u.store.Read(log, pos, 1, func(_ uint64, v []byte) error {
		ts, ok = record.TimeOf(v)
		return nil
	})
	return ts, ok
}

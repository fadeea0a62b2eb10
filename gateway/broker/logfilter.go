package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// mochiLogHandler is the handler mochi logs through: routine messages demoted to debug
// (quietHandler), then the rest throttled.
func mochiLogHandler(next slog.Handler, now func() time.Time) slog.Handler {
	return quietHandler{newThrottle(next, now)}
}

// throttle logs warnings and errors at most once per message text every 10 s, with the
// number left unlogged, because a hostile client can make mochi log on every packet.
// Shared state across WithAttrs/WithGroup.
type throttle struct {
	next slog.Handler
	st   *throttleState
}

type throttleState struct {
	now        func() time.Time
	mu         sync.Mutex // guards last and suppressed
	last       map[string]time.Time
	suppressed map[string]int
}

func newThrottle(next slog.Handler, now func() time.Time) *throttle {
	return &throttle{next: next, st: newThrottleState(now)}
}

func newThrottleState(now func() time.Time) *throttleState {
	return &throttleState{now: now, last: map[string]time.Time{}, suppressed: map[string]int{}}
}

func (h *throttle) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *throttle) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		n, ok := h.st.allow(r.Message)
		if !ok {
			return nil
		}
		if n > 0 {
			r = r.Clone()
			r.AddAttrs(slog.Int("unlogged_since_last", n))
		}
	}
	return h.next.Handle(ctx, r)
}

// allow reports whether msg may be logged now (at most once every refusalLogEvery), with
// how many times it was not since it last was. Refusals uses it too, keyed by reason.
func (s *throttleState) allow(msg string) (suppressed int, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, seen := s.last[msg]; seen && now.Sub(last) < refusalLogEvery {
		s.suppressed[msg]++
		return 0, false
	}
	if len(s.last) > 1024 { // messages are mochi's constants, but bound the map anyway
		clear(s.last)
		clear(s.suppressed)
	}
	s.last[msg] = now
	n := s.suppressed[msg]
	delete(s.suppressed, msg)
	return n, true
}

func (h *throttle) WithAttrs(as []slog.Attr) slog.Handler {
	return &throttle{next: h.next.WithAttrs(as), st: h.st}
}

func (h *throttle) WithGroup(name string) slog.Handler {
	return &throttle{next: h.next.WithGroup(name), st: h.st}
}

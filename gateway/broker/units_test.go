package broker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1795694400, 0)
	b := newTokenBucket(10, 5)
	var waits []time.Duration
	for i := 0; i < 7; i++ {
		waits = append(waits, b.reserve(t0))
	}
	want := []time.Duration{0, 0, 0, 0, 0, 100 * time.Millisecond, 200 * time.Millisecond}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("burst of 5 at 10/s then two more: waits %v, want %v", waits, want)
		}
	}
	// The two reservations are paid at t0+200ms: the next token is due 100 ms later.
	if w := b.reserve(t0.Add(200 * time.Millisecond)); w != 100*time.Millisecond {
		t.Errorf("after the reservations were paid: wait %v, want 100ms", w)
	}
	if w := b.reserve(t0.Add(time.Hour)); w != 0 || b.tokens != 4 {
		t.Errorf("refill is capped at the burst: wait %v, %v tokens after a take", w, b.tokens)
	}
	if b.reserve(t0.Add(-time.Hour)); b.tokens != 3 {
		t.Errorf("a clock going backwards must not add tokens: %v", b.tokens)
	}
}

func TestMeterPace(t *testing.T) {
	t0 := time.Unix(1795694400, 0)
	ms := newMeters(2, 10)
	m := ms.get("u", "c", t0)
	const floodAfter = 3 * time.Second
	now := t0
	var got []time.Duration
	for i := 0; i < 4; i++ {
		w, flood := m.pace(true, now, floodAfter)
		if flood {
			t.Fatalf("packet %d: flood after %v", i, now.Sub(t0))
		}
		got = append(got, w)
		now = now.Add(w) // the read goroutine waits, then reads the next packet
	}
	if want := []time.Duration{0, 0, 500 * time.Millisecond, 500 * time.Millisecond}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	if w, _ := m.pace(false, now, floodAfter); w != 0 {
		t.Error("control packets have their own bucket")
	}
	// Paced without a pause (always a packet ready when its token comes) for floodAfter: a flood.
	flood := false
	for i := 0; i < 100 && !flood; i++ {
		var w time.Duration
		w, flood = m.pace(true, now, floodAfter)
		now = now.Add(w)
	}
	if !flood || now.Sub(t0) < floodAfter {
		t.Fatalf("flood %v after %v paced", flood, now.Sub(t0))
	}
	// A pause (the client sent slower than its rate, a token was there) ends the stretch.
	m2 := ms.get("u", "pause", t0)
	now = t0
	for i := 0; i < 40; i++ {
		w, flood := m2.pace(true, now, floodAfter)
		if flood {
			t.Fatalf("a client pausing every 4 packets flagged as a flood at %v", now.Sub(t0))
		}
		now = now.Add(w)
		if i%4 == 3 {
			now = now.Add(time.Second)
		}
	}
	if ms.get("u", "c", t0) != m {
		t.Error("the same identity got a new meter")
	}
	if ms.get("v", "c", t0) == m || ms.get("u", "d", t0) == m {
		t.Error("different identities share a meter")
	}
	for i := 0; i < 20; i++ {
		ms.get("x", string(rune('a'+i)), t0)
	}
	if len(ms.m) > 10 {
		t.Errorf("%d meters kept, max 10", len(ms.m))
	}
	ms.get("late", "1", t0.Add(time.Minute)) // all idle by now: evicted
	if len(ms.m) != 1 {
		t.Errorf("%d meters after eviction of the idle ones, want 1", len(ms.m))
	}
}

func TestConnLimiterSources(t *testing.T) {
	l := newConnLimiter(100, 2, 100, 2)
	addr := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	take := func(s string) bool { // a connection that logs in at once: never closed for room
		c := &limitedConn{key: sourcePrefix(addr(s))}
		evict, err := l.acquire(c)
		if len(evict) > 0 {
			t.Fatalf("%s: a logged-in connection was closed for room", s)
		}
		l.settle(c)
		return err == nil
	}
	if !take("[2001:db8::1]:1") || !take("[2001:db8::2]:1") || take("[2001:db8::ffff]:1") {
		t.Error("one IPv6 /64 is one source")
	}
	if !take("[2001:db8:0:1::1]:1") {
		t.Error("another /64 is another source")
	}
	if !take("10.0.0.1:1") || !take("10.0.0.1:2") || take("10.0.0.1:3") || !take("[::ffff:10.0.0.2]:1") {
		t.Error("IPv4 sources are per address, IPv4-mapped IPv6 included")
	}
	one := newConnLimiter(1, 1, 1, 1)
	c := &limitedConn{key: sourcePrefix(addr("10.0.0.9:1"))}
	if _, err := one.acquire(c); err != nil {
		t.Fatal(err)
	}
	one.release(c)
	one.release(c) // idempotent
	if one.total != 0 || len(one.perIP) != 0 || len(one.pending) != 0 {
		t.Errorf("after a double release: %d open, %v per source, %d pending; want none", one.total, one.perIP, len(one.pending))
	}
}

// TestConnLimiterMakesRoom: a source at its own pending bound is refused; at the bounds
// over all sources, the oldest pending connection of the source with the most pending ones
// is closed for a newcomer from another source; logged-in ones never are.
func TestConnLimiterMakesRoom(t *testing.T) {
	l := newConnLimiter(4, 10, 3, 3)
	addr := func(s string) netip.Prefix { a, _ := net.ResolveTCPAddr("tcp", s); return sourcePrefix(a) }
	conn := func(s string) *limitedConn { return &limitedConn{key: addr(s)} }
	a1, a2, b1 := conn("10.0.0.1:1"), conn("10.0.0.1:2"), conn("10.0.0.2:1")
	for _, c := range []*limitedConn{a1, a2, b1} {
		if ev, err := l.acquire(c); err != nil || len(ev) > 0 {
			t.Fatalf("acquire: %v %v", ev, err)
		}
	}
	if ev, err := l.acquire(conn("10.0.0.1:3")); err == nil || len(ev) > 0 {
		t.Fatalf("max_pending_connections reached, newcomer from the busiest source: %v %v, want a refusal", ev, err)
	}
	l2 := newConnLimiter(10, 10, 10, 1)
	l2.acquire(conn("10.0.0.9:1"))
	if ev, err := l2.acquire(conn("10.0.0.9:2")); err == nil || len(ev) > 0 {
		t.Fatalf("a second pending connection from a source (max_pending_per_ip 1): %v %v, want a refusal", ev, err)
	}
	c1 := conn("10.0.0.3:1") // max_pending 3 reached: the oldest of 10.0.0.1 (the busiest) goes
	if ev, err := l.acquire(c1); err != nil || len(ev) != 1 || ev[0] != a1 {
		t.Fatalf("evicted %v (%v), want the oldest of the busiest source", ev, err)
	}
	l.settle(c1)
	l.settle(b1)
	c2 := conn("10.0.0.4:1")
	if ev, err := l.acquire(c2); err != nil || len(ev) != 0 {
		t.Fatalf("a fourth slot: %v %v", ev, err)
	}
	l.settle(c2)
	c3 := conn("10.0.0.5:1") // max_clients 4: a2, the only pending one, makes room
	if ev, err := l.acquire(c3); err != nil || len(ev) != 1 || ev[0] != a2 {
		t.Fatalf("evicted %v (%v), want the last pending one", ev, err)
	}
	l.settle(c3)
	if ev, err := l.acquire(conn("10.0.0.6:1")); err == nil || len(ev) != 0 {
		t.Fatalf("max_clients logged in: %v %v, want a refusal", ev, err)
	}
}

func TestRefusalsLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	clk := clock.NewFake(time.Unix(1795694400, 0))
	r := NewRefusals(clk, slog.New(slog.NewTextHandler(&buf, nil)))
	for i := 0; i < 100; i++ {
		r.Add(ingest.ReasonMalformed, "dev", "devices/dev/t", errors.New("bad"))
	}
	r.Add(ingest.ReasonBufferFull, "dev", "", nil)
	clk.Advance(11 * time.Second)
	r.Add(ingest.ReasonMalformed, "dev", "devices/dev/t", errors.New("bad"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (one per reason, then one after 10 s):\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[2], "unlogged_since_last=99") {
		t.Errorf("the unlogged count is missing: %s", lines[2])
	}
	if r.Count(ingest.ReasonMalformed) != 101 || r.Snapshot()[ingest.ReasonBufferFull] != 1 {
		t.Errorf("counts %v", r.Snapshot())
	}
}

func TestThrottleMochiLogs(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1795694400, 0)
	h := mochiLogHandler(slog.NewTextHandler(&buf, nil), func() time.Time { return now })
	log := slog.New(h).With("component", "mqtt")
	for i := 0; i < 50; i++ {
		log.Warn("error processing packet", "client", "x")
		log.Error("publish packet error", "packet", "payload") // demoted to debug: dropped
		log.Info("client connected")                           // info is not throttled
	}
	now = now.Add(time.Minute)
	log.Warn("error processing packet")
	out := buf.String()
	if n := strings.Count(out, "error processing packet"); n != 2 {
		t.Errorf("warning logged %d times, want 2:\n%s", n, out)
	}
	if strings.Contains(out, "publish packet error") || strings.Count(out, "client connected") != 50 {
		t.Errorf("unexpected output:\n%s", out)
	}
	if !strings.Contains(out, "unlogged_since_last=49") {
		t.Errorf("no unlogged count:\n%s", out)
	}
}

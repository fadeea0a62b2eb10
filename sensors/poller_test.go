package sensors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fakeDriver reads through a behaviour function; every call is announced on calls (after
// the behaviour's own timers are armed, so a test may move the clock once it sees it).
type fakeDriver struct {
	clk    clock.Clock
	read   func(ctx context.Context, n int) ([]Reading, error)
	calls  chan int
	mu     sync.Mutex
	n      int
	closed int
}

func newFake(clk clock.Clock, read func(ctx context.Context, n int) ([]Reading, error)) *fakeDriver {
	return &fakeDriver{clk: clk, read: read, calls: make(chan int, 100)}
}

func (d *fakeDriver) Read(ctx context.Context) ([]Reading, error) {
	d.mu.Lock()
	d.n++
	n := d.n
	d.mu.Unlock()
	return d.read(ctx, n)
}

func (d *fakeDriver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed++
	return nil
}

func (d *fakeDriver) closes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

func ok(v float64) []Reading { return []Reading{{Metric: "temperature", Value: v, Unit: "Cel"}} }

type published struct {
	topic string
	value float64
	ts    time.Time
	unit  string
}

// recPub records what the poller publishes.
type recPub struct {
	mu   sync.Mutex
	msgs []published
	fail error
}

func (p *recPub) Publish(_ context.Context, tp string, payload []byte) error {
	var m struct {
		Value float64 `json:"value"`
		TS    int64   `json:"ts"`
		Unit  string  `json:"unit"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.msgs = append(p.msgs, published{tp, m.Value, time.UnixMilli(m.TS).UTC(), m.Unit})
	return nil
}

func (p *recPub) on(tp string) []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []published
	for _, m := range p.msgs {
		if m.topic == tp {
			out = append(out, m)
		}
	}
	return out
}

type harness struct {
	t   *testing.T
	clk *clock.Fake
	pub *recPub
	p   *Poller
	ctx context.Context
	end func()
}

func sensor(t *testing.T, name string, d Driver, interval, timeout time.Duration) Sensor {
	tp, err := topic.ParseTemplate("sensors/{name}/{metric}")
	if err != nil {
		t.Fatal(err)
	}
	return Sensor{Name: name, Kind: "fake", Driver: d, Interval: interval, Timeout: timeout, Topic: tp}
}

func start(t *testing.T, clk *clock.Fake, ss ...Sensor) *harness {
	h := &harness{t: t, clk: clk, pub: &recPub{}}
	h.p = NewPoller(ss, h.pub, clk, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	done := make(chan struct{})
	go func() { defer close(done); h.p.Run(ctx) }()
	h.end = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("poller did not stop")
		}
	}
	for _, s := range ss {
		h.waitNext(s.Name, time.Time{})
	}
	return h
}

func (h *harness) next(name string) time.Time {
	st := h.p.Stats(name)
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.next
}

// waitNext waits until the sensor has scheduled its next attempt after old: its goroutine
// is then idle on the clock. Real time only guards against a deadlock.
func (h *harness) waitNext(name string, old time.Time) time.Time {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if n := h.next(name); !n.Equal(old) {
			return n
		}
		time.Sleep(100 * time.Microsecond)
	}
	h.t.Fatalf("sensor %s did not schedule past %s", name, old)
	return time.Time{}
}

// fire moves the clock to at and waits for each named sensor to finish its attempt.
func (h *harness) fire(at time.Time, names ...string) {
	h.t.Helper()
	old := make([]time.Time, len(names))
	for i, n := range names {
		old[i] = h.next(n)
	}
	h.clk.Set(at)
	for i, n := range names {
		h.waitNext(n, old[i])
	}
}

func called(t *testing.T, d *fakeDriver) int {
	t.Helper()
	select {
	case n := <-d.calls:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("driver was not read")
		return 0
	}
}

// TestScheduleAndPayload: the first read comes at the sensor's phase, then on a fixed
// grid every interval; readings carry the clock's time, calibration and unit override.
func TestScheduleAndPayload(t *testing.T) {
	clk := clock.NewFake(t0)
	n := 0.0
	d := newFake(clk, func(context.Context, int) ([]Reading, error) {
		n++
		return []Reading{{Metric: "temperature", Value: 20 + n, Unit: "Cel"}, {Metric: "count", Value: n, Unit: "count"}}, nil
	})
	s := sensor(t, "greenhouse", d, 10*time.Second, 0)
	s.Calibration = map[string]Calibration{
		"temperature": {Scale: 1, Offset: -0.5},
		"count":       {Scale: 0.1, Unit: "mm"}, // a 0.1 mm tipping bucket
	}
	h := start(t, clk, s)
	defer h.end()

	ph := phase("greenhouse", 10*time.Second)
	if got := h.next("greenhouse"); !got.Equal(t0.Add(ph)) {
		t.Fatalf("first attempt at %s, want t0+phase %s", got, t0.Add(ph))
	}
	for k := 0; k < 4; k++ {
		at := t0.Add(ph + time.Duration(k)*10*time.Second)
		h.fire(at, "greenhouse")
		if next := h.next("greenhouse"); !next.Equal(at.Add(10 * time.Second)) {
			t.Fatalf("after read %d next at %s, want %s", k, next, at.Add(10*time.Second))
		}
	}
	temps := h.pub.on("sensors/greenhouse/temperature")
	rain := h.pub.on("sensors/greenhouse/count")
	if len(temps) != 4 || len(rain) != 4 {
		t.Fatalf("published %d temperatures, %d counts; want 4 each", len(temps), len(rain))
	}
	for k, m := range temps {
		at := t0.Add(ph + time.Duration(k)*10*time.Second).Truncate(time.Millisecond)
		if !m.ts.Equal(at) || m.value != 20+float64(k+1)-0.5 || m.unit != "Cel" {
			t.Errorf("temperature %d = %+v, want %v at %s", k, m, 20+float64(k+1)-0.5, at)
		}
		// Calibrated values carry no float noise: 3 × 0.1 is 0.3, not 0.30000000000000004.
		if want := []float64{0.1, 0.2, 0.3, 0.4}[k]; rain[k].value != want || rain[k].unit != "mm" {
			t.Errorf("count %d = %+v, want %v mm", k, rain[k], want)
		}
	}
	st := h.p.Status()[0]
	if st.State != StateUp || st.Reads != 4 || st.Published != 8 || st.Errors != 0 {
		t.Errorf("status %+v", st)
	}
}

// TestHungDriverDoesNotDelayOthers: a driver stuck in Read (ignoring its context) times
// out, is marked down, is not read again while stuck, and recovers once it returns; a
// second sensor meanwhile reads exactly on its grid.
func TestHungDriverDoesNotDelayOthers(t *testing.T) {
	clk := clock.NewFake(t0)
	release := make(chan struct{})
	hung := newFake(clk, nil)
	hung.read = func(_ context.Context, n int) ([]Reading, error) {
		hung.calls <- n
		if n == 1 {
			<-release // stuck in a bus transaction: no context can end it
		}
		return ok(float64(n)), nil
	}
	good := newFake(clk, func(context.Context, int) ([]Reading, error) { return ok(1), nil })
	h := start(t, clk,
		sensor(t, "hung", hung, 10*time.Second, 2*time.Second),
		sensor(t, "good", good, time.Second, 0))

	goodGrid := t0.Add(phase("good", time.Second))
	var timeoutAt time.Time // while the hung read waits on its timeout
	attempts := 0
	for len(h.pub.on("sensors/hung/temperature")) == 0 {
		nh, ng := h.next("hung"), h.next("good")
		if !timeoutAt.IsZero() {
			nh = timeoutAt
		}
		switch {
		case !ng.After(nh):
			h.fire(ng, "good")
			if !ng.Equal(goodGrid) {
				t.Fatalf("good sensor read at %s, want %s (delayed by the hung one)", ng, goodGrid)
			}
			goodGrid = goodGrid.Add(time.Second)
		case !timeoutAt.IsZero():
			h.fire(nh, "hung")
			timeoutAt = time.Time{}
			st := h.p.Stats("hung")
			if st.State() != StateDown || st.Timeouts.Load() != 1 {
				t.Fatalf("after the timeout: state %s, timeouts %d", st.State(), st.Timeouts.Load())
			}
		default:
			attempts++
			switch attempts {
			case 1: // the read that hangs
				clk.Set(nh)
				called(t, hung)
				timeoutAt = nh.Add(2 * time.Second)
			case 2: // still stuck: skipped and counted, no second Read
				h.fire(nh, "hung")
				if r := h.p.Stats("hung").Reads.Load(); r != 1 {
					t.Fatalf("reads %d while the first is stuck, want 1", r)
				}
				if e := h.p.Status()[0].LastError; e != errReadHung.Error() {
					t.Fatalf("last error %q", e)
				}
				close(release)
			default: // back: read again and published
				h.fire(nh, "hung")
				called(t, hung)
			}
		}
	}
	if len(h.pub.on("sensors/good/temperature")) < 20 {
		t.Errorf("good sensor published %d readings", len(h.pub.on("sensors/good/temperature")))
	}
	st := h.p.Status()[0]
	if st.State != StateUp || st.Errors != 2 || st.Timeouts != 1 || st.Reads != 2 || st.ConsecutiveFailures != 0 {
		t.Errorf("hung sensor status after recovery %+v", st)
	}
	h.end()
	if hung.closes() != 1 || good.closes() != 1 {
		t.Errorf("closes: hung %d good %d, want 1 each", hung.closes(), good.closes())
	}
}

// TestSlowDriverDoesNotDelayOthers: a read that takes 3s of a 5s timeout delays only its
// own sensor.
func TestSlowDriverDoesNotDelayOthers(t *testing.T) {
	clk := clock.NewFake(t0)
	slow := newFake(clk, nil)
	slow.read = func(ctx context.Context, n int) ([]Reading, error) {
		c := clk.After(3 * time.Second)
		slow.calls <- n
		select {
		case <-c:
			return ok(float64(n)), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	good := newFake(clk, func(context.Context, int) ([]Reading, error) { return ok(1), nil })
	h := start(t, clk,
		sensor(t, "slow", slow, 10*time.Second, 5*time.Second),
		sensor(t, "good", good, time.Second, 0))
	defer h.end()

	goodGrid := t0.Add(phase("good", time.Second))
	var doneAt time.Time
	for len(h.pub.on("sensors/slow/temperature")) < 3 {
		ns, ng := h.next("slow"), h.next("good")
		if !doneAt.IsZero() {
			ns = doneAt
		}
		switch {
		case !ng.After(ns):
			h.fire(ng, "good")
			if !ng.Equal(goodGrid) {
				t.Fatalf("good sensor read at %s, want %s", ng, goodGrid)
			}
			goodGrid = goodGrid.Add(time.Second)
		case doneAt.IsZero():
			clk.Set(ns)
			called(t, slow)
			doneAt = ns.Add(3 * time.Second)
		default:
			h.fire(ns, "slow")
			doneAt = time.Time{}
		}
	}
	ms := h.pub.on("sensors/slow/temperature")
	ph := phase("slow", 10*time.Second)
	for k, m := range ms {
		// Stamped when the reading came back; the grid is kept despite the slowness.
		if want := t0.Add(ph + time.Duration(k)*10*time.Second + 3*time.Second).Truncate(time.Millisecond); !m.ts.Equal(want) {
			t.Errorf("slow reading %d at %s, want %s", k, m.ts, want)
		}
	}
	if st := h.p.Stats("slow"); st.Errors.Load() != 0 || st.State() != StateUp {
		t.Errorf("slow sensor: errors %d state %s", st.Errors.Load(), st.State())
	}
}

// TestBackoffAndRecovery: consecutive failures back off exponentially (±10% jitter) on the
// injected clock, are counted, and the first good read brings the sensor up and back to its
// grid.
func TestBackoffAndRecovery(t *testing.T) {
	clk := clock.NewFake(t0)
	const fails = 5
	d := newFake(clk, func(_ context.Context, n int) ([]Reading, error) {
		if n <= fails {
			return nil, fmt.Errorf("i2c: remote I/O error (%d)", n)
		}
		return ok(21), nil
	})
	const interval = 10 * time.Second
	h := start(t, clk, sensor(t, "flaky", d, interval, 0))
	defer h.end()

	at := h.next("flaky")
	anchor := at
	for k := 1; k <= fails; k++ {
		h.fire(at, "flaky")
		st := h.p.Status()[0]
		if st.State != StateDown || st.ConsecutiveFailures != k || st.Errors != uint64(k) {
			t.Fatalf("after failure %d: %+v", k, st)
		}
		want := interval << (k - 1)
		got := h.next("flaky").Sub(at)
		if got < want-want/10 || got > want+want/10 {
			t.Fatalf("backoff after failure %d = %s, want %s ±10%%", k, got, want)
		}
		// Nothing happens before the backoff ends.
		clk.Set(at.Add(got - time.Millisecond))
		if r := h.p.Stats("flaky").Reads.Load(); r != uint64(k) {
			t.Fatalf("read %d times before the backoff ended, want %d", r, k)
		}
		at = at.Add(got)
	}
	h.fire(at, "flaky")
	st := h.p.Status()[0]
	if st.State != StateUp || st.ConsecutiveFailures != 0 || st.Errors != fails || st.Published != 1 {
		t.Fatalf("after recovery: %+v", st)
	}
	if st.LastError != "i2c: remote I/O error (5)" || st.LastErrorAt == nil {
		t.Errorf("last error kept for /status: %q %v", st.LastError, st.LastErrorAt)
	}
	// Back on the grid anchored at the first phase.
	next := h.next("flaky")
	if off := next.Sub(anchor) % interval; off != 0 || !next.After(at) || next.Sub(at) > interval {
		t.Errorf("next read at %s is off the grid of %s by %s", next, anchor, off)
	}
}

// TestBackoffCaps: the wait never exceeds the cap (or the interval, when longer).
func TestBackoffCaps(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		failures int
		base     time.Duration
	}{
		{time.Second, 1, time.Second},
		{time.Second, 4, 8 * time.Second},
		{time.Second, 30, maxBackoff},
		{10 * time.Second, 1000, maxBackoff},
		{time.Hour, 3, time.Hour},
	} {
		for i := 0; i < 200; i++ {
			got := backoff(tc.interval, tc.failures)
			if got < tc.base-tc.base/10 || got > tc.base+tc.base/10 {
				t.Fatalf("backoff(%s, %d) = %s, want %s ±10%%", tc.interval, tc.failures, got, tc.base)
			}
		}
	}
}

// TestDegradedStartRetriesOpen: a sensor whose device was missing at start is down with the
// open error, retried with backoff, and up once the device appears.
func TestDegradedStartRetriesOpen(t *testing.T) {
	clk := clock.NewFake(t0)
	opens := 0
	dev := newFake(clk, func(context.Context, int) ([]Reading, error) { return ok(19.5), nil })
	s := sensor(t, "late", nil, 10*time.Second, 0)
	s.OpenErr = errors.New("no device answered at 0x76 on /dev/i2c-1")
	s.Open = func() (Driver, error) {
		opens++
		if opens < 3 {
			return nil, fmt.Errorf("no device answered at 0x76 on /dev/i2c-1 (try %d)", opens)
		}
		return dev, nil
	}
	h := start(t, clk, s)
	defer h.end()
	if st := h.p.Status()[0]; st.State != StateDown || st.LastError != "no device answered at 0x76 on /dev/i2c-1" {
		t.Fatalf("at start: %+v", st)
	}
	for i := 1; i <= 2; i++ {
		h.fire(h.next("late"), "late")
		if st := h.p.Status()[0]; st.State != StateDown || st.ConsecutiveFailures != i || st.Reads != 0 {
			t.Fatalf("after failed open %d: %+v", i, st)
		}
	}
	h.fire(h.next("late"), "late")
	if st := h.p.Status()[0]; st.State != StateUp || st.Published != 1 || opens != 3 {
		t.Fatalf("after the device appeared: %+v (opens %d)", st, opens)
	}
}

// TestPartialRead: readings that came with an error are published, the error counted, and
// the sensor stays on its schedule.
func TestPartialRead(t *testing.T) {
	clk := clock.NewFake(t0)
	d := newFake(clk, func(context.Context, int) ([]Reading, error) {
		return []Reading{{Metric: "top", Value: 4.5, Unit: "Cel"}, {Metric: "x", Value: math.NaN()}},
			errors.New("probe 28-0316a2797b00: device did not respond")
	})
	h := start(t, clk, sensor(t, "tank", d, 30*time.Second, 0))
	defer h.end()
	at := h.next("tank")
	h.fire(at, "tank")
	st := h.p.Status()[0]
	if st.State != StatePartial || st.Errors != 2 || st.Published != 1 {
		t.Fatalf("status %+v", st)
	}
	if next := h.next("tank"); next.Sub(at) != 30*time.Second {
		t.Errorf("partial read backed off: next in %s", next.Sub(at))
	}
	if len(h.pub.on("sensors/tank/top")) != 1 || len(h.pub.on("sensors/tank/x")) != 0 {
		t.Errorf("published %+v", h.pub.msgs)
	}
}

// TestPublishErrorIsNotADeviceFailure: a reading the ingest path refuses is counted apart
// and does not take the sensor down.
func TestPublishErrorIsNotADeviceFailure(t *testing.T) {
	clk := clock.NewFake(t0)
	d := newFake(clk, func(context.Context, int) ([]Reading, error) { return ok(1), nil })
	h := start(t, clk, sensor(t, "s", d, time.Second, 0))
	defer h.end()
	h.pub.mu.Lock()
	h.pub.fail = errors.New("buffer full")
	h.pub.mu.Unlock()
	at := h.next("s")
	h.fire(at, "s")
	st := h.p.Status()[0]
	if st.State != StateUp || st.PublishErrors != 1 || st.Errors != 0 || h.next("s").Sub(at) != time.Second {
		t.Errorf("status %+v", st)
	}
}

// TestShutdownAbandonsStuckRead: at shutdown a read stuck in its driver is waited for at
// most ShutdownGrace, then abandoned without closing the device under it.
func TestShutdownAbandonsStuckRead(t *testing.T) {
	clk := clock.NewFake(t0)
	release := make(chan struct{})
	d := newFake(clk, nil)
	d.read = func(context.Context, int) ([]Reading, error) {
		d.calls <- 1
		<-release
		return nil, nil
	}
	h := start(t, clk, sensor(t, "stuck", d, 10*time.Second, time.Second))
	at := h.next("stuck")
	clk.Set(at)
	called(t, d)
	h.fire(at.Add(time.Second), "stuck") // the read times out; the sensor is down
	done := make(chan struct{})
	go func() { h.end(); close(done) }()
	// Run waits on the grace timer: move the clock past it until Run returns.
	for stopped := false; !stopped; {
		select {
		case <-done:
			stopped = true
		case <-time.After(time.Millisecond):
			clk.Advance(h.p.ShutdownGrace)
		}
	}
	if d.closes() != 0 {
		t.Error("a driver with a stuck read was closed")
	}
	if st := h.p.Stats("stuck").State(); st == StateStopped {
		t.Error("abandoned sensor reported stopped")
	}
	close(release) // let the abandoned goroutine end before goleak looks
}

func TestOpenReportsEveryMissingDevice(t *testing.T) {
	clk := clock.NewFake(t0)
	opened := newFake(clk, nil)
	factories := []DriverType{
		{Name: "good", Open: func(*Config, clock.Clock) (Driver, error) { return opened, nil }},
		{Name: "missing", Open: func(c *Config, _ clock.Clock) (Driver, error) {
			return nil, fmt.Errorf("no device answered at %#x on %s", c.Address, c.Bus)
		}},
	}
	mk := func(name, driver, onMissing string) Config {
		return Config{Name: name, Driver: driver, Interval: conf.Duration(time.Second), Topic: "sensors/{name}/{metric}",
			Bus: "/dev/i2c-1", Address: 0x76, OnMissing: onMissing}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	_, err := Open([]Config{mk("a", "good", "fail"), mk("b", "missing", "fail"), mk("c", "missing", "fail")}, factories, clk, log)
	want := `sensor "b" (missing): no device answered at 0x76 on /dev/i2c-1 (or set on_missing: degraded to start without it)
sensor "c" (missing): no device answered at 0x76 on /dev/i2c-1 (or set on_missing: degraded to start without it)`
	if err == nil || err.Error() != want {
		t.Fatalf("Open error:\n%v\nwant:\n%s", err, want)
	}
	if opened.closes() != 1 {
		t.Errorf("the sensor opened before the failure was closed %d times, want 1", opened.closes())
	}

	ss, err := Open([]Config{mk("a", "good", "fail"), mk("b", "missing", "degraded")}, factories, clk, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 || ss[1].Driver != nil || ss[1].OpenErr == nil || ss[1].Open == nil {
		t.Fatalf("degraded sensor: %+v", ss[1])
	}
	p := NewPoller(ss, &recPub{}, clk, log)
	if st := p.Status(); st[0].State != StateStarting || st[1].State != StateDown ||
		st[1].LastError != `sensor "b" (missing): no device answered at 0x76 on /dev/i2c-1` {
		t.Errorf("status %+v", st)
	}
	CloseAll(ss)
}

func BenchmarkPayload(b *testing.B) {
	r := Reading{Metric: "temperature", Value: 21.53, Unit: "Cel"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		Payload(r, t0)
	}
}

type discardPub struct{}

func (discardPub) Publish(context.Context, string, []byte) error { return nil }

// BenchmarkAttempt is one poll of a sensor that answers at once with three readings:
// the read goroutine, the timeout timer, calibration, payloads and publishing. Compare it
// with BenchmarkPayload (one payload) run alongside.
func BenchmarkAttempt(b *testing.B) {
	rs := []Reading{{"temperature", 21.5, "Cel"}, {"humidity", 40, "%RH"}, {"pressure", 100653.25, "Pa"}}
	d := &fakeDriver{read: func(context.Context, int) ([]Reading, error) { return append([]Reading(nil), rs...), nil }}
	tp, _ := topic.ParseTemplate("sensors/{name}/{metric}")
	s := Sensor{Name: "bench", Kind: "fake", Driver: d, Interval: time.Second, Topic: tp,
		Calibration: map[string]Calibration{"temperature": {Scale: 1, Offset: -0.4}}}
	p := NewPoller([]Sensor{s}, discardPub{}, clock.Real{}, slog.New(slog.DiscardHandler))
	r := &sensorRun{p: p, s: s, st: p.stats["bench"], dev: d}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := r.attempt(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFailedReadReopensDevice: after a failed read the device is closed and opened again
// (a chip that browned out needs its configuration rewritten), and read through the new
// handle.
func TestFailedReadReopensDevice(t *testing.T) {
	clk := clock.NewFake(t0)
	var drivers []*fakeDriver
	open := func() (Driver, error) {
		n := len(drivers)
		d := newFake(clk, func(context.Context, int) ([]Reading, error) {
			if n == 0 {
				return nil, errors.New("i2c: remote I/O error")
			}
			return ok(20), nil
		})
		drivers = append(drivers, d)
		return d, nil
	}
	first, _ := open()
	s := sensor(t, "bme", first, 10*time.Second, 0)
	s.Open = open
	h := start(t, clk, s)
	defer h.end()
	h.fire(h.next("bme"), "bme")
	if len(drivers) != 1 || drivers[0].closes() != 1 || h.p.Stats("bme").State() != StateDown {
		t.Fatalf("after the failed read: %d opens, first closed %d times, state %s", len(drivers), drivers[0].closes(), h.p.Stats("bme").State())
	}
	h.fire(h.next("bme"), "bme")
	if len(drivers) != 2 || h.p.Stats("bme").State() != StateUp || len(h.pub.on("sensors/bme/temperature")) != 1 {
		t.Fatalf("after the retry: %d opens, state %s", len(drivers), h.p.Stats("bme").State())
	}
}

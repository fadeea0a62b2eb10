package sensors

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	backoffpkg "github.com/edgegate/edgegate/internal/backoff"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/topic"
	"sync/atomic"
)

// Sensor is one configured sensor, opened or waiting to be.
type Sensor struct {
	Name string
	Kind string // the driver's name (bme280, sim, ...), for status
	// Driver is the opened device; nil when it could not be opened at start (on_missing:
	// degraded) and Open is retried by the poller with backoff.
	Driver   Driver
	Open     func() (Driver, error)
	OpenErr  error // why Driver is nil
	Interval time.Duration
	Timeout  time.Duration // of one read; 0 means Interval
	Topic    *topic.Template
	// Calibration per metric, applied before publishing.
	Calibration map[string]Calibration
}

// Poller runs the sensors: one goroutine each, so a slow, failing or hung device never
// delays another.
type Poller struct {
	sensors []Sensor
	pub     Publisher
	clock   clock.Clock
	log     *slog.Logger
	stats   map[string]*Stats
	// owned is set by the first of Run and Close: whichever it is closes the drivers.
	owned atomic.Bool

	// ShutdownGrace bounds how long Run waits, once ctx ended, for a read stuck in its
	// driver (a bus transaction that never returns). Past it the read is abandoned and the
	// driver left open, since closing it under a running Read is not safe. Default 5s.
	ShutdownGrace time.Duration
}

// maxBackoff caps the wait between attempts on a failing device (or the interval, when
// longer).
const maxBackoff = 5 * time.Minute

// errReadHung is the failure of an attempt skipped because the previous read has not
// returned yet.
var errReadHung = errors.New("previous read still running (device hung?)")

// NewPoller builds a poller over sensors; Run starts it. The sensors' drivers belong to
// the poller from now on: Run closes them, or Close if Run never ran.
func NewPoller(sensors []Sensor, pub Publisher, clk clock.Clock, log *slog.Logger) *Poller {
	p := &Poller{sensors: sensors, pub: pub, clock: clk, log: log.With("component", "sensors"),
		stats: map[string]*Stats{}, ShutdownGrace: 5 * time.Second}
	now := clk.Now()
	for _, s := range sensors {
		st := &Stats{driver: s.Kind, state: StateStarting, since: now}
		if s.Driver == nil {
			st.state = StateDown
			st.setErr(s.OpenErr, now)
		}
		p.stats[s.Name] = st
	}
	return p
}

// Stats returns the counters and state of the named sensor (nil if unknown).
func (p *Poller) Stats(name string) *Stats { return p.stats[name] }

// Status returns a snapshot of every sensor, in config order (for /status).
func (p *Poller) Status() []Status {
	out := make([]Status, 0, len(p.sensors))
	for _, s := range p.sensors {
		out = append(out, p.stats[s.Name].snapshot(s.Name))
	}
	return out
}

// Run polls every sensor on its own goroutine until ctx ends, then closes the drivers.
func (p *Poller) Run(ctx context.Context) error {
	if p.owned.Swap(true) {
		return errors.New("sensors: poller closed or already run")
	}
	var wg sync.WaitGroup
	for _, s := range p.sensors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &sensorRun{p: p, s: s, st: p.stats[s.Name], dev: s.Driver}
			r.loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// Close closes the drivers of a poller that never ran (a start that failed before the
// sensors started); after Run, it does nothing: Run closed them. Idempotent.
func (p *Poller) Close() {
	if !p.owned.Swap(true) {
		CloseAll(p.sensors)
	}
}

// phase spreads sensors over their interval so they don't all fire together. It is a
// stable function of the name: a restart keeps each sensor's phase.
func phase(name string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(interval))
}

// backoff is the wait after the n-th consecutive failure: the interval doubled per failure
// up to maxBackoff (or the interval if longer), with ±10% jitter so devices that failed
// together do not retry together.
func backoff(interval time.Duration, failures int) time.Duration {
	return backoffpkg.Policy{Min: interval, Max: max(maxBackoff, interval), Jitter: backoffpkg.Tenth}.Wait(failures)
}

type result struct {
	readings []Reading
	err      error
}

// sensorRun is the state of one sensor's goroutine; only that goroutine touches it.
type sensorRun struct {
	p        *Poller
	s        Sensor
	st       *Stats
	dev      Driver
	inflight chan result // a read that timed out and has not returned yet
	reads    sync.WaitGroup

	bgCancel context.CancelFunc // the driver's Runner, if any
	bgDone   chan struct{}

	failures int
}

func (r *sensorRun) timeout() time.Duration {
	if r.s.Timeout > 0 {
		return r.s.Timeout
	}
	return r.s.Interval
}

func (r *sensorRun) loop(ctx context.Context) {
	defer r.shutdown()
	clk := r.p.clock
	// The schedule is a grid anchored at start+phase, so readings stay evenly spaced
	// whatever a read takes; a failing device leaves the grid for backoff and returns to
	// it once it answers again.
	first := phase(r.s.Name, r.s.Interval)
	anchor := clk.Now().Add(first)
	t := clk.NewTimer(first)
	defer t.Stop()
	// Published after the timer is armed: a test that sees it may move the clock.
	r.st.nextAttempt(anchor)
	if r.dev != nil {
		r.startBackground(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		err := r.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		now := clk.Now()
		var wait time.Duration
		if err != nil {
			r.failures++
			r.st.failed(err, now, r.failures)
			wait = backoff(r.s.Interval, r.failures)
			r.logFailure(err, wait)
		} else {
			if r.failures > 0 {
				r.p.log.Info("sensor recovered", "sensor", r.s.Name, "failures", r.failures)
			}
			r.failures = 0
			// The next grid point strictly after now.
			k := now.Sub(anchor)/r.s.Interval + 1
			wait = anchor.Add(k * r.s.Interval).Sub(now)
		}
		t.Reset(wait)
		r.st.nextAttempt(now.Add(wait))
	}
}

// logFailure logs the first failure of a run and then every doubling of the count, so a
// dead device does not flood the journal.
func (r *sensorRun) logFailure(err error, wait time.Duration) {
	if n := r.failures; n&(n-1) == 0 {
		msg := "sensor read failed"
		var oe *openError
		if errors.As(err, &oe) {
			msg = "sensor still unavailable"
		}
		r.p.log.Warn(msg, "sensor", r.s.Name, "err", err, "failures", n, "retry_in", wait.Round(time.Millisecond))
	}
}

// openError marks a failure to open the device (degraded start), as opposed to a read.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// attempt opens the device if needed, reads it within the timeout and publishes what it
// read. An error means the device did not answer (the sensor goes down and backs off).
func (r *sensorRun) attempt(ctx context.Context) error {
	if r.inflight != nil {
		select {
		case <-r.inflight:
			// The hung read came back at last; its readings are stale, drop them, and set
			// the device up again: its state is unknown.
			r.inflight = nil
			r.reset()
		default:
			return errReadHung
		}
	}
	if r.dev == nil {
		d, err := r.s.Open()
		if err != nil {
			return &openError{err}
		}
		r.dev = d
		if r.failures > 0 && r.s.Driver != nil {
			// Reopened after a failed read: logged once it reads again ("recovered").
			r.p.log.Debug("sensor reopened", "sensor", r.s.Name)
		} else {
			r.p.log.Info("sensor opened", "sensor", r.s.Name, "driver", r.s.Kind)
		}
		r.startBackground(ctx)
	}
	r.st.Reads.Add(1)
	// The timeout runs from before the read starts, on the injected clock.
	timer := r.p.clock.NewTimer(r.timeout())
	defer timer.Stop()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	r.reads.Add(1)
	dev := r.dev
	go func() {
		defer r.reads.Done()
		rs, err := dev.Read(rctx)
		done <- result{rs, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-timer.C():
		r.inflight = done
		r.st.Timeouts.Add(1)
		return fmt.Errorf("read timed out after %s", r.timeout())
	case <-ctx.Done():
		r.inflight = done
		return ctx.Err()
	}
	if res.err != nil && len(res.readings) == 0 {
		r.reset()
		return res.err
	}
	now := r.p.clock.Now()
	r.publish(ctx, res.readings, now)
	if res.err != nil {
		// Part of the device answered: what it read is out, the rest is an error, and the
		// schedule stays (the answering part should not wait for the silent one).
		if n := r.st.partial(res.err, now); n&(n-1) == 0 {
			r.p.log.Warn("sensor read partly failed", "sensor", r.s.Name, "err", res.err, "errors", n)
		}
		return nil
	}
	r.st.succeeded(now)
	return nil
}

// publish calibrates and publishes the readings, all stamped with the same clock time. A
// value that is not finite is dropped and counted as an error.
func (r *sensorRun) publish(ctx context.Context, rs []Reading, now time.Time) {
	for _, rd := range rs {
		if cal, ok := r.s.Calibration[rd.Metric]; ok {
			rd.Value = roundSignificant(rd.Value*cal.Scale+cal.Offset, 12)
			if cal.Unit != "" {
				rd.Unit = cal.Unit
			}
		}
		if math.IsNaN(rd.Value) || math.IsInf(rd.Value, 0) {
			r.st.Errors.Add(1)
			r.st.setErr(fmt.Errorf("metric %s: value is not a number", rd.Metric), now)
			continue
		}
		tp := r.s.Topic.Expand(func(n string) string {
			if n == "metric" {
				return rd.Metric
			}
			return r.s.Name
		})
		if err := r.p.pub.Publish(ctx, tp, Payload(rd, now)); err != nil {
			// The device answered; the gateway could not take the reading (buffer full with
			// on_full: reject, shutting down). Not the sensor's fault: no backoff.
			if n := r.st.PublishErrors.Add(1); n&(n-1) == 0 && ctx.Err() == nil {
				r.p.log.Warn("publish reading", "sensor", r.s.Name, "topic", tp, "err", err, "count", n)
			}
			continue
		}
		r.st.Published.Add(1)
	}
}

// reset closes a device that failed, so the next attempt opens it again: a chip that lost
// power comes back with its registers at their reset values, and the open (chip id check,
// configuration) is what sets them. Only for sensors that know how to open their device.
func (r *sensorRun) reset() {
	if r.s.Open == nil || r.dev == nil {
		return
	}
	r.stopBackground()
	if err := r.dev.Close(); err != nil {
		r.p.log.Debug("close failed sensor", "sensor", r.s.Name, "err", err)
	}
	r.dev = nil
}

func (r *sensorRun) stopBackground() {
	if r.bgCancel != nil {
		r.bgCancel()
		<-r.bgDone
		r.bgCancel, r.bgDone = nil, nil
	}
}

func (r *sensorRun) startBackground(ctx context.Context) {
	bg, ok := r.dev.(Runner)
	if !ok {
		return
	}
	bctx, cancel := context.WithCancel(ctx)
	r.bgCancel, r.bgDone = cancel, make(chan struct{})
	go func() {
		defer close(r.bgDone)
		if err := bg.Run(bctx); err != nil && bctx.Err() == nil {
			r.p.log.Warn("sensor watcher stopped", "sensor", r.s.Name, "err", err)
		}
	}()
}

// shutdown stops the driver's watcher, waits for a read still in its driver (bounded by
// ShutdownGrace) and closes the driver.
func (r *sensorRun) shutdown() {
	r.stopBackground()
	if r.inflight != nil {
		select {
		case <-r.inflight:
		case <-r.p.clock.After(r.p.ShutdownGrace):
			r.p.log.Error("sensor read still stuck at shutdown; abandoning it and leaving the device open",
				"sensor", r.s.Name, "waited", r.p.ShutdownGrace)
			return
		}
	}
	r.reads.Wait()
	if r.dev != nil {
		if err := r.dev.Close(); err != nil {
			r.p.log.Warn("close sensor", "sensor", r.s.Name, "err", err)
		}
	}
	r.st.stopped(r.p.clock.Now())
}

// roundSignificant rounds v to n significant decimal digits. Calibration multiplies and adds
// in binary floating point, so 0.5668 × 1000 is 566.8000000000001; no sensor has 16
// significant digits, and 12 keep every digit a sensor can mean while the noise goes.
func roundSignificant(v float64, n int) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', n, 64), 64)
	if err != nil {
		return v
	}
	return r
}

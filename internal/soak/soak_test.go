package soak

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/internal/testutil"
)

var (
	soakDuration = flag.Duration("soak.duration", 0, "how long to soak (default $SOAK_DURATION; none: skip)")
	soakSeed     = flag.Uint64("soak.seed", 0, "seed of the fault schedule (default $SOAK_SEED, else random)")
)

// settings reads the soak's duration and seed; the soak runs only when a duration is set
// (make soak, make soak-short), not in `make test`.
func settings(t *testing.T) (time.Duration, uint64) {
	d := *soakDuration
	if d == 0 {
		if s := os.Getenv("SOAK_DURATION"); s != "" {
			var err error
			if d, err = time.ParseDuration(s); err != nil {
				t.Fatalf("SOAK_DURATION=%q: %v", s, err)
			}
		}
	}
	if d == 0 {
		t.Skip("the soak runs with make soak or make soak-short (SOAK_DURATION)")
	}
	seed := *soakSeed
	if seed == 0 {
		if s := os.Getenv("SOAK_SEED"); s != "" {
			var err error
			if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
				t.Fatalf("SOAK_SEED=%q: %v", s, err)
			}
		}
	}
	if seed == 0 {
		seed = rand.Uint64()
	}
	return d, seed
}

// TestSoak runs the fault schedule of its seed twice, once per on_full policy, each for
// half the duration, and checks every reading (check_test.go). A failure names the seed
// that replays the schedule: SOAK_SEED=<seed> make soak.
func TestSoak(t *testing.T) {
	d, seed := settings(t)
	t.Logf("soak: %s, seed %d (replay: SOAK_SEED=%d SOAK_DURATION=%s make soak)", d, seed, seed, d)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with SOAK_SEED=%d SOAK_DURATION=%s make soak", seed, seed, d)
		}
	})
	for i, policy := range []string{"drop_oldest", "reject"} {
		t.Run(policy, func(t *testing.T) {
			s := newSoak(t, policy, seed+uint64(i), d/2)
			s.run()
			s.check()
		})
	}
}

// flushTimeout is the daemon's ops.flush_timeout in the soak: a SIGTERM must end within it.
const flushTimeout = 5 * time.Second

const soakConfig = `gateway: {id: gw-soak, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}, {type: ws, address: %q}]
  allow_anonymous: true
  anonymous: {publish: ["dev/#", "raw/#", "$SYS/#"], subscribe: ["dev/#", "agg/#"]}
  users: # for the attacks of issue 21 that need users: squatting, wrong passwords
    - {username: sq, password_hash: %q, publish: ["dev/sq/#"]}
    - {username: hu, password_hash: %q, publish: ["dev/hu/#"]}
  connect_timeout: 3s
  max_rate_per_client: 2000
  max_session_expiry: 1h
  max_sessions_per_user: 24 # the devices are all anonymous: one user; 11 persistent sessions, the attacks take the rest
  max_queued_bytes_per_session: 256KiB
  max_queued_bytes: 4MiB
routes:
  - {topic: "dev/+device/id", format: json, series: "{device}/id"}
  - {topic: "dev/+device/stamp", format: json, series: "{device}/stamp"}
  - {topic: "dev/+device/num", format: number, series: "{device}/num"}
unrouted: forward
dedup: {ttl: 1h}
buffer: {max_bytes: 128MiB, reserve_free: %d, on_full: %s, retention: 2m}
pipelines:
  - name: tumble
    input: "dev/p0/id"
    window: {type: tumbling, size: 10s}
    aggregates: [count, sum, min, max, first, last]
    out_of_order: 2s
    allowed_lateness: 10s
    idle: 0s
  - name: sess
    input: "dev/p0/id"
    window: {type: session, gap: 3s}
    aggregates: [count, sum]
    out_of_order: 2s
    allowed_lateness: 20s
    accumulation: discarding
    idle: 0s
uplinks:
  - name: cloud
    type: mqtt
    url: "tcp://%s"
    topic: "soak/{gateway}/{kind}"
    qos: 1
    batch: {max_records: 200, max_bytes: 256KiB, linger: 100ms}
    timeout: 2s
    backoff: {min: 100ms, max: 2s}
  - name: collector
    type: http
    url: %q
    batch: {max_records: 300, max_bytes: 256KiB, linger: 150ms}
    timeout: 2s
    backoff: {min: 100ms, max: 2s}
ops: {listen: %q, flush_timeout: 5s, log: {level: info}, clock: {mode: trust}}
`

// room is the disk space the daemon may use: Badger's floor and headroom (44 MiB) and 10
// MiB of records, so that an outage of a minute fills the budget. max_bytes may not go
// below 128 MiB, so the room is made by the file system: smallDisk.
const room = 54 << 20

// smallDisk gives the data directory a file system with room bytes free, and returns the
// reserve_free to configure. As root, it mounts a tmpfs of room + 1 MiB (reserve_free 1
// MiB): nothing else writes there. Otherwise it uses the temporary directory's file system
// with reserve_free = free space less room, which another process writing meanwhile
// shrinks (the soak then logs the free space it started with).
func smallDisk(t *testing.T, dir string) int64 {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", room+1<<20)); err == nil {
			t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
			return 1 << 20
		} else {
			t.Logf("cannot mount a tmpfs for the buffer (%v): using reserve_free on %s", err, dir)
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	if avail-room < 1<<30 {
		t.Fatalf("the soak needs %d MiB free beside a 1 GiB reserve on %s; %d MiB free", room>>20, dir, avail>>20)
	}
	t.Logf("buffer on %s: %d MiB free, reserve_free leaves %d MiB; other writers shrink it", dir, avail>>20, room>>20)
	return avail - room
}

type soak struct {
	t        *testing.T
	policy   string
	seed     uint64
	duration time.Duration
	dir      string

	d          *daemon
	brokerAddr string
	wsAddr     string
	att        *attacks
	mqttUp     *mqttUpstream
	httpUp     *httpUpstream
	col        *collector
	devices    []*device
	slowDisc   atomic.Int64
	rssPeak    atomic.Int64 // the daemon's largest RSS seen, KiB

	faults map[string]int // what the schedule injected, by kind (attacks: att.count)
	// quietSince: from then on, nothing the daemon keeps is old enough for the retention
	// nor pushed out by a full budget (the long outage is over, and the generators stop
	// within a retention of it); set by run.
	quietSince time.Time
}

func newSoak(t *testing.T, policy string, seed uint64, duration time.Duration) *soak {
	dir := t.TempDir()
	s := &soak{t: t, policy: policy, seed: seed, duration: duration, dir: dir, col: &collector{}, faults: map[string]int{}}
	s.mqttUp = startMQTTUpstream(t)
	s.httpUp = startHTTPUpstream(t, s.col, 40)
	brokerAddr, opsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	s.brokerAddr, s.wsAddr = brokerAddr, testutil.FreeAddr(t)
	s.att = newAttacks(brokerAddr, seed)
	data := filepath.Join(dir, "data")
	reserve := smallDisk(t, data)
	cfg := filepath.Join(dir, "edgegate.yaml")
	body := fmt.Sprintf(soakConfig, data, brokerAddr, s.wsAddr, passwordHash(t, "sq-pw"), passwordHash(t, "hu-pw"), reserve, policy,
		s.mqttUp.Addr, s.httpUp.url(), opsAddr)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	s.d = newDaemon(t, cfg, filepath.Join(dir, "data"), opsAddr)
	specs := []deviceSpec{
		{name: "p0", kind: withID, qos: 1, every: 20 * time.Millisecond, oneByOne: true}, // the pipelines' input, in order
		{name: "i1", kind: withID, qos: 1, every: 16 * time.Millisecond},
		{name: "i2", kind: withID, qos: 1, every: 16 * time.Millisecond, clean: true},
		{name: "s1", kind: stamped, qos: 1, every: 25 * time.Millisecond},              // gateway-stamped, resent after reconnects
		{name: "n1", kind: number, qos: 1, every: 25 * time.Millisecond, badOneIn: 50}, // with malformed ones among them
		{name: "n2", kind: number, qos: 1, every: 40 * time.Millisecond, clean: true},
		{name: "n0", kind: number, qos: 0, every: 50 * time.Millisecond},
		{name: "r1", kind: raw, qos: 1, every: 50 * time.Millisecond},
		{name: "b1", kind: raw, qos: 1, every: 25 * time.Millisecond, size: 16 << 10}, // bulk: fills the budget in an outage
		{name: "v5", kind: withID, v5: true, qos: 1, every: 25 * time.Millisecond},
		{name: "v6", kind: stamped, v5: true, qos: 1, every: 50 * time.Millisecond, badOneIn: 40},
		// Attacks of issue 21 that the ledger checks reading by reading:
		{name: "f1", kind: withID, qos: 1, every: 40 * time.Millisecond, forge: "i1"},                 // claims i1's ids in advance
		{name: "x1", kind: number, qos: 1, every: 40 * time.Millisecond, badOneIn: 2, sysTopic: true}, // QoS 1 to $SYS, window 20 (paho)
	}
	only := os.Getenv("SOAK_DEVICES") // a comma-separated subset, to debug one kind
	for i, sp := range specs {
		if only != "" && !strings.Contains(","+only+",", ","+sp.name+",") {
			continue
		}
		dv := newDevice(sp, i+1, brokerAddr, seed)
		dv.epoch = &s.d.epoch
		s.devices = append(s.devices, dv)
	}
	return s
}

// passwordHash is the bcrypt hash of pw at the cost `edgegate passwd` uses.
func passwordHash(t *testing.T, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// ledgers are the devices and the attackers whose every reading the checks follow.
func (s *soak) ledgers() []*device {
	return append(slices.Clone(s.devices), s.att.bulk)
}

// event is one fault or attack of the schedule, at an offset from the start.
type event struct {
	at   time.Duration
	kind string
	dur  time.Duration
}

// schedule draws the faults of the seed: the daemon killed or stopped every 5–20 s,
// upstream faults every 2–10 s, one long outage of both upstreams that fills the budget,
// and the attacks (attacks_test.go); in the order they happen.
func (s *soak) schedule() []event {
	r := rand.New(rand.NewPCG(s.seed, 7))
	var evs []event
	for at := 3*time.Second + jitter(r, 5*time.Second); at < s.duration-10*time.Second; at += 5*time.Second + jitter(r, 15*time.Second) {
		kind := "kill9"
		if r.IntN(10) < 3 {
			kind = "sigterm"
		}
		evs = append(evs, event{at: at, kind: kind, dur: jitter(r, 2*time.Second)})
	}
	kinds := []string{"mqtt-down", "mqtt-stall", "http-down", "http-fail", "http-stall"}
	for at := 2*time.Second + jitter(r, 3*time.Second); at < s.duration-10*time.Second; at += 2*time.Second + jitter(r, 8*time.Second) {
		evs = append(evs, event{at: at, kind: kinds[r.IntN(len(kinds))], dur: time.Second + jitter(r, 5*time.Second)})
	}
	evs = append(append(evs, s.outage()), s.attackSchedule()...)
	slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	return evs
}

// outage is the schedule's long outage of both upstreams, long enough to fill the budget.
func (s *soak) outage() event {
	return event{at: s.duration / 4, kind: "outage", dur: min(90*time.Second, s.duration/3)}
}

// retention is the daemon's buffer.retention in the soak.
const retention = 2 * time.Minute

func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(r.Int64N(int64(d) + 1))
}

// run starts everything, plays the schedule, then lets the devices finish and the daemon
// drain to healthy upstreams.
func (s *soak) run() {
	s.d.start()
	genCtx, stopGen := context.WithCancel(context.Background())
	connCtx, stopConn := context.WithCancel(context.Background())
	defer stopConn()
	t0 := time.Now().UnixMilli()
	var wg, generating sync.WaitGroup
	for _, dv := range s.devices {
		wg.Add(1)
		generating.Add(1)
		go func() {
			defer wg.Done()
			dv.run(genCtx, connCtx, t0, generating.Done)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		slowReader(connCtx, s.devices[0].addr, &s.slowDisc)
	}()
	wg.Add(1)
	go func() { // the daemon's RSS, for the report
		defer wg.Done()
		for connCtx.Err() == nil {
			if pid := s.d.pid(); pid != 0 {
				if kib, err := testutil.ProcField(pid, "status", "VmRSS"); err == nil && kib > s.rssPeak.Load() {
					s.rssPeak.Store(kib)
				}
			}
			select {
			case <-connCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	var faults sync.WaitGroup
	for _, ev := range s.schedule() {
		time.Sleep(time.Until(start.Add(ev.at)))
		if isAttack(ev.kind) {
			s.att.mu.Lock()
			s.att.count[ev.kind]++
			s.att.mu.Unlock()
			faults.Add(1)
			go func() {
				defer faults.Done()
				s.attack(ev.kind, ev.dur)
			}()
			continue
		}
		s.faults[ev.kind]++
		switch ev.kind {
		case "kill9", "sigterm":
			if ev.kind == "kill9" {
				s.d.kill9()
			} else {
				s.d.sigterm(flushTimeout)
			}
			time.Sleep(ev.dur)
			s.d.start()
		default:
			faults.Add(1)
			go func() {
				defer faults.Done()
				s.upstreamFault(ev.kind, ev.dur)
			}()
		}
	}
	time.Sleep(time.Until(start.Add(s.duration)))
	faults.Wait()
	stopGen()
	s.quietSince = time.Now().Add(-retention + 20*time.Second)
	if end := start.Add(s.outage().at + s.outage().dur + 10*time.Second); end.After(s.quietSince) {
		s.quietSince = end
	}
	generating.Wait() // no reading is made after this

	// Every device that resends gets its answers; the upstreams are healthy now. Under
	// reject a long soak leaves backlogs larger than the buffer (b1 alone offers 640 KB/s),
	// which flow only as fast as the upstreams drain: the wait lasts while answers keep
	// coming, and ends after 2 minutes without any.
	s.setUpstreams(false)
	answered := func() (n int) {
		for _, dv := range s.devices {
			for _, r := range dv.all() {
				if r.acked.Load() || r.refused.Load() != 0 {
					n++
				}
			}
		}
		return n
	}
	last, progress := answered(), time.Now()
	for _, dv := range s.devices {
		for _, r := range dv.all() {
			if !dv.resends() || r.qos == 0 {
				continue
			}
			for !r.acked.Load() && r.refused.Load() == 0 && time.Since(progress) < 2*time.Minute {
				time.Sleep(100 * time.Millisecond)
				if n := answered(); n > last {
					last, progress = n, time.Now()
				}
			}
		}
	}
	stopConn()
	wg.Wait()
	s.waitDrained()
	s.d.sigterm(flushTimeout)
}

// upstreamFault injects one upstream fault for dur.
func (s *soak) upstreamFault(kind string, dur time.Duration) {
	switch kind {
	case "mqtt-down":
		s.mqttUp.setDown(s.t, true)
		time.Sleep(dur)
		s.mqttUp.setDown(s.t, false)
	case "mqtt-stall":
		s.mqttUp.setStalled(true)
		time.Sleep(dur)
		s.mqttUp.setStalled(false)
	case "http-down":
		s.httpUp.setDown(s.t, true)
		time.Sleep(dur)
		s.httpUp.setDown(s.t, false)
	case "http-fail":
		s.httpUp.failing.Store(true)
		time.Sleep(dur)
		s.httpUp.failing.Store(false)
	case "http-stall":
		s.httpUp.stall.Store(true)
		time.Sleep(dur)
		s.httpUp.stall.Store(false)
	case "outage":
		s.setUpstreams(true)
		time.Sleep(dur)
		s.setUpstreams(false)
	}
}

// setUpstreams takes both upstreams down, or brings them back healthy.
func (s *soak) setUpstreams(down bool) {
	s.mqttUp.setDown(s.t, down)
	s.httpUp.setDown(s.t, down)
	if !down {
		s.mqttUp.setStalled(false)
		s.httpUp.stall.Store(false)
		s.httpUp.failing.Store(false)
	}
}

// waitDrained waits until every uplink and pipeline has caught up with the store, as the
// daemon's metrics say.
func (s *soak) waitDrained() {
	t := s.t
	var last string
	testutil.Eventually(t, 3*time.Minute, "uplinks drained", func() bool {
		code, body := s.d.get("/metrics")
		if code != 200 {
			return false
		}
		fams := testutil.ParseText(t, body)
		f := fams["edgegate_uplink_backlog_records"]
		if f == nil {
			return false
		}
		var behind []string
		for labels, v := range f.Samples {
			if v != 0 {
				behind = append(behind, fmt.Sprintf("%s=%g", labels, v))
			}
		}
		last = strings.Join(behind, " ")
		return len(behind) == 0
	})
	if last != "" {
		t.Logf("backlog left: %s", last)
	}
}

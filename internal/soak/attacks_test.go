package soak

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/testutil"
)

// The attacks of issue 21 in the soak's schedule: timed events, drawn from the seed like
// the faults, against the live daemon while the honest devices publish, so that every
// check of check_test.go must hold under them. Each attack also checks its own outcome and
// counts its figures, reported beside the soak's summary. (Two attacks run all along as
// devices: f1 forges i1's ids, x1 publishes QoS 1 to $SYS.)

// attackKinds are the attacks of the schedule, each played at least once per policy.
var attackKinds = []string{"ws-keepalive", "wills", "sessions", "squat", "passwords"}

// Limits of soakConfig that the attacks run into.
const (
	connectTimeout      = 3 * time.Second
	maxSessionsPerUser  = 24
	maxQueuedBytes      = 4 << 20
	maxQueuedPerSession = 256 << 10
	maxRetainedPerUser  = 100 // the default
)

// attacks is the attacks' state and figures in one soak.
type attacks struct {
	mu    sync.Mutex                  // guards all below but the atomics
	count map[string]int              // events played, by kind
	figs  map[string]map[string]int64 // kind → figure → value

	wills        []*willEvent
	refusedWills map[string]byte // reading key of a will refused at CONNECT → its return code
	maybeWills   []string        // reading keys of wills whose CONNECT got no answer: they may fire
	willTopics   map[string]string
	willSeq      atomic.Int64
	willsRun     sync.Mutex // one wills attack at a time: each reads the daemon's will counters
	willsDirty   bool       // a round ended without all its wills answered (guarded by willsRun)

	bulk     *device // the sessions attack's publisher, a ledger like a device's
	bulkSeq  atomic.Int64
	sessSeq  atomic.Int64
	probeSeq atomic.Int64
}

func newAttacks(addr string, seed uint64) *attacks {
	return &attacks{count: map[string]int{}, figs: map[string]map[string]int64{},
		refusedWills: map[string]byte{}, willTopics: map[string]string{},
		bulk: newDevice(deviceSpec{name: "q", kind: raw, qos: 1, clean: true, size: 8 << 10, topic: "dev/q/bulk"}, 90, addr, seed)}
}

func (a *attacks) add(kind, fig string, n int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.figs[kind] == nil {
		a.figs[kind] = map[string]int64{}
	}
	a.figs[kind][fig] += n
}

func (a *attacks) max(kind, fig string, n int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.figs[kind] == nil {
		a.figs[kind] = map[string]int64{}
	}
	a.figs[kind][fig] = max(a.figs[kind][fig], n)
}

func (a *attacks) fig(kind, fig string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.figs[kind][fig]
}

// attackSchedule draws the attack events of the seed: the kinds in a shuffled order, one
// every 5–10 s (all of them within the short soak), each for 3–8 s, starting before the
// last 10 s of the schedule. SOAK_ATTACKS (comma-separated kinds, or "none") plays a
// subset.
func (s *soak) attackSchedule() []event {
	kinds := attackKinds
	if only := os.Getenv("SOAK_ATTACKS"); only != "" {
		kinds = nil
		for _, k := range attackKinds {
			if strings.Contains(","+only+",", ","+k+",") {
				kinds = append(kinds, k)
			}
		}
	}
	if len(kinds) == 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(s.seed, 21))
	slot := min(max(5*time.Second, (s.duration-14*time.Second)/time.Duration(len(kinds))), 10*time.Second)
	var evs []event
	var round []string
	for at := 2 * time.Second; at+3*time.Second < s.duration-10*time.Second; at += slot {
		if len(round) == 0 {
			round = slices.Clone(kinds)
			r.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		evs = append(evs, event{at: at + jitter(r, slot/4), kind: round[0], dur: 3*time.Second + jitter(r, min(slot/2, 5*time.Second))})
		round = round[1:]
	}
	return evs
}

func isAttack(kind string) bool { return slices.Contains(attackKinds, kind) }

// attack plays one attack event for dur (its checks may take longer: they wait for the
// daemon's answers), sampling the daemon's RSS meanwhile.
func (s *soak) attack(kind string, dur time.Duration) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if pid := s.d.pid(); pid != 0 {
				if kib, err := testutil.ProcField(pid, "status", "VmRSS"); err == nil {
					s.att.max(kind, "rss_peak_kib", kib)
				}
			}
			select {
			case <-done:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()
	switch kind {
	case "ws-keepalive":
		s.attackWS(dur)
	case "wills":
		s.attackWills(dur)
	case "sessions":
		s.attackSessions(dur)
	case "squat":
		s.attackSquat(dur)
	case "passwords":
		s.attackPasswords(dur)
	}
}

// metrics scrapes the daemon's /metrics: value by series with its labels
// (`edgegate_broker_wills_total{result="stored"}`); false when the daemon did not answer.
func (s *soak) metrics() (map[string]float64, bool) {
	code, body := s.d.get("/metrics")
	if code != 200 {
		return nil, false
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, true
}

// honestLogin logs an honest client in with try until it gets a CONNACK, retrying while the
// daemon is down or restarting, for at most a minute. A refusal counts only if the daemon
// ran throughout the attempt: one stopping answers 0x03 (server unavailable) to all.
func (s *soak) honestLogin(try func() (byte, error)) (byte, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		e0 := s.d.epoch.Load()
		code, err := try()
		if err == nil && (code == 0 || s.d.epoch.Load() == e0) {
			return code, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("refused %#x while the daemon restarted, for a minute", code)
			}
			return 0, err
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// tcpLogin is an honest anonymous login over TCP from 127.0.0.1 (or as user with pass).
func (s *soak) tcpLogin(id, user, pass string) func() (byte, error) {
	return func() (byte, error) {
		c, code := login(s.brokerAddr, nil, login3{id: id, user: user, pass: pass})
		if code == noConnack || code == noAnswer {
			return 0, fmt.Errorf("no CONNACK (%#x)", code)
		}
		if c != nil {
			_, _ = c.Write([]byte{0xe0, 0}) // DISCONNECT
			c.Close()
		}
		return code, nil
	}
}

// ─── item 1: WebSocket sockets that never upgrade ───────────────────────────────────────

// attackWS opens 270 sockets on the WebSocket listener from 18 addresses (more than
// max_pending_connections, 256) that send an HTTP request every 1–2 s and never upgrade,
// each opened again a second after the daemon closed it. connect_timeout must close every
// one (it bounds accept → CONNECT whatever the socket sends): a socket that lives 20 s past
// it fails the soak. Meanwhile honest clients log in over TCP and WebSocket, which the
// sockets must not keep out.
func (s *soak) attackWS(dur time.Duration) {
	const kind = "ws-keepalive"
	end := time.Now().Add(dur)
	conn0 := s.connacks()
	var wg sync.WaitGroup
	for i := range 18 * 15 {
		src := net.IPv4(127, 0, 2, byte(1+i%18))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
				c, err := dl.Dial("tcp", s.wsAddr)
				if err != nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				s.att.add(kind, "opened", 1)
				lived, closed := keepAlive(c)
				if closed {
					s.att.add(kind, "closed", 1)
					s.att.max(kind, "longest_ms", lived.Milliseconds())
				} else {
					s.att.add(kind, "outlived", 1)
					s.t.Errorf("ws-keepalive: a socket that never upgraded lived %v, past connect_timeout (%v)", lived.Round(time.Millisecond), connectTimeout)
				}
				time.Sleep(time.Second)
			}
		}()
	}
	// Honest clients log in once the sockets had time to take every slot they could.
	time.Sleep(min(dur, connectTimeout+time.Second))
	for i := range 2 {
		n := s.att.probeSeq.Add(1)
		for _, how := range []string{"tcp", "ws"} {
			id := fmt.Sprintf("soak-probe-%s-%d", how, n)
			try := s.tcpLogin(id, "", "")
			if how == "ws" {
				try = func() (byte, error) { return wsLogin(s.wsAddr, id) }
			}
			code, err := s.honestLogin(try)
			if err != nil || code != 0 {
				s.t.Errorf("ws-keepalive: honest %s login %d during the attack: CONNACK %#x, %v", how, i, code, err)
				continue
			}
			s.att.add(kind, "honest_"+how, 1)
		}
	}
	wg.Wait()
	s.att.add(kind, "device_connacks", s.connacks()-conn0)
}

// keepAlive sends an HTTP request on c every 1–2 s, never upgrading, until the daemon
// closes it (closed) or it has lived 20 s past connect_timeout.
func keepAlive(c net.Conn) (lived time.Duration, closed bool) {
	t0 := time.Now()
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		close(gone)
	}()
	defer func() {
		c.Close()
		<-gone
	}()
	for time.Since(t0) < connectTimeout+20*time.Second {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: soak\r\n\r\n"))
		select {
		case <-gone:
			return time.Since(t0), true
		case <-time.After(time.Second + rand.N(time.Second)):
		}
	}
	return time.Since(t0), false
}

// connacks is how many times the honest devices were let in so far.
func (s *soak) connacks() int64 {
	var n int64
	for _, dv := range s.devices {
		n += dv.connacks.Load()
	}
	return n
}

// ─── item 2: retained wills with unique client ids, dropped connections ─────────────────

// willEvent is what one wills attack saw: the wills that fired (their connection was
// accepted, then dropped without DISCONNECT) and, when the daemon ran throughout, how many
// its counters say it stored and refused.
type willEvent struct {
	fired           []string // reading keys
	stored, refused int
	exact           bool // the counters cover exactly these wills
}

// attackWills connects from 4 addresses with unique client ids and a QoS 1 will, and
// drops each connection at once, so that the will fires: of every 4, one will of 6 kB on a
// raw topic (over max_will_bytes: refused at CONNECT), two retained numbers on topics of
// their own (within max_retained_per_user, then refused at CONNECT), one number not
// retained. A will that fires is stored through ingest (so forwarded like a reading) or
// refused with a reason. The attack comes in rounds of 1.5 s: after each, the daemon's
// counters, read before and after within one run of it, say how many of the round's wills
// it stored and refused, which check_test.go holds against what arrived upstream (a round
// that a kill or stop cut is not counted exactly: the wills of connections the daemon had
// not seen dropped never fire).
func (s *soak) attackWills(dur time.Duration) {
	s.att.willsRun.Lock()
	defer s.att.willsRun.Unlock()
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		ev := s.willRound(min(1500*time.Millisecond, time.Until(end)))
		s.att.mu.Lock()
		s.att.wills = append(s.att.wills, ev)
		s.att.mu.Unlock()
	}
}

// willRound plays the wills attack for dur and waits for its wills to be answered.
func (s *soak) willRound(dur time.Duration) *willEvent {
	const kind = "wills"
	const stored, refused = `edgegate_broker_wills_total{result="stored"}`, `edgegate_broker_wills_total{result="refused"}`
	ev := &willEvent{}
	if s.att.willsDirty {
		// Wills of the last round may still fire (in the daemon that started meanwhile):
		// wait until the counters stay still for a second, so that this round's count only
		// its own.
		prev := -1.0
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			if m, ok := s.metrics(); ok {
				if n := m[stored] + m[refused]; n != prev {
					prev = n
					continue
				}
				break
			}
		}
	}
	e0 := s.d.epoch.Load()
	m0, ok0 := s.metrics()
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards ev.fired
	var ambiguous atomic.Bool
	for g := range 4 {
		src := net.IPv4(127, 0, 3, byte(1+g))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				k := s.att.willSeq.Add(1)
				l := login3{id: fmt.Sprintf("soak-will-%d", k)}
				var key string
				switch k % 4 {
				case 0:
					l.willTopic = fmt.Sprintf("raw/will/%d", k)
					l.willPayload = fmt.Sprintf("will %d %s", k, strings.Repeat("x", 6000))
					key = l.willTopic + "|" + l.willPayload
				default:
					v := strconv.FormatInt(90_000_000+k, 10)
					l.willTopic, l.willPayload, l.willRetain = fmt.Sprintf("dev/w%d/num", k), v, k%4 != 3
					key = fmt.Sprintf("w%d/num|%s", k, v)
				}
				c, code := login(s.brokerAddr, src, l)
				if c != nil {
					c.Close() // no DISCONNECT: the will fires
				}
				switch code {
				case 0:
					mu.Lock()
					ev.fired = append(ev.fired, key)
					mu.Unlock()
					s.att.mu.Lock()
					s.att.willTopics[l.willTopic] = key
					s.att.mu.Unlock()
				case noConnack: // closed at accept (max_connect_rate_per_ip), or the daemon is down
					s.att.add(kind, "no_connack", 1)
					s.att.mu.Lock()
					s.att.maybeWills = append(s.att.maybeWills, key) // known, should a stopping daemon have taken it
					s.att.mu.Unlock()
				case noAnswer: // its will may fire or not: the round's count cannot be exact
					s.att.add(kind, "no_answer", 1)
					ambiguous.Store(true)
					s.att.mu.Lock()
					s.att.maybeWills = append(s.att.maybeWills, key)
					s.att.willTopics[l.willTopic] = key
					s.att.mu.Unlock()
				default:
					s.att.mu.Lock()
					s.att.refusedWills[key] = code
					s.att.mu.Unlock()
					s.att.add(kind, fmt.Sprintf("connack_%#x", code), 1)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()

	// Every will that fired is answered: stored or refused. Wait for the counters to say
	// so, unless the daemon stopped meanwhile.
	deadline := time.Now().Add(30 * time.Second)
	var m1 map[string]float64
	var ok1 bool
	for ok0 && s.d.epoch.Load() == e0 {
		m1, ok1 = s.metrics()
		if (ok1 && int(m1[stored]+m1[refused]-m0[stored]-m0[refused]) >= len(ev.fired)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !ok0 || !ok1 || s.d.epoch.Load() != e0 || ambiguous.Load() {
		s.att.add(kind, "fired_inexact", int64(len(ev.fired)))
		s.att.willsDirty = true
		return ev
	}
	ev.exact = true
	ev.stored, ev.refused = int(m1[stored]-m0[stored]), int(m1[refused]-m0[refused])
	s.att.willsDirty = ev.stored+ev.refused != len(ev.fired)
	if n := ev.stored + ev.refused; n != len(ev.fired) {
		s.t.Errorf("wills: %d fired, but the daemon counted %d stored and %d refused within 30 s", len(ev.fired), ev.stored, ev.refused)
	}
	if n := m1["edgegate_broker_retained_messages"]; n > maxRetainedPerUser {
		s.t.Errorf("wills: %v retained messages, over max_retained_per_user (%d): all retained messages are the anonymous user's", n, maxRetainedPerUser)
	}
	s.att.max(kind, "retained_peak", int64(m1["edgegate_broker_retained_messages"]))
	return ev
}

// checkWills holds the wills that fired against what arrived upstream: known readings (so
// not "sent by nobody"); when the daemon's counters are exact, as many arrived at each
// uplink (or were dead-lettered there) as it stored — fewer are missing, counted against
// the losses like acknowledged readings; more would be wills it refused. No will refused
// at CONNECT or kept in the refused log went upstream. It returns the figures.
func (s *soak) checkWills(v *upstreamView, known map[string]bool, missing map[string][]string) string {
	t := s.t
	a := s.att
	a.mu.Lock()
	defer a.mu.Unlock()
	var fired, exact, nExact, stored, refused int
	arrived := map[string]int{}
	for i, ev := range a.wills { // one per round
		fired += len(ev.fired)
		for _, k := range ev.fired {
			known[k] = true
		}
		if !ev.exact {
			continue
		}
		exact += len(ev.fired)
		nExact++
		stored += ev.stored
		refused += ev.refused
		for _, up := range []string{"cloud", "collector"} {
			n := 0
			for _, k := range ev.fired {
				if v.delivered[up][k] || v.refused[up][k] {
					n++
				}
			}
			arrived[up] += n
			if n > ev.stored {
				t.Errorf("wills round %d: %d wills arrived at %s, but the daemon stored %d (and refused %d)", i+1, n, up, ev.stored, ev.refused)
			}
			for j := n; j < ev.stored; j++ {
				missing[up] = append(missing[up], fmt.Sprintf("a will of wills round %d", i+1))
			}
		}
	}
	for _, k := range a.maybeWills {
		known[k] = true
	}
	for k, code := range a.refusedWills {
		if v.delivered["cloud"][k] || v.delivered["collector"][k] {
			t.Errorf("will %s, refused at CONNECT (%#x), went upstream", short(k), code)
		}
	}
	inLog := map[string]int{}
	out := s.d.cli("buffer", "tail", "-d", s.d.dataDir, "-log", "refused", "-n", "1000000")
	for _, line := range strings.Split(out, "\n") {
		var e struct{ Client, Topic, Reason string }
		if json.Unmarshal([]byte(line), &e) != nil || !strings.HasPrefix(e.Client, "soak-will-") {
			continue
		}
		inLog[e.Reason]++
		if k := a.willTopics[e.Topic]; k != "" && (v.delivered["cloud"][k] || v.delivered["collector"][k]) {
			t.Errorf("will on %s is in the refused log (%s) but went upstream", e.Topic, e.Reason)
		}
	}
	codes := map[string]int64{}
	for f, n := range a.figs["wills"] {
		if strings.HasPrefix(f, "connack_") {
			codes[strings.TrimPrefix(f, "connack_")] = n
		}
	}
	return fmt.Sprintf("%d fired (%d in %d of %d rounds the daemon ran through, counted exactly: %d stored, %d refused; of those stored %d arrived at cloud, %d at collector), "+
		"refused at CONNECT %v, closed at accept %d, unanswered %d; refused log %v, retained at most %d",
		fired, exact, nExact, len(a.wills), stored, refused, arrived["cloud"], arrived["collector"], codes, a.figs["wills"]["no_connack"],
		a.figs["wills"]["no_answer"], inLog, a.figs["wills"]["retained_peak"])
}

// ─── item 3: offline persistent sessions flooded with queued messages ────────────────────

// attackSessions opens 16 persistent sessions (anonymous, as every device here, so bound
// by max_sessions_per_user), each subscribed at QoS 1 to dev/q/bulk, drops them, then
// publishes 64 readings of 8 kB there, one at a time, every 50 ms: each is queued for
// every offline session until max_queued_bytes_per_session and max_queued_bytes. The
// readings are a ledger like a device's (acknowledged ones must arrive upstream); the
// daemon's queue and session gauges must stay within the bounds.
func (s *soak) attackSessions(dur time.Duration) {
	const kind = "sessions"
	end := time.Now().Add(dur)
	for range 16 {
		id := fmt.Sprintf("soak-q-%d", s.att.sessSeq.Add(1))
		c, code := login(s.brokerAddr, net.IPv4(127, 0, 4, 1), login3{id: id, persistent: true})
		for (code == noConnack || code == noAnswer) && time.Now().Before(end) { // the daemon is down, or the address over its connection rate
			time.Sleep(200 * time.Millisecond)
			c, code = login(s.brokerAddr, net.IPv4(127, 0, 4, 1), login3{id: id, persistent: true})
		}
		s.att.add(kind, fmt.Sprintf("connack_%#x", code), 1)
		if c == nil {
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(subscribe3(1, "dev/q/bulk")); err == nil && c.await(9, 1, 15*time.Second) == nil { // SUBACK
			s.att.add(kind, "subscribed", 1)
		}
		c.Close()
	}
	pub := fmt.Sprintf("soak-q-pub-%d", s.att.sessSeq.Add(1))
	var c *mqttConn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	sample := func() {
		m, ok := s.metrics()
		if !ok {
			return
		}
		q := m["edgegate_broker_queued_bytes"]
		s.att.max(kind, "queued_bytes_peak", int64(q))
		s.att.max(kind, "sessions_peak", int64(m["edgegate_broker_sessions"]))
		s.att.max(kind, "drops_session", int64(m[`edgegate_broker_queue_drops_total{limit="session"}`]))
		s.att.max(kind, "drops_total", int64(m[`edgegate_broker_queue_drops_total{limit="total"}`]))
		// The bound is checked before each message is queued: concurrent deliveries may pass
		// it by a message each (the slow reader's subscription takes every device's readings).
		if q > maxQueuedBytes+1<<20 {
			s.t.Errorf("sessions: %v bytes queued for subscribers, over max_queued_bytes (%d)", q, maxQueuedBytes)
		}
		if n := m["edgegate_broker_sessions"]; n > maxSessionsPerUser {
			s.t.Errorf("sessions: %v persistent sessions, over max_sessions_per_user (%d): all are the anonymous user's", n, maxSessionsPerUser)
		}
	}
	defer sample()
	for pid := uint16(1); time.Now().Before(end.Add(10*time.Second)) && pid <= 64; pid++ {
		time.Sleep(50 * time.Millisecond)
		if pid%16 == 0 {
			sample()
		}
		if c == nil {
			var code byte
			if c, code = login(s.brokerAddr, net.IPv4(127, 0, 4, 2), login3{id: pub}); c == nil {
				s.att.add(kind, "publisher_refused", 1)
				if code != noConnack && code != noAnswer {
					s.t.Errorf("sessions: the publisher was refused %#x", code)
				}
				time.Sleep(300 * time.Millisecond)
				continue
			}
		}
		r := s.att.bulk.next(int(s.att.bulkSeq.Add(1)), 0)
		r.sends.Add(1)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(publish3(r.topic, pid, r.payload)); err != nil || c.await(pktPuback, pid, 15*time.Second) != nil {
			c.Close() // not stored (buffer full: disconnected), or the daemon went away
			c = nil
			continue
		}
		r.ackedAt.Store(time.Now().UnixMilli())
		r.acked.Store(true)
		s.att.add(kind, "published", 1)
	}
}

// ─── item 5: squatting an honest device's client id ─────────────────────────────────────

// attackSquat logs in as user sq, with its password, with the client ids of the honest
// (anonymous) devices, persistent, again and again: connected or offline (around a
// restart), their ids are bound to the anonymous user, so every attempt must be refused
// (0x05) and no device's session taken over.
func (s *soak) attackSquat(dur time.Duration) {
	const kind = "squat"
	end := time.Now().Add(dur)
	r := rand.New(rand.NewPCG(s.seed, 5))
	for time.Now().Before(end) {
		dv := s.devices[r.IntN(len(s.devices))]
		id := "soak-" + dv.spec.name
		c, code := login(s.brokerAddr, net.IPv4(127, 0, 5, 1), login3{id: id, user: "sq", pass: "sq-pw", persistent: true})
		s.att.add(kind, fmt.Sprintf("connack_%#x", code), 1)
		if c != nil {
			s.t.Errorf("squat: user sq logged in with the client id %s of an honest device", id)
			_, _ = c.Write([]byte{0xe0, 0})
			c.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ─── item 6: a wrong-password flood ─────────────────────────────────────────────────────

// attackPasswords has 16 clients on 4 addresses retry wrong passwords as fast as they are
// answered, for user sq and for made-up users. Meanwhile honest users log in with theirs
// from another address (hu: a first login after each restart, not cached; sq itself): each
// must get in, and never be told its password is wrong.
func (s *soak) attackPasswords(dur time.Duration) {
	const kind = "passwords"
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := range 16 {
		src := net.IPv4(127, 0, 6, byte(1+i%4))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(end); n++ {
				user := "sq"
				if n%2 == 1 {
					user = fmt.Sprintf("guess-%d-%d", i, n)
				}
				c, code := login(s.brokerAddr, src, login3{id: fmt.Sprintf("soak-pw-%d-%d", i, n), user: user, pass: "wrong"})
				s.att.add(kind, fmt.Sprintf("connack_%#x", code), 1)
				if c != nil {
					s.t.Errorf("passwords: a wrong password for %s was accepted", user)
					c.Close()
				}
				if code == noConnack || code == noAnswer {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the sources backed off, while the flood lasts
		defer wg.Done()
		for time.Now().Before(end) {
			if m, ok := s.metrics(); ok {
				s.att.max(kind, "backoff_sources_peak", int64(m[`edgegate_broker_login_backoffs{of="source"}`]))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
	time.Sleep(min(dur/2, time.Second))
	for _, user := range []string{"hu", "sq", "hu"} {
		id := fmt.Sprintf("soak-%s-%d", user, s.att.probeSeq.Add(1))
		t0 := time.Now()
		code, err := s.honestLogin(s.tcpLogin(id, user, user+"-pw"))
		if err != nil || code != 0 {
			s.t.Errorf("passwords: honest login of %s during the flood: CONNACK %#x, %v", user, code, err)
			continue
		}
		s.att.add(kind, "honest", 1)
		s.att.max(kind, "honest_slowest_ms", time.Since(t0).Milliseconds())
	}
	wg.Wait()
}

// ─── the report ─────────────────────────────────────────────────────────────────────────

// attackReport is one line of figures per attack kind played.
func (s *soak) attackReport(wills string) []string {
	a := s.att
	a.mu.Lock()
	defer a.mu.Unlock()
	var lines []string
	for _, kind := range attackKinds {
		n := a.count[kind]
		if n == 0 {
			continue
		}
		f := a.figs[kind]
		codes := func() string {
			var cs []string
			for k, v := range f {
				if strings.HasPrefix(k, "connack_") {
					cs = append(cs, fmt.Sprintf("%s:%d", strings.TrimPrefix(k, "connack_"), v))
				}
			}
			sort.Strings(cs)
			return "[" + strings.Join(cs, " ") + "]"
		}
		var what string
		switch kind {
		case "ws-keepalive":
			what = fmt.Sprintf("%d sockets opened that never upgrade, %d closed by the daemon (longest lived %d ms, connect_timeout %v), %d outlived it; "+
				"honest logins during the attack: %d over TCP, %d over WebSocket; %d CONNACKs of the devices meanwhile",
				f["opened"], f["closed"], f["longest_ms"], connectTimeout, f["outlived"], f["honest_tcp"], f["honest_ws"], f["device_connacks"])
		case "wills":
			what = wills
		case "sessions":
			what = fmt.Sprintf("persistent sessions asked for: CONNACKs %s (0x05: over max_sessions_per_user), %d subscribed; %d readings of 8 kB published to them and acknowledged; "+
				"queued for subscribers at most %d bytes (max_queued_bytes %d), drops at the bounds: %d per session, %d total; persistent sessions at most %d (max_sessions_per_user %d)",
				codes(), f["subscribed"], f["published"], f["queued_bytes_peak"], maxQueuedBytes, f["drops_session"], f["drops_total"], f["sessions_peak"], maxSessionsPerUser)
		case "squat":
			what = fmt.Sprintf("logins of user sq with honest devices' client ids: CONNACKs %s", codes())
		case "passwords":
			what = fmt.Sprintf("wrong logins: CONNACKs %s (0xff: closed at accept, 0xfe: no answer in 15 s); honest logins with the right password %d, slowest %d ms; sources backed off at most %d",
				codes(), f["honest"], f["honest_slowest_ms"], f["backoff_sources_peak"])
		}
		lines = append(lines, fmt.Sprintf("attack %s ×%d: %s; daemon RSS peak %d MiB", kind, n, what, f["rss_peak_kib"]>>10))
	}
	return lines
}

// TestAttackSchedule: every attack is played in each policy's half of the short soak (40
// s) and of longer ones, each starting before the schedule's last 10 s, in time order
// with the faults, whatever the seed.
func TestAttackSchedule(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		for _, d := range []time.Duration{40 * time.Second, 90 * time.Second, 5 * time.Minute} {
			s := &soak{seed: seed, duration: d}
			evs := s.schedule()
			played := map[string]int{}
			for i, ev := range evs {
				if i > 0 && ev.at < evs[i-1].at {
					t.Fatalf("seed %d, %v: event %d (%s at %v) before event %d (%v)", seed, d, i, ev.kind, ev.at, i-1, evs[i-1].at)
				}
				if isAttack(ev.kind) {
					played[ev.kind]++
					if ev.at >= d-10*time.Second {
						t.Errorf("seed %d, %v: attack %s at %v, in the last 10 s", seed, d, ev.kind, ev.at)
					}
				}
			}
			for _, k := range attackKinds {
				if played[k] == 0 {
					t.Errorf("seed %d, %v: attack %s never played: %v", seed, d, k, played)
				}
			}
		}
	}
}

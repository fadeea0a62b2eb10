package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
)

// account is one configured user.
type account struct {
	name      string
	hash      []byte
	publish   []string // grant filters, placeholders not yet substituted
	subscribe []string
	clientIDs []string // users[].client_ids patterns; empty: any client id
}

// credentials checks user names and passwords against the bcrypt hashes of the config.
//
// bcrypt is deliberately slow (each cost step doubles the work of a check), so logins must
// not become a way to burn the gateway's CPU or to keep devices out:
//
//   - A password that verified once is remembered as a SHA-256 digest: a device that
//     reconnects pays a hash, not a bcrypt.
//   - Checks run one at a time (a login storm costs at most one core), and the slot goes
//     first to sources (source addresses, IPv6 /64s) with no recent failure: a device that
//     logs in for the first time (after a restart, every device) waits for at most the
//     check in progress, whatever failing sources queue. Sources with failures get at most
//     half of the slot's time.
//   - A source that failed backoffAfter times in a row is backed off: its attempts are
//     refused without a check for 1 s, then 2, 4... up to backoffMax, until it has had no
//     failure for failMemory. A user whose password failed as often is backed off too, for
//     attempts from sources that failed (a source with no failure is still checked, so
//     failures from elsewhere cannot lock a device out).
//   - While failed checks come faster than failRateAttack per second, from any number of
//     sources, bcrypt runs at most a quarter of the time, so that a wrong-password flood
//     takes little CPU from the devices' publishes whatever the attacker's addresses
//     (first logins then take up to four times as long).
//   - Unknown users are checked against a dummy hash of the same cost, so response time
//     does not tell which user names exist.
type credentials struct {
	users map[string]*account
	clock clock.Clock
	wait  time.Duration // longest wait for the slot

	dummyOnce sync.Once
	dummy     []byte
	dummyCost int

	stats AuthStats

	mu           sync.Mutex // guards all below
	verified     map[string][sha256.Size]byte
	sources      map[netip.Prefix]*failures
	userFails    map[string]*failures
	running      bool
	closed       bool          // the broker is stopping: no login waits for the slot
	queue        []*authWaiter // waiting for the slot, in arrival order
	failingAfter time.Time     // failing sources may not start a check before this
	anyAfter     time.Time     // under attack, no check may start before this
	failRate     float64       // failed checks per second, decaying (failRateHalfLife)
	failRateAt   time.Time
}

// AuthStats count the password checks (metrics).
type AuthStats struct {
	Checks  atomic.Uint64 // bcrypt checks run for sources with no recent failure
	Failing atomic.Uint64 // bcrypt checks run for sources with recent failures
	Cached  atomic.Uint64 // passwords accepted on the cached digest, without a bcrypt
}

// Backoff parameters (README "Security").
const (
	backoffAfter = 3                // failures in a row before a source (or user) is backed off
	backoffBase  = time.Second      // first backoff, doubled at each further failure
	backoffMax   = time.Minute      // longest backoff
	failMemory   = 10 * time.Minute // failures older than this are forgotten
	maxSources   = 4096             // source addresses tracked at once
	// Past failRateAttack failed checks per second (averaged with a half-life of
	// failRateHalfLife), bcrypt runs at most a quarter of the time.
	failRateAttack   = 2.0
	failRateHalfLife = 10 * time.Second
)

var (
	errAuthBusy    = errors.New("password checks are backed up")
	errAuthBackoff = errors.New("too many failed logins: backed off")
	errStopping    = fmt.Errorf("%w: the broker is stopping", errAuthBusy)
)

// failures tracks the recent failed logins of a source address or a user.
type failures struct {
	n     int
	last  time.Time
	until time.Time // backed off until then
}

func (f *failures) recent(now time.Time) bool { return f != nil && now.Sub(f.last) <= failMemory }

func (f *failures) backedOff(now time.Time) bool { return f != nil && now.Before(f.until) }

func (f *failures) fail(now time.Time) {
	if !f.recent(now) {
		f.n = 0
	}
	f.n++
	f.last = now
	if f.n >= backoffAfter {
		f.until = now.Add(min(backoffBase<<min(f.n-backoffAfter, 10), backoffMax))
	}
}

// authWaiter is one login waiting for the check slot. Whether its source is failing (or
// backed off) is decided when the slot comes, not when it began to wait: a flood's first
// attempts come before their source has failed.
type authWaiter struct {
	src     netip.Prefix
	user    string // "" for an unknown user
	failing bool   // set when granted
	err     error  // set when refused while waiting (closed ready, running not taken)
	ready   chan struct{}
}

func newCredentials(users []config.User, c clock.Clock) *credentials {
	cr := &credentials{
		users:     make(map[string]*account, len(users)),
		clock:     c,
		wait:      10 * time.Second,
		verified:  map[string][sha256.Size]byte{},
		sources:   map[netip.Prefix]*failures{},
		userFails: map[string]*failures{},
		dummyCost: bcrypt.DefaultCost,
	}
	for i, u := range users {
		cr.users[u.Username] = &account{name: u.Username, hash: []byte(u.PasswordHash), publish: u.Publish, subscribe: u.Subscribe, clientIDs: u.ClientIDs}
		if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && i == 0 {
			cr.dummyCost = cost
		}
	}
	return cr
}

// check returns the account of username if password is its password. src is the source
// address of the connection (zero for none). Errors: errAuthBackoff (nothing was checked),
// errAuthBusy (the slot did not come in time), or a failed check.
func (c *credentials) check(username string, password []byte, src netip.Prefix) (*account, error) {
	acc := c.users[username]
	digest := sha256.Sum256(password)
	now := c.clock.Now()
	c.mu.Lock()
	if acc != nil {
		if known, ok := c.verified[username]; ok && subtle.ConstantTimeCompare(known[:], digest[:]) == 1 {
			c.mu.Unlock()
			c.stats.Cached.Add(1)
			return acc, nil
		}
	}
	w := &authWaiter{src: src, ready: make(chan struct{})}
	if acc != nil {
		w.user = username
	}
	if c.closed {
		c.mu.Unlock()
		return nil, errStopping
	}
	if err := c.backoffLocked(w, now); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.queue = append(c.queue, w)
	c.dispatchLocked(now)
	c.mu.Unlock()

	if err := c.await(w); err != nil {
		return nil, err
	}
	failing := w.failing
	start := c.clock.Now()
	ok := c.compare(acc, password)
	end := c.clock.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	if failing {
		c.stats.Failing.Add(1)
		c.failingAfter = end.Add(end.Sub(start)) // at most half the slot's time
	} else {
		c.stats.Checks.Add(1)
	}
	if ok {
		c.verified[username] = digest
	} else {
		c.failLocked(src, acc, end)
	}
	if c.underAttackLocked(end) {
		c.anyAfter = end.Add(3 * end.Sub(start)) // bcrypt takes at most a quarter of a core
	}
	c.dispatchLocked(end)
	if acc == nil {
		return nil, fmt.Errorf("unknown user %q", username)
	}
	if !ok {
		return nil, fmt.Errorf("user %q: wrong password", username)
	}
	return acc, nil
}

// compare runs the bcrypt check (against the dummy hash for an unknown user).
func (c *credentials) compare(acc *account, password []byte) bool {
	if acc == nil {
		c.dummyOnce.Do(func() {
			c.dummy, _ = bcrypt.GenerateFromPassword([]byte("edgegate-no-such-user"), c.dummyCost)
		})
		_ = bcrypt.CompareHashAndPassword(c.dummy, password)
		return false
	}
	return bcrypt.CompareHashAndPassword(acc.hash, password) == nil
}

// await waits until w is granted the slot, or gives up after c.wait.
func (c *credentials) await(w *authWaiter) error {
	select {
	case <-w.ready:
		return w.err // the usual case: no timer at all
	default:
	}
	timeout := c.clock.NewTimer(c.wait)
	defer timeout.Stop()
	for {
		var retry clock.Timer
		var retryC <-chan time.Time
		c.mu.Lock()
		now := c.clock.Now()
		after := c.anyAfter
		if c.sources[w.src].recent(now) && c.failingAfter.After(after) {
			after = c.failingAfter
		}
		if d := after.Sub(now); d > 0 {
			retry = c.clock.NewTimer(d)
			retryC = retry.C()
		}
		c.mu.Unlock()
		select {
		case <-w.ready:
			if retry != nil {
				retry.Stop()
			}
			return w.err
		case <-retryC:
			c.mu.Lock()
			c.dispatchLocked(c.clock.Now())
			c.mu.Unlock()
		case <-timeout.C():
			if retry != nil {
				retry.Stop()
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			select {
			case <-w.ready:
				if w.err != nil {
					return w.err
				}
				c.running = false // granted meanwhile: hand the slot on
				c.dispatchLocked(c.clock.Now())
			default:
				for i, q := range c.queue {
					if q == w {
						c.queue = append(c.queue[:i], c.queue[i+1:]...)
						break
					}
				}
			}
			return errAuthBusy
		}
	}
}

// close refuses the logins waiting for the slot, and every later one, with errStopping:
// the broker's Close waits for every connection's goroutine, so a login left waiting
// (up to c.wait) would hold the stop, and systemd's TimeoutStopSec with it. A check
// already running ends as usual.
func (c *credentials) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, w := range c.queue {
		w.err = errStopping
		close(w.ready)
	}
	c.queue = nil
}

// backoffLocked returns errAuthBackoff when w's source is backed off, or its user is and
// its source has failed lately.
func (c *credentials) backoffLocked(w *authWaiter, now time.Time) error {
	sf := c.sources[w.src]
	if sf.backedOff(now) {
		return fmt.Errorf("source %s: %w for %v", w.src, errAuthBackoff, sf.until.Sub(now).Round(time.Millisecond))
	}
	if uf := c.userFails[w.user]; w.user != "" && sf.recent(now) && uf.backedOff(now) {
		return fmt.Errorf("user %q from a failing source: %w for %v", w.user, errAuthBackoff, uf.until.Sub(now).Round(time.Millisecond))
	}
	return nil
}

// dispatchLocked grants the free slot: to the first waiter from a source without recent
// failures, else to the first failing one once failingAfter has passed. Waiters whose
// source was backed off meanwhile are refused on the way.
func (c *credentials) dispatchLocked(now time.Time) {
	if c.running || len(c.queue) == 0 || now.Before(c.anyAfter) {
		return
	}
	pick := -1
	for i := 0; i < len(c.queue); i++ {
		w := c.queue[i]
		if err := c.backoffLocked(w, now); err != nil {
			w.err = err
			close(w.ready)
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			i--
			continue
		}
		if pick < 0 && !c.sources[w.src].recent(now) {
			pick = i
		}
	}
	if pick < 0 && len(c.queue) > 0 && !now.Before(c.failingAfter) {
		pick = 0
	}
	if pick < 0 {
		return
	}
	w := c.queue[pick]
	c.queue = append(c.queue[:pick], c.queue[pick+1:]...)
	w.failing = c.sources[w.src].recent(now)
	c.running = true
	close(w.ready)
}

// underAttackLocked reports whether failed checks come faster than an honest fleet makes
// them (failRateAttack per second, averaged over some ten seconds): then bcrypt may take at
// most a quarter of a core, whoever waits, so that a wrong-password flood from many
// addresses, each failing only once, cannot take a whole core from the devices' publishes.
func (c *credentials) underAttackLocked(now time.Time) bool {
	c.decayLocked(now)
	return c.failRate > failRateAttack
}

func (c *credentials) decayLocked(now time.Time) {
	if d := now.Sub(c.failRateAt); d > 0 {
		c.failRate *= math.Exp2(-d.Seconds() / failRateHalfLife.Seconds())
		c.failRateAt = now
	}
}

// failLocked records a failed check from src for acc (nil: an unknown user).
func (c *credentials) failLocked(src netip.Prefix, acc *account, now time.Time) {
	c.decayLocked(now)
	c.failRate += 1 / failRateHalfLife.Seconds() * math.Ln2 // a sum that decays: per second
	f := c.sources[src]
	if f == nil {
		if len(c.sources) >= maxSources {
			for k, v := range c.sources {
				if !v.recent(now) || len(c.sources) >= maxSources {
					delete(c.sources, k)
				}
				if len(c.sources) < maxSources*3/4 {
					break
				}
			}
		}
		f = &failures{}
		c.sources[src] = f
	}
	f.fail(now)
	if acc != nil {
		uf := c.userFails[acc.name]
		if uf == nil {
			uf = &failures{}
			c.userFails[acc.name] = uf
		}
		uf.fail(now)
	}
}

// BackedOff returns how many source addresses and users are backed off now.
func (c *credentials) BackedOff() (sources, users int) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.sources {
		if f.backedOff(now) {
			sources++
		}
	}
	for _, f := range c.userFails {
		if f.backedOff(now) {
			users++
		}
	}
	return sources, users
}

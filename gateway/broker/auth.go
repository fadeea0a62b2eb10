package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/gateway/config"
)

// account is one configured user.
type account struct {
	name      string
	hash      []byte
	publish   []string // grant filters, placeholders not yet substituted
	subscribe []string
}

// credentials checks user names and passwords against the bcrypt hashes of the config.
//
// bcrypt is deliberately slow (each cost step doubles the work of a check), so two things keep logins from becoming a way to burn the
// gateway's CPU: checks run one at a time (a login storm costs at most one core), and a
// password that verified once is remembered as a SHA-256 digest, so a device that
// reconnects pays a hash, not a bcrypt. Unknown users are checked against a dummy hash of
// the same cost, so response time does not tell which user names exist.
type credentials struct {
	users map[string]*account
	slot  chan struct{} // one bcrypt at a time
	wait  time.Duration // longest wait for the slot

	dummyOnce sync.Once
	dummy     []byte
	dummyCost int

	mu       sync.Mutex // guards verified
	verified map[string][sha256.Size]byte
}

var errAuthBusy = errors.New("password checks are backed up")

func newCredentials(users []config.User) *credentials {
	c := &credentials{
		users:     make(map[string]*account, len(users)),
		slot:      make(chan struct{}, 1),
		wait:      10 * time.Second,
		verified:  map[string][sha256.Size]byte{},
		dummyCost: bcrypt.DefaultCost,
	}
	for i, u := range users {
		c.users[u.Username] = &account{name: u.Username, hash: []byte(u.PasswordHash), publish: u.Publish, subscribe: u.Subscribe}
		if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && i == 0 {
			c.dummyCost = cost
		}
	}
	return c
}

// check returns the account of username if password is its password.
func (c *credentials) check(username string, password []byte) (*account, error) {
	acc := c.users[username]
	digest := sha256.Sum256(password)
	if acc != nil {
		c.mu.Lock()
		known, ok := c.verified[username]
		c.mu.Unlock()
		if ok && subtle.ConstantTimeCompare(known[:], digest[:]) == 1 {
			return acc, nil
		}
	}
	select {
	case c.slot <- struct{}{}:
	case <-time.After(c.wait):
		return nil, errAuthBusy
	}
	defer func() { <-c.slot }()
	if acc == nil {
		c.dummyOnce.Do(func() {
			c.dummy, _ = bcrypt.GenerateFromPassword([]byte("edgegate-no-such-user"), c.dummyCost)
		})
		_ = bcrypt.CompareHashAndPassword(c.dummy, password)
		return nil, fmt.Errorf("unknown user %q", username)
	}
	if err := bcrypt.CompareHashAndPassword(acc.hash, password); err != nil {
		return nil, fmt.Errorf("user %q: wrong password", username)
	}
	c.mu.Lock()
	c.verified[username] = digest
	c.mu.Unlock()
	return acc, nil
}

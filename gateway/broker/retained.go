package broker

import (
	"fmt"
	"sync"

	"github.com/edgegate/edgegate/gateway/config"
)

// retainedBook counts the retained messages of clients (wills included; the broker's own
// inline clients aside) against the quotas: max_retained_messages and max_retained_bytes
// overall, max_retained_per_user and max_retained_bytes_per_user per user, so that one
// device cannot take them all. A retained publish reserves its place before it is stored;
// the reservation is undone if the publish is refused after all. Safe for concurrent use.
type retainedBook struct {
	cfg config.Broker

	mu     sync.Mutex // guards all below
	topics map[string]retainedTopic
	users  map[string]*retainedUse
	bytes  int64
	seq    uint64
}

// retainedTopic is the retained message of one topic: who put it there, its size.
type retainedTopic struct {
	user  string
	bytes int64
	seq   uint64 // the reservation that put it there
}

type retainedUse struct {
	n     int
	bytes int64
}

func newRetainedBook(cfg config.Broker) *retainedBook {
	return &retainedBook{cfg: cfg, topics: map[string]retainedTopic{}, users: map[string]*retainedUse{}}
}

// check reports whether user may retain size bytes on topic now.
func (r *retainedBook) check(user, topic string, size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkLocked(user, topic, size)
}

func (r *retainedBook) checkLocked(user, topic string, size int64) error {
	old, exists := r.topics[topic]
	if !exists && len(r.topics) >= r.cfg.MaxRetainedMessages {
		return fmt.Errorf("max_retained_messages (%d) reached", r.cfg.MaxRetainedMessages)
	}
	if r.bytes-old.bytes+size > int64(r.cfg.MaxRetainedBytes) {
		return fmt.Errorf("max_retained_bytes (%s) reached", r.cfg.MaxRetainedBytes)
	}
	u := r.users[user]
	if u == nil {
		u = &retainedUse{}
	}
	n, b := u.n+1, u.bytes+size
	if exists && old.user == user {
		n, b = u.n, u.bytes-old.bytes+size
	}
	if n > r.cfg.MaxRetainedPerUser {
		return fmt.Errorf("max_retained_per_user (%d) reached by %s", r.cfg.MaxRetainedPerUser, userName(user))
	}
	if b > int64(r.cfg.MaxRetainedBytesPerUser) {
		return fmt.Errorf("max_retained_bytes_per_user (%s) reached by %s", r.cfg.MaxRetainedBytesPerUser, userName(user))
	}
	return nil
}

// reserve counts user's retained message of size bytes on topic, if the quotas allow it,
// and returns what undoes it (if the message is not retained after all).
func (r *retainedBook) reserve(user, topic string, size int64) (undo func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.checkLocked(user, topic, size); err != nil {
		return nil, err
	}
	prev, had := r.topics[topic]
	r.removeLocked(topic)
	r.seq++
	seq := r.seq
	r.addLocked(topic, retainedTopic{user: user, bytes: size, seq: seq})
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if cur, ok := r.topics[topic]; !ok || cur.seq != seq {
			return // replaced meanwhile: the newer one counts
		}
		r.removeLocked(topic)
		if had {
			r.addLocked(topic, prev)
		}
	}, nil
}

// clear forgets the retained message of topic (cleared by an empty payload, or expired).
func (r *retainedBook) clear(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(topic)
}

func (r *retainedBook) addLocked(topic string, t retainedTopic) {
	r.topics[topic] = t
	r.bytes += t.bytes
	u := r.users[t.user]
	if u == nil {
		u = &retainedUse{}
		r.users[t.user] = u
	}
	u.n++
	u.bytes += t.bytes
}

func (r *retainedBook) removeLocked(topic string) {
	t, ok := r.topics[topic]
	if !ok {
		return
	}
	delete(r.topics, topic)
	r.bytes -= t.bytes
	if u := r.users[t.user]; u != nil {
		u.n--
		u.bytes -= t.bytes
		if u.n <= 0 {
			delete(r.users, t.user)
		}
	}
}

// Stats returns the retained messages counted and their bytes.
func (r *retainedBook) Stats() (n int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.topics), r.bytes
}

package broker

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/edgegate/edgegate/buffer"
)

// Client ids belong to users (README "Client ids belong to users"): a client id that no
// users[].client_ids pattern reserves and that is no user's name is bound to the first
// user that connects with it, durably, until it has not been used for bindingIdle. Another
// user connecting with it is refused (0x87; 3.1.1: 0x05), so that no device can squat
// another's client id — lock it out while it is offline, take its session over, or
// publish under a {clientid} grant as that device.

const (
	// bindingIdle is how long a binding outlives the last connection with its client id.
	bindingIdle = 30 * 24 * time.Hour
	// bindingResave is how often the last use of a binding in use is written again.
	bindingResave = 24 * time.Hour
	// bindingPrefix is where bindings are kept in the store's state KV.
	bindingPrefix = "mqtt-bind/"
)

// binding is the user a client id is bound to.
type binding struct {
	user  string
	last  time.Time // last connection with the client id
	saved time.Time // last written to the store
}

// storedBinding is the stored form of a binding.
type storedBinding struct {
	User string `json:"user"`
	Last int64  `json:"last"` // unix seconds
}

// bindingOp is a change to write to the store (user "": delete).
type bindingOp struct {
	id, user string
	last     time.Time
}

// bindings is the table of client id bindings, at most max of them. The guard holds it
// under its mutex.
type bindings struct {
	max int
	m   map[string]*binding
}

func newBindings(max int) *bindings { return &bindings{max: max, m: map[string]*binding{}} }

// owner returns the user id is bound to, if the binding has not lapsed.
func (b *bindings) owner(id string, now time.Time) (string, bool) {
	x := b.m[id]
	if x == nil || now.Sub(x.last) > bindingIdle {
		return "", false
	}
	return x.user, true
}

// bind binds id to user (or refreshes its binding) and returns what to write, if
// anything. held reports whether a client id is in use (those are never evicted).
func (b *bindings) bind(id, user string, now time.Time, held func(string) bool) []bindingOp {
	x := b.m[id]
	var ops []bindingOp
	if x == nil {
		if len(b.m) >= b.max {
			ops = b.evict(now, held)
		}
		x = &binding{}
		b.m[id] = x
	}
	changed := x.user != user
	x.user, x.last = user, now
	if changed || now.Sub(x.saved) >= bindingResave {
		x.saved = now
		ops = append(ops, bindingOp{id: id, user: user, last: now})
	}
	return ops
}

// evict forgets lapsed bindings, then the least recently used tenth of those not in use.
func (b *bindings) evict(now time.Time, held func(string) bool) []bindingOp {
	var ops []bindingOp
	type aged struct {
		id   string
		last time.Time
	}
	var free []aged
	for id, x := range b.m {
		switch {
		case now.Sub(x.last) > bindingIdle:
			delete(b.m, id)
			ops = append(ops, bindingOp{id: id})
		case !held(id):
			free = append(free, aged{id, x.last})
		}
	}
	if len(b.m) < b.max {
		return ops
	}
	sort.Slice(free, func(i, j int) bool { return free[i].last.Before(free[j].last) })
	for _, a := range free[:min(len(free), max(1, b.max/10))] {
		delete(b.m, a.id)
		ops = append(ops, bindingOp{id: a.id})
	}
	return ops
}

// load reads the stored bindings (at start), forgetting the lapsed ones.
func (b *bindings) load(s *buffer.Store, now time.Time) ([]bindingOp, error) {
	var ops []bindingOp
	err := s.ScanState(bindingPrefix, func(key string, v []byte) error {
		id := strings.TrimPrefix(key, bindingPrefix)
		var sb storedBinding
		if json.Unmarshal(v, &sb) != nil || now.Sub(time.Unix(sb.Last, 0)) > bindingIdle || len(b.m) >= b.max {
			ops = append(ops, bindingOp{id: id})
			return nil
		}
		t := time.Unix(sb.Last, 0)
		b.m[id] = &binding{user: sb.User, last: t, saved: t}
		return nil
	})
	return ops, err
}

// sessionOps turns binding changes into writes of the session store.
func (o bindingOp) sessionOp() sessionOp {
	if o.user == "" && o.last.IsZero() {
		return sessionOp{kind: opDel, key: bindingPrefix + o.id}
	}
	v, _ := json.Marshal(storedBinding{User: o.user, Last: o.last.Unix()})
	return sessionOp{kind: opPut, key: bindingPrefix + o.id, value: v}
}

package buffer

import "time"

// idCache is a bounded cache of recently stored ids in front of the durable dedup index,
// so the common case (a fresh id, or a resend seconds later) costs no Badger read. When full
// it forgets the oldest insertions; the durable index still answers for them.
// Owned by the writer goroutine.
type idCache struct {
	max  int
	m    map[string]time.Time
	ring []string
	head int
}

func newIDCache(max int) *idCache {
	return &idCache{max: max, m: make(map[string]time.Time, max), ring: make([]string, 0, max)}
}

func (c *idCache) get(id string) (time.Time, bool) {
	t, ok := c.m[id]
	return t, ok
}

func (c *idCache) add(id string, exp time.Time) {
	if _, ok := c.m[id]; ok {
		c.m[id] = exp
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, id)
	} else {
		delete(c.m, c.ring[c.head])
		c.ring[c.head] = id
		c.head = (c.head + 1) % c.max
	}
	c.m[id] = exp
}

// remove forgets id. Its ring slot stays until overwritten; deleting a missing key then is
// harmless.
func (c *idCache) remove(id string) { delete(c.m, id) }

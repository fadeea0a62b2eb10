package buffer

// idCache is a bounded cache of recently stored ids (by their dedup hash) in front of the
// durable dedup index, so the common duplicate (a resend seconds later) is answered without
// a Badger read; a fresh id still costs one lookup in the index. When full it forgets the
// oldest insertions; the durable index still answers for them. Owned by the writer goroutine.
type idCache struct {
	max  int
	m    map[string]int64 // hash → expiry, unix ms on the store's clock
	ring []string
	head int
}

func newIDCache(max int) *idCache {
	return &idCache{max: max, m: make(map[string]int64, max), ring: make([]string, 0, max)}
}

func (c *idCache) get(h string) (int64, bool) {
	t, ok := c.m[h]
	return t, ok
}

func (c *idCache) add(h string, exp int64) {
	if _, ok := c.m[h]; ok {
		c.m[h] = exp
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, h)
	} else {
		delete(c.m, c.ring[c.head])
		c.ring[c.head] = h
		c.head = (c.head + 1) % c.max
	}
	c.m[h] = exp
}

// remove forgets h. Its ring slot stays until overwritten; deleting a missing key then is
// harmless.
func (c *idCache) remove(h string) { delete(c.m, h) }

package buffer

// idCache is a bounded cache of recently stored ids (by their dedup hash) in front of the
// durable dedup index, so the common duplicate (a resend seconds later) is answered without
// a Badger read; a fresh id still costs one lookup in the index. When full it forgets the
// oldest insertions; the durable index still answers for them. Owned by the writer goroutine.
type idCache struct {
	max  int
	m    map[string]cached
	ring []string // hashes in insertion order, from head; a slot may name a removed id
	head int
	gets int // lookups so far (a test counts them)
}

// cached is what the cache knows of an id.
type cached struct {
	exp  int64 // expiry, unix ms on the store's clock
	slot int32 // the ring slot of this insertion: an older slot naming the id is stale
	// group and req say which request of which write group added the id: while that
	// group is being applied, the id is not committed yet (Store.prepare).
	group uint64
	req   int32
}

func newIDCache(max int) *idCache {
	return &idCache{max: max, m: make(map[string]cached, max), ring: make([]string, 0, max)}
}

func (c *idCache) get(h string) (cached, bool) {
	c.gets++
	e, ok := c.m[h]
	return e, ok
}

// add caches h with expiry exp, added by request req of write group group.
func (c *idCache) add(h string, exp int64, group uint64, req int) {
	e, ok := c.m[h]
	if !ok {
		if len(c.ring) < c.max {
			e.slot = int32(len(c.ring))
			c.ring = append(c.ring, h)
		} else {
			old := c.ring[c.head]
			// A removed id leaves its slot behind: when it was added again since, its
			// entry belongs to its newer slot and stays.
			if o, ok := c.m[old]; ok && o.slot == int32(c.head) {
				delete(c.m, old)
			}
			e.slot = int32(c.head)
			c.ring[c.head] = h
			c.head = (c.head + 1) % c.max
		}
	}
	e.exp, e.group, e.req = exp, group, int32(req)
	c.m[h] = e
}

// remove forgets h. Its ring slot stays until reused (add then leaves a newer entry of h).
func (c *idCache) remove(h string) { delete(c.m, h) }

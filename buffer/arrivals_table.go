package buffer

// The records of arrivals in memory: per client, oldest first, within their share of the
// budget (the rules are in arrivals.go).

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc64"
	"math/bits"
	"slices"
	"sync"
	"time"
)

type clientKey [12]byte

// arrivalRec is one recorded publish (its key also holds its client's epoch).
type arrivalRec struct {
	at, exp int64  // unix ms: arrival, and expiry on the store's clock
	hash    uint64 // of the payload
	seq     uint32 // the client's records before it: orders them
	conn    uint32 // the connection it came on (clientArrivals.conn then)
	pid     uint16
	slot    uint16 // of its key
	dupOnly bool   // its session ended (or ends) with a connection: only a DUP publish matches
	stored  bool   // an append with it committed (or it was loaded): a stored publish's
	// delivered: its PUBACK reached the client's host (Delivered): the client resends it
	// no more, so it is given up first. A record loaded at Open is if its key was marked so
	// (takeMarks) before the restart.
	delivered bool
	// pending counts the appends with it (the first copy's, resends') not yet settled: a
	// record whose first copy failed while a resend's append is queued waits for that one.
	pending uint16
}

// clientArrivals are one client's records, oldest first.
type clientArrivals struct {
	key clientKey
	// epoch numbers the client's records from their first on, higher than any earlier
	// records of the client had (unix ms of their first, made unique): keys of records it
	// had before are ignored at Open.
	epoch int64
	conn  uint32 // connections of the client seen this run (Connected)
	next  uint32 // seq of the next record
	recs  []arrivalRec
	pids  []uint16 // recs[i].pid, apart: a lookup scans them only
	pos   int      // index in arrivalTable.bySize[len(recs)]
	used  []uint64 // slots taken by recs, a bit each, grown as needed
}

// alloc takes a free slot (there is one: the caller keeps len(recs) < arrivalsPerClient).
func (c *clientArrivals) alloc() uint16 {
	for w, used := range c.used {
		if used != ^uint64(0) {
			b := bits.TrailingZeros64(^used)
			c.used[w] |= 1 << b
			return uint16(w*64 + b)
		}
	}
	if len(c.used) == arrivalsPerClient/64 {
		panic("buffer: arrivals: no free slot")
	}
	c.used = append(c.used, 1)
	return uint16((len(c.used) - 1) * 64)
}

// take marks slot as taken (a record loaded in it).
func (c *clientArrivals) take(slot uint16) {
	for int(slot/64) >= len(c.used) {
		c.used = append(c.used, 0)
	}
	c.used[slot/64] |= 1 << (slot % 64)
}

// release frees slot.
func (c *clientArrivals) release(slot uint16) {
	if int(slot/64) < len(c.used) {
		c.used[slot/64] &^= 1 << (slot % 64)
	}
}

// victim returns the index of the record to give up when c has too many: its oldest whose
// PUBACK reached the client (Delivered), which it resends no more; else its oldest stored
// one, whose PUBACK may have been lost with its connection (a record whose append is in
// flight is given up last); else its oldest.
func (c *clientArrivals) victim() int {
	stored := -1
	for i := range c.recs {
		if c.recs[i].delivered {
			return i
		}
		if stored < 0 && c.recs[i].stored {
			stored = i
		}
	}
	return max(stored, 0)
}

// arrivalTable holds the records in memory (loaded at Open): lookups never read the disk,
// and see a record as soon as Arrive made it, before its append is committed.
type arrivalTable struct {
	mu      sync.Mutex // guards all below: Arrive runs on every publisher's goroutine
	clients map[clientKey]*clientArrivals
	bySize  [][]*clientArrivals // clients by their number of records, to evict from the largest
	largest int
	total   int
	limit   int   // maxArrivals (tests make it small: Options.arrivalLimit)
	budget  int   // what the buffer's budget allows (setBudget); 0: no budget
	epoch   int64 // the last epoch given out
	// delivered lists records in the order they were delivered (Delivered), for evict to
	// give those up first, whichever client they are of. An entry whose record was given up
	// or replaced meanwhile is skipped; the list is compacted when it holds 1,024 entries more
	// than the table has records: at most 20 bytes a record (1.3 MiB at maxArrivals).
	delivered []arrivalRef
	// marks lists delivered records whose keys the writer is to rewrite with the delivered
	// flag (takeMarks), so that they come back at Open as delivered ones: first given up.
	// Without the mark, every record read back at Open stood for a publish whose PUBACK may
	// have been lost, and after a few restarts those of publishes answered long ago filled
	// the table and pushed out the few truly unanswered ones (the soak). The key is kept,
	// not deleted: a PUBACK delivered to the client's host is lost all the same when a kill -9
	// resets the connection before the client read it, and the client then resends the
	// publish (TestResendAcrossKill9). At most one entry per delivery since the writer's
	// last transaction, and twice the table's bound (deliver).
	marks []markRef
}

// markRef is a delivered record whose key is to be rewritten with the delivered flag,
// unless its slot holds another record by then, or it was resent since.
type markRef struct {
	c     clientKey
	epoch int64
	seq   uint32
	slot  uint16
}

// arrivalShare is the part of the buffer's capacity the records of arrivals may take (each
// counted arrivalKeyCost), as the dedup index has its share: in a small budget they would
// otherwise crowd out the readings (the soak's 9 MiB: 65,536 records took 6 MiB of it).
const arrivalShare = 8

// minArrivals is what any budget allows (384 KiB at arrivalKeyCost): a budget that small
// is far below what Badger itself needs.
const minArrivals = 4096

// max returns the number of records the table may hold.
func (t *arrivalTable) max() int {
	if t.budget > 0 {
		return min(t.limit, t.budget)
	}
	return t.limit
}

// setBudget bounds the records by the buffer's capacity (bytes), giving up records past
// it (delivered ones first, then from the clients with the most). The writer calls it as it
// applies the budget.
func (s *Store) setArrivalBudget(capacity int64) {
	t := s.arrivals
	n := int(max(min(capacity/arrivalShare/arrivalKeyCost, int64(maxArrivals)), minArrivals))
	t.mu.Lock()
	defer t.mu.Unlock()
	if n == t.budget {
		return
	}
	t.budget = n
	for t.total > t.max() {
		t.evict()
	}
	s.arrivalCount.Store(int64(t.total))
}

func newArrivalTable(limit int) *arrivalTable {
	return &arrivalTable{
		clients: map[clientKey]*clientArrivals{},
		bySize:  make([][]*clientArrivals, arrivalsPerClient+1),
		limit:   limit,
	}
}

func keyOfClient(id string) clientKey {
	sum := sha256.Sum256([]byte(id))
	return clientKey(sum[:12])
}

// payloadHash tells a resend's payload from another publish's with the same packet id. A
// CRC suffices (with a collision a client could only confuse itself), and costs less than
// SHA-256, which boards without SHA instructions (a Raspberry Pi) compute in software.
func payloadHash(p []byte) uint64 { return crc64.Checksum(p, crcTable) }

var crcTable = crc64.MakeTable(crc64.ECMA)

func arrivalKey(c clientKey, slot uint16) []byte {
	k := make([]byte, 0, len(arrivalPrefix)+len(c)+2)
	k = append(k, arrivalPrefix...)
	k = append(k, c[:]...)
	return binary.BigEndian.AppendUint16(k, slot)
}

func (r *arrivalRec) encode(epoch int64) []byte {
	b := make([]byte, 0, arrivalValueLen)
	b = binary.BigEndian.AppendUint64(b, uint64(epoch))
	b = binary.BigEndian.AppendUint32(b, r.seq)
	b = binary.BigEndian.AppendUint16(b, r.pid)
	b = binary.BigEndian.AppendUint64(b, r.hash)
	b = binary.BigEndian.AppendUint64(b, uint64(r.at))
	b = binary.BigEndian.AppendUint64(b, uint64(r.exp))
	var flags byte
	if r.dupOnly {
		flags |= flagDupOnly
	}
	if r.delivered {
		flags |= flagDelivered
	}
	return append(b, flags)
}

// The bits of a record's flags byte.
const (
	flagDupOnly   = 1 << 0 // arrivalRec.dupOnly
	flagDelivered = 1 << 1 // arrivalRec.delivered, written after its PUBACK was (takeMarks)
)

func decodeArrival(b []byte) (epoch int64, r arrivalRec, ok bool) {
	if len(b) != arrivalValueLen && len(b) != arrivalValueLen-1 { // the latter: no flags
		return 0, arrivalRec{}, false
	}
	return int64(binary.BigEndian.Uint64(b)), arrivalRec{
		seq:       binary.BigEndian.Uint32(b[8:]),
		pid:       binary.BigEndian.Uint16(b[12:]),
		hash:      binary.BigEndian.Uint64(b[14:]),
		at:        int64(binary.BigEndian.Uint64(b[22:])),
		exp:       int64(binary.BigEndian.Uint64(b[30:])),
		dupOnly:   len(b) == arrivalValueLen && b[38]&flagDupOnly != 0,
		delivered: len(b) == arrivalValueLen && b[38]&flagDelivered != 0,
	}, true
}

// deliver marks the record of ref delivered, and lists it for evict.
func (t *arrivalTable) deliver(ref arrivalRef) {
	c := t.client(ref)
	if c == nil {
		return
	}
	i := c.index(ref.seq)
	if i < 0 || c.recs[i].delivered {
		return
	}
	c.recs[i].delivered = true
	if len(t.marks) >= 2*t.max() { // the writer marks markBatch a transaction: it fell behind
		t.marks = slices.DeleteFunc(t.marks, func(m markRef) bool {
			_, i := t.heldDelivered(arrivalRef{c: m.c, epoch: m.epoch, seq: m.seq})
			return i < 0
		})
		if n := len(t.marks) - t.max(); n > 0 {
			t.marks = slices.Delete(t.marks, 0, n) // the earliest stay unmarked: kept as unanswered ones
		}
	}
	t.marks = append(t.marks, markRef{c: ref.c, epoch: ref.epoch, seq: ref.seq, slot: c.recs[i].slot})
	if len(t.delivered) >= t.total+1024 { // mostly records given up or replaced since
		t.delivered = slices.DeleteFunc(t.delivered, func(r arrivalRef) bool {
			_, i := t.heldDelivered(r)
			return i < 0
		})
		t.delivered = slices.Clip(t.delivered) // the next append moves it to a fitting array
	}
	t.delivered = append(t.delivered, ref)
}

// heldDelivered returns the client and index of ref's record if the table still holds it,
// delivered; else index -1 (given up or replaced since).
func (t *arrivalTable) heldDelivered(ref arrivalRef) (*clientArrivals, int) {
	c := t.client(ref)
	if c == nil {
		return nil, -1
	}
	if i := c.index(ref.seq); i >= 0 && c.recs[i].delivered {
		return c, i
	}
	return c, -1
}

// index returns the index of c's record of seq, or -1.
func (c *clientArrivals) index(seq uint32) int {
	i, ok := slices.BinarySearchFunc(c.recs, seq, func(r arrivalRec, seq uint32) int { return cmp.Compare(r.seq, seq) })
	if !ok {
		return -1
	}
	return i
}

// find returns the index of c's record of packet id pid, or -1.
func (c *clientArrivals) find(pid uint16) int {
	for i := len(c.pids) - 1; i >= 0; i-- {
		if c.pids[i] == pid {
			return i
		}
	}
	return -1
}

// push appends rec. A slice trimmed at its front loses that room for good, so when full
// the records move to a new array with a quarter more room than a full set: memory stays
// within 1.25× the records, and the copy comes once every 64 publishes of a busy client.
func (c *clientArrivals) push(rec arrivalRec) {
	if len(c.recs) == cap(c.recs) {
		n := len(c.recs)
		size := min(max(2*n, 2), arrivalsPerClient+arrivalsPerClient/4)
		c.recs = append(make([]arrivalRec, 0, size), c.recs...)
		c.pids = append(make([]uint16, 0, size), c.pids...)
	}
	c.recs, c.pids = append(c.recs, rec), append(c.pids, rec.pid)
}

// drop removes c's records [i, j).
func (c *clientArrivals) drop(i, j int) {
	if i == 0 {
		c.recs, c.pids = c.recs[j:], c.pids[j:]
		return
	}
	c.recs, c.pids = slices.Delete(c.recs, i, j), slices.Delete(c.pids, i, j)
}

// add appends rec (seq c.next) to c's records and returns it with its slot: the slot of
// c's record of the same packet id, which it replaces; else a free one; else the slot of
// c's oldest record, which goes.
func (t *arrivalTable) add(c *clientArrivals, rec arrivalRec) arrivalRec {
	before := len(c.recs)
	c.next = rec.seq + 1
	switch i := c.find(rec.pid); {
	case i >= 0:
		rec.slot = c.recs[i].slot
		c.drop(i, i+1)
	case len(c.recs) >= arrivalsPerClient:
		v := c.victim()
		rec.slot = c.recs[v].slot
		c.drop(v, v+1)
	default:
		rec.slot = c.alloc()
	}
	c.push(rec)
	t.resized(c, before)
	return rec
}

// load adds a record read at Open, in its slot, in seq order: it stands for a stored
// publish; of two with the same packet id (a key its slot's next record had not yet
// overwritten), the later one is kept.
func (t *arrivalTable) load(c *clientArrivals, rec arrivalRec) {
	before := len(c.recs)
	c.next = max(c.next, rec.seq+1)
	if i := c.find(rec.pid); i >= 0 {
		c.release(c.recs[i].slot)
		c.drop(i, i+1)
	}
	// Unless its key is marked delivered (loadArrivals lists it for evict then), whether its
	// PUBACK reached the client before the restart is unknown; its client resends
	// it at its first reconnect if not. So it is kept as a stored publish is, ahead of the
	// records of publishes delivered since, and given up in age order with those whose
	// PUBACKs may have been lost (the 10-minute soak under reject: a raw reading stored in
	// one run, its PUBACK lost at a kill -9, came again four minutes and six restarts later).
	rec.stored = true
	c.take(rec.slot)
	c.push(rec)
	for len(c.recs) > arrivalsPerClient {
		v := c.victim()
		c.release(c.recs[v].slot)
		c.drop(v, v+1)
	}
	t.resized(c, before)
}

// resized moves c to the bySize list of its new number of records (and out of the table
// when it has none left).
func (t *arrivalTable) resized(c *clientArrivals, before int) {
	after := len(c.recs)
	if after == before {
		return
	}
	if before > 0 {
		l := t.bySize[before]
		last := l[len(l)-1]
		l[c.pos], last.pos = last, c.pos
		t.bySize[before] = l[:len(l)-1]
	}
	if after > 0 {
		c.pos = len(t.bySize[after])
		t.bySize[after] = append(t.bySize[after], c)
		t.largest = max(t.largest, after)
	} else {
		delete(t.clients, c.key)
	}
	t.total += after - before
}

// evict gives up a record: the one delivered first of those still held; else the victim
// of the client with the most.
func (t *arrivalTable) evict() {
	for len(t.delivered) > 0 {
		ref := t.delivered[0]
		t.delivered[0] = arrivalRef{}
		t.delivered = t.delivered[1:]
		if c, i := t.heldDelivered(ref); i >= 0 {
			c.release(c.recs[i].slot)
			c.drop(i, i+1)
			t.resized(c, len(c.recs)+1)
			return
		}
	}
	for len(t.bySize[t.largest]) == 0 {
		t.largest--
	}
	v := t.bySize[t.largest][0]
	i := v.victim()
	v.release(v.recs[i].slot)
	v.drop(i, i+1)
	t.resized(v, len(v.recs)+1)
}

// takeMarks returns, up to max, the writes that mark records delivered since the last call:
// each record's key rewritten with the delivered flag, its TTL the record's remaining life
// (now: unix ms on the store's clock). The writer stages them in a transaction BEFORE any
// other write, so an append of a record that took the slot meanwhile, or of a resend of
// the record (its client had no PUBACK: no longer delivered, and its append writes it
// without the flag), comes after and wins. A record no longer held (given up, or
// replaced, or its client made again) is skipped: its slot is another record's, or its key
// stays as it was (loaded at Open as unanswered, as before the mark existed).
func (t *arrivalTable) takeMarks(max int, now int64) []write {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := min(max, len(t.marks))
	if n == 0 {
		return nil
	}
	ws := make([]write, 0, n)
	for _, m := range t.marks[:n] {
		c := t.client(arrivalRef{c: m.c, epoch: m.epoch})
		if c == nil {
			continue
		}
		i := c.index(m.seq)
		if i < 0 || c.recs[i].slot != m.slot || !c.recs[i].delivered {
			continue // given up or replaced, or resent since
		}
		r := &c.recs[i]
		if r.exp <= now {
			continue // its key expires
		}
		ws = append(ws, write{key: arrivalKey(m.c, m.slot), value: r.encode(c.epoch), ttl: time.Duration(r.exp-now) * time.Millisecond})
	}
	t.marks = t.marks[n:]
	if len(t.marks) == 0 {
		t.marks = nil // its array goes
	}
	return ws
}

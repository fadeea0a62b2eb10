package buffer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// Arrival keys: a resend of a reading the gateway stamped gets the ids stored the first time
// (SPEC §2).
//
// A reading without its own time (JSON without ts, a bare number, an unrouted raw message)
// is stamped with its arrival, and its id hashes that time (record.HashID, record.RawID):
// resent after a lost PUBACK it would arrive later, get new ids, and the id dedup could not
// recognise it. So the arrival of a QoS ≥ 1 publish in a persistent session is recorded
// under its client and packet id, with a hash of its payload, and written in the same
// transaction as its entries (after a kill -9 both or neither exist). A resend (the same
// client, packet id and payload) is given the recorded arrival, hence the same ids, and the
// id dedup drops it; while the first copy is still queued, the two share a group and the
// duplicate shares the original's fate (writer.go).
//
// When is a publish a resend? MQTT resends unacknowledged publishes at a reconnect that
// resumes the session (3.1.1 §4.4, 5.0 §4.4), with their packet ids, and reuses a packet
// id only once its PUBACK arrived. MQTT.js resends without the DUP flag, so the flag cannot
// be the only test; and paho (Go) resends what it had in flight even on a clean session,
// with the flag. The rules:
//   - Every QoS ≥ 1 publish is recorded. A record of a session that ends with its
//     connection (3.1.1 clean session 1, MQTT 5 without a session expiry), or of a session
//     a clean connect ended, matches only a publish marked DUP: a device that connects
//     clean and sends the same number with the same packet id each time (DUP 0) has every
//     reading stored, and a clean-session client resending after a reconnect is recognised.
//   - A record of a persistent session matches, on a later connection that resumed the
//     session (clean session / clean start 0), with or without DUP (or after a restart); on
//     the same connection only with DUP set, as the MQTT 3.1.1 clients that retransmit on a
//     timeout mark it. So a client reusing a packet id for the same payload on one
//     connection (its PUBACK came) is not taken for a resend.
//   - A resend updates the record it matched, in place, and a record whose appends all
//     failed is forgotten (nothing was stored under its arrival, so a resend may take a new
//     one; a failed first copy's record waits for a resend's append still queued):
//     however often a client is refused and resends (a full buffer, again and again), its
//     records cover its last stored publishes, not its last attempts.
//   - A client resends at most what it had unacknowledged, so only its last publishes can
//     come again: each client keeps its last arrivalsPerClient (16,384) records, a record
//     is replaced when its packet id is reused, and it lives as long as the session may
//     (its expiry, at most broker.max_session_expiry). Past the bound, the records of
//     publishes whose PUBACK reached the client (Delivered: written and acknowledged by the
//     client's host) are given up first, the earliest delivered first; then the client's
//     oldest: a stored publish whose PUBACK may have been lost (a reset, a kill -9, a
//     record loaded at Open without the delivered mark) will come again. The mark is
//     written to the record's key with the writer's next transaction (or at Close), so a
//     record loaded at Open with it is among the first given up, before those delivered
//     since; without it, after a few restarts the records of publishes answered long ago
//     filled the table and pushed out the few truly unanswered ones (the soak: a reading
//     resent after restarts was stored under two ids). The key stays: a kill -9 resets the
//     connections, and a client's host discards the PUBACKs its app had not read, so a
//     delivered publish may still be resent and must find its record (TestResendAcrossKill9
//     failed when the key was deleted). A resend clears the mark. The broker's receive maximum, 256, bounds
//     what an MQTT 5 client may have unacknowledged; a 3.1.1 client has no such bound, and
//     paho (Go) resends everything it holds, in random order, at each reconnect: after a
//     long refusal its stored publishes may come behind thousands of new ones.
//   - Memory is bounded: at most maxArrivals (65,536) records in all, past which a
//     delivered one goes, else the client with the most loses one (as above): 3.2 MiB of heap when full with 16 clients, 6.6 MiB
//     with 1,000 (BenchmarkArrivalsHeap).
//
// What remains ambiguous, and is taken for a resend: a client of a persistent session that
// restarts, numbers its packets from 1 again, and sends as its first publishes the very
// payloads it sent with those packet ids among its last 256 publishes within the session's
// expiry (say, a bare "1" from a door sensor). Such readings should carry a ts or an id.
//
// Key layout: k/<client: 12 bytes of SHA-256><slot: 2 BE> → epoch (8), seq (4), packet id
// (2), payload hash (8), arrival (8, unix ms), expiry (8, unix ms on the store's clock),
// flags (1: bit 0 dupOnly, bit 1 delivered), with a Badger TTL (when a record is rewritten,
// the rest of its life). (Records written before the flags byte existed
// have 38 bytes and are persistent ones.) A record takes a free slot of its client's
// arrivalsPerClient (the slot of the record it replaces, or of the oldest when all are
// taken), so a client never has more keys than records it can keep; seq orders a client's
// records; the epoch tells the keys of its current records from any left by records it no
// longer has (after a clean connect, or evicted whole, see evict). A key whose record was
// forgotten or evicted stays until its slot is taken again or its TTL ends; loaded again
// at Open, it is the record of a publish that did arrive, and harmless (a record given up
// before the writer marked it delivered comes back unmarked, as every record did before
// the mark existed).

const (
	// arrivalsPerClient covers a 3.1.1 client's whole resend after a long refusal: MQTT
	// 3.1.1 bounds nothing a client has unacknowledged, and paho (Go) resends all of it at a
	// reconnect in random order (its memory store is a map), so with 256 the stored ones
	// came after 256 new ones and lost their records (the soak, reject policy).
	arrivalsPerClient = 1 << 14
	maxArrivals       = 1 << 16
	arrivalPrefix     = "k/"
	// arrivalKeyCost is what one record is counted for in the budget: a 16-byte key, a
	// 39-byte value and Badger's overhead, with margin (as dedupKeyCost).
	arrivalKeyCost  = 96
	arrivalValueLen = 39
)

// Publish describes a QoS ≥ 1 MQTT publish for Arrive.
type Publish struct {
	Client   string
	PacketID uint16
	Payload  []byte
	// Dup is the DUP flag: a resend on the connection of the first copy, or on a clean
	// session, is recognised only with it.
	Dup bool
	// Resumed: the connection resumed the client's session (clean session / clean start
	// 0), so a resend of an earlier publish may come on it without DUP.
	Resumed bool
	// Keep is how long a resend of this publish may come: the session's expiry, or for a
	// session that ends with its connection, how long its client may take to reconnect.
	// 0: not recorded.
	Keep time.Duration
	// Ends: the session ends with the connection (3.1.1 clean session 1, MQTT 5 without a
	// session expiry). Its record matches only a publish marked DUP.
	Ends bool
}

// Arrival is when a publish arrived, first: the time to stamp its readings with. Pass it
// to AppendArrived with the publish's entries, which then also records it.
type Arrival struct {
	At time.Time
	// Resend: the publish repeats one recorded earlier; At is that one's arrival.
	Resend bool
	// Lazy: nobody waits for the append to be durable (a QoS 0 publish has no PUBACK), so
	// it may wait up to Options.LazyDelay to share a group commit. It is fsynced all the
	// same (with sync: always) before it is released to readers and to its Pending.
	Lazy   bool
	writes []write    // the record
	ref    arrivalRef // the record in memory, told of its append's outcome
}

// arrivalRef names a record in memory: its client, its client's epoch and its seq (a
// record that replaced it has another seq). The epoch tells a client whose records had all
// gone, made again with a new epoch and numbering from 0, from the one the record was of:
// without it, the outcome of an append made before told a record of the new one (the
// soak: a refusal forgot a stored record of a burst of resends, stored twice after a
// SIGTERM).
type arrivalRef struct {
	c     clientKey
	epoch int64
	seq   uint32
	ok    bool
}

// client returns the client of ref, if the table still has it.
func (t *arrivalTable) client(ref arrivalRef) *clientArrivals {
	if c := t.clients[ref.c]; c != nil && c.epoch == ref.epoch {
		return c
	}
	return nil
}

// Arrive returns when p arrived first: now, or for a resend the arrival recorded for it;
// and records p when its session outlives the connection. Pass the result to AppendArrived
// with p's entries, stamped with its At. It does no I/O.
func (s *Store) Arrive(p Publish, now time.Time) Arrival {
	a := Arrival{At: now}
	if !p.Resumed && !p.Dup && p.Keep <= 0 {
		return a
	}
	t := s.arrivals
	ck := keyOfClient(p.Client)
	h := payloadHash(p.Payload)
	ms := s.opts.Clock.Now().UnixMilli()
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.clients[ck]
	if c != nil && (p.Resumed || p.Dup) {
		if i := c.find(p.PacketID); i >= 0 {
			r := &c.recs[i]
			if r.hash == h && ms < r.exp && (p.Dup || (p.Resumed && !r.dupOnly && r.conn != c.conn)) {
				a.At, a.Resend = time.UnixMilli(r.at), true
				r.delivered = false // its client did not get the PUBACK: it is resending
				s.stats.Resends.Add(1)
				if p.Keep > 0 {
					// The same record, written again with the resend's entries (the first
					// copy's may have failed): in its slot, so resends take none.
					r.conn, r.exp = c.conn, max(r.exp, ms+p.Keep.Milliseconds())
					r.pending++
					a.writes = append(a.writes, write{key: arrivalKey(ck, r.slot), value: r.encode(c.epoch), ttl: p.Keep})
					a.ref = arrivalRef{c: ck, epoch: c.epoch, seq: r.seq, ok: true}
				}
				return a
			}
		}
	}
	if p.Keep <= 0 {
		return a
	}
	if c == nil {
		t.epoch = max(t.epoch+1, ms)
		c = &clientArrivals{key: ck, epoch: t.epoch}
		t.clients[ck] = c
	}
	rec := arrivalRec{at: a.At.UnixMilli(), exp: ms + p.Keep.Milliseconds(), hash: h, seq: c.next, conn: c.conn, pid: p.PacketID, dupOnly: p.Ends, pending: 1}
	rec = t.add(c, rec)
	a.writes = append(a.writes, write{key: arrivalKey(ck, rec.slot), value: rec.encode(c.epoch), ttl: p.Keep})
	a.ref = arrivalRef{c: ck, epoch: c.epoch, seq: rec.seq, ok: true}
	// The table's bound is applied when an append commits (arrived), not here: under
	// on_full: reject a full buffer refuses most of what arrives, resends included, and
	// each refused publish made a record for a moment. Giving up a stored one for each
	// flushed the table, so resends of stored readings came back after their records were
	// gone and were stored again under new ids (the 10-minute soak: 200,000 records given
	// up in five minutes, 263 readings with two ids). Records beyond the bound are the
	// appends in flight, which the writer's queue bounds.
	s.arrivalCount.Store(int64(t.total))
	return a
}

// arrived tells the record of ref one of its appends' outcome: committed, it stands for a
// stored publish; when the last one failed (or was never made: Unarrive) while it stood for
// none, it is forgotten, since nothing is stored under its arrival and a resend may take a
// new one. Called by the writer and by Unarrive, once per Arrive that returned the ref.
func (s *Store) arrived(ref arrivalRef, ok bool) {
	if !ref.ok {
		return
	}
	t := s.arrivals
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.client(ref)
	if c == nil {
		return
	}
	i := c.index(ref.seq)
	if i < 0 {
		return // replaced or evicted meanwhile
	}
	r := &c.recs[i]
	r.pending = max(r.pending, 1) - 1
	if ok {
		r.stored = true
		for t.total > t.max() {
			t.evict() // its key stays until its slot is taken again (see the key layout)
		}
		s.arrivalCount.Store(int64(t.total))
		return
	}
	if r.stored || r.pending > 0 {
		return // the first copy is stored, or a resend's append may still be
	}
	before := len(c.recs)
	c.release(c.recs[i].slot)
	c.drop(i, i+1)
	t.resized(c, before)
	s.arrivalCount.Store(int64(t.total))
}

// Delivered tells the store that the PUBACK of the publish whose append p was reached its
// client: written, and acknowledged by the client's host (the broker learns it from TCP).
// Its client resends it no more, so its record is the first given up when the table is
// full. A PUBACK written may still be lost with its connection (a reset, a kill -9): the
// record of a publish not known to be delivered is kept while there is another to give up.
// The record's key is rewritten with the delivered mark in the writer's next transaction
// (takeMarks), so it is given up first after a restart too.
func (s *Store) Delivered(p *Pending) {
	if p == nil || p.r == nil || !p.r.arrival.ok {
		return
	}
	t := s.arrivals
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deliver(p.r.arrival)
}

// Recorded tells whether the publish whose append p is has a record of its arrival (its
// readings take their time from it): the broker then tells the store when its PUBACK was
// delivered.
func (p *Pending) Recorded() bool { return p != nil && p.r != nil && p.r.arrival.ok }

// Unarrive tells the store that the publish Arrive described will not be appended (it
// was refused, or dropped by the config): its record is forgotten unless it stands for a
// publish stored earlier.
func (s *Store) Unarrive(a Arrival) { s.arrived(a.ref, false) }

// Connected notes a new connection of client. A clean one ends the client's session: its
// records then match only a publish marked DUP (a clean-session client resending what it
// had in flight, as paho does), never a publish of the new session that merely repeats a
// packet id and payload. The records are rewritten so, and keys of records the client no
// longer has deleted, by a write queued to the writer ahead of any append of the
// connection (Connected waits while the writer's queue is full, or until ctx ends); a
// client with no records in memory costs one seek on disk to make sure it has no keys
// either.
func (s *Store) Connected(ctx context.Context, client string, clean bool) error {
	t := s.arrivals
	ck := keyOfClient(client)
	t.mu.Lock()
	c := t.clients[ck]
	if c != nil {
		c.conn++
	}
	if !clean {
		t.mu.Unlock()
		return nil
	}
	// The client's current records, flagged; its other keys (of records whose appends are
	// still queued, or left by records it had before) deleted.
	tx := &Tx{}
	kept := map[uint16]bool{}
	prefix := arrivalKey(ck, 0)[:len(arrivalPrefix)+len(ck)]
	if c != nil {
		ms := s.opts.Clock.Now().UnixMilli()
		for i := range c.recs {
			r := &c.recs[i]
			r.dupOnly = true
			kept[r.slot] = true
			ttl := time.Duration(max(r.exp-ms, 1)) * time.Millisecond
			tx.ops = append(tx.ops, op{kind: opSet, key: arrivalKey(ck, r.slot), value: r.encode(c.epoch), ttl: ttl})
		}
	}
	t.mu.Unlock()
	slots, err := s.slotsOnDisk(prefix)
	if err != nil {
		return fmt.Errorf("buffer: end the session of client %q: %w", client, err)
	}
	if c == nil && len(slots) == 0 {
		return nil
	}
	for _, slot := range slots {
		if !kept[slot] {
			tx.ops = append(tx.ops, op{kind: opDelete, key: arrivalKey(ck, slot)})
		}
	}
	r := &request{kind: reqUpdate, tx: tx, done: make(chan struct{})}
	if err := s.enqueue(ctx, r); err != nil {
		return fmt.Errorf("buffer: end the session of client %q: %w", client, err)
	}
	return nil
}

// Arrivals returns how many records of arrivals the store holds (in memory, and as keys on
// disk): each is counted in the budget at arrivalKeyCost.
func (s *Store) Arrivals() int64 { return s.arrivalCount.Load() }

// AppendArrived is AppendAsync for the entries of a publish that Arrive described: the
// record of its arrival is written with them.
func (s *Store) AppendArrived(ctx context.Context, log string, entries []Entry, a Arrival) *Pending {
	return s.appendAsync(ctx, log, entries, a.writes, a.ref, a.Lazy)
}

// loadArrivals reads the records of arrivals at Open: those not expired of each client's
// current epoch, in order, within the bounds.
func (s *Store) loadArrivals() error {
	now := s.opts.Clock.Now().UnixMilli()
	type keyed struct {
		c     clientKey
		slot  uint16
		epoch int64
		rec   arrivalRec
	}
	var all []keyed
	err := s.scanInSteps([]byte(arrivalPrefix), func(k, v []byte) error {
		if len(k) != len(arrivalPrefix)+len(clientKey{})+2 {
			return nil
		}
		epoch, r, ok := decodeArrival(v)
		if !ok || r.exp <= now {
			return nil
		}
		all = append(all, keyed{clientKey(k[len(arrivalPrefix) : len(arrivalPrefix)+12]), binary.BigEndian.Uint16(k[len(arrivalPrefix)+12:]), epoch, r})
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: load arrivals: %w", err)
	}
	// By client, its latest epoch last, each in its order.
	slices.SortFunc(all, func(a, b keyed) int {
		if c := bytes.Compare(a.c[:], b.c[:]); c != 0 {
			return c
		}
		if c := cmp.Compare(a.epoch, b.epoch); c != 0 {
			return c
		}
		return cmp.Compare(a.rec.seq, b.rec.seq)
	})
	t := s.arrivals
	t.mu.Lock()
	defer t.mu.Unlock()
	var latest int64 // the epoch of the current client's last record
	for i, e := range all {
		if i == 0 || all[i-1].c != e.c {
			j := i
			for j+1 < len(all) && all[j+1].c == e.c {
				j++
			}
			latest = all[j].epoch
		}
		if e.epoch != latest {
			continue // an older epoch: keys of records the client no longer had
		}
		c := t.clients[e.c]
		if c == nil {
			c = &clientArrivals{key: e.c, epoch: e.epoch}
			t.clients[e.c] = c
		}
		t.epoch = max(t.epoch, e.epoch)
		e.rec.slot = e.slot
		t.load(c, e.rec) // conn 0: an earlier connection than any of this run (Connected counts from 1)
		if e.rec.delivered {
			// Marked delivered before the restart (takeMarks): first in line to be given up.
			t.delivered = append(t.delivered, arrivalRef{c: e.c, epoch: c.epoch, seq: e.rec.seq, ok: true})
		}
		for t.total > t.max() {
			t.evict()
		}
	}
	// The records marked delivered, listed by client above: oldest first (by arrival).
	at := func(ref arrivalRef) int64 {
		if c, i := t.heldDelivered(ref); i >= 0 {
			return c.recs[i].at
		}
		return 0 // given up already: skipped by evict
	}
	slices.SortStableFunc(t.delivered, func(a, b arrivalRef) int { return cmp.Compare(at(a), at(b)) })
	s.arrivalCount.Store(int64(t.total))
	return nil
}

// sweepArrivals drops expired records from memory (their keys expire in Badger).
func (s *Store) sweepArrivals() {
	now := s.opts.Clock.Now().UnixMilli()
	t := s.arrivals
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.clients {
		before := len(c.recs)
		c.recs = slices.DeleteFunc(c.recs, func(r arrivalRec) bool { return r.exp <= now })
		c.pids = c.pids[:0]
		for _, r := range c.recs {
			c.pids = append(c.pids, r.pid)
		}
		t.resized(c, before)
	}
	s.arrivalCount.Store(int64(t.total))
}

package buffer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgegate/edgegate/internal/clock"
)

// publishOnce is what the ingest hook does with one QoS 1 publish: Arrive, stamp, append.
// The entry's id is a hash of the arrival (as record.HashID for a reading without ts), so
// a resend is stored once only if it gets its first copy's arrival.
func publishOnce(t *testing.T, s *Store, p Publish, now time.Time) (Arrival, []Result) {
	t.Helper()
	a := s.Arrive(p, now)
	id := fmt.Sprintf("h-%s-%d-%s", p.Client, a.At.UnixMilli(), p.Payload)
	res, err := s.AppendArrived(bg, "raw", []Entry{{ID: id, Value: p.Payload}}, a).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return a, res
}

func TestArrivalRules(t *testing.T) {
	const keep = time.Hour
	persistent := Publish{Client: "dev-1", PacketID: 7, Payload: []byte("21.5"), Resumed: true, Keep: keep}
	cases := []struct {
		name string
		// after the first publish (at t0): what happens before the second (at t0+1s)
		between func(t *testing.T, s *Store, dir string, opts Options) *Store
		second  func(p Publish) Publish
		resend  bool
	}{
		{"a later connection of the session", reconnect(false), same, true},
		{"after a restart", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			s.Close()
			s = open(t, dir, opts)
			return reconnect(false)(t, s, dir, opts)
		}, same, true},
		{"the same connection, no DUP: the packet id was reused", nil, same, false},
		{"the same connection with DUP", nil, func(p Publish) Publish { p.Dup = true; return p }, true},
		{"another payload", reconnect(false), func(p Publish) Publish { p.Payload = []byte("21.6"); return p }, false},
		{"another packet id", reconnect(false), func(p Publish) Publish { p.PacketID = 8; return p }, false},
		{"another client", reconnect(false), func(p Publish) Publish { p.Client = "dev-2"; return p }, false},
		{"after a clean connect", reconnect(true), same, false},
		{"after a clean connect and a restart", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			reconnect(true)(t, s, dir, opts)
			s.Close()
			s = open(t, dir, opts)
			return reconnect(false)(t, s, dir, opts)
		}, same, false},
		{"on a connection that did not resume the session", reconnect(false), func(p Publish) Publish { p.Resumed = false; return p }, false},
		{"after a clean connect, marked DUP (paho resends on a clean session)", reconnect(true), func(p Publish) Publish {
			p.Resumed, p.Dup = false, true
			return p
		}, true},
		{"after a clean connect and a restart, marked DUP", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			reconnect(true)(t, s, dir, opts)
			s.Close()
			s = open(t, dir, opts)
			return reconnect(true)(t, s, dir, opts)
		}, func(p Publish) Publish { p.Resumed, p.Dup = false, true; return p }, true},
		{"after 300 resends of other publishes", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			// A full buffer refusing a client's publishes again and again: its resends update
			// their records and take no new ones, so its first publish is still covered.
			for i := range 30 {
				q := persistent
				q.PacketID, q.Payload = uint16(100+i), []byte(fmt.Sprint(i))
				publishOnce(t, s, q, t0)
			}
			for range 10 {
				reconnect(false)(t, s, dir, opts)
				for i := range 30 {
					q := persistent
					q.PacketID, q.Payload, q.Dup = uint16(100+i), []byte(fmt.Sprint(i)), true
					if a := s.Arrive(q, t0.Add(time.Minute)); !a.Resend {
						t.Fatalf("resend of publish %d not recognised", i)
					}
				}
			}
			return reconnect(false)(t, s, dir, opts)
		}, same, true},
		{"after the session's expiry", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			opts.Clock.(*clock.Fake).Advance(keep)
			return reconnect(false)(t, s, dir, opts)
		}, same, false},
		{"256 publishes later", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			for i := range arrivalsPerClient {
				q := persistent
				q.PacketID, q.Payload = uint16(100+i), []byte(fmt.Sprint(i))
				publishOnce(t, s, q, t0)
			}
			return reconnect(false)(t, s, dir, opts)
		}, same, false},
		{"255 publishes later", func(t *testing.T, s *Store, dir string, opts Options) *Store {
			for i := range arrivalsPerClient - 1 {
				q := persistent
				q.PacketID, q.Payload = uint16(100+i), []byte(fmt.Sprint(i))
				publishOnce(t, s, q, t0)
			}
			s.Close() // and the keys of all on disk
			s = open(t, dir, opts)
			return reconnect(false)(t, s, dir, opts)
		}, same, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{DedupTTL: 24 * time.Hour, Clock: clock.NewFake(t0)}
			s := open(t, dir, opts)
			first, res := publishOnce(t, s, persistent, t0)
			if first.Resend || !first.At.Equal(t0) || res[0].Dup {
				t.Fatalf("first publish: %+v %+v", first, res)
			}
			if c.between != nil {
				s = c.between(t, s, dir, opts)
			}
			a, res := publishOnce(t, s, c.second(persistent), t0.Add(time.Second))
			if a.Resend != c.resend || res[0].Dup != c.resend {
				t.Fatalf("second publish: resend %v, stored as duplicate %v; want %v", a.Resend, res[0].Dup, c.resend)
			}
			if c.resend && !a.At.Equal(t0) {
				t.Fatalf("a resend stamped %v, want the first arrival %v", a.At, t0)
			}
			if !c.resend && !a.At.Equal(t0.Add(time.Second)) {
				t.Fatalf("a new publish stamped %v, want its arrival", a.At)
			}
		})
	}
}

func same(p Publish) Publish { return p }

// A client on clean sessions (paho's default) resends what it had in flight after a
// reconnect, marked DUP: recognised. A new publish of a new clean session that repeats the
// packet id and payload (DUP 0: a battery device that connects for each reading) is not;
// neither is a publish of a persistent session that follows.
func TestArrivalCleanSession(t *testing.T) {
	const keep = time.Hour
	clean := Publish{Client: "dev-1", PacketID: 1, Payload: []byte("21.5"), Keep: keep, Ends: true}
	for _, c := range []struct {
		name   string
		second Publish
		resend bool
	}{
		{"a resend marked DUP", func() Publish { p := clean; p.Dup = true; return p }(), true},
		{"a new reading, same packet id and payload", clean, false},
		{"a persistent session's publish", func() Publish { p := clean; p.Resumed, p.Ends = true, false; return p }(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{DedupTTL: 24 * time.Hour, Clock: clock.NewFake(t0)}
			s := open(t, dir, opts)
			reconnect(true)(t, s, dir, opts)
			if a, _ := publishOnce(t, s, clean, t0); a.Resend {
				t.Fatal("the first publish taken for a resend")
			}
			s.Close() // a restart between: the record is on disk
			s = open(t, dir, opts)
			reconnect(true)(t, s, dir, opts)
			a, res := publishOnce(t, s, c.second, t0.Add(time.Second))
			if a.Resend != c.resend || res[0].Dup != c.resend {
				t.Fatalf("second publish: resend %v, stored as duplicate %v; want %v", a.Resend, res[0].Dup, c.resend)
			}
		})
	}
}

func reconnect(clean bool) func(t *testing.T, s *Store, dir string, opts Options) *Store {
	return func(t *testing.T, s *Store, dir string, opts Options) *Store {
		t.Helper()
		if err := s.Connected(bg, "dev-1", clean); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// A resend that arrives while the first copy's append is still queued gets its arrival
// (the record is in memory from Arrive on), and the two share a group: when the first is
// refused, so is the resend (item 1), and sent again later it is stored with that arrival.
func TestArrivalOfAQueuedFirstCopy(t *testing.T) {
	dir := t.TempDir()
	opts, disk := tinyBudget(dir, Reject, 1000)
	opts.Clock = clock.NewFake(t0)
	s := open(t, dir, opts)
	p := Publish{Client: "dev-1", PacketID: 3, Payload: []byte(fmt.Sprintf("%02000d", 1)), Resumed: true, Keep: time.Hour}
	entry := func(a Arrival) []Entry {
		return []Entry{{ID: fmt.Sprintf("h-%d", a.At.UnixMilli()), Value: p.Payload}}
	}
	var as [2]Arrival
	ps := inOneGroup(t, s,
		func() *Pending { as[0] = s.Arrive(p, t0); return s.AppendArrived(bg, "raw", entry(as[0]), as[0]) },
		func() *Pending {
			if err := s.Connected(bg, "dev-1", false); err != nil {
				t.Error(err)
			}
			as[1] = s.Arrive(p, t0.Add(time.Second))
			return s.AppendArrived(bg, "raw", entry(as[1]), as[1])
		})
	if !as[1].Resend || !as[1].At.Equal(t0) {
		t.Fatalf("the resend of a queued publish: %+v", as[1])
	}
	for i, pd := range ps {
		if _, err := pd.Wait(); err == nil {
			t.Fatalf("copy %d was accepted, over the budget", i+1)
		}
	}
	disk.size += 1 << 20
	s.usage.at = time.Time{}
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	// Nothing was stored under the first arrival, so its record went with the failure: sent
	// again, the publish is new, and stored once at its own arrival.
	a := s.Arrive(p, t0.Add(time.Minute))
	res, err := s.AppendArrived(bg, "raw", entry(a), a).Wait()
	if err != nil || res[0].Dup || a.Resend || !a.At.Equal(t0.Add(time.Minute)) {
		t.Fatalf("sent again with room: %+v %+v %v; want it stored at its own arrival", a, res, err)
	}
	// Its record is durable now: a resend after a restart gets that arrival.
	s.Close()
	s = open(t, dir, opts)
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if a := s.Arrive(p, t0.Add(2*time.Minute)); !a.Resend || !a.At.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after a restart: %+v", a)
	}
}

// A first copy that fails while its resend's append is still queued: the resend is stored
// under the first arrival, so the record must outlive the first copy's failure (the soak
// saw readings stored twice, with two ids, when a third copy came after a full buffer).
func TestArrivalOfAFailedFirstCopyWithAQueuedResend(t *testing.T) {
	dir := t.TempDir()
	opts, disk := tinyBudget(dir, Reject, 1000)
	opts.Clock = clock.NewFake(t0)
	s := open(t, dir, opts)
	p := Publish{Client: "dev-1", PacketID: 3, Payload: []byte(fmt.Sprintf("%02000d", 1)), Resumed: true, Keep: time.Hour}
	entry := func(a Arrival) []Entry {
		return []Entry{{ID: fmt.Sprintf("h-%d", a.At.UnixMilli()), Value: p.Payload}}
	}
	first := s.Arrive(p, t0)
	if err := s.Connected(bg, "dev-1", false); err != nil { // the client reconnects and resends
		t.Fatal(err)
	}
	resend := s.Arrive(p, t0.Add(time.Second))
	if !resend.Resend || !resend.At.Equal(t0) {
		t.Fatalf("the resend of a queued publish: %+v", resend)
	}
	if _, err := s.AppendArrived(bg, "raw", entry(first), first).Wait(); !errors.Is(err, ErrFull) {
		t.Fatalf("the first copy in a full buffer: %v", err)
	}
	disk.size += 1 << 20
	s.usage.at = time.Time{}
	if _, err := s.AppendArrived(bg, "raw", entry(resend), resend).Wait(); err != nil {
		t.Fatalf("the resend with room: %v", err)
	}
	// Its PUBACK is lost too: the third copy must get the arrival stored.
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if a := s.Arrive(p, t0.Add(time.Minute)); !a.Resend || !a.At.Equal(t0) {
		t.Fatalf("the third copy: %+v; want the arrival its resend was stored under", a)
	}
}

// paho (Go) resends everything it holds at a reconnect, in random order (its memory store
// is a map), and MQTT 3.1.1 bounds nothing a client has unacknowledged: publishes stored
// before a disconnect, whose PUBACKs were lost, may come again behind a thousand new ones.
// They keep the arrival they were stored under (the soak, reject policy, saw them stored
// twice when each client kept 256 records).
func TestArrivalOfResendsBehindAThousandNewPublishes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{Clock: clock.NewFake(t0)})
	pub := func(pid int) Publish {
		return Publish{Client: "dev-1", PacketID: uint16(pid), Payload: []byte(fmt.Sprint("reading ", pid)), Resumed: true, Keep: time.Hour}
	}
	const lost, fresh = 300, 1000
	for pid := 1; pid <= lost; pid++ {
		publishOnce(t, s, pub(pid), t0) // stored; the PUBACKs are lost with the connection
	}
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(lost + fresh)
	for _, i := range order {
		pid := i + 1
		a, _ := publishOnce(t, s, pub(pid), t0.Add(time.Minute))
		switch want := pid <= lost; {
		case a.Resend != want:
			t.Fatalf("publish %d: resend %v, want %v", pid, a.Resend, want)
		case want && !a.At.Equal(t0):
			t.Fatalf("the resend of publish %d got arrival %v, want the first, %v", pid, a.At, t0)
		}
	}
}

// Past its bound a client gives up the records of delivered publishes (its PUBACK reached
// the client) before those of stored publishes never answered (the connection ended
// first), which it will surely send again however many it sent since.
func TestArrivalGivesUpDeliveredFirst(t *testing.T) {
	s := &Store{arrivals: newArrivalTable(maxArrivals), opts: Options{Clock: clock.NewFake(t0)}}
	pub := func(pid int) Publish {
		return Publish{Client: "dev-1", PacketID: uint16(pid%65535 + 1), Payload: []byte(fmt.Sprint(pid)), Resumed: true, Keep: time.Hour}
	}
	const unanswered = 10
	for pid := range unanswered { // stored; the connection ended before their PUBACKs
		s.arrived(s.Arrive(pub(pid), t0).ref, true)
	}
	for pid := unanswered; pid < unanswered+2*arrivalsPerClient; pid++ { // stored and delivered
		a := s.Arrive(pub(pid), t0.Add(time.Second))
		s.arrived(a.ref, true)
		s.Delivered(&Pending{r: &request{arrival: a.ref}})
	}
	s.arrivals.clients[keyOfClient("dev-1")].conn++ // a new connection
	for pid := range unanswered {
		if a := s.Arrive(pub(pid), t0.Add(time.Minute)); !a.Resend || !a.At.Equal(t0) {
			t.Fatalf("publish %d, stored and never answered, sent again after %d answered ones: %+v", pid, 2*arrivalsPerClient, a)
		}
	}
	if n := len(s.arrivals.clients[keyOfClient("dev-1")].recs); n != arrivalsPerClient {
		t.Fatalf("the client keeps %d records, want its bound %d", n, arrivalsPerClient)
	}
}

// After a restart a client's loaded records go in age order, before the records of its new
// connection's publishes not known to be delivered: a kill -9 later, those whose PUBACKs
// were lost find their records (the 10-minute soak, drop_oldest: raw readings stored twice
// when loaded records were kept and the new connection's given up).
func TestArrivalLoadedRecordsGoBeforeNewerUndelivered(t *testing.T) {
	s := &Store{arrivals: newArrivalTable(maxArrivals), opts: Options{Clock: clock.NewFake(t0)}}
	ck := keyOfClient("dev-1")
	c := &clientArrivals{key: ck, epoch: 1}
	s.arrivals.clients[ck] = c
	for i := range arrivalsPerClient { // what Open loads
		s.arrivals.load(c, arrivalRec{at: t0.UnixMilli(), exp: t0.Add(time.Hour).UnixMilli(), seq: uint32(i), pid: uint16(i + 1), slot: uint16(i)})
	}
	c.conn++
	const fresh = 100
	for i := range fresh {
		p := Publish{Client: "dev-1", PacketID: uint16(arrivalsPerClient + 1 + i), Payload: []byte(fmt.Sprint(i)), Resumed: true, Keep: time.Hour}
		a := s.Arrive(p, t0.Add(time.Minute))
		s.arrived(a.ref, true) // answered, perhaps: not known to be delivered
	}
	for i := range fresh {
		if c.find(uint16(arrivalsPerClient+1+i)) < 0 {
			t.Fatalf("publish %d of the new connection lost its record to a loaded one", i)
		}
	}
	if c.find(1) >= 0 || c.find(fresh) >= 0 || c.find(fresh+1) < 0 {
		t.Fatalf("want the %d oldest loaded records given up, and no more", fresh)
	}
}

// A record loaded at Open stands for a publish whose PUBACK may have been lost with the
// daemon: it outlives the records of publishes delivered since, of any client. The
// 10-minute soak under reject: a raw reading stored in one run, its PUBACK lost at a kill
// -9, came again four minutes and six restarts later, after its loaded record had gone
// ahead of those of readings delivered meanwhile, and was stored again under a new id.
func TestArrivalLoadedRecordsOutliveDeliveredOnes(t *testing.T) {
	const limit, loaded = 100, 60
	s := &Store{arrivals: newArrivalTable(limit), opts: Options{Clock: clock.NewFake(t0)}}
	pub := func(client string, pid int) Publish {
		return Publish{Client: client, PacketID: uint16(pid%65535 + 1), Payload: []byte(fmt.Sprint(client, pid)), Resumed: true, Keep: time.Hour}
	}
	ck := keyOfClient("dev-1")
	c := &clientArrivals{key: ck, epoch: 1}
	s.arrivals.clients[ck] = c
	for i := range loaded { // what Open loads
		p := pub("dev-1", i)
		s.arrivals.load(c, arrivalRec{at: t0.UnixMilli(), exp: t0.Add(time.Hour).UnixMilli(), hash: payloadHash(p.Payload), seq: uint32(i), pid: p.PacketID, slot: uint16(i)})
	}
	c.conn++
	for i := range 10 * limit { // the new run: both clients' publishes stored and delivered
		client := []string{"dev-1", "dev-2"}[i%2]
		a := s.Arrive(pub(client, loaded+i), t0.Add(time.Minute))
		s.arrived(a.ref, true)
		s.Delivered(&Pending{r: &request{arrival: a.ref}})
	}
	if s.arrivals.total != limit {
		t.Fatalf("the table holds %d records, want its bound %d", s.arrivals.total, limit)
	}
	c.conn++ // dev-1 reconnects and resends what it had no PUBACK for
	for i := range loaded {
		if a := s.Arrive(pub("dev-1", i), t0.Add(2*time.Minute)); !a.Resend || !a.At.Equal(t0) {
			t.Fatalf("loaded record %d given up for records of publishes delivered later: %+v", i, a)
		}
	}
}

// The records take at most an eighth of the buffer's capacity (each counted 96 bytes), as
// the dedup ids have their share: in the soak's 9 MiB budget 65,536 records took 6 MiB and
// a full buffer refused the readings for them.
func TestArrivalsWithinTheirShareOfTheBudget(t *testing.T) {
	s := &Store{arrivals: newArrivalTable(maxArrivals), opts: Options{Clock: clock.NewFake(t0)}}
	for i := range maxArrivals {
		p := Publish{Client: fmt.Sprint("dev-", i%16), PacketID: uint16(i/16 + 1), Payload: []byte(fmt.Sprint(i)), Resumed: true, Keep: time.Hour}
		s.arrived(s.Arrive(p, t0).ref, true)
	}
	const capacity = 9 << 20
	s.setArrivalBudget(capacity)
	want := capacity / arrivalShare / arrivalKeyCost
	if n := s.arrivalCount.Load(); n != int64(want) || n*arrivalKeyCost > capacity/arrivalShare {
		t.Fatalf("%d records (%d bytes counted) in a capacity of %d; want %d, an eighth", n, n*arrivalKeyCost, capacity, want)
	}
	p := Publish{Client: "dev-new", PacketID: 1, Payload: []byte("x"), Resumed: true, Keep: time.Hour}
	s.arrived(s.Arrive(p, t0).ref, true)
	if n := s.arrivalCount.Load(); n != int64(want) {
		t.Fatalf("a new record took the table to %d, past its share %d", n, want)
	}
	s.setArrivalBudget(1 << 20) // a budget smaller than Badger's own needs: the floor
	if n := s.arrivalCount.Load(); n != minArrivals {
		t.Fatalf("%d records at a tiny budget, want the floor %d", n, minArrivals)
	}
}

// A client refused again and again (a full buffer) while it resends the same publishes and
// adds new ones keeps its records of what was stored: failed appends give their records
// up, so the window of its last stored publishes is not used up by attempts.
func TestArrivalsOfRefusedPublishesForgotten(t *testing.T) {
	dir := t.TempDir()
	opts, disk := tinyBudget(dir, Reject, 1000)
	opts.Clock = clock.NewFake(t0)
	s := open(t, dir, opts)
	pub := func(pid int) Publish {
		return Publish{Client: "dev-1", PacketID: uint16(pid), Payload: []byte(fmt.Sprint(pid)), Resumed: true, Keep: time.Hour}
	}
	stored, _ := publishOnce(t, s, pub(1), t0) // stored; its PUBACK is lost
	full := disk.size
	disk.size = 0 // the buffer is full from now on
	s.usage.at = time.Time{}
	for round := range 5 {
		if err := s.Connected(bg, "dev-1", false); err != nil {
			t.Fatal(err)
		}
		for pid := 2; pid < 2+2*arrivalsPerClient; pid++ { // new publishes, all refused
			a := s.Arrive(pub(pid), t0.Add(time.Duration(round+1)*time.Minute))
			if _, err := s.AppendArrived(bg, "raw", []Entry{{ID: fmt.Sprint(pid, round), Value: []byte("x")}}, a).Wait(); err == nil {
				t.Fatalf("round %d: publish %d stored in a full buffer", round, pid)
			}
		}
	}
	disk.size = full
	s.usage.at = time.Time{}
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if a := s.Arrive(pub(1), t0.Add(time.Hour/2)); !a.Resend || !a.At.Equal(stored.At) {
		t.Fatalf("the stored publish's resend after %d refused ones: %+v; want its first arrival", 10*arrivalsPerClient, a)
	}
	if n := s.arrivalCount.Load(); n != 1 {
		t.Errorf("%d records; want the stored publish's only", n)
	}
}

// The record is written with the entries, not before: an Arrive whose append never came
// leaves nothing after a restart.
func TestArrivalDurableWithItsEntries(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Clock: clock.NewFake(t0)}
	s := open(t, dir, opts)
	p := Publish{Client: "dev-1", PacketID: 1, Payload: []byte("1"), Resumed: true, Keep: time.Hour}
	s.Arrive(p, t0)
	s.Close()
	s = open(t, dir, opts)
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if a := s.Arrive(p, t0.Add(time.Second)); a.Resend {
		t.Fatal("a record without its append survived a restart")
	}
}

// Memory is bounded: past the limit the client with the most records loses its oldest, so
// a quiet client keeps its last publish (the one a reconnect resends) beside a busy one.
func TestArrivalsBounded(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Clock: clock.NewFake(t0), arrivalLimit: 100}
	s := open(t, dir, opts)
	pub := func(client string, pid int) Publish {
		return Publish{Client: client, PacketID: uint16(pid), Payload: []byte(fmt.Sprint(pid)), Resumed: true, Keep: time.Hour}
	}
	publishOnce(t, s, pub("quiet", 1), t0)
	for i := range 1000 {
		publishOnce(t, s, pub("busy", i%300), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := s.arrivalCount.Load(); n != 100 {
		t.Fatalf("%d records, the limit is 100", n)
	}
	check := func(s *Store) {
		t.Helper()
		for _, c := range []string{"quiet", "busy"} {
			if err := s.Connected(bg, c, false); err != nil {
				t.Fatal(err)
			}
		}
		if a := s.Arrive(pub("quiet", 1), t0.Add(time.Hour/2)); !a.Resend {
			t.Error("the quiet client's record was evicted")
		}
		// The busy one keeps its newest 99: packet ids 1000-99 … 999, mod 300.
		if a := s.Arrive(pub("busy", 999%300), t0.Add(time.Hour/2)); !a.Resend {
			t.Error("the busy client's newest record was evicted")
		}
		if a := s.Arrive(pub("busy", (1000-100)%300), t0.Add(time.Hour/2)); a.Resend {
			t.Error("the busy client kept more than its share")
		}
	}
	check(s)
	s.Close()
	s = open(t, dir, opts)
	// Keys of evicted records stay on disk (harmless: records of publishes that did
	// arrive); loading keeps the bound, the oldest going first.
	if n := s.arrivalCount.Load(); n != 100 {
		t.Fatalf("%d records loaded, the limit is 100", n)
	}
	check(s)
}

// BenchmarkArrive is what a QoS 1 publish of a persistent session adds on its publisher's
// goroutine: the lookup and the record, for 100 clients of 256 records each.
func BenchmarkArrive(b *testing.B) {
	s := benchStore(b, Options{})
	payload := record(1, rand.New(rand.NewPCG(1, 2)))
	clients := make([]string, 100)
	for i := range clients {
		clients[i] = fmt.Sprintf("device-%03d", i)
	}
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		s.Arrive(Publish{Client: clients[i%100], PacketID: uint16(i / 100), Payload: payload, Resumed: true, Keep: time.Hour}, now)
	}
}

// BenchmarkArrivalsHeap measures the heap a full table of arrival records takes (the
// bound README gives): maxArrivals records spread over 16 clients (4,096 each) and over
// 1,000 clients (65 each).
func BenchmarkArrivalsHeap(b *testing.B) {
	for _, clients := range []int{16, 1000} {
		b.Run(fmt.Sprint(clients, "clients"), func(b *testing.B) {
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := &Store{arrivals: newArrivalTable(maxArrivals), opts: Options{Clock: clock.NewFake(t0)}}
				for i := range maxArrivals {
					p := Publish{Client: fmt.Sprint("dev-", i%clients), PacketID: uint16(i/clients + 1), Payload: []byte(fmt.Sprint(i)), Resumed: true, Keep: time.Hour}
					s.arrived(s.Arrive(p, t0).ref, true)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
				runtime.KeepAlive(s)
			}
		})
	}
}

// Publishes that a full buffer refuses do not push the records of stored ones out: under
// on_full: reject most of what arrives is refused, resends included, and each made a
// record for a moment. The table's bound was applied then, giving up a stored record for
// each, so resends of stored readings came back after their records were gone and were
// stored again under new ids (the 10-minute soak under reject: 263 readings with two ids).
// The bound holds once appends commit.
func TestArrivalsOfRefusedPublishesKeepStoredRecords(t *testing.T) {
	const limit = 100
	s := &Store{arrivals: newArrivalTable(limit), opts: Options{Clock: clock.NewFake(t0)}}
	pub := func(client string, pid int, dup bool) Publish {
		return Publish{Client: client, PacketID: uint16(pid%65535 + 1), Payload: []byte(fmt.Sprint(client, pid)), Resumed: true, Dup: dup, Keep: time.Hour}
	}
	for pid := range limit { // stored, answered; their PUBACKs will be lost with the connection
		a := s.Arrive(pub("dev-1", pid, false), t0)
		s.arrived(a.ref, true)
	}
	for i := range 100 * limit { // other clients' publishes and resends, refused: buffer full
		s.Unarrive(s.Arrive(pub(fmt.Sprintf("dev-%d", 2+i%8), i, i%2 == 0), t0.Add(time.Second)))
	}
	s.arrivals.clients[keyOfClient("dev-1")].conn++ // dev-1 reconnects and resends
	for pid := range limit {
		if a := s.Arrive(pub("dev-1", pid, true), t0.Add(time.Minute)); !a.Resend || !a.At.Equal(t0) {
			t.Fatalf("resend of stored publish %d after %d refused ones: %+v, want its first arrival", pid, 100*limit, a)
		}
	}
	for pid := range 3 * limit { // another client's publishes, stored: the bound holds
		s.arrived(s.Arrive(pub("dev-9", pid, false), t0.Add(2*time.Minute)).ref, true)
	}
	if s.arrivals.total != limit {
		t.Fatalf("the table holds %d records after commits, want its bound %d", s.arrivals.total, limit)
	}
}

// The outcome of an append is told to the record it was made with, not to a record of the
// same client that took its number after the client's records had all gone (a client made
// again numbers its records from 0). The 10-minute soak under reject (seed
// 16377928730525611960): a device refused for seconds lost all its records; the refusal
// of an append made before then reached a record of its burst of resends, stored but not
// yet synced, which was forgotten; its slot went to the next record, and after a SIGTERM
// 175 readings were stored under two ids.
func TestArrivalOutcomeOfAnAppendOfARecordGivenUp(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{Clock: clock.NewFake(t0), arrivalLimit: 1})
	pub := func(client string, pid int, payload string) Publish {
		return Publish{Client: client, PacketID: uint16(pid), Payload: []byte(payload), Resumed: true, Keep: time.Hour}
	}
	refused := s.Arrive(pub("dev-1", 1, "a"), t0) // its append still to come
	publishOnce(t, s, pub("dev-2", 1, "x"), t0)   // past the bound: dev-1's record goes, and dev-1 with it
	b := pub("dev-1", 2, "b")
	first := s.Arrive(b, t0.Add(time.Second)) // dev-1 again: its record numbered 0 again
	s.Unarrive(refused)                       // the first append refused meanwhile
	if _, err := s.AppendArrived(bg, "raw", []Entry{{ID: "h-b", Value: b.Payload}}, first).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	if a := s.Arrive(b, t0.Add(time.Minute)); !a.Resend || !a.At.Equal(first.At) {
		t.Fatalf("a stored publish lost its record to the refusal of another: resend %v, arrival %v (first %v)", a.Resend, a.At, first.At)
	}
}

// arrivalOnDisk returns the value of client's record of packet id pid as Badger holds it,
// and its decoded record (ok false: no such key).
func arrivalOnDisk(t *testing.T, s *Store, client string, pid uint16) (arrivalRec, bool) {
	t.Helper()
	var rec arrivalRec
	found := false
	prefix := arrivalKey(keyOfClient(client), 0)[:len(arrivalPrefix)+len(clientKey{})]
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if _, r, ok := decodeArrival(v); ok && r.pid == pid {
				rec, found = r, true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec, found
}

// A record whose PUBACK was delivered comes back at Open marked so, first in line to be
// given up; the records of publishes still unanswered stay. The 10-minute soak under
// reject: a bulk device's reading, stored and never acknowledged (the buffer was full, so
// each connection was cut), was resent six minutes and several restarts later. Every Open
// had filled the table with records of readings acknowledged before the restart; none was
// known to be delivered, so they were kept in age order beside the unanswered one, and a
// burst of new publishes took it. Its resend got a new arrival: 62 readings stored under
// two ids.
func TestArrivalOfAnUnansweredPublishAfterARestart(t *testing.T) {
	dir := t.TempDir()
	const limit = 8
	opts := Options{Clock: clock.NewFake(t0), arrivalLimit: limit}
	s := open(t, dir, opts)
	pub := func(client string, pid int) Publish {
		return Publish{Client: client, PacketID: uint16(pid), Payload: []byte(fmt.Sprint(client, " reading ", pid)), Resumed: true, Keep: time.Hour}
	}
	unanswered := pub("dev-1", 1) // stored; the connection was cut before its PUBACK
	first, _ := publishOnce(t, s, unanswered, t0)
	// Stored and acknowledged, of dev-1 and of many other clients (each of which leaves
	// its key on disk when its record is given up): more than the table holds.
	for i := 2; i <= 4*limit; i++ {
		client := "dev-1"
		if i%2 == 0 {
			client = fmt.Sprint("dev-", i)
		}
		a := s.Arrive(pub(client, i), t0.Add(time.Duration(i)*time.Millisecond))
		p := s.AppendArrived(bg, "raw", []Entry{{ID: fmt.Sprint("h-", i), Value: []byte("v")}}, a)
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		s.Delivered(p)
	}
	s.Close() // SIGTERM
	s = open(t, dir, opts)
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	// A burst of new publishes stored, their PUBACKs not delivered yet: the table needs
	// room for them before any record of this run is known to be delivered.
	for pid := 1; pid <= 2*limit; pid++ {
		publishOnce(t, s, pub("dev-burst", pid), t0.Add(time.Second))
	}
	if a := s.Arrive(unanswered, t0.Add(time.Minute)); !a.Resend || !a.At.Equal(first.At) {
		t.Fatalf("the unanswered publish, resent after a restart, lost its record to records of publishes acknowledged before it: resend %v, arrival %v (first %v)", a.Resend, a.At, first.At)
	}
}

// storeDelivered stores p's reading (id h-1) at t0, takes its PUBACK for delivered, and
// has the writer's next transaction (a publish of another client, which it returns) write
// the delivered mark.
func storeDelivered(t *testing.T, s *Store, p Publish) (other Publish) {
	t.Helper()
	pending := s.AppendArrived(bg, "raw", []Entry{{ID: "h-1", Value: p.Payload}}, s.Arrive(p, t0))
	if _, err := pending.Wait(); err != nil {
		t.Fatal(err)
	}
	s.Delivered(pending)
	other = Publish{Client: "dev-2", PacketID: 1, Payload: []byte("x"), Resumed: true, Keep: time.Hour}
	publishOnce(t, s, other, t0)
	return other
}

// The record of a delivered publish is marked, not deleted: a kill -9 resets the
// connection, and the client's host discards a PUBACK its app had not read yet, so the
// client resends the publish after the restart; while the table has room, the resend gets
// the first arrival. The resend clears the mark (its append writes the record without it).
func TestArrivalOfADeliveredPublishResentAfterARestart(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Clock: clock.NewFake(t0)}
	s := open(t, dir, opts)
	p := Publish{Client: "dev-1", PacketID: 3, Payload: []byte("21.5"), Resumed: true, Keep: time.Hour}
	storeDelivered(t, s, p)
	if r, ok := arrivalOnDisk(t, s, "dev-1", 3); !ok || !r.delivered {
		t.Fatalf("the delivered record on disk after the next commit: found %v, marked %v; want it kept and marked", ok, r.delivered)
	}
	s.Close()
	s = open(t, dir, opts)
	if err := s.Connected(bg, "dev-1", false); err != nil {
		t.Fatal(err)
	}
	resend := s.Arrive(p, t0.Add(time.Minute))
	if !resend.Resend || !resend.At.Equal(t0) {
		t.Fatalf("a delivered publish resent after a restart (its PUBACK lost with the connection): resend %v, arrival %v, want the first one %v", resend.Resend, resend.At, t0)
	}
	if _, err := s.AppendArrived(bg, "raw", []Entry{{ID: "h-1", Value: p.Payload}}, resend).Wait(); err != nil {
		t.Fatal(err)
	}
	if r, ok := arrivalOnDisk(t, s, "dev-1", 3); !ok || r.delivered || r.at != t0.UnixMilli() {
		t.Fatalf("the resent record on disk: found %v, marked %v, arrival %d; want it unmarked with the first arrival %d", ok, r.delivered, r.at, t0.UnixMilli())
	}
}

// A clean connect rewrites the client's records as DUP-only and keeps their delivered
// marks: they still come back at Open first in line to be given up.
func TestArrivalDeliveredMarkSurvivesACleanConnect(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Clock: clock.NewFake(t0)}
	s := open(t, dir, opts)
	p := Publish{Client: "dev-1", PacketID: 3, Payload: []byte("21.5"), Resumed: true, Keep: time.Hour}
	other := storeDelivered(t, s, p)
	if err := s.Connected(bg, "dev-1", true); err != nil {
		t.Fatal(err)
	}
	other.PacketID = 2
	publishOnce(t, s, other, t0) // after the clean connect's rewrite
	if r, ok := arrivalOnDisk(t, s, "dev-1", 3); !ok || !r.dupOnly || !r.delivered {
		t.Fatalf("the record on disk after a clean connect: found %v, DUP-only %v, marked %v; want both flags", ok, r.dupOnly, r.delivered)
	}
	s.Close()
	s = open(t, dir, opts)
	c := s.arrivals.clients[keyOfClient("dev-1")]
	if c == nil || c.find(3) < 0 || !c.recs[c.find(3)].delivered || !c.recs[c.find(3)].dupOnly {
		t.Fatal("the record after a restart: want it loaded, DUP-only and delivered")
	}
	if len(s.arrivals.delivered) != 1 {
		t.Fatalf("the loaded delivered record is not listed for evict: %v", s.arrivals.delivered)
	}
	if _, i := s.arrivals.heldDelivered(s.arrivals.delivered[0]); i < 0 {
		t.Fatalf("the loaded delivered record is not listed for evict: %v", s.arrivals.delivered)
	}
}

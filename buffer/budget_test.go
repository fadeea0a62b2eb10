package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// record returns a reading as the ingest path stores it: ~230 bytes of JSON with a hashed
// id, compressible like real records.
func record(n int, r *rand.Rand) []byte {
	return []byte(fmt.Sprintf(`{"id":"h-%016x%016x","topic":"devices/dev-%d/temperature","series":"dev-%d/temperature","ts":"2026-11-26T12:%02d:%02d.%03dZ","value":%.2f,"unit":"Cel","labels":{"site":"north"}}`,
		r.Uint64(), r.Uint64(), n%50, n%50, (n/60000)%60, (n/1000)%60, n%1000, 15+10*r.Float64()))
}

// reading is record(n, r) as an entry, with the record's id ("h-…") as its dedup id.
func reading(n int, r *rand.Rand) Entry {
	v := record(n, r)
	return Entry{ID: string(v[7:41]), Value: v}
}

// diskWatch measures a directory every millisecond and keeps the peak.
type diskWatch struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchDisk(dir string, also func(du int64)) *diskWatch {
	w := &diskWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			if n, err := DirBytes(dir); err == nil {
				if n > w.peak.Load() {
					w.peak.Store(n)
				}
				if also != nil {
					also(n)
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return w
}

func (w *diskWatch) close() int64 {
	close(w.stop)
	<-w.done
	return w.peak.Load()
}

// flood appends unique readings from several goroutines until `total` bytes were offered,
// and returns what the store acknowledged, by sequence number, and what it refused.
type floodResult struct {
	acked    map[uint64]string // seq → value
	offered  int
	refused  int // entries in appends that failed with ErrFull
	refusals int // appends that failed with ErrFull
	firstErr error
}

var floods atomic.Uint64

func flood(t *testing.T, s *Store, log string, total int64, writers int) floodResult {
	t.Helper()
	var mu sync.Mutex // guards res and offered
	res := floodResult{acked: map[uint64]string{}}
	var offered int64
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), floods.Add(1))) // ids unique across floods
			for {
				es := make([]Entry, 50)
				mu.Lock()
				if offered >= total {
					mu.Unlock()
					return
				}
				for i := range es {
					es[i] = reading(res.offered, r)
					res.offered++
					offered += int64(len(es[i].Value))
				}
				mu.Unlock()
				rs, err := s.Append(bg, log, es)
				mu.Lock()
				switch {
				case errors.Is(err, ErrFull):
					res.refused += len(es)
					res.refusals++
				case err != nil:
					if res.firstErr == nil {
						res.firstErr = err
					}
				default:
					for i, rr := range rs {
						res.acked[rr.Seq] = string(es[i].Value)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if res.firstErr != nil {
		t.Fatalf("append: %v", res.firstErr)
	}
	return res
}

func budgetOptions(onFull OnFull) Options {
	return Options{
		MaxBytes:      8 << 20,
		OnFull:        onFull,
		DedupTTL:      time.Hour,
		Precious:      []string{"agg"},
		MaintainEvery: 100 * time.Millisecond,
		// Badger scaled down 16× from production (512 KiB memtables), so that a small
		// budget holds data and the test stays short; TestMeasureBudgetAtScale runs the
		// production sizes.
		memTableSize: 512 << 10,
	}
}

func runMaintain(t *testing.T, s *Store) func() {
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { defer close(done); s.Maintain(ctx) }()
	return func() { cancel(); <-done }
}

func offeredBytes(budget int64) int64 { return 2 * budget }

func TestBudgetDropOldest(t *testing.T) {
	dir := t.TempDir()
	opts := budgetOptions(DropOldest)
	opts.Consumers = map[string][]string{"raw": {"up"}}
	opts.Expendable = []string{"refused"}
	s := open(t, dir, opts)
	stop := runMaintain(t, s)
	for i := 0; i < 20; i++ {
		mustAppend(t, s, "agg", Entry{Value: []byte(fmt.Sprintf(`{"pane":%d}`, i))})
		mustAppend(t, s, "refused", Entry{Value: []byte(fmt.Sprintf(`{"payload":"warm %d"}`, i))})
	}
	watch := watchDisk(dir, nil)
	res := flood(t, s, "raw", offeredBytes(opts.MaxBytes), 8)
	stop()
	peak := watch.close()
	st := s.Stats()
	t.Logf("offered %d readings: %d stored, %d dropped, %d refused; peak %.1f MiB of %d MiB",
		res.offered, st.Appended.Load()-20, st.Dropped.Load(), st.Rejected.Load(), float64(peak)/(1<<20), opts.MaxBytes>>20)

	if peak > opts.MaxBytes {
		t.Errorf("the directory reached %d bytes, over max_bytes %d", peak, opts.MaxBytes)
	}
	if st.Dropped.Load() == 0 {
		t.Fatal("nothing was dropped: the budget was not exercised")
	}
	// Exact counts: every reading offered is stored, dropped or refused, and only the
	// oldest were dropped.
	if got := len(res.acked) + res.refused; got != res.offered {
		t.Fatalf("acked %d + refused %d != offered %d", len(res.acked), res.refused, res.offered)
	}
	if uint64(res.refused) != st.Rejected.Load() || uint64(res.refusals) != st.RejectedAppends.Load() {
		t.Fatalf("refused %d in %d appends, counted %d in %d", res.refused, res.refusals, st.Rejected.Load(), st.RejectedAppends.Load())
	}
	seqs, got := readAll(t, s, "raw", 0)
	for i, q := range seqs {
		if res.acked[q] != got[i] {
			t.Fatalf("seq %d holds %q, acked %q", q, got[i], res.acked[q])
		}
	}
	var missing uint64
	for q := range res.acked {
		if len(seqs) == 0 || q < seqs[0] {
			missing++
		} else if _, err := s.Read("raw", q, 1, func(at uint64, _ []byte) error {
			if at != q {
				return fmt.Errorf("acked seq %d is missing but younger than the oldest kept %d", q, seqs[0])
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if missing+20 != st.Dropped.Load() || st.PerLog()["raw"].Dropped != missing { // 20 refused too
		t.Fatalf("%d acknowledged readings are gone, %d counted as dropped (%+v)", missing, st.Dropped.Load(), st.PerLog())
	}
	// The uplink, which never committed, never had any of them; the count is on disk.
	if m, err := s.MissedBy("raw"); err != nil || m["up"] != (Missed{Room: missing}) {
		t.Fatalf("missed by the uplink: %+v, %v; want %d dropped for room", m, err, missing)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts)
	if m, err := s.MissedBy("raw"); err != nil || m["up"] != (Missed{Room: missing}) {
		t.Fatalf("missed by the uplink after a reopen: %+v, %v; want %d dropped for room", m, err, missing)
	}
	// Aggregates are worth more: untouched while raw readings were left to drop. Refused
	// messages are worth less: all gone before the first reading.
	if aggs, _ := readAll(t, s, "agg", 0); len(aggs) != 20 {
		t.Fatalf("agg has %d entries, want the 20 appended", len(aggs))
	}
	if refused, _ := readAll(t, s, "refused", 0); len(refused) != 0 || st.PerLog()["refused"].Dropped != 20 {
		t.Fatalf("refused log kept %d entries (%+v); the expendable log goes first", len(refused), st.PerLog())
	}
	ls, _ := s.Logs()
	if ls[1].Name != "raw" || ls[1].Count != int64(len(seqs)) {
		t.Fatalf("meta count %d, log holds %d", ls[1].Count, len(seqs))
	}
}

func TestBudgetReject(t *testing.T) {
	dir := t.TempDir()
	opts := budgetOptions(Reject)
	s := open(t, dir, opts)
	stop := runMaintain(t, s)
	watch := watchDisk(dir, nil)
	res := flood(t, s, "raw", offeredBytes(opts.MaxBytes), 8)
	stop()
	peak := watch.close()
	st := s.Stats()
	t.Logf("offered %d readings: %d stored, %d refused in %d appends; peak %.1f MiB of %d MiB",
		res.offered, len(res.acked), res.refused, res.refusals, float64(peak)/(1<<20), opts.MaxBytes>>20)
	if peak > opts.MaxBytes {
		t.Errorf("the directory reached %d bytes, over max_bytes %d", peak, opts.MaxBytes)
	}
	if res.refusals == 0 {
		t.Fatal("nothing was refused: the budget was not exercised")
	}
	if st.Dropped.Load() != 0 || uint64(res.refused) != st.Rejected.Load() || uint64(res.refusals) != st.RejectedAppends.Load() ||
		len(res.acked)+res.refused != res.offered || uint64(len(res.acked)) != st.Appended.Load() {
		t.Fatalf("counts: acked %d refused %d offered %d; stats appended %d rejected %d (%d appends) dropped %d",
			len(res.acked), res.refused, res.offered, st.Appended.Load(), st.Rejected.Load(), st.RejectedAppends.Load(), st.Dropped.Load())
	}
	// Everything acknowledged is there, nothing else.
	seqs, got := readAll(t, s, "raw", 0)
	if len(seqs) != len(res.acked) {
		t.Fatalf("log holds %d, %d acknowledged", len(seqs), len(res.acked))
	}
	for i, q := range seqs {
		if res.acked[q] != got[i] {
			t.Fatalf("seq %d holds %q, acked %q", q, got[i], res.acked[q])
		}
	}
	if n, err := s.Count("raw"); err != nil || n != int64(len(seqs)) {
		t.Fatalf("Count %d (%v), log holds %d", n, err, len(seqs))
	}
	// Updates (pipeline and uplink progress) are never refused for room.
	if err := s.Update(bg, func(tx *Tx) { tx.SetCursor("raw", "up", 5); tx.Put("pipeline/x", []byte("state")) }); err != nil {
		t.Fatalf("update while full: %v", err)
	}
	// Delivering frees room again.
	if err := s.Commit(bg, "raw", "up", seqs[len(seqs)-1]+1); err != nil {
		t.Fatal(err)
	}
	s.SetConsumers("raw", []string{"up"})
	if err := s.MaintainOnce(bg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.Append(bg, "raw", vals("after delivery"))
		if err == nil {
			break
		}
		if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
			t.Fatalf("after every entry was delivered and trimmed: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // compaction reclaims the trimmed entries' space
	}
}

// fakeDisk is a file system of a given size shared with other users; the store sees its
// free space through StatFS.
type fakeDisk struct {
	dir    string
	size   int64
	others atomic.Int64
}

func (d *fakeDisk) free(du int64) int64 { return d.size - d.others.Load() - du }

func (d *fakeDisk) statfs(string) (FSInfo, error) {
	du, err := DirBytes(d.dir)
	if err != nil {
		return FSInfo{}, err
	}
	return FSInfo{Avail: uint64(max(0, d.free(du)))}, nil
}

func TestBudgetReserveFree(t *testing.T) {
	for _, onFull := range []OnFull{Reject, DropOldest} {
		t.Run(string(onFull), func(t *testing.T) {
			dir := t.TempDir()
			disk := &fakeDisk{dir: dir, size: 16 << 20}
			disk.others.Store(4 << 20)
			opts := budgetOptions(onFull)
			opts.MaxBytes = 0 // the file system is the only limit
			opts.ReserveFree = 3 << 20
			opts.StatFS = disk.statfs
			s := open(t, dir, opts)
			stop := runMaintain(t, s)
			var lowest atomic.Int64
			lowest.Store(1 << 62)
			watch := watchDisk(dir, func(du int64) {
				if f := disk.free(du); f < lowest.Load() {
					lowest.Store(f)
				}
			})
			res := flood(t, s, "raw", 12<<20, 8)
			// Another program fills 2 MiB more of the disk: the store must give way.
			disk.others.Add(2 << 20)
			res2 := flood(t, s, "raw", 3<<20, 4)
			stop()
			watch.close()
			st := s.Stats()
			t.Logf("lowest free space %.1f MiB (reserve 3 MiB); stored %d+%d, dropped %d, refused %d",
				float64(lowest.Load())/(1<<20), len(res.acked), len(res2.acked), st.Dropped.Load(), st.Rejected.Load())
			if lowest.Load() < opts.ReserveFree {
				t.Errorf("free space fell to %d bytes, below reserve_free %d", lowest.Load(), opts.ReserveFree)
			}
			switch onFull {
			case Reject:
				if res.refusals == 0 || res2.refusals == 0 {
					t.Fatalf("refusals %d then %d: the reserve was not exercised", res.refusals, res2.refusals)
				}
			case DropOldest:
				if st.Dropped.Load() == 0 {
					t.Fatal("nothing dropped: the reserve was not exercised")
				}
			}
		})
	}
}

func TestErrFullSaysWhichLimit(t *testing.T) {
	dir := t.TempDir()
	disk := &fakeDisk{dir: dir, size: 30 << 20}
	opts := budgetOptions(Reject)
	opts.MaxBytes = 0
	opts.ReserveFree = 8 << 20
	opts.StatFS = disk.statfs
	s := open(t, dir, opts)
	disk.others.Store(30 << 20) // the disk is full already
	s.usage.at = time.Time{}    // measure at the next append
	_, err := s.Append(bg, "raw", vals("x"))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "reserve_free") {
		t.Fatalf("append on a full disk: %v", err)
	}
}

// TestBudgetReservedRoom: a log with a reserved room (the gateway's refused log) keeps its
// entries whatever the others do: drop_oldest does not delete them to make room, and a
// buffer full under reject still takes them, up to the room and no further; the other logs
// never use the room.
func TestBudgetReservedRoom(t *testing.T) {
	const room = 64 << 10
	for _, onFull := range []OnFull{Reject, DropOldest} {
		t.Run(string(onFull), func(t *testing.T) {
			dir := t.TempDir()
			opts := budgetOptions(onFull)
			opts.Reserved = map[string]int64{"refused": room}
			s := open(t, dir, opts)
			stop := runMaintain(t, s)
			for i := 0; i < 20; i++ {
				mustAppend(t, s, "refused", Entry{Value: []byte(fmt.Sprintf(`{"payload":"warm %d"}`, i))})
			}
			watch := watchDisk(dir, nil)
			res := flood(t, s, "raw", offeredBytes(opts.MaxBytes), 8)
			if onFull == Reject && res.refusals == 0 || onFull == DropOldest && s.Stats().Dropped.Load() == 0 {
				t.Fatalf("the budget was not exercised: %d refusals, %d dropped", res.refusals, s.Stats().Dropped.Load())
			}
			if refused, _ := readAll(t, s, "refused", 0); len(refused) != 20 {
				t.Fatalf("the refused log holds %d entries after the flood, want its 20", len(refused))
			}
			// The buffer is full for readings (to the last small one under reject); refused
			// messages still fit, up to the room.
			for i := 0; onFull == Reject; i++ {
				if _, err := s.Append(bg, "raw", vals(fmt.Sprint(i))); errors.Is(err, ErrFull) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			entry := bytes.Repeat([]byte("r"), 1000)
			kept := 0
			for ; kept < 2*room/len(entry); kept++ {
				if _, err := s.Append(bg, "refused", []Entry{{Value: entry}}); err != nil {
					if !errors.Is(err, ErrFull) {
						t.Fatal(err)
					}
					break
				}
			}
			if onFull == Reject && (kept < room/len(entry)-4 || kept > room/len(entry)) {
				t.Fatalf("a full buffer took %d refused entries of %d bytes, want the room's %d", kept, len(entry), room/len(entry))
			}
			if onFull == Reject {
				if _, err := s.Append(bg, "raw", vals("one more")); !errors.Is(err, ErrFull) {
					t.Fatalf("a reading took the refused log's room: %v", err)
				}
			}
			stop()
			if peak := watch.close(); peak > opts.MaxBytes {
				t.Errorf("the directory reached %d bytes, over max_bytes %d", peak, opts.MaxBytes)
			}
			t.Logf("%s: %d readings offered, %d refused in %d appends, %d dropped; then %d refused messages of %d bytes kept",
				onFull, res.offered, res.refused, res.refusals, s.Stats().Dropped.Load(), kept, len(entry))
		})
	}
}

// A room too large for the budget (refused_log.max_bytes beside a small max_bytes) is
// scaled down to an eighth of the capacity: readings still fit, and the log keeps its
// entries past its room only as long as readings do not need the space.
func TestBudgetReservedRoomScaled(t *testing.T) {
	dir := t.TempDir()
	opts := budgetOptions(DropOldest)
	opts.Reserved = map[string]int64{"refused": 4 * opts.MaxBytes}
	s := open(t, dir, opts)
	stop := runMaintain(t, s)
	defer stop()
	capacity, _, _ := s.limits()
	room := s.room("refused", capacity)
	if room <= 0 || room > capacity/maxRoomShare {
		t.Fatalf("room %d at capacity %d; want at most an eighth", room, capacity)
	}
	mustAppend(t, s, "raw", Entry{Value: []byte("first reading")})
	entry := bytes.Repeat([]byte("r"), 1000)
	for i := int64(0); i < 2*room/int64(len(entry)); i++ { // twice the room
		mustAppend(t, s, "refused", Entry{Value: entry})
	}
	res := flood(t, s, "raw", offeredBytes(opts.MaxBytes), 8)
	if len(res.acked) == 0 {
		t.Fatal("no reading fits beside the refused log")
	}
	ls, err := s.logState("refused")
	if err != nil {
		t.Fatal(err)
	}
	if b := ls.bytes.Load(); b > room+int64(len(entry))+64 || b < room-int64(len(entry))-64 {
		t.Fatalf("the refused log holds %d bytes after the readings' flood; want its room, %d", b, room)
	}
}

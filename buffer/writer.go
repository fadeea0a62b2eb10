package buffer

import (
	"fmt"
	"time"
)

// maxGroup bounds how many queued requests one group commit takes.
const maxGroup = 4096

// dropChunk bounds the deletes of one transaction when dropping or trimming.
const dropChunk = 2000

type reqKind uint8

const (
	reqAppend  reqKind = iota // the ingest path: subject to the budget policy
	reqUpdate                 // an atomic Tx: never refused for room
	reqDrop                   // delete entries of a log below a sequence number
	reqDropIDs                // delete the oldest ids of a dedup bucket (boundDedup)
)

// dropReason says why entries were deleted; each has its own counter.
type dropReason uint8

const (
	dropTrim      dropReason = iota // every consumer committed past them
	dropRetention                   // older than the retention
	dropRoom                        // the budget needed room (drop_oldest)
)

type write struct {
	key, value []byte
	del        bool
	ttl        time.Duration
}

type request struct {
	kind reqKind
	// reqAppend: entries to append to log.
	log     string
	entries []Entry
	extra   []write    // written with the entries (arrivals.go)
	arrival arrivalRef // the arrival's record in memory, told the outcome (arrivals.go)
	lazy    bool       // nobody waits for it: may wait for company (Options.LazyDelay)
	results []Result
	// reqUpdate
	tx *Tx
	// reqDrop: delete entries of log below `below`, at most dropChunk of them; dropped
	// and more are the outcome.
	below   uint64
	reason  dropReason
	dropped int
	more    bool
	// reqDropIDs: the bucket, the expiry below which its ids go (in below), and where the
	// next chunk starts (the key after the last one read; nil: the bucket's start).
	bucket int64
	from   []byte

	err  error
	done chan struct{}
	cost int64 // reqAppend: taken from Store.queued until done

	// filled in by prepare
	writes []write
	recs   []rec                   // entries appended, staged in segments (segment.go) by the writer
	size   int64                   // bytes staged: what it adds to the directory, roughly
	stored int                     // entries appended (for stats)
	hits   int                     // entries not stored: duplicates (counted once released)
	ids    []string                // dedup hashes added to the cache, undone on failure
	deltas map[*logState]*logDelta // per log: what this request changes
	dedups int64                   // dedup keys written (deleted: negative)
	// after lists the requests of the group (by index) that added ids this one repeats:
	// they are not committed yet, so this request shares their fate (see prepare).
	after   []int32
	pending int // entries that repeat such ids
}

// rec is an entry appended to a log, with its sequence number.
type rec struct {
	ls    *logState
	seq   uint64
	value []byte
}

// logDelta is what a request or a transaction changes in one log.
type logDelta struct {
	last  uint64 // last sequence number assigned; 0 none
	count int64
	bytes int64
	first uint64 // new first live sequence number (drops); 0 unchanged
	// Appends: the first sequence number assigned, and when (unix ms, the store's clock):
	// the time-index key the writer may stage with them (stageIndex).
	from uint64
	at   int64
}

func (r *request) delta(ls *logState) *logDelta {
	if r.deltas == nil {
		r.deltas = map[*logState]*logDelta{}
	}
	d := r.deltas[ls]
	if d == nil {
		d = &logDelta{}
		r.deltas[ls] = d
	}
	return d
}

// noWrites is nil in every build that ships. Only a build tagged edgegate_nowrites sets it
// (nowrites.go: groups and fsyncs without Badger writes, the baseline of a benchmark): it
// returns what the writer calls instead of apply.
var noWrites func(*Store) func(group []*request)

// writer is the only goroutine that writes to Badger. It takes every request that is
// queued and applies them in as few transactions as Badger's batch limits allow. With
// sync: always it hands the committed group to the syncer and goes on with the next one
// while the fsync runs, so a group fills up during the previous group's fsync (group
// commit, pipelined); with an interval it releases the waiters at once.
func (s *Store) writer() {
	defer close(s.done)
	apply := s.apply
	if noWrites != nil { // a benchmark's baseline only, never shipped (nowrites.go)
		apply = noWrites(s)
	}
	var tick <-chan time.Time
	if s.opts.SyncInterval > 0 {
		t := time.NewTicker(s.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	} else {
		s.synced = make(chan []*request, 2)
		syncerDone := make(chan struct{})
		go s.syncer(syncerDone)
		defer func() { close(s.synced); <-syncerDone }()
	}
	group := make([]*request, 0, 64)
	for {
		select {
		case r := <-s.reqs:
			group = s.gather(append(group[:0], r))
			apply(group)
		case <-tick:
			if s.dirty {
				if err := s.sync(); err != nil {
					s.breakOn(err) // what was acknowledged since the last fsync may be lost
				}
				s.dirty = false
			}
		case <-s.quit:
			for {
				select {
				case r := <-s.reqs:
					apply([]*request{r})
				default:
					s.writeMarks()
					return
				}
			}
		}
	}
}

// A lazy group stops waiting once it holds this many lazy appends, or this many bytes of
// theirs: the commit and fsync are then shared widely enough, and a publisher whose QoS 0
// messages are all waiting (the broker lets a connection have 64 at once, fewer when
// large) is not held to one round per LazyDelay.
const (
	lazyGroup = 16
	lazyBytes = 32 << 10
)

// gather adds the queued requests to group, up to maxGroup. When it holds lazy appends
// (QoS 0 readings: nobody waits for them) and no other append, it waits up to LazyDelay
// for more: the first other append (a QoS 1 reading, whose PUBACK waits) ends the wait and
// the lazy ones share its commit and fsync; so do lazyGroup lazy appends. Updates (the
// pipelines' steps, the uplinks' positions) join the waiting group without ending the
// wait: their callers can wait that long, and each would otherwise take a commit and an
// fsync of its own. The queue is bounded, so appenders block while the group is at
// maxGroup (backpressure).
func (s *Store) gather(group []*request) []*request {
	group = s.gatherQueued(group)
	if s.opts.LazyDelay <= 0 {
		return group
	}
	var n, size int
	for _, r := range group {
		if urgent(r) {
			return group
		}
		if r.lazy {
			n, size = n+1, size+r.lazySize()
		}
	}
	if n == 0 {
		return group
	}
	t := time.NewTimer(s.opts.LazyDelay)
	defer t.Stop()
	for len(group) < maxGroup && n < lazyGroup && size < lazyBytes {
		select {
		case r := <-s.reqs:
			group = append(group, r)
			if urgent(r) {
				return s.gatherQueued(group)
			}
			if r.lazy {
				n, size = n+1, size+r.lazySize()
			}
		case <-t.C:
			return group
		case <-s.quit:
			return group
		}
	}
	return s.gatherQueued(group)
}

// urgent reports whether r ends a lazy group's wait: an append someone waits for.
func urgent(r *request) bool { return r.kind == reqAppend && !r.lazy }

// lazySize is the bytes of a lazy request's entries.
func (r *request) lazySize() int {
	n := 0
	for _, e := range r.entries {
		n += len(e.Value)
	}
	return n
}

// gatherQueued adds the requests queued now to group, up to maxGroup.
func (s *Store) gatherQueued(group []*request) []*request {
	for len(group) < maxGroup {
		select {
		case r := <-s.reqs:
			group = append(group, r)
		default:
			return group
		}
	}
	return group
}

// syncer fsyncs what the writer committed and releases its waiters, taking every group
// committed meanwhile under one fsync. It owns the witness while it runs.
func (s *Store) syncer(done chan struct{}) {
	defer close(done)
	for g := range s.synced {
		batch := g
	more:
		for {
			select {
			case g, ok := <-s.synced:
				if !ok {
					break more
				}
				batch = append(batch, g...)
			default:
				break more
			}
		}
		// Groups committed before an fsync failed are not released by a later fsync that
		// happens to succeed: the failed one may have dropped their pages.
		err := s.brokenErr()
		if err == nil {
			if err = s.sync(); err != nil {
				err = s.breakOn(err)
			}
		}
		if err != nil {
			for _, r := range batch {
				r.err = err
				r.results = nil
				s.arrived(r.arrival, false)
				s.finish(r)
			}
			continue
		}
		s.release(batch)
	}
}

// breakOn records a failed fsync: the entries are in Badger but maybe not on disk, and
// Badger's state after a failed fsync is unknown, so the store refuses everything from
// now on (a restart recovers from what is on disk) rather than acknowledge what may be
// lost. It returns the error every refusal carries.
func (s *Store) breakOn(err error) error {
	err = fmt.Errorf("buffer: fsync: %w", err)
	s.broken.CompareAndSwap(nil, &err)
	return *s.broken.Load()
}

// Err says why the store takes no more writes: ErrClosed, or the error of the fsync that
// broke it; nil while it works.
func (s *Store) Err() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.brokenErr()
}

// brokenErr is the error of the fsync that broke the store, or nil.
func (s *Store) brokenErr() error {
	if e := s.broken.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *Store) sync() error {
	start := time.Now()
	err := s.syncFn()
	s.stats.SyncNanos.Add(uint64(time.Since(start)))
	s.stats.Syncs.Add(1)
	if err != nil {
		s.log.Error("fsync failed", "err", err)
		return err
	}
	return nil
}

// release makes a durable group visible and returns to its waiters: the log positions
// move, readers waiting on them wake, and the witness records the new high marks.
func (s *Store) release(ok []*request) {
	s.stats.Groups.Add(1)
	changed := false
	for _, r := range ok {
		for ls, d := range r.deltas {
			if d.last > s.highs[ls.name] {
				s.highs[ls.name] = d.last
				changed = true
			}
		}
	}
	if changed {
		if err := s.witness.write(s.highs); err != nil {
			s.log.Warn("cannot update the witness file; a later torn-tail loss may go unreported", "err", err)
		}
	}
	for _, r := range ok {
		s.stats.Appended.Add(uint64(r.stored))
		if r.hits > 0 {
			s.stats.DedupHits.Add(uint64(r.hits))
		}
		for ls, d := range r.deltas {
			if d.last > 0 {
				s.published(ls, d.last)
			}
		}
		s.arrived(r.arrival, true)
		s.finish(r)
	}
}

func (s *Store) fail(r *request, err error) {
	for _, h := range r.ids {
		s.dedup.remove(h)
	}
	s.arrived(r.arrival, false)
	r.err = err
	r.results = nil
	s.finish(r)
}

func (s *Store) published(ls *logState, last uint64) {
	s.mu.Lock()
	if last > ls.last.Load() {
		ls.last.Store(last)
		close(ls.notify)
		ls.notify = make(chan struct{})
	}
	s.mu.Unlock()
}

// finish completes r: its waiters go on, and what it held of the queue's bytes is free.
func (s *Store) finish(r *request) {
	s.queued.release(r.cost)
	close(r.done)
}

//go:build edgegate_nowrites

// This file is compiled only with the build tag edgegate_nowrites. It makes the baseline of
// issue 20's durable-ingest goal: "the same build with the store's writes removed (groups
// and fsyncs only)". Such a binary acknowledges readings it never stores: it must never
// ship. It refuses to start unless EDGEGATE_BENCHMARK_NOWRITES=1 is set, and `make dist`
// fails on a binary built with the tag. Only the benchmarks build it
// (internal/loadgen's BenchmarkIngestVsNoWrites, scripts/ingest-nowrites.sh).
//
// What the baseline keeps, exactly as in the real build:
//   - everything before the store: the broker, the ingest hook, decoding, routing, the
//     records of arrival (Store.Arrive), the acker and its PUBACKs, the queue to the
//     writer and its byte budget;
//   - the writer's groups: gather, the lazy wait, maxGroup, all unchanged (writer.go);
//   - one fdatasync per group with sync: always, pipelined the same way (the syncer takes
//     every group committed meanwhile under one fsync, and releases the waiters after it),
//     or one per interval with sync: <interval>; the release of the waiters (stats,
//     arrivals told their outcome);
//   - the file the fsync makes durable is like a Badger memtable log on the same file
//     system: created sparse at twice the memtable size, written in place at increasing
//     offsets (pwrite, where Badger writes through a mapping), replaced by a new file once
//     a memtable's worth is written, the old one synced once more and then deleted. Each
//     group's bytes are appended: per entry a 16-byte header (its sequence number and
//     lengths), its id and its value, and the key and value of every extra write (records
//     of arrival). That is less than the real build writes (it also stages a dedup key per
//     id, a meta key per log and Badger's own headers), so the baseline is, if anything,
//     the easier one to be fast in.
//
// What it leaves out (the overhead the ratio measures): prepare (sequence numbers, the
// dedup check and index: every entry is taken as new), the budget's admission, the Badger
// transactions and commits (memtable, its log, flushes to L0, compactions), the meta and
// time-index keys, the WAL syncer's look for a new memtable log (and its directory listing
// after a rotation). Appends are numbered but not readable (Read, Count and Wait see nothing); the logs' positions never move. Requests
// other than appends (Update, drops) still go to Badger as usual, and the fsync after
// them also syncs Badger's log. The dedup decisions are left out with the index they
// read (Badger keys): the benchmark's readings all carry new ids. The plain log's files
// stay open until the process ends (Close syncs them; nothing reads them).
package buffer

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// noWritesEnv must be "1" for a binary built with the tag to start.
const noWritesEnv = "EDGEGATE_BENCHMARK_NOWRITES"

func init() {
	if os.Getenv(noWritesEnv) != "1" {
		panic("buffer: built with the edgegate_nowrites tag, this binary acknowledges readings it never stores; " +
			"it runs only as a benchmark's baseline, with " + noWritesEnv + "=1")
	}
	noWrites = startNoWrites
}

// plainLog is the file the baseline writes each group to and fdatasyncs.
type plainLog struct {
	s    *Store
	dir  string
	size int64 // a memtable's worth: a file is replaced once this much is written
	seq  uint64
	buf  []byte
	// badger says a request went to Badger since the last sync: its log is synced too.
	badger atomic.Bool

	mu     sync.Mutex // guards the files between the writer and the syncer
	num    int
	cur    *os.File
	off    int64      // the writer's offset in cur
	full   []*os.File // replaced, to be synced once more and deleted by the next sync
	broken error      // a failed open: every later write fails with it
}

// startNoWrites replaces the store's fsync with the plain log's and returns what the
// writer calls instead of apply. It runs in the writer goroutine before the syncer starts.
func startNoWrites(s *Store) func([]*request) {
	p := &plainLog{s: s, dir: s.opts.Dir, size: s.opts.memTableSize}
	p.mu.Lock()
	p.broken = p.rotate()
	p.mu.Unlock()
	s.log.Warn("BENCHMARK BUILD (edgegate_nowrites): readings are acknowledged but not stored")
	wal := s.syncFn
	s.syncFn = func() error {
		if p.badger.Swap(false) {
			if err := wal(); err != nil {
				return err
			}
		}
		return p.sync()
	}
	return p.apply
}

// rotate starts a new file (sparse, twice a memtable, as Badger's) and queues the current
// one for its last sync. Called with mu held.
func (p *plainLog) rotate() error {
	p.num++
	f, err := os.OpenFile(filepath.Join(p.dir, fmt.Sprintf("%05d.nowrites", p.num)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		if err = f.Truncate(2 * p.size); err != nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("buffer: nowrites log: %w", err)
	}
	if p.cur != nil {
		p.full = append(p.full, p.cur)
	}
	p.cur, p.off = f, 0
	return nil
}

// write appends b to the current file.
func (p *plainLog) write(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return p.broken
	}
	if p.off >= p.size {
		if p.broken = p.rotate(); p.broken != nil {
			return p.broken
		}
	}
	if _, err := p.cur.WriteAt(b, p.off); err != nil {
		return fmt.Errorf("buffer: nowrites log: %w", err)
	}
	p.off += int64(len(b))
	return nil
}

// sync fdatasyncs the files replaced since the last sync (then deletes them) and the
// current one. One goroutine at a time calls it (Store.sync).
func (p *plainLog) sync() error {
	p.mu.Lock()
	cur, full := p.cur, p.full
	p.full = nil
	p.mu.Unlock()
	for _, f := range full {
		err := datasync(f)
		f.Close()
		os.Remove(f.Name())
		if err != nil {
			return err
		}
	}
	if cur == nil {
		return nil
	}
	return datasync(cur)
}

// apply takes the place of Store.apply for a group: the appends' bytes go to the plain
// log, the waiters are released after its fsync as usual; other requests go to Badger.
func (p *plainLog) apply(group []*request) {
	s := p.s
	if err := s.brokenErr(); err != nil {
		for _, r := range group {
			s.fail(r, err)
		}
		return
	}
	var others, ok []*request
	p.buf = p.buf[:0]
	for _, r := range group {
		if r.kind != reqAppend {
			others = append(others, r)
			continue
		}
		r.results = make([]Result, len(r.entries))
		for k, e := range r.entries {
			p.seq++
			r.results[k].Seq = p.seq
			p.buf = binary.BigEndian.AppendUint64(p.buf, p.seq)
			p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(len(e.ID)))
			p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(len(e.Value)))
			p.buf = append(append(p.buf, e.ID...), e.Value...)
		}
		for _, w := range r.extra {
			p.buf = append(append(p.buf, w.key...), w.value...)
		}
		r.stored = len(r.entries)
		ok = append(ok, r)
	}
	if len(others) > 0 {
		p.badger.Store(true) // before apply hands them to the syncer
		s.apply(others)
	}
	if len(ok) == 0 {
		return
	}
	if err := p.write(p.buf); err != nil {
		for _, r := range ok {
			s.fail(r, err)
		}
		return
	}
	s.committed(ok)
}

// Reading the input ahead: while the runner parses and aggregates one batch of input
// entries, a goroutine reads the next from the store, so that the store's iteration and
// the runner's own work overlap.

package pipeline

import "github.com/edgegate/edgegate/buffer"

// inBatch is a batch of input entries read from the store from position from, copied out
// of it.
type inBatch struct {
	from uint64 // where the read started
	pos  uint64 // the input position the runner has taken the batch up to
	last uint64 // the log's last sequence number before the read
	// full: the read stopped at its limit (more may follow); else it read to the end of
	// the log as of last.
	full bool
	ents []inEntry
	i    int // the next entry to take
	slab []byte
	err  error
	done chan struct{} // closed once read
}

type inEntry struct {
	seq      uint64
	off, end int
}

// value is the stored bytes of e.
func (b *inBatch) value(e inEntry) []byte { return b.slab[e.off:e.end:e.end] }

// fetch reads up to limit entries from from into b: on the runner's goroutine (sync) or a
// goroutine of its own, which closes b.done.
func (r *Runner) fetch(b *inBatch, from uint64, limit int) {
	b.from, b.pos = from, from
	b.last, b.err = r.o.Store.LastSeq(r.o.Input)
	if b.err != nil {
		return
	}
	_, b.err = r.o.Store.Read(r.o.Input, from, limit, func(seq uint64, v []byte) error {
		off := len(b.slab)
		b.slab = append(b.slab, v...)
		b.ents = append(b.ents, inEntry{seq: seq, off: off, end: len(b.slab)})
		if len(b.slab) >= batchBytes {
			return buffer.ErrStop // this entry is in the batch; the next starts after it
		}
		return nil
	})
	b.full = len(b.ents) == limit || len(b.slab) >= batchBytes
}

// batchBytes bounds the stored bytes a batch holds (besides its last entry): two batches,
// the one taken and the one read ahead, hold about 2 MiB of input at most.
const batchBytes = 1 << 20

// newBatch returns an empty batch, reusing the buffers of one taken.
func (r *Runner) newBatch() *inBatch {
	b := r.spareBatch
	r.spareBatch = nil
	if b == nil {
		return &inBatch{}
	}
	*b = inBatch{ents: b.ents[:0], slab: b.slab[:0]}
	return b
}

// current returns the batch to take input from at r.pos: the one being taken, the one read
// ahead, or one read now. It starts reading the next one ahead when this one stopped at
// its limit.
func (r *Runner) current() (*inBatch, error) {
	b := r.cur
	if b != nil && (b.pos > r.pos || b.i == len(b.ents)) {
		r.release(b) // reloaded to an earlier position, or taken
		b = nil
	}
	if b == nil && r.ahead != nil {
		b, r.ahead = r.ahead, nil
		<-b.done
		if b.from > r.pos || b.err != nil {
			// Read for a position the runner went back from (reload), or failed: read
			// again, now.
			r.release(b)
			b = nil
		}
	}
	if b == nil {
		b = r.newBatch()
		r.fetch(b, r.pos, r.stepRecords())
		if b.err != nil {
			err := b.err
			r.release(b)
			return nil, err
		}
	}
	r.cur = b
	r.batchHigh = max(r.batchHigh, len(b.slab))
	// Skip what the runner went past (an entry applied alone, see commitAlone).
	for b.i < len(b.ents) && b.ents[b.i].seq < r.pos {
		b.i++
	}
	b.pos = max(b.pos, r.pos)
	if b.full && r.ahead == nil && len(b.ents) > 0 {
		next := r.newBatch()
		next.done = make(chan struct{})
		from, limit := b.ents[len(b.ents)-1].seq+1, r.stepRecords()
		r.ahead = next
		go func() {
			defer close(next.done)
			r.fetch(next, from, limit)
		}()
	}
	return b, nil
}

// release keeps b's buffers for the next batch.
func (r *Runner) release(b *inBatch) {
	if r.cur == b {
		r.cur = nil
	}
	r.spareBatch = b
}

// dropReadAhead waits for the batch being read ahead, if any, and forgets the batches
// held: before the runner reloads its state or ends.
func (r *Runner) dropReadAhead() {
	if r.ahead != nil {
		<-r.ahead.done
		r.release(r.ahead)
		r.ahead = nil
	}
	if r.cur != nil {
		r.release(r.cur)
	}
}

package uplink

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/record"
)

// The dead-letter log (logs.DeadLetter) keeps batches an upstream refused permanently (an
// HTTP 400 or 413, a Pub/Sub InvalidArgument): read it with `edgegate buffer tail -log
// deadletter`, fix the cause, and re-inject what matters. A batch is one entry, or several
// when it is larger than a store value (parts numbered from 1); each entry is one JSON
// object:
//
//	{"uplink": "...", "batch": "<id>", "log": "raw", "first": 1, "last": 500,
//	 "at": "<RFC 3339>", "error": "...", "part": 1, "parts": 1,
//	 "payload": {<the §3.3 batch of this part's records, uncompressed>}}
//
// A record too large to fit in an entry even alone is not copied: its entry carries
// "omitted": {"records": n, "first": seq, "last": seq, "bytes": n, "reason": "..."}
// instead of a payload (the range is in the source log until trimmed).

// maxDeadLetterError bounds the error text kept with each entry.
const maxDeadLetterError = 2048

// deadLetterRoom is what an entry leaves free below the store's limits for the writes
// that share its transaction (the commit's cursor and lanes, the log's meta and time keys).
const deadLetterRoom = 4096

// maxDeadLetterEntry is the largest dead-letter entry the store takes, with the writes
// that go with it.
func (u *Uplink) maxDeadLetterEntry() int {
	return min(buffer.MaxValueSize, int(u.store.MaxRequestBytes())-deadLetterRoom)
}

// deadPart is a run of a batch's items: kept in one entry, or omitted (too large alone).
type deadPart struct {
	from, to int // items [from, to)
	omitted  bool
	bytes    int // omitted: the items' bytes
}

// deadLetter stores b in the dead-letter log and moves the uplink past it. A batch that
// fits in one entry is written with the commit, in one transaction: it is never both lost
// and skipped. A larger one is split: its first parts are written before the last goes
// with the commit, so a crash in between sends the batch again, and its refusal writes
// those parts again (same batch id and part numbers). Only a store failure is returned:
// a refused batch never stops the uplink.
func (u *Uplink) deadLetter(ctx context.Context, s *stream, b *Batch, isHead bool, cause error) error {
	entries, omitted := u.deadLetterEntries(b, cause)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	limit := int(u.store.MaxRequestBytes()) - deadLetterRoom
	var group [][]byte
	size := 0
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		err := u.store.Update(cctx, func(tx *buffer.Tx) {
			for _, e := range group {
				tx.Append(logs.DeadLetter, e)
			}
		})
		group, size = group[:0], 0
		return err
	}
	for _, e := range entries[:len(entries)-1] {
		if size+len(e)+64 > limit {
			if err := flush(); err != nil {
				return fmt.Errorf("dead-letter batch %s: %w", b.ID, err)
			}
		}
		group = append(group, e)
		size += len(e) + 64
	}
	if err := flush(); err != nil {
		return fmt.Errorf("dead-letter batch %s: %w", b.ID, err)
	}
	last := entries[len(entries)-1]
	if err := u.commit(ctx, s, []*Batch{b}, isHead, func(tx *buffer.Tx) { tx.Append(logs.DeadLetter, last) }); err != nil {
		return fmt.Errorf("dead-letter batch %s: %w", b.ID, err)
	}
	u.stats.DeadLetters.Add(1)
	u.stats.DeadLetterRecords.Add(uint64(b.Records))
	u.stats.DeadLetterOmitted.Add(uint64(omitted))
	u.lg.Error("batch refused permanently; kept in the dead-letter log", "batch", b.ID, "records", b.Records,
		"entries", len(entries), "omitted", omitted, "err", cause)
	return nil
}

// deadLetterEntries encodes b as dead-letter entries, each within maxDeadLetterEntry, and
// returns how many records were too large to copy.
func (u *Uplink) deadLetterEntries(b *Batch, cause error) (entries [][]byte, omitted int) {
	msg := cause.Error()
	if len(msg) > maxDeadLetterError {
		msg = strings.ToValidUTF8(msg[:maxDeadLetterError], "") + "…"
	}
	at := u.clock.Now().UTC().Format(record.TimeLayout)
	header := func(part, parts int) []byte {
		e := []byte(`{"uplink":`)
		e = record.AppendString(e, u.name)
		e = append(e, `,"batch":`...)
		e = record.AppendString(e, b.ID)
		e = append(e, `,"log":`...)
		e = record.AppendString(e, b.Log)
		e = fmt.Appendf(e, `,"first":%d,"last":%d,"at":`, b.First, b.Last)
		e = record.AppendString(e, at)
		e = append(e, `,"error":`...)
		e = record.AppendString(e, msg)
		return fmt.Appendf(e, `,"part":%d,"parts":%d`, part, parts)
	}
	// The room for items: what an entry holds less its header (with the widest part
	// numbers), the batch envelope and the closing brace.
	fixed := len(header(len(b.Items)+1, len(b.Items)+1)) + len(`,"payload":`) +
		len(record.AppendBatch(nil, u.gateway, b.ID, b.Kind, nil)) + 1
	room := u.maxDeadLetterEntry() - fixed
	var parts []deadPart
	cur := deadPart{}
	used := 0
	for i, it := range b.Items {
		w := len(it) + 1 // and its comma
		switch {
		case w > room:
			if cur.to > cur.from {
				parts = append(parts, cur)
			}
			if n := len(parts); n > 0 && parts[n-1].omitted && parts[n-1].to == i {
				parts[n-1].to, parts[n-1].bytes = i+1, parts[n-1].bytes+len(it)
			} else {
				parts = append(parts, deadPart{from: i, to: i + 1, omitted: true, bytes: len(it)})
			}
			omitted++
			cur, used = deadPart{from: i + 1, to: i + 1}, 0
			continue
		case used+w > room && cur.to > cur.from:
			parts = append(parts, cur)
			cur, used = deadPart{from: i, to: i}, 0
		}
		cur.to = i + 1
		used += w
	}
	if cur.to > cur.from || len(parts) == 0 {
		parts = append(parts, cur)
	}
	for n, p := range parts {
		e := header(n+1, len(parts))
		if p.omitted {
			first, last := b.First, b.Last
			if p.to <= len(b.Seqs) {
				first, last = b.Seqs[p.from], b.Seqs[p.to-1]
			}
			e = fmt.Appendf(e, `,"omitted":{"records":%d,"first":%d,"last":%d,"bytes":%d,"reason":`, p.to-p.from, first, last, p.bytes)
			e = record.AppendString(e, fmt.Sprintf("a record does not fit in a dead-letter entry (at most %d bytes with its envelope)", u.maxDeadLetterEntry()))
			e = append(e, "}}"...)
		} else {
			e = append(e, `,"payload":`...)
			e = record.AppendBatch(e, u.gateway, b.ID, b.Kind, b.Items[p.from:p.to])
			e = append(e, '}')
		}
		entries = append(entries, e)
	}
	return entries, omitted
}

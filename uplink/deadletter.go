package uplink

import (
	"context"
	"fmt"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/record"
)

// DeadLetterLog is the store log that keeps batches an upstream refused permanently (an
// HTTP 400 or 413, a Pub/Sub InvalidArgument): read it with `edgegate buffer tail`, fix the
// cause, and re-inject what matters. Each entry is one JSON object:
//
//	{"uplink": "...", "batch": "<id>", "log": "raw", "first": 1, "last": 500,
//	 "at": "<RFC 3339>", "error": "...", "payload": {<the §3.3 batch, uncompressed>}}
const DeadLetterLog = "deadletter"

// deadLetter stores b in the dead-letter log and moves the uplink past it, in one
// transaction: the batch is never both lost and skipped.
func (u *Uplink) deadLetter(ctx context.Context, s *stream, b *Batch, isHead bool, cause error) error {
	e := []byte(`{"uplink":`)
	e = record.AppendString(e, u.name)
	e = append(e, `,"batch":`...)
	e = record.AppendString(e, b.ID)
	e = append(e, `,"log":`...)
	e = record.AppendString(e, b.Log)
	e = fmt.Appendf(e, `,"first":%d,"last":%d,"at":`, b.First, b.Last)
	e = record.AppendString(e, u.clock.Now().UTC().Format(record.TimeLayout))
	e = append(e, `,"error":`...)
	e = record.AppendString(e, cause.Error())
	e = append(e, `,"payload":`...)
	e = record.AppendBatch(e, u.gateway, b.ID, b.Kind, b.Items)
	e = append(e, '}')
	err := u.commit(ctx, s, b, isHead, func(tx *buffer.Tx) { tx.Append(DeadLetterLog, e) })
	if err != nil {
		return fmt.Errorf("dead-letter batch %s: %w", b.ID, err)
	}
	u.stats.DeadLetters.Add(1)
	u.stats.DeadLetterRecords.Add(uint64(b.Records))
	u.lg.Error("batch refused permanently; kept in the dead-letter log", "batch", b.ID, "records", b.Records, "err", cause)
	return nil
}

package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/logs"
)

// Permanently refused messages are kept with their reason in the buffer's log
// logs.Refused (SPEC §2): acknowledged to the client, so no in-flight window fills up, yet
// not silently dropped. No uplink reads it; `edgegate buffer tail --log refused` lists it.

// RefusedRoom is the room the buffer sets aside for the refused log (buffer.Options
// Reserved): its bound plus a quarter for the entries appended before their trims, so that
// refused messages never displace readings and a full buffer still keeps them.
func RefusedRoom(cfg config.RefusedLog) int64 {
	return int64(cfg.MaxBytes) + int64(cfg.MaxBytes)/4 + 2*maxRefusedPayload
}

// maxRefusedPayload bounds the payload kept with one refused message: a packet over the
// store's value limit is kept cut, with its full size.
const maxRefusedPayload = 128 << 10

// Refused is one entry of the refused log (JSON).
type Refused struct {
	TS     time.Time `json:"ts"` // arrival, gateway clock
	Client string    `json:"client,omitempty"`
	User   string    `json:"user,omitempty"`
	Topic  string    `json:"topic"`
	QoS    byte      `json:"qos"`
	Reason string    `json:"reason"`
	Error  string    `json:"error,omitempty"`
	// Payload is the payload as text when it is UTF-8, else PayloadBase64 holds it.
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 string  `json:"payload_base64,omitempty"`
	PayloadBytes  int     `json:"payload_bytes"`
	Truncated     bool    `json:"truncated,omitempty"` // the payload kept is its first maxRefusedPayload bytes
}

// RefusedStats count what the refused log did.
type RefusedStats struct {
	Kept    atomic.Uint64 // entries appended
	Trimmed atomic.Uint64 // oldest entries deleted to stay within refused_log bounds
	Failed  atomic.Uint64 // refused messages that could not be kept (store full or failing)
}

// refusedLog appends refused messages and keeps the log within its bounds by trimming the
// oldest entries. Safe for concurrent use.
type refusedLog struct {
	store      *buffer.Store
	maxEntries int
	maxBytes   int64
	stats      *RefusedStats

	mu    sync.Mutex // guards kept and bytes
	kept  []refusedSize
	bytes int64
}

// refusedSize is one entry the log holds: its number and value size.
type refusedSize struct {
	seq  uint64
	size int64
}

// newRefusedLog reads what the log holds (the sizes of at most its bounds' worth of
// entries) so that the bounds hold across restarts.
func newRefusedLog(s *buffer.Store, cfg config.RefusedLog, stats *RefusedStats) (*refusedLog, error) {
	l := &refusedLog{store: s, maxEntries: cfg.MaxEntries, maxBytes: int64(cfg.MaxBytes), stats: stats}
	_, err := s.Read(logs.Refused, 0, 0, func(seq uint64, v []byte) error {
		l.kept = append(l.kept, refusedSize{seq, int64(len(v))})
		l.bytes += int64(len(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("refused log: %w", err)
	}
	return l, nil
}

// entry builds the log value of a refused message.
func refusedEntry(now time.Time, client, user, topic string, qos byte, payload []byte, reason ingest.Reason, err error) []byte {
	r := Refused{TS: now.UTC(), Client: client, User: user, Topic: topic, QoS: qos, Reason: string(reason), PayloadBytes: len(payload)}
	if err != nil {
		r.Error = err.Error()
	}
	if len(payload) > maxRefusedPayload {
		payload, r.Truncated = payload[:maxRefusedPayload], true
	}
	if utf8.Valid(payload) {
		s := string(payload)
		r.Payload = &s
	} else {
		r.PayloadBase64 = base64.StdEncoding.EncodeToString(payload)
	}
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return b
}

// append queues value; the caller waits on the Pending and then calls settle.
func (l *refusedLog) append(ctx context.Context, value []byte) *buffer.Pending {
	return l.store.AppendAsync(ctx, logs.Refused, []buffer.Entry{{Value: value}})
}

// settle records the outcome of an append and trims the oldest entries past the bounds.
func (l *refusedLog) settle(ctx context.Context, size int, res []buffer.Result, err error) {
	if err != nil || len(res) != 1 {
		l.stats.Failed.Add(1)
		return
	}
	l.stats.Kept.Add(1)
	l.mu.Lock()
	l.kept = append(l.kept, refusedSize{res[0].Seq, int64(size)})
	l.bytes += int64(size)
	below, n := l.overLocked()
	l.mu.Unlock()
	if n > 0 {
		if _, err := l.store.Trim(ctx, logs.Refused, below); err == nil {
			l.stats.Trimmed.Add(uint64(n))
		}
	}
}

// trim applies the bounds to what the log held at start (they may have shrunk).
func (l *refusedLog) trim(ctx context.Context) error {
	l.mu.Lock()
	below, n := l.overLocked()
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	_, err := l.store.Trim(ctx, logs.Refused, below)
	return err
}

// overLocked forgets the oldest entries past the bounds (the newest always stays) and
// returns the number to trim below and how many they are. l.mu is held.
func (l *refusedLog) overLocked() (below uint64, n int) {
	for len(l.kept)-n > l.maxEntries || l.bytes > l.maxBytes && len(l.kept)-n > 1 {
		l.bytes -= l.kept[n].size
		below = l.kept[n].seq + 1
		n++
	}
	if n > 0 {
		l.kept = append(l.kept[:0], l.kept[n:]...)
	}
	return below, n
}

package gateway

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway/broker"
	"github.com/edgegate/edgegate/gateway/ops"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/timesync"
	"github.com/edgegate/edgegate/record"
)

const (
	holdConsumer = "clock"
	anchorKey    = "clock/anchor/" // + boot id → unix ms of that boot's start
	// UnsyncedLabel marks a reading whose time could not be corrected.
	UnsyncedLabel = "clock"
)

// heldEntry is one value of the hold log.
type heldEntry struct {
	Stamp timesync.Stamp `json:"stamp"`
	// Self: the record's ts was stamped by this gateway (arrival time, or a local sensor's
	// read), so it is as wrong as the clock was; otherwise it is the device's and kept.
	Self bool            `json:"self"`
	Rec  json.RawMessage `json:"rec"`
}

// clockHold holds self-stamped readings while the keeper waits for the clock, and releases
// them, corrected, once it syncs.
type clockHold struct {
	store       *buffer.Store
	clock       clock.Clock
	log         *slog.Logger
	k           *timesync.Keeper
	corrected   atomic.Uint64
	uncorrected atomic.Uint64
	anchored    bool                 // this boot's anchor is stored; owned by run
	anchors     map[string]time.Time // known boot starts; owned by run
}

var _ broker.Holder = (*clockHold)(nil)

// Hold diverts a message to the hold log when the clock is not trusted and one of its
// records carries a time this gateway stamped: every reading of a local sensor, and a
// device reading without its own ts (its ts equals the arrival stamp; a device ts equal to
// a wrong clock's to the millisecond is not a case worth another field on every record).
func (c *clockHold) Hold(src broker.Source, recs []record.Record, arrival time.Time) (string, []buffer.Entry, bool) {
	if !c.k.Waiting() {
		return "", nil, false
	}
	at := record.TruncTime(arrival)
	self := make([]bool, len(recs))
	any := false
	for i, r := range recs {
		self[i] = src == broker.SourceSensor || r.TS.Equal(at)
		any = any || self[i]
	}
	if !any {
		return "", nil, false
	}
	st := c.k.Now()
	entries := make([]buffer.Entry, len(recs))
	for i := range recs {
		v, err := json.Marshal(heldEntry{Stamp: st, Self: self[i], Rec: recs[i].AppendJSON(nil)})
		if err != nil {
			return "", nil, false // cannot happen: the fields are plain
		}
		entries[i] = buffer.Entry{ID: recs[i].ID, Value: v}
	}
	return logs.Hold, entries, true
}

// run checks the clock every second and releases what can be released, until ctx ends.
func (c *clockHold) run(ctx context.Context) error {
	for {
		state := c.k.Check()
		if state == timesync.StateSynced && !c.anchored {
			boot, start, _ := c.k.Anchor()
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(start.UnixMilli()))
			if err := c.store.Update(ctx, func(tx *buffer.Tx) { tx.Put(anchorKey+boot, b[:]) }); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("clock: store the boot anchor: %w", err)
			}
			c.anchored = true
			c.log.Info("clock synchronised; releasing held readings", "held", c.held())
		}
		n, err := c.release(ctx, state)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.clock.After(time.Second):
		}
	}
}

// initClock sets up the hold of self-stamped readings (a trusted clock when no keeper),
// which the ingest hook is given.
func (g *Gateway) initClock() error {
	k := g.opts.TimeKeeper
	if k == nil {
		var err error
		k, err = timesync.New(timesync.Options{Trust: true, Clock: g.opts.Clock})
		if err != nil {
			return err
		}
	}
	g.hold = &clockHold{store: g.store, clock: g.opts.Clock, log: g.log, k: k, anchors: map[string]time.Time{}}
	return nil
}

func (g *Gateway) clockStatus() ops.ClockStatus { return g.hold.status() }

// anchor returns the start of boot in wall time, when it is known.
func (c *clockHold) anchor(boot string) (time.Time, bool) {
	if t, ok := c.anchors[boot]; ok {
		return t, true
	}
	if cur, start, ok := c.k.Anchor(); ok && cur == boot {
		c.anchors[boot] = start
		return start, true
	}
	v, ok, err := c.store.Get(anchorKey + boot)
	if err != nil || !ok || len(v) != 8 {
		return time.Time{}, false
	}
	t := time.UnixMilli(int64(binary.BigEndian.Uint64(v))).UTC()
	c.anchors[boot] = t
	return t, true
}

const releaseBatch = 256

// release moves up to releaseBatch held entries to the raw log, in order, in one atomic
// update with the hold cursor: corrected when their boot's start is known, flagged when it
// never will be (another boot that never synced, or a clock trusted without a sync). It
// stops at the first entry of this boot while the clock is still awaited.
func (c *clockHold) release(ctx context.Context, state string) (int, error) {
	from, err := c.store.Cursor(logs.Hold, holdConsumer)
	if err != nil {
		return 0, err
	}
	var out [][]byte
	var fixed, flagged uint64
	next := from
	floor := c.k.Floor()
	_, err = c.store.Read(logs.Hold, from, releaseBatch, func(seq uint64, v []byte) error {
		var h heldEntry
		var r record.Record
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("clock: held entry %d: %w", seq, err)
		}
		if err := json.Unmarshal(h.Rec, &r); err != nil {
			return fmt.Errorf("clock: held record %d: %w", seq, err)
		}
		if h.Self {
			if h.Stamp.Boot == c.k.Boot() && state == timesync.StateWaiting {
				return buffer.ErrStop
			}
			oldTS := r.TS
			if _, ok := c.anchor(h.Stamp.Boot); ok { // now cached in c.anchors
				d, _ := timesync.Correction(h.Stamp, c.anchors)
				r.TS = record.TruncTime(r.TS.Add(d))
				fixed++
			} else {
				r.TS = record.TruncTime(timesync.Clamp(r.TS, floor))
				if r.Labels == nil {
					r.Labels = map[string]string{}
				}
				r.Labels[UnsyncedLabel] = "unsynced"
				flagged++
			}
			// A hash id is a function of (series, ts, value): it follows the new ts.
			switch {
			case r.Raw && r.ID == record.RawID(r.Topic, oldTS, r.Payload):
				r.ID = record.RawID(r.Topic, r.TS, r.Payload)
			case !r.Raw && r.ID == record.HashID(r.Series, oldTS, r.Value):
				r.ID = record.HashID(r.Series, r.TS, r.Value)
			}
		}
		out = append(out, r.AppendJSON(nil))
		next = seq + 1
		return nil
	})
	if err != nil || next == from {
		return 0, err
	}
	err = c.store.Update(ctx, func(tx *buffer.Tx) {
		for _, v := range out {
			tx.Append(logs.Raw, v)
		}
		tx.SetCursor(logs.Hold, holdConsumer, next)
	})
	if err != nil {
		return 0, fmt.Errorf("clock: release held readings: %w", err)
	}
	c.corrected.Add(fixed)
	c.uncorrected.Add(flagged)
	if flagged > 0 {
		c.log.Warn("released readings whose time could not be corrected, labelled clock=unsynced", "count", flagged)
	}
	if _, err := c.store.Trim(ctx, logs.Hold, next); err != nil && ctx.Err() == nil {
		c.log.Warn("clock: trim the hold log", "err", err)
	}
	return len(out), nil
}

// held is the number of readings waiting in the hold log.
func (c *clockHold) held() uint64 {
	last, err := c.store.LastSeq(logs.Hold)
	if err != nil || last == 0 {
		return 0
	}
	next, err := c.store.Cursor(logs.Hold, holdConsumer)
	if err != nil || next > last {
		return 0
	}
	if next == 0 {
		next = 1
	}
	return last - next + 1
}

func (c *clockHold) status() ops.ClockStatus {
	st := c.k.State()
	return ops.ClockStatus{
		Synced: st != timesync.StateWaiting, State: st, Held: c.held(),
		Corrected: c.corrected.Load(), Uncorrected: c.uncorrected.Load(),
	}
}

package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Durable state of a pipeline in the store's state KV (DESIGN invariant 3):
//
//	pipeline/<name>/meta                   watermark, newest event time, arrival counter, window shape, checkpoint generation
//	pipeline/<name>/w/<key id>/<start>     one window, slot 0: bounds, next pane index, aggregates
//	pipeline/<name>/w/<key id>/<start>/1   the same window, slot 1
//
// One entry per window keeps each checkpoint proportional to what changed since the last
// one, and every value small whatever the window kind. <key id> is a hash of the series
// (the series itself is in the value); <start> is hex of the start with its sign bit
// flipped, so keys sort by start.
//
// A checkpoint may write more window state than one store transaction holds. Its windows
// are then written in transactions ahead of the last one, which appends the panes and
// commits the meta (with the checkpoint's generation), the cursor and what fits of the
// rest: the flip. Each window has two slots and each value carries the generation that
// wrote it; a checkpoint writes a window into the slot its committed version is not in, so
// a crash before the flip leaves the committed state whole. At load, a window is its slot
// of the highest generation not above the meta's; a slot of a higher one was written by a
// checkpoint that never flipped, and is deleted. A window dropped by a checkpoint is
// deleted in its flip, or, when that does not fit, marked dropped (a tombstone value) in
// its other slot before the flip and deleted after. Stores of version 1 (no generation,
// slot 0 only) load as generation 0.

const (
	stateVersion  = 1 // the version of window values without a generation, and of old metas
	stateVersion2 = 2 // values and meta with a checkpoint generation
)

// Kinds of version-2 window values.
const (
	slotWindow byte = 0
	slotTomb   byte = 1
)

// slotSuffix ends the key of a window's slot 1.
const slotSuffix = "/1"

func statePrefix(pipeline string) string  { return "pipeline/" + pipeline + "/" }
func metaKey(pipeline string) string      { return statePrefix(pipeline) + "meta" }
func windowPrefix(pipeline string) string { return statePrefix(pipeline) + "w/" }

func keyID(series string) string {
	sum := sha256.Sum256([]byte(series))
	return hex.EncodeToString(sum[:12])
}

func (r *Runner) windowKey(dst []byte, ks *keyState, start int64) []byte {
	if ks.id == "" {
		ks.id = keyID(ks.key)
	}
	dst = append(dst, r.winPrefix...)
	dst = append(dst, ks.id...)
	dst = append(dst, '/')
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(start)^(1<<63))
	return hex.AppendEncode(dst, b[:])
}

type meta struct {
	shape   uint64
	wm      int64
	maxTS   int64
	arrival uint64
	gen     uint64 // the checkpoint generation (see above); 0 in the core's
}

func (m *meta) appendTo(dst []byte) []byte {
	dst = append(dst, stateVersion2)
	dst = binary.BigEndian.AppendUint64(dst, m.shape)
	dst = binary.AppendVarint(dst, m.wm)
	dst = binary.AppendVarint(dst, m.maxTS)
	dst = binary.AppendUvarint(dst, m.arrival)
	return binary.AppendUvarint(dst, m.gen)
}

func decodeMeta(b []byte) (meta, error) {
	d := decoder{b: b}
	var m meta
	v := d.byte()
	if v != stateVersion && v != stateVersion2 {
		return m, errors.New("unknown meta version")
	}
	m.shape = d.u64()
	m.wm = d.varint()
	m.maxTS = d.varint()
	m.arrival = d.uvarint()
	if v == stateVersion2 {
		m.gen = d.uvarint()
	}
	return m, d.done()
}

func (c *Core) meta() meta {
	return meta{shape: c.shape, wm: c.wm, maxTS: c.maxTS, arrival: c.arrival}
}

func (c *Core) restoreMeta(m meta) {
	c.wm, c.maxTS, c.arrival = m.wm, m.maxTS, m.arrival
}

const (
	flagFired = 1 << iota
	flagChanged
)

func appendWindow(dst []byte, w *window) []byte {
	dst = append(dst, stateVersion)
	return appendWindowBody(dst, w)
}

// appendSlot encodes w (nil: a tombstone) as written by checkpoint gen.
func appendSlot(dst []byte, w *window, gen uint64) []byte {
	dst = append(dst, stateVersion2)
	dst = binary.AppendUvarint(dst, gen)
	if w == nil {
		return append(dst, slotTomb)
	}
	dst = append(dst, slotWindow)
	return appendWindowBody(dst, w)
}

// decodeSlot reads the generation of a saved window value and whether it is a tombstone.
// Version 1 values are windows of generation 0.
func decodeSlot(b []byte) (gen uint64, tomb bool, err error) {
	d := decoder{b: b}
	switch d.byte() {
	case stateVersion:
		return 0, false, nil
	case stateVersion2:
		gen = d.uvarint()
		k := d.byte()
		if d.err != nil {
			return 0, false, d.err
		}
		switch k {
		case slotWindow:
			return gen, false, nil
		case slotTomb:
			return gen, true, d.done()
		}
		return 0, false, errors.New("unknown window value kind")
	}
	return 0, false, errors.New("unknown window version")
}

func appendWindowBody(dst []byte, w *window) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(w.ks.key)))
	dst = append(dst, w.ks.key...)
	dst = binary.AppendVarint(dst, w.start)
	dst = binary.AppendVarint(dst, w.end)
	dst = binary.AppendVarint(dst, w.index)
	var f byte
	if w.fired {
		f |= flagFired
	}
	if w.changed {
		f |= flagChanged
	}
	dst = append(dst, f)
	a := &w.agg
	dst = binary.AppendVarint(dst, a.count)
	for _, v := range [...]float64{a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last} {
		dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(v))
	}
	dst = binary.AppendVarint(dst, a.firstTS)
	dst = binary.AppendVarint(dst, a.lastTS)
	dst = binary.AppendUvarint(dst, a.firstArr)
	return binary.AppendUvarint(dst, a.lastArr)
}

// restoreWindow adds a saved window (a value of either version, not a tombstone) to the
// core, in slot.
func (c *Core) restoreWindow(b []byte, slot uint8) error {
	d := decoder{b: b}
	switch d.byte() {
	case stateVersion:
	case stateVersion2:
		d.uvarint()
		if d.byte() != slotWindow {
			return errors.New("not a window")
		}
	default:
		return errors.New("unknown window version")
	}
	key := string(d.bytes(int(d.uvarint())))
	var w window
	w.start = d.varint()
	w.end = d.varint()
	w.index = d.varint()
	f := d.byte()
	a := &w.agg
	a.count = d.varint()
	for _, p := range [...]*float64{&a.sum, &a.min, &a.max, &a.mean, &a.m2, &a.first, &a.last} {
		*p = math.Float64frombits(d.u64())
	}
	a.firstTS = d.varint()
	a.lastTS = d.varint()
	a.firstArr = d.uvarint()
	a.lastArr = d.uvarint()
	if err := d.done(); err != nil {
		return err
	}
	if w.end <= w.start {
		return fmt.Errorf("window [%d,%d) is empty", w.start, w.end)
	}
	ks := c.keys[key]
	if ks == nil {
		ks = c.newKey(key)
	}
	if ks.find(w.start) != nil {
		return fmt.Errorf("window [%d,%d) of %q twice", w.start, w.end, key)
	}
	nw := c.newWindow(ks, w.start, w.end, f&flagFired != 0)
	nw.index, nw.agg, nw.changed, nw.stored, nw.slot = w.index, w.agg, f&flagChanged != 0, true, slot
	if c.spec.Early > 0 {
		c.rearmEarly = true
	}
	return nil
}

type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated state")

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if n < 0 || len(d.b) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return errors.New("trailing bytes in state")
	}
	return nil
}

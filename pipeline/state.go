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
//	pipeline/<name>/meta                 watermark, newest event time, arrival counter, window shape
//	pipeline/<name>/w/<key id>/<start>   one window: bounds, next pane index, aggregates
//
// One entry per window keeps each commit proportional to what the step changed, and every
// value small whatever the window kind. <key id> is a hash of the series (the series itself
// is in the value); <start> is hex of the start with its sign bit flipped, so keys sort by
// start.

const stateVersion = 1

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
}

func (m *meta) appendTo(dst []byte) []byte {
	dst = append(dst, stateVersion)
	dst = binary.BigEndian.AppendUint64(dst, m.shape)
	dst = binary.AppendVarint(dst, m.wm)
	dst = binary.AppendVarint(dst, m.maxTS)
	return binary.AppendUvarint(dst, m.arrival)
}

func decodeMeta(b []byte) (meta, error) {
	d := decoder{b: b}
	var m meta
	if d.byte() != stateVersion {
		return m, errors.New("unknown meta version")
	}
	m.shape = d.u64()
	m.wm = d.varint()
	m.maxTS = d.varint()
	m.arrival = d.uvarint()
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

// restoreWindow adds a saved window to the core.
func (c *Core) restoreWindow(b []byte) error {
	d := decoder{b: b}
	if d.byte() != stateVersion {
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
	nw.index, nw.agg, nw.changed, nw.stored = w.index, w.agg, f&flagChanged != 0, true
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

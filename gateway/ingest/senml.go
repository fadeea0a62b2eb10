package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// SenML (RFC 8428) handling, decided here and documented in the README:
//
//   - Base fields bn, bt, bu, bv apply to their record and every later one until a record
//     sets them again. bs and s (sums) are not readings and are ignored, as are ut and l.
//   - A record yields a reading when it has v (value bv + v) or vb (1 for true, 0 for
//     false). Records with vs or vd (string and data values), or with no value at all
//     (base-only records), yield none. More than one of v, vs, vb, vd in a record is an
//     error.
//   - Name is bn + n; it must be non-empty and use only A-Z a-z 0-9 - : . / _, starting
//     with a letter or digit (RFC 8428 §4.5.1).
//   - Time is bt + t in seconds: at or above 2^28 it is absolute (since 1970); below, it is
//     relative to the arrival of the message (0 or absent: "now", negative: the past).
//     Absolute times must fall in the years 2000..2200.
//   - Unit is u, else bu, else the route's unit.
//   - bver above 10 is refused (RFC 8428 §4.4); every bver of a pack must agree.
//   - Unknown labels are ignored, except those ending in '_', which RFC 8428 §4.4 says a
//     receiver must understand: the pack is refused.
//   - A pack that yields no reading is refused as malformed.

// senmlRelativeLimit: SenML times below 2^28 s are relative to now (RFC 8428 §4.5.3).
const senmlRelativeLimit = 1 << 28

const senmlMaxVersion = 10

// senmlRecord holds the labels of one record that edgegate reads. Values, not pointers:
// this runs per label of every message, and a pointer per label was an allocation each.
type senmlRecord struct {
	bn, bu, n, u       opt[string]
	bt, bv, t, v, bver opt[float64]
	vb                 opt[bool]
	values             int // how many of v, vs, vb, vd are present
}

// opt is a label that may be absent.
type opt[T any] struct {
	val T
	ok  bool
}

// decodeSenML reads a SenML JSON pack. now resolves relative times.
func decodeSenML(p []byte, now time.Time) ([]reading, error) {
	t := bytes.TrimSpace(p)
	if len(t) == 0 || t[0] != '[' {
		return nil, malformed("SenML pack must be a JSON array")
	}
	if !utf8.Valid(t) {
		return nil, malformed("payload is not valid UTF-8")
	}
	sc := jsonScanner{p: t}
	var (
		out   []reading
		base  = senmlBase{version: -1}
		count int
	)
	err := sc.array(func() error {
		count++
		if sc.peek() != '{' {
			if _, err := sc.value(1); err != nil {
				return err
			}
			return malformed("SenML record %d is not a JSON object", count)
		}
		var r senmlRecord
		if err := sc.object(r.set); err != nil {
			return senmlErr(count, err)
		}
		if err := base.update(&r, count); err != nil {
			return err
		}
		rd, ok, err := base.reading(&r, count, now)
		if err != nil || !ok {
			return err
		}
		if len(out) == MaxReadings {
			return malformed("more than %d readings in one message", MaxReadings)
		}
		out = append(out, rd)
		return nil
	})
	if err == nil {
		err = sc.end("SenML pack")
	}
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, malformed("empty SenML pack")
	}
	if len(out) == 0 {
		return nil, malformed("SenML pack has no numeric reading (v or vb)")
	}
	return out, nil
}

// senmlBase is what the base fields of a pack's records set so far (RFC 8428 §4.1).
type senmlBase struct {
	name, unit string
	time, val  float64
	version    float64 // -1: not set
}

// update takes the base fields of record count.
func (b *senmlBase) update(r *senmlRecord, count int) error {
	if r.bver.ok {
		v := r.bver.val
		if v != math.Trunc(v) || v < 1 {
			return malformed("SenML record %d: bver must be a positive integer", count)
		}
		if v > senmlMaxVersion {
			return malformed("SenML record %d: version %g is not supported (at most %d)", count, v, senmlMaxVersion)
		}
		if b.version >= 0 && b.version != v {
			return malformed("SenML record %d: bver %g differs from the pack's %g", count, v, b.version)
		}
		b.version = v
	}
	if r.bn.ok {
		b.name = r.bn.val
	}
	if r.bt.ok {
		b.time = r.bt.val
	}
	if r.bu.ok {
		b.unit = r.bu.val
	}
	if r.bv.ok {
		b.val = r.bv.val
	}
	return nil
}

// reading resolves record count against the base: ok is false for a record without a
// numeric value (string, data, sum-only or base-only).
func (b *senmlBase) reading(r *senmlRecord, count int, now time.Time) (rd reading, ok bool, err error) {
	if r.values > 1 {
		return rd, false, malformed("SenML record %d has more than one of v, vs, vb, vd", count)
	}
	var value float64
	switch {
	case r.v.ok:
		value = b.val + r.v.val
	case r.vb.ok:
		if r.vb.val {
			value = 1
		}
	default:
		return rd, false, nil
	}
	if math.IsInf(value, 0) {
		return rd, false, malformed("SenML record %d: value out of range", count)
	}
	name := b.name
	if r.n.ok {
		name += r.n.val
	}
	if err := checkSenMLName(name); err != nil {
		return rd, false, senmlErr(count, err)
	}
	rd = reading{field: name, named: true, value: value, unit: b.unit, hasTS: true}
	if r.u.ok {
		rd.unit = r.u.val
	}
	if len(rd.unit) > maxUnitLen {
		return rd, false, malformed("SenML record %d: unit longer than %d bytes", count, maxUnitLen)
	}
	tm := b.time
	if r.t.ok {
		tm += r.t.val
	}
	if rd.ts, err = senmlTime(tm, count, now); err != nil {
		return rd, false, err
	}
	return rd, true, nil
}

// senmlTime resolves a record's time: absolute (seconds since the epoch) from
// senmlRelativeLimit on, else relative to now.
func senmlTime(tm float64, count int, now time.Time) (time.Time, error) {
	switch {
	case math.IsInf(tm, 0) || math.Abs(tm) > 1e13:
		return time.Time{}, malformed("SenML record %d: time out of range", count)
	case tm >= senmlRelativeLimit:
		ts := unixSeconds(tm)
		if err := checkTS(ts); err != nil {
			return time.Time{}, malformed("SenML record %d: time %.3f is %v", count, tm, err)
		}
		return ts, nil
	default:
		return now.Add(time.Duration(math.Round(tm*1e6)) * time.Microsecond), nil
	}
}

func senmlErr(rec int, err error) error {
	if e, ok := err.(*Error); ok {
		return &Error{Reason: e.Reason, Err: fmt.Errorf("SenML record %d: %w", rec, e.Err)}
	}
	return err
}

// set fills one SenML label of the record from its JSON value.
func (r *senmlRecord) set(name string, raw json.RawMessage) error {
	str := func(o *opt[string]) (err error) {
		o.val, err = jsonString(raw, name, maxFieldLen*2)
		o.ok = true
		return err
	}
	num := func(o *opt[float64]) (err error) {
		if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
			return malformed("%q must be a number", name)
		}
		o.val, _, err = jsonValue(raw)
		o.ok = true
		return err
	}
	switch name {
	case "bn":
		return str(&r.bn)
	case "bu":
		return str(&r.bu)
	case "n":
		return str(&r.n)
	case "u":
		return str(&r.u)
	case "bt":
		return num(&r.bt)
	case "bv":
		return num(&r.bv)
	case "t":
		return num(&r.t)
	case "bver":
		return num(&r.bver)
	case "v":
		r.values++
		return num(&r.v)
	case "vb":
		if raw[0] != 't' && raw[0] != 'f' {
			return malformed(`"vb" must be true or false`)
		}
		r.vb = opt[bool]{raw[0] == 't', true}
		r.values++
	case "vs", "vd":
		if raw[0] != '"' {
			return malformed("%q must be a string", name)
		}
		r.values++
	case "bs", "s", "ut":
		var ignored opt[float64]
		return num(&ignored)
	case "l":
	default:
		if strings.HasSuffix(name, "_") {
			return malformed("label %q must be understood (RFC 8428 §4.4) and is not", name)
		}
	}
	return nil
}

// checkSenMLName applies RFC 8428 §4.5.1 to a resolved name.
func checkSenMLName(name string) error {
	if name == "" {
		return malformed("name (bn + n) is empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return malformed("name %q must start with a letter or a digit", name)
		}
		if !alnum && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return malformed("name %q: only A-Z a-z 0-9 - : . / _ are allowed", name)
		}
	}
	return nil
}

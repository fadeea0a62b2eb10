package ingest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// reading is what a payload format yields for one value.
type reading struct {
	field string // JSON field name ("value" for a single reading), or the SenML name
	named bool   // the series gets "/<field>" unless its template places {field} itself
	value float64
	ts    time.Time
	hasTS bool
	id    string // the device's id for this reading, if it sent one
	unit  string // the payload's unit, overriding the route's
}

// Bounds on what a device may send in the fields edgegate keeps.
const (
	maxIDLen    = 256
	maxUnitLen  = 32
	maxFieldLen = 128
	// MaxReadings bounds the readings one message may carry (fields of a JSON object,
	// records of a SenML pack): each becomes a record in the buffer.
	MaxReadings = 1024
)

// decodeJSON reads a JSON object (SPEC §2):
//
//	{"value": 21.5, "ts": <unix s | unix ms | RFC 3339>, "id": "...", "unit": "Cel"}
//
// one reading; or, without "value", one reading per numeric (or boolean: 1/0) member
// other than ts, id and unit, in payload order:
//
//	{"ts": ..., "temperature": 21.5, "humidity": 40}
//
// Members of other types (strings, objects, arrays, null) are ignored. "id" names the
// single reading; with several readings, reading <field> gets id "<id>:<field>". "unit"
// applies to every reading. A bare number is accepted too, as devices often send one on a
// json route.
func decodeJSON(p []byte) ([]reading, error) {
	t := bytes.TrimSpace(p)
	if len(t) == 0 {
		return nil, malformed("empty payload")
	}
	if t[0] != '{' {
		if rs, err := decodeNumber(t); err == nil {
			return rs, nil
		}
		return nil, malformed("payload is not a JSON object or a number")
	}
	if !utf8.Valid(t) {
		return nil, malformed("payload is not valid UTF-8")
	}
	var obj jsonObject
	sc := jsonScanner{p: t}
	err := sc.object(obj.member)
	if err == nil {
		err = sc.end("JSON object")
	}
	if err != nil {
		return nil, err
	}
	return obj.readings()
}

// jsonObject is what the members of a JSON reading set.
type jsonObject struct {
	single         reading
	hasSingle      bool
	fields         []reading
	ts             time.Time
	hasTS          bool
	id, unit       string
	hasID, hasUnit bool
	tooMany        bool
}

// member takes one member of the object.
func (o *jsonObject) member(name string, raw json.RawMessage) error {
	switch name {
	case "value":
		v, ok, err := jsonValue(raw)
		if err != nil {
			return err
		}
		if !ok {
			return malformed(`"value" must be a number or a boolean`)
		}
		o.single, o.hasSingle = reading{field: "value", value: v}, true
	case "ts":
		var err error
		o.ts, o.hasTS, err = parseTS(raw)
		return err
	case "id":
		s, err := jsonString(raw, "id", maxIDLen)
		if err != nil {
			return err
		}
		if s == "" {
			return malformed(`"id" must not be empty`)
		}
		o.id, o.hasID = s, true
	case "unit":
		s, err := jsonString(raw, "unit", maxUnitLen)
		if err != nil {
			return err
		}
		o.unit, o.hasUnit = s, true
	default:
		v, ok, err := jsonValue(raw)
		if err != nil || !ok {
			return err // other types are ignored
		}
		if err := checkField(name); err != nil {
			return err
		}
		if len(o.fields) == MaxReadings {
			o.tooMany = true
			return nil
		}
		o.fields = append(o.fields, reading{field: name, named: true, value: v})
	}
	return nil
}

// readings are the object's readings, with its ts, unit and id.
func (o *jsonObject) readings() ([]reading, error) {
	fields := o.fields
	if o.hasSingle {
		fields = append(fields[:0], o.single)
	} else if o.tooMany {
		return nil, malformed("more than %d readings in one message", MaxReadings)
	}
	if len(fields) == 0 {
		return nil, malformed(`JSON object has no numeric "value" and no numeric field`)
	}
	for i := range fields {
		r := &fields[i]
		r.ts, r.hasTS = o.ts, o.hasTS
		if o.hasUnit {
			r.unit = o.unit
		}
		if o.hasID {
			r.id = o.id
			if r.named {
				r.id = o.id + ":" + r.field
			}
		}
	}
	return fields, nil
}

// nameSet holds the member names of one object. Objects have a few members, and this runs
// for every object of every message (each record of a SenML pack): a scan of an array on
// the stack for the first ones, a map only past them.
type nameSet struct {
	few  [8]string
	n    int
	many map[string]struct{}
}

// add adds name; false if it was there already.
func (s *nameSet) add(name string) bool {
	if s.many == nil {
		for _, f := range s.few[:s.n] {
			if f == name {
				return false
			}
		}
		if s.n < len(s.few) {
			s.few[s.n] = name
			s.n++
			return true
		}
		s.many = make(map[string]struct{}, 2*len(s.few))
		for _, f := range s.few {
			s.many[f] = struct{}{}
		}
	}
	if _, dup := s.many[name]; dup {
		return false
	}
	s.many[name] = struct{}{}
	return true
}

// jsonValue reads a JSON number, or a boolean as 1 or 0. ok is false for other types.
func jsonValue(raw json.RawMessage) (v float64, ok bool, err error) {
	switch raw[0] {
	case 't':
		return 1, true, nil
	case 'f':
		return 0, true, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		v, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return 0, false, malformed("number %s is out of range", raw)
		}
		return v, true, nil
	}
	return 0, false, nil
}

// jsonString reads a JSON string member of at most max bytes.
func jsonString(raw json.RawMessage, name string, max int) (string, error) {
	if raw[0] != '"' {
		return "", malformed("%q must be a string", name)
	}
	s, ok := unquote(raw)
	if !ok {
		return "", malformed("%q must be a string", name)
	}
	if len(s) > max {
		return "", malformed("%q is longer than %d bytes", name, max)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", malformed("%q contains a control character", name)
		}
	}
	return s, nil
}

// checkField checks a JSON member name that becomes part of a series name.
func checkField(name string) error {
	if name == "" || len(name) > maxFieldLen {
		return malformed("field name %q: 1 to %d bytes expected", name, maxFieldLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return malformed("field name %q contains a control character", name)
		}
	}
	return nil
}

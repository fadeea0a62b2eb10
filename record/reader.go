package record

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Reading is what a pipeline reads of a stored record: its topic, series, event time and
// value. Parsed by ParseReading, its strings point into the bytes parsed.
type Reading struct {
	Topic  string
	Series string
	TS     int64 // event time, Unix milliseconds
	Value  float64
}

// ParseReading reads the SPEC §3.1 JSON of a record into in, the way Record.UnmarshalJSON
// does, and reports whether it is a reading (false: a raw forwarded message, which
// pipelines ignore). The strings of in point into b: they are valid while b is.
//
// The records the gateway stores take a fast path that allocates nothing; anything
// unusual (escapes, unknown keys, nulls, duplicate keys, invalid input) goes through
// Record.UnmarshalJSON, so both paths agree on every input (FuzzParseReading checks it).
func ParseReading(b []byte, in *Reading) (reading bool, err error) {
	if parseFast(b, in) {
		return true, nil
	}
	var r Record
	if err := r.UnmarshalJSON(b); err != nil {
		return false, err
	}
	if r.Raw {
		return false, nil
	}
	*in = Reading{Topic: r.Topic, Series: r.Series, TS: r.TS.UnixMilli(), Value: r.Value}
	return true, nil
}

const (
	seenID = 1 << iota
	seenTopic
	seenSeries
	seenTS
	seenValue
	seenUnit
	seenLabels
)

// parseFast parses the common form of a reading; false means "use the slow path".
func parseFast(b []byte, in *Reading) bool {
	p := scanner{b: b}
	p.ws()
	if !p.eat('{') {
		return false
	}
	var seen int
	var ts string
	*in = Reading{}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		var bit int
		switch key {
		case "id":
			bit = seenID
			_, ok = p.str()
		case "topic":
			bit = seenTopic
			in.Topic, ok = p.str()
		case "series":
			bit = seenSeries
			in.Series, ok = p.str()
		case "ts":
			bit = seenTS
			ts, ok = p.str()
		case "value":
			bit = seenValue
			in.Value, ok = p.number()
		case "unit":
			bit = seenUnit
			_, ok = p.str()
		case "labels":
			bit = seenLabels
			ok = p.labels()
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		p.ws()
		if p.eat(',') {
			continue
		}
		if !p.eat('}') {
			return false
		}
		break
	}
	p.ws()
	if p.i != len(b) || seen&(seenTS|seenValue) != seenTS|seenValue || in.Topic == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return false
	}
	in.TS = t.UnixMilli()
	return true
}

type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a JSON string without escapes; the result aliases p.b.
func (p *scanner) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	j := bytes.IndexByte(p.b[p.i:], '"')
	if j < 0 {
		return "", false
	}
	s := p.b[p.i : p.i+j]
	p.i += j + 1
	ascii := true
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return "", false // escapes and control characters: the slow path decides
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(s) {
		return "", false // encoding/json replaces invalid UTF-8: the slow path does it
	}
	if len(s) == 0 {
		return "", true
	}
	return unsafe.String(&s[0], len(s)), true
}

// number reads a JSON number (its exact grammar: strconv accepts more).
func (p *scanner) number() (float64, bool) {
	start := p.i
	p.eat('-')
	switch {
	case p.eat('0'):
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return 0, false
	}
	if p.eat('.') && !p.digits() {
		return 0, false
	}
	if p.eat('e') || p.eat('E') {
		if !p.eat('+') {
			p.eat('-')
		}
		if !p.digits() {
			return 0, false
		}
	}
	s := p.b[start:p.i]
	v, err := strconv.ParseFloat(unsafe.String(&s[0], len(s)), 64)
	return v, err == nil
}

func (p *scanner) digits() bool {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}

// labels reads an object of string values.
func (p *scanner) labels() bool {
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return true
	}
	for {
		p.ws()
		if _, ok := p.str(); !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		if _, ok := p.str(); !ok {
			return false
		}
		p.ws()
		if p.eat('}') {
			return true
		}
		if !p.eat(',') {
			return false
		}
	}
}

// TopicOf returns the "topic" of a stored record ("" when b is not one), for uplinks'
// forward filters: without decoding the rest, whatever the order of the keys. Anything
// unusual (escapes, unknown values) goes through encoding/json, so the answer is always
// the one a full decode gives (FuzzTopicOf checks it).
func TopicOf(b []byte) string {
	if t, ok := topicFast(b); ok {
		return t
	}
	var r struct {
		Topic string `json:"topic"`
	}
	if json.Unmarshal(b, &r) != nil {
		return ""
	}
	return r.Topic
}

// topicFast scans the top level of a record for its topic (the last one, as encoding/json
// keeps); false means "use the slow path".
func topicFast(b []byte) (string, bool) {
	p := scanner{b: b}
	p.ws()
	if !p.eat('{') {
		return "", false
	}
	var topic string
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return "", false
		}
		p.ws()
		if !p.eat(':') {
			return "", false
		}
		p.ws()
		switch key {
		case "topic":
			topic, ok = p.str()
		case "value":
			_, ok = p.number()
		case "labels":
			ok = p.labels()
		default:
			if strings.EqualFold(key, "topic") {
				return "", false // encoding/json folds case: the slow path decides
			}
			_, ok = p.str()
		}
		if !ok {
			return "", false
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if !p.eat('}') {
			return "", false
		}
		break
	}
	p.ws()
	if p.i != len(b) {
		return "", false
	}
	return strings.Clone(topic), true
}

// TimeOf returns the event time of a stored entry: "ts" for a record, "end" for a pane
// (its window's end); false when it has neither.
func TimeOf(b []byte) (time.Time, bool) {
	var r struct {
		TS  time.Time `json:"ts"`
		End time.Time `json:"end"`
	}
	if json.Unmarshal(b, &r) != nil {
		return time.Time{}, false
	}
	if r.TS.IsZero() {
		return r.End, !r.End.IsZero()
	}
	return r.TS, true
}

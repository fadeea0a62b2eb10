package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// reading is what a payload format yields for one value.
type reading struct {
	value float64
	ts    time.Time
	hasTS bool
	id    string
	unit  string
}

// Bounds on what a device may send in the fields edgegate keeps.
const (
	maxIDLen   = 256
	maxUnitLen = 32
)

// The timestamps a device may send: from 2000-01-01 to 2200-01-01. Anything else is far
// more likely a unit mistake (seconds for milliseconds) than a real reading.
var (
	minTS = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTS = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// decodeNumber reads a bare number such as 21.5, timestamped on arrival.
func decodeNumber(p []byte) (reading, error) {
	s := string(bytes.TrimSpace(p))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || s == "" || !isJSONNumber(s) {
		return reading{}, malformed("payload is not a number")
	}
	return reading{value: v}, nil
}

// isJSONNumber rejects what ParseFloat takes but no device means: "NaN", "Inf", "0x1p3",
// "1_000".
func isJSONNumber(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

type jsonReading struct {
	Value *json.Number    `json:"value"`
	TS    json.RawMessage `json:"ts"`
	ID    *string         `json:"id"`
	Unit  *string         `json:"unit"`
}

// decodeJSON reads {"value": 21.5, "ts": <unix ms | RFC 3339>, "id": "...", "unit": "Cel"}.
// A bare number is accepted too, as devices often send one on a json route.
func decodeJSON(p []byte) (reading, error) {
	t := bytes.TrimSpace(p)
	if len(t) > 0 && t[0] != '{' {
		if rd, err := decodeNumber(t); err == nil {
			return rd, nil
		}
		return reading{}, malformed("payload is not a JSON object or a number")
	}
	var j jsonReading
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return reading{}, malformed("invalid JSON: %v", err)
	}
	if dec.More() {
		return reading{}, malformed("invalid JSON: data after the object")
	}
	if j.Value == nil {
		return reading{}, malformed(`JSON object has no numeric "value"`)
	}
	v, err := j.Value.Float64()
	if err != nil || math.IsInf(v, 0) {
		return reading{}, malformed(`"value" %s is out of range`, j.Value.String())
	}
	rd := reading{value: v}
	if len(j.TS) > 0 && string(j.TS) != "null" {
		ts, err := parseTS(j.TS)
		if err != nil {
			return reading{}, err
		}
		rd.ts, rd.hasTS = ts, true
	}
	if j.ID != nil {
		if *j.ID == "" || len(*j.ID) > maxIDLen || !utf8.ValidString(*j.ID) {
			return reading{}, malformed(`"id" must be a non-empty string of at most %d bytes`, maxIDLen)
		}
		rd.id = *j.ID
	}
	if j.Unit != nil {
		if len(*j.Unit) > maxUnitLen || !utf8.ValidString(*j.Unit) {
			return reading{}, malformed(`"unit" must be a string of at most %d bytes`, maxUnitLen)
		}
		rd.unit = *j.Unit
	}
	return rd, nil
}

// parseTS reads a timestamp: a JSON number of unix milliseconds, or an RFC 3339 string.
func parseTS(raw json.RawMessage) (time.Time, error) {
	var ts time.Time
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return ts, malformed(`"ts": %v`, err)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ts, malformed(`"ts" %q is not RFC 3339 (e.g. 2026-11-26T12:00:00.123Z)`, s)
		}
		ts = t
	} else {
		ms, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsNaN(ms) || math.IsInf(ms, 0) {
			return ts, malformed(`"ts" must be unix milliseconds or an RFC 3339 string`)
		}
		if math.Abs(ms) > 1e15 {
			return ts, malformed(`"ts" %s is out of range`, raw)
		}
		ts = time.UnixMilli(int64(ms)).UTC()
	}
	if ts.Before(minTS) || !ts.Before(maxTS) {
		return ts, malformed(`"ts" %s is outside 2000..2200 (unix milliseconds expected)`, raw)
	}
	return ts.UTC(), nil
}

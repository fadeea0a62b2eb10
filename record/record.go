// Package record defines what flows through edgegate and what the cloud receives: readings
// (SPEC §3.1), window panes (§3.2) and batches (§3.3), their JSON forms and deterministic ids.
package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// TimeLayout is how every timestamp leaves edgegate: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Record is one reading (SPEC §3.1), or one unrouted message forwarded raw (Payload set, no
// Series and no Value). Times are kept at millisecond precision, the precision of the windows.
type Record struct {
	ID     string
	Topic  string
	Series string
	TS     time.Time
	Value  float64
	Unit   string
	Labels map[string]string
	// Payload is set only for raw (unrouted) messages.
	Payload []byte
	// Raw marks a raw forwarded message: it has a Payload and no Series/Value.
	Raw bool
}

// TruncTime normalises t to what a record keeps: UTC, millisecond precision.
func TruncTime(t time.Time) time.Time {
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// HashID is the deterministic id of a reading without a device id: a hash of (series, ts,
// value), so a re-sent reading keeps its id (SPEC §3.1).
func HashID(series string, ts time.Time, value float64) string {
	h := sha256.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(ts.UnixMilli()))
	binary.BigEndian.PutUint64(b[8:], math.Float64bits(value))
	h.Write([]byte(series))
	h.Write([]byte{0})
	h.Write(b[:])
	var sum [sha256.Size]byte
	return "h-" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// RawID is the deterministic id of a raw message: a hash of (topic, arrival time, payload).
func RawID(topic string, ts time.Time, payload []byte) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(ts.UnixMilli()))
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(b[:])
	h.Write(payload)
	var sum [sha256.Size]byte
	return "r-" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// AppendJSON appends the SPEC §3.1 JSON form of r to dst. Keys come in a fixed order and
// labels sorted, so equal records encode to equal bytes.
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, r.ID)
	dst = append(dst, `,"topic":`...)
	dst = AppendString(dst, r.Topic)
	if !r.Raw {
		dst = append(dst, `,"series":`...)
		dst = AppendString(dst, r.Series)
	}
	dst = append(dst, `,"ts":"`...)
	dst = r.TS.UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, '"')
	if r.Raw {
		if utf8.Valid(r.Payload) {
			dst = append(dst, `,"payload":`...)
			dst = AppendString(dst, string(r.Payload))
		} else {
			dst = append(dst, `,"payload_b64":"`...)
			dst = appendBase64(dst, r.Payload)
			dst = append(dst, '"')
		}
	} else {
		dst = append(dst, `,"value":`...)
		dst = AppendFloat(dst, r.Value)
	}
	if r.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = AppendString(dst, r.Unit)
	}
	if len(r.Labels) > 0 {
		dst = append(dst, `,"labels":{`...)
		keys := make([]string, 0, len(r.Labels))
		for k := range r.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, k)
			dst = append(dst, ':')
			dst = AppendString(dst, r.Labels[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// MarshalJSON implements json.Marshaler with the SPEC §3.1 form.
func (r Record) MarshalJSON() ([]byte, error) {
	if !r.Raw && (math.IsNaN(r.Value) || math.IsInf(r.Value, 0)) {
		return nil, fmt.Errorf("record %q: value %v has no JSON form", r.ID, r.Value)
	}
	return r.AppendJSON(nil), nil
}

type recordJSON struct {
	ID         string            `json:"id"`
	Topic      string            `json:"topic"`
	Series     *string           `json:"series"`
	TS         string            `json:"ts"`
	Value      *float64          `json:"value"`
	Unit       string            `json:"unit"`
	Labels     map[string]string `json:"labels"`
	Payload    *string           `json:"payload"`
	PayloadB64 []byte            `json:"payload_b64"`
}

// UnmarshalJSON reads the SPEC §3.1 form (what AppendJSON writes, and replay input).
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	ts, err := time.Parse(time.RFC3339Nano, j.TS)
	if err != nil {
		return fmt.Errorf("record %q: ts: %w", j.ID, err)
	}
	*r = Record{ID: j.ID, Topic: j.Topic, TS: TruncTime(ts), Unit: j.Unit, Labels: j.Labels}
	switch {
	case j.Payload != nil:
		r.Raw, r.Payload = true, []byte(*j.Payload)
	case j.PayloadB64 != nil:
		r.Raw, r.Payload = true, j.PayloadB64
	case j.Value == nil:
		return fmt.Errorf("record %q: no value", j.ID)
	default:
		r.Value = *j.Value
		if j.Series != nil {
			r.Series = *j.Series
		}
	}
	if r.Topic == "" {
		return errors.New("record: no topic")
	}
	return nil
}

// AppendFloat appends v in the shortest form that reads back as v; integers keep a ".0"
// so that consumers in typed languages see a float.
func AppendFloat(dst []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		dst = strconv.AppendFloat(dst, v, 'f', -1, 64)
		return append(dst, ".0"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as encoding/json does.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendBase64(dst, src []byte) []byte {
	b, _ := json.Marshal(src) // a quoted base64 string
	return append(dst, b[1:len(b)-1]...)
}

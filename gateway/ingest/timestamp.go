package ingest

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// The timestamps a device may send: from 2000-01-01 to 2200-01-01. Anything else is far
// more likely a unit mistake (milliseconds for seconds, or the reverse) than a reading.
var (
	minTS = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTS = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// secondsLimit tells unix seconds from unix milliseconds in a numeric "ts": a number below
// 1e11 is seconds (1e11 s is the year 5138), anything else milliseconds (1e11 ms is
// 1973-03-03). Inside the accepted years 2000..2200 the two ranges are far apart —
// seconds 9.5e8..7.3e9, milliseconds 9.5e11..7.3e12 — so no valid reading is ambiguous.
const secondsLimit = 1e11

// parseTS reads the "ts" of a JSON object: a number of unix seconds (fraction allowed) or
// unix milliseconds (told apart by secondsLimit), or an RFC 3339 string. ok is false for
// null (no timestamp: the reading is stamped on arrival).
func parseTS(raw json.RawMessage) (ts time.Time, ok bool, err error) {
	switch raw[0] {
	case 'n':
		return ts, false, nil
	case '"':
		s, ok := unquote(raw)
		if !ok {
			return ts, false, malformed(`"ts" is not a valid string`)
		}
		ts, err = time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ts, false, malformed(`"ts" %q is not RFC 3339 (e.g. 2026-11-26T12:00:00.123Z)`, s)
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) {
			return ts, false, malformed(`"ts" %s is out of range`, raw)
		}
		if math.Abs(f) < secondsLimit {
			ts = unixSeconds(f)
		} else if math.Abs(f) < 1e15 {
			ts = time.UnixMicro(int64(math.Round(f * 1e3))).UTC()
		} else {
			return ts, false, malformed(`"ts" %s is out of range`, raw)
		}
	default:
		return ts, false, malformed(`"ts" must be unix seconds, unix milliseconds or an RFC 3339 string`)
	}
	if err := checkTS(ts); err != nil {
		return ts, false, malformed(`"ts" %s: %v`, raw, err)
	}
	return ts.UTC(), true, nil
}

// unixSeconds converts fractional unix seconds to a time, rounded to the microsecond so
// that binary floating point does not turn 1700000000.123 into ...122.999.
func unixSeconds(s float64) time.Time {
	return time.UnixMicro(int64(math.Round(s * 1e6))).UTC()
}

func checkTS(ts time.Time) error {
	if ts.Before(minTS) || !ts.Before(maxTS) {
		return errOutsideYears
	}
	return nil
}

type tsError string

func (e tsError) Error() string { return string(e) }

const errOutsideYears = tsError("outside the years 2000..2200 (seconds or milliseconds since 1970 expected)")

package ingest

import (
	"bytes"
	"math"
	"strconv"
)

// decodeNumber reads a bare number such as 21.5 (surrounding white space allowed); the
// reading is stamped on arrival.
func decodeNumber(p []byte) ([]reading, error) {
	v, err := parseNumber(bytes.TrimSpace(p))
	if err != nil {
		return nil, err
	}
	return []reading{{field: "value", value: v}}, nil
}

func parseNumber(s []byte) (float64, error) {
	if len(s) == 0 || len(s) > 64 || !isDecimal(s) {
		return 0, malformed("payload is not a number")
	}
	v, err := strconv.ParseFloat(string(s), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, malformed("payload %q is not a finite number", s)
	}
	return v, nil
}

// isDecimal rejects what ParseFloat takes but no device means: "NaN", "Inf", "0x1p3",
// "1_000".
func isDecimal(s []byte) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
}

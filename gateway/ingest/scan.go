package ingest

import (
	"bytes"
	"encoding/json"
)

// jsonScanner reads a JSON text in one pass and checks it as strictly as encoding/json
// does (RFC 8259), handing out each member of an object as its raw bytes. It replaces a
// json.Decoder walking tokens: a one-value reading took 7.8–8.3 µs and 50 allocations that
// way, 1.4–1.6 µs and 8 with the scanner (BenchmarkDecodeJSONValue, BENCHMARKS.md); the
// differential fuzz test FuzzScanner holds the two to the same answers. The text must be
// valid UTF-8: the callers check it once for the whole payload.
type jsonScanner struct {
	p []byte
	i int
}

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

func (s *jsonScanner) ws() {
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after whitespace, or 0 at the end.
func (s *jsonScanner) peek() byte {
	s.ws()
	if s.i == len(s.p) {
		return 0
	}
	return s.p[s.i]
}

func (s *jsonScanner) fail(format string, args ...any) error {
	if s.i >= len(s.p) {
		return malformed("invalid JSON: unexpected end of input")
	}
	return malformed("invalid JSON: "+format+" at offset %d", append(args, s.i)...)
}

func (s *jsonScanner) unexpected(where string) error {
	if s.i >= len(s.p) {
		return s.fail("")
	}
	return s.fail("unexpected %q %s", s.p[s.i], where)
}

// expect consumes c after whitespace.
func (s *jsonScanner) expect(c byte, where string) error {
	if s.peek() != c {
		return s.unexpected(where)
	}
	s.i++
	return nil
}

// end checks that only whitespace is left after the top-level value (what names it).
func (s *jsonScanner) end(what string) error {
	if s.ws(); s.i != len(s.p) {
		return malformed("invalid JSON: data after the %s", what)
	}
	return nil
}

// object reads the object that comes next and calls fn for each member in order with its
// name and the raw bytes of its value. Duplicate names are an error: which one a device
// meant is unknowable. fn's errors are returned as they are.
func (s *jsonScanner) object(fn func(name string, raw json.RawMessage) error) error {
	var seen nameSet
	return s.members(0, func(rawName, raw json.RawMessage) error {
		name, ok := unquote(rawName)
		if !ok {
			return malformed("invalid JSON: bad string %s", rawName)
		}
		if !seen.add(name) {
			return malformed("invalid JSON: member %q appears twice", name)
		}
		return fn(name, raw)
	})
}

// array reads the array that comes next and calls fn before each element; fn must read
// the element (with object or value).
func (s *jsonScanner) array(fn func() error) error {
	if err := s.expect('[', "where an array should begin"); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if err := fn(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.unexpected("after an array element")
		}
	}
}

// members reads the object that comes next, its values at depth+1, and passes each member
// to fn with its name still quoted (fn nil: the object is only checked).
func (s *jsonScanner) members(depth int, fn func(rawName, raw json.RawMessage) error) error {
	if err := s.expect('{', "where an object should begin"); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.unexpected("where a member name should begin")
		}
		rawName, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':', "after a member name"); err != nil {
			return err
		}
		raw, err := s.value(depth + 1)
		if err != nil {
			return err
		}
		if fn != nil {
			if err := fn(rawName, raw); err != nil {
				return err
			}
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.unexpected("after an object member")
		}
	}
}

// value reads any value and returns its bytes.
func (s *jsonScanner) value(depth int) (json.RawMessage, error) {
	if depth > maxDepth {
		return nil, malformed("invalid JSON: nested deeper than %d", maxDepth)
	}
	s.ws()
	start := s.i
	var err error
	switch c := s.peek(); c {
	case '"':
		return s.str()
	case '{':
		err = s.members(depth, nil)
	case '[':
		err = s.array(func() error {
			_, err := s.value(depth + 1)
			return err
		})
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return s.number()
		}
		return nil, s.unexpected("where a value should begin")
	}
	if err != nil {
		return nil, err
	}
	return s.p[start:s.i], nil
}

func (s *jsonScanner) literal(lit string) (json.RawMessage, error) {
	start := s.i
	if len(s.p)-s.i < len(lit) || string(s.p[s.i:s.i+len(lit)]) != lit {
		for s.i < len(s.p) && s.i-start < len(lit) && s.p[s.i] == lit[s.i-start] {
			s.i++
		}
		return nil, s.unexpected("in literal " + lit)
	}
	s.i += len(lit)
	return s.p[start:s.i], nil
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() (json.RawMessage, error) {
	start := s.i
	digits := func() int {
		n := 0
		for s.i < len(s.p) && s.p[s.i] >= '0' && s.p[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.p[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.p) && s.p[s.i] == '0':
		s.i++
	case digits() == 0:
		return nil, s.unexpected("in a number")
	}
	if s.i < len(s.p) && s.p[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, s.unexpected("after a decimal point")
		}
	}
	if s.i < len(s.p) && (s.p[s.i] == 'e' || s.p[s.i] == 'E') {
		s.i++
		if s.i < len(s.p) && (s.p[s.i] == '+' || s.p[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, s.unexpected("in an exponent")
		}
	}
	return s.p[start:s.i], nil
}

// str reads a string and returns it with its quotes, escapes left in.
func (s *jsonScanner) str() (json.RawMessage, error) {
	start := s.i
	s.i++ // the opening quote
	for s.i < len(s.p) {
		c := s.p[s.i]
		switch {
		case c == '"':
			s.i++
			return s.p[start:s.i], nil
		case c < 0x20:
			return nil, s.fail("control character %#x in a string", c)
		case c == '\\':
			s.i++
			if s.i == len(s.p) {
				return nil, s.fail("")
			}
			switch s.p[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for k := 0; k < 4; k++ {
					if s.i == len(s.p) || !isHex(s.p[s.i]) {
						return nil, s.unexpected("in a \\u escape")
					}
					s.i++
				}
			default:
				return nil, s.unexpected("in a string escape")
			}
		default:
			s.i++
		}
	}
	return nil, s.fail("")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// unquote returns the text of a JSON string (quotes included in raw, valid UTF-8):
// without escapes, its bytes as they are; with escapes, decoded by encoding/json (rare in
// device payloads).
func unquote(raw []byte) (string, bool) {
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

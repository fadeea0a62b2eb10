// Package topic checks and matches MQTT topic names and filters, and the route patterns of
// edgegate's config: filters whose wildcards carry names (devices/+device/+metric).
package topic

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the MQTT limit on a topic's length in bytes.
const MaxLen = 65535

// ValidName reports whether name is a valid topic to publish on.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("empty topic")
	}
	if len(name) > MaxLen || !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
		return fmt.Errorf("topic %q is not valid UTF-8 of at most %d bytes", name, MaxLen)
	}
	if strings.ContainsAny(name, "+#") {
		return fmt.Errorf("topic %q contains a wildcard (+ or #)", name)
	}
	return nil
}

// ValidFilter reports whether f is a valid MQTT topic filter.
func ValidFilter(f string) error {
	if f == "" {
		return fmt.Errorf("empty topic filter")
	}
	if len(f) > MaxLen || !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return fmt.Errorf("topic filter %q is not valid UTF-8 of at most %d bytes", f, MaxLen)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic filter %q: '#' must be the last level", f)
		case l == "+" || l == "#":
		case strings.ContainsAny(l, "+#"):
			return fmt.Errorf("topic filter %q: a wildcard must fill a whole level (level %d is %q)", f, i+1, l)
		}
	}
	return nil
}

// Match reports whether topic matches filter, per MQTT: '+' one level, '#' any number of
// trailing levels (including none), and wildcards at the first level never match topics
// starting with '$'.
func Match(filter, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			if !fmore && !tmore {
				return true
			}
			// "a/#" matches "a": the '#' also stands for the parent level.
			return !tmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}

// Pattern is a route pattern: an MQTT filter whose wildcards may carry names, as in
// devices/+device/+metric or site/+/#rest. A named '+' captures one level, a named '#' the
// rest of the topic joined by '/'.
type Pattern struct {
	src    string
	levels []string // literal level, "+" or "#"
	names  []string // per level: capture name or ""
}

// ParsePattern parses and checks a route pattern.
func ParsePattern(p string) (*Pattern, error) {
	if p == "" {
		return nil, fmt.Errorf("empty topic pattern")
	}
	if len(p) > MaxLen || !utf8.ValidString(p) || strings.ContainsRune(p, 0) {
		return nil, fmt.Errorf("topic pattern %q is not valid UTF-8 of at most %d bytes", p, MaxLen)
	}
	parts := strings.Split(p, "/")
	pt := &Pattern{src: p, levels: make([]string, len(parts)), names: make([]string, len(parts))}
	seen := map[string]bool{}
	for i, l := range parts {
		if l == "" || (l[0] != '+' && l[0] != '#') {
			if strings.ContainsAny(l, "+#") {
				return nil, fmt.Errorf("topic pattern %q: a wildcard must start a level (level %d is %q)", p, i+1, l)
			}
			pt.levels[i] = l
			continue
		}
		w, name := l[:1], l[1:]
		if w == "#" && i != len(parts)-1 {
			return nil, fmt.Errorf("topic pattern %q: '#' must be the last level", p)
		}
		if strings.ContainsAny(name, "+#{}") {
			return nil, fmt.Errorf("topic pattern %q: bad wildcard name %q", p, name)
		}
		if name != "" {
			if seen[name] {
				return nil, fmt.Errorf("topic pattern %q: wildcard name %q used twice", p, name)
			}
			seen[name] = true
		}
		pt.levels[i], pt.names[i] = w, name
	}
	return pt, nil
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.src }

// Filter returns the plain MQTT filter of the pattern (names removed).
func (p *Pattern) Filter() string { return strings.Join(p.levels, "/") }

// Names returns the capture names in order.
func (p *Pattern) Names() []string {
	var out []string
	for _, n := range p.names {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Match matches topic against the pattern and calls set for each named capture. It returns
// false, having called set for nothing useful, when the topic does not match.
func (p *Pattern) Match(topic string, set func(name, value string)) bool {
	if len(topic) > 0 && topic[0] == '$' && (p.levels[0] == "+" || p.levels[0] == "#") {
		return false
	}
	rest := topic
	for i, l := range p.levels {
		if l == "#" {
			if set != nil && p.names[i] != "" {
				set(p.names[i], rest)
			}
			return true
		}
		lvl, r, more := strings.Cut(rest, "/")
		if l != "+" && l != lvl {
			return false
		}
		if l == "+" && set != nil && p.names[i] != "" {
			set(p.names[i], lvl)
		}
		last := i == len(p.levels)-1
		switch {
		case last && !more:
			return true
		case last && more:
			return false
		case !more:
			// topic ended; only a trailing "#" may still match (a/# matches a)
			return i == len(p.levels)-2 && p.levels[i+1] == "#" && (set == nil || p.names[i+1] == "" || setEmpty(set, p.names[i+1]))
		}
		rest = r
	}
	return false
}

func setEmpty(set func(string, string), name string) bool {
	set(name, "")
	return true
}

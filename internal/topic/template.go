package topic

import (
	"fmt"
	"strings"
)

// Template is a string with {name} placeholders, as in series "{device}/{metric}" or an
// uplink topic "edgegate/{gateway}/{kind}".
type Template struct {
	parts []tpart
}

type tpart struct {
	lit  string
	name string // placeholder name when lit is ""
}

// ParseTemplate parses s; braces must pair and names must be non-empty.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{}
	for len(s) > 0 {
		i := strings.IndexAny(s, "{}")
		if i < 0 {
			t.parts = append(t.parts, tpart{lit: s})
			break
		}
		if s[i] == '}' {
			return nil, fmt.Errorf("unmatched '}' in %q", s)
		}
		if i > 0 {
			t.parts = append(t.parts, tpart{lit: s[:i]})
		}
		j := strings.IndexAny(s[i+1:], "{}")
		if j < 0 || s[i+1+j] != '}' {
			return nil, fmt.Errorf("unclosed '{' in %q", s)
		}
		name := s[i+1 : i+1+j]
		if name == "" {
			return nil, fmt.Errorf("empty placeholder {} in %q", s)
		}
		t.parts = append(t.parts, tpart{name: name})
		s = s[i+2+j:]
	}
	return t, nil
}

// Names returns the placeholder names, in order, with repeats.
func (t *Template) Names() []string {
	var out []string
	for _, p := range t.parts {
		if p.lit == "" {
			out = append(out, p.name)
		}
	}
	return out
}

// Expand replaces each placeholder by value(name).
func (t *Template) Expand(value func(name string) string) string {
	if len(t.parts) == 1 && t.parts[0].lit != "" {
		return t.parts[0].lit
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.lit != "" {
			b.WriteString(p.lit)
		} else {
			b.WriteString(value(p.name))
		}
	}
	return b.String()
}

// Static reports whether the template has no placeholder.
func (t *Template) Static() bool { return len(t.Names()) == 0 }

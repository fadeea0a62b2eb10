package testutil

import (
	"strconv"
	"strings"
	"testing"
)

// Family is one parsed metric family of a scrape.
type Family struct {
	Type    string
	Help    string
	Samples map[string]float64 // by rendered label set ("" when none)
}

// ParseText parses Prometheus text exposition strictly enough for tests: every sample must
// follow its family's HELP and TYPE lines, and families must not repeat.
func ParseText(t testing.TB, s string) map[string]*Family {
	t.Helper()
	out := map[string]*Family{}
	var cur string
	for i, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.SplitN(line[len("# HELP "):], " ", 2)
			if _, dup := out[f[0]]; dup {
				t.Fatalf("line %d: family %s repeated", i+1, f[0])
			}
			cur = f[0]
			out[cur] = &Family{Samples: map[string]float64{}}
			if len(f) == 2 {
				out[cur].Help = f[1]
			}
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line[len("# TYPE "):])
			if len(f) != 2 || f[0] != cur {
				t.Fatalf("line %d: TYPE without its HELP: %q", i+1, line)
			}
			out[cur].Type = f[1]
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			name, labels := line, ""
			if j := strings.IndexAny(line, "{ "); j >= 0 {
				name = line[:j]
			}
			if name != cur {
				t.Fatalf("line %d: sample of %s outside its family %s", i+1, name, cur)
			}
			rest := line[len(name):]
			if strings.HasPrefix(rest, "{") {
				k := strings.LastIndex(rest, "}")
				labels, rest = rest[:k+1], rest[k+1:]
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("line %d: value: %v", i+1, err)
			}
			out[cur].Samples[labels] = v
		}
	}
	return out
}

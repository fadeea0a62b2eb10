package doctest

import (
	"regexp"
	"strings"
	"testing"
)

// An expected output in the docs is a template: "…" stands for any text within a line, and
// a line that is only "…" for any number of lines. Blank lines and trailing spaces do not
// count, on either side.

// templateLines splits a template or an output into its non-blank lines, right-trimmed.
func templateLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " \t\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

const gap = "…"

func lineRE(tpl string) *regexp.Regexp {
	parts := strings.Split(tpl, gap)
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// matchWhole reports whether got, line by line, is what the template want describes.
func matchWhole(want, got []string) bool {
	res := make([]*regexp.Regexp, len(want))
	for i, w := range want {
		if strings.TrimSpace(w) != gap {
			res[i] = lineRE(w)
		}
	}
	// memo[i][j]: want[i:] matches got[j:]
	memo := map[[2]int]bool{}
	var match func(i, j int) bool
	match = func(i, j int) bool {
		if i == len(want) {
			return j == len(got)
		}
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var ok bool
		if res[i] == nil {
			ok = match(i+1, j) || (j < len(got) && match(i, j+1))
		} else {
			ok = j < len(got) && res[i].MatchString(got[j]) && match(i+1, j+1)
		}
		memo[k] = ok
		return ok
	}
	return match(0, 0)
}

// matchWithin reports whether the lines of want appear in got in order, other lines
// between them allowed (what a terminal that keeps printing shows).
func matchWithin(want, got []string) bool {
	j := 0
	for _, w := range want {
		if strings.TrimSpace(w) == gap {
			continue
		}
		re := lineRE(w)
		for j < len(got) && !re.MatchString(got[j]) {
			j++
		}
		if j == len(got) {
			return false
		}
		j++
	}
	return true
}

var ansiRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\a\x1b]*(\a|\x1b\\)|[()][0-9A-Za-z]|[=>])`)

// cleanTerminal turns what a terminal received into plain lines: no colours or other
// escape sequences, no carriage returns, no echoed ^C.
func cleanTerminal(b []byte) string {
	s := ansiRE.ReplaceAllString(string(b), "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:] // a carriage return alone rewrites the line
		}
		out = append(out, strings.ReplaceAll(l, "^C", ""))
	}
	return strings.Join(out, "\n")
}

func TestTemplates(t *testing.T) {
	out := templateLines("Client d1 sending CONNECT\n\nClient d1 received CONNACK (0)\nsensors/sim-1/temperature {\"value\":18.7,\"ts\":17966}\n")
	for _, c := range []struct {
		want        string
		whole, with bool
	}{
		{"Client d1 sending CONNECT\nClient d1 received CONNACK (0)\nsensors/sim-1/temperature {\"value\":…,\"ts\":…}", true, true},
		{"Client … sending CONNECT\n…", true, true},
		{"…\nsensors/… {…}", true, true},
		{"Client d1 received CONNACK (0)", false, true},
		{"Client d1 received CONNACK (0)\nClient d1 sending CONNECT", false, false},
		{"Client d1 sending CONNECT\nClient d1 received CONNACK (1)\n…", false, false},
		{"Client d1 sending CONNECT (", false, false},
		{"… (0)\n…\n…", false, true},
		{"…\n… (0)\n…", true, true},
	} {
		w := templateLines(c.want)
		if got := matchWhole(w, out); got != c.whole {
			t.Errorf("matchWhole(%q) = %v", c.want, got)
		}
		if got := matchWithin(w, out); got != c.with {
			t.Errorf("matchWithin(%q) = %v", c.want, got)
		}
	}
	if got := cleanTerminal([]byte("\x1b[1;39m{\x1b[0m\"a\"\r\n^C\r\nx\ry\r\n")); got != "{\"a\"\n\ny\n" {
		t.Errorf("cleanTerminal: %q", got)
	}
}

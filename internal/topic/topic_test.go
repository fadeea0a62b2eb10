package topic

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/+", "a/", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"+/+", "a/b", true},
		{"+", "", true},
		{"a/b/c", "a/b", false},
		{"sensors/+/temperature", "sensors/sim-1/temperature", true},
	}
	for _, c := range cases {
		if got := Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	good := []string{"a", "a/b", "+", "#", "a/+/c", "a/#", "+/+/#", "/a"}
	bad := []string{"", "a/#/b", "a+", "a/b#", "a/+b", "\x00"}
	for _, f := range good {
		if err := ValidFilter(f); err != nil {
			t.Errorf("ValidFilter(%q) = %v", f, err)
		}
	}
	for _, f := range bad {
		if ValidFilter(f) == nil {
			t.Errorf("ValidFilter(%q) = nil, want an error", f)
		}
	}
}

func TestPattern(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           string // sorted captures, or "-" for no match
	}{
		{"devices/+device/+metric", "devices/d1/temperature", "device=d1 metric=temperature"},
		{"devices/+device/+metric", "devices/d1", "-"},
		{"devices/+device/+metric", "devices/d1/t/x", "-"},
		{"devices/+/+metric", "devices/d1/t", "metric=t"},
		{"site/+site/#rest", "site/n/a/b", "rest=a/b site=n"},
		{"site/+site/#rest", "site/n", "rest= site=n"},
		{"a/b", "a/b", ""},
		{"+x", "$SYS/broker", "-"},
		{"#all", "a/b", "all=a/b"},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", c.pattern, err)
		}
		var got []string
		ok := p.Match(c.topic, func(n, v string) { got = append(got, n+"="+v) })
		sort.Strings(got)
		s := strings.Join(got, " ")
		if !ok {
			s = "-"
		}
		if s != c.want {
			t.Errorf("%q on %q = %q, want %q", c.pattern, c.topic, s, c.want)
		}
		if ok != Match(p.Filter(), c.topic) {
			t.Errorf("%q on %q: pattern and plain filter %q disagree", c.pattern, c.topic, p.Filter())
		}
	}
	for _, bad := range []string{"", "a/#x/b", "a/x+", "+a/+a", "a/+{b}"} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("ParsePattern(%q) accepted", bad)
		}
	}
}

func FuzzPattern(f *testing.F) {
	for _, s := range []string{"devices/+device/+metric|devices/a/b", "#r|x", "a/+/#|a/b", "+|$SYS/x", "a/#|a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		pat, tp, _ := strings.Cut(in, "|")
		p, err := ParsePattern(pat)
		if err != nil {
			return
		}
		if ValidFilter(p.Filter()) != nil {
			t.Fatalf("pattern %q gives invalid filter %q", pat, p.Filter())
		}
		if strings.ContainsAny(tp, "+#") {
			return
		}
		got := p.Match(tp, nil)
		if want := Match(p.Filter(), tp); got != want {
			t.Fatalf("pattern %q on %q = %v, filter says %v", pat, tp, got, want)
		}
		_ = fmt.Sprint(got)
	})
}

func TestCovers(t *testing.T) {
	cases := []struct {
		grant, filter string
		want          bool
	}{
		{"#", "a/b", true},
		{"#", "#", true},
		{"#", "$SYS/x", false},
		{"#", "+/x", true},
		{"+/#", "#", false}, // same topics, but the safe answer is no
		{"a/#", "a", true},
		{"a/#", "a/#", true},
		{"a/#", "a/b/+", true},
		{"a/#", "b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/b", "a/+", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+/#", "a/#", false},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a/b/#", true},
		{"$SYS/#", "$SYS/broker/x", true},
		{"devices/d1/#", "devices/d2/t", false},
		{"devices/d1/#", "devices/+/t", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	}
	for _, c := range cases {
		if got := Covers(c.grant, c.filter); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.grant, c.filter, got, c.want)
		}
	}
}

// FuzzCovers checks that Covers is sound: when it says a grant covers a filter, every topic
// the filter matches is matched by the grant.
func FuzzCovers(f *testing.F) {
	for _, s := range []string{"#|a/#|a", "a/+|a/b|a/b", "+/x|+/x|$SYS/x", "a/#|a|a", "a/+/#|a/b/#|a/b"} {
		p := strings.Split(s, "|")
		f.Add(p[0], p[1], p[2])
	}
	f.Fuzz(func(t *testing.T, grant, filter, tp string) {
		if ValidFilter(grant) != nil || ValidFilter(filter) != nil || ValidName(tp) != nil {
			return
		}
		if Covers(grant, filter) && Match(filter, tp) && !Match(grant, tp) {
			t.Fatalf("Covers(%q, %q) but topic %q matches only the filter", grant, filter, tp)
		}
		if ValidName(filter) == nil && Covers(grant, filter) != Match(grant, filter) {
			t.Fatalf("for a topic name, Covers(%q, %q) must equal Match", grant, filter)
		}
	})
}

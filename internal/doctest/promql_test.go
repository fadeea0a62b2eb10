package doctest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// docMetrics reads the table under "## Every metric" in docs/metrics.md: metric name → its
// label names. (gateway's TestMetricsMatchDocs holds that table to what the daemon exports.)
func docMetrics(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Every metric"
			continue
		}
		if !in || !strings.HasPrefix(l, "| `") {
			continue
		}
		cells := strings.Split(l, "|")
		if len(cells) < 5 {
			t.Fatalf("docs/metrics.md: a metrics row with %d cells: %q", len(cells), l)
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		var labels []string
		for _, lb := range strings.Split(cells[3], ",") {
			if lb = strings.TrimSpace(lb); lb != "" {
				labels = append(labels, lb)
			}
		}
		out[name] = labels
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("docs/metrics.md: %d metrics under \"## Every metric\": is the table parser broken?", len(out))
	}
	return out
}

// targetLabels are the labels Prometheus adds to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// promKeywords are PromQL words that are neither metrics nor functions.
var promKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true,
	"offset": true, "inf": true, "nan": true, "atan2": true,
}

// promAggregations are PromQL's aggregation operators, which take their grouping before
// their arguments too (sum by (a) (…)).
var promAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

// labelLists are the keywords followed by a parenthesised list of label names.
var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// promRefs is what a PromQL expression refers to.
type promRefs struct {
	Metrics  []string // metric names, in order of appearance
	Matchers []string // label names of {…} selectors
	Grouping []string // label names of by, without, on, ignoring, group_left, group_right
	By       []string // label names of by(…): the labels an aggregation keeps
}

// scanPromQL finds the metric names and label names of a PromQL expression. It is a scanner,
// not a parser: it knows strings, ranges ([5m], [$__rate_interval]), selectors ({a="b"}),
// label lists (by (a, b)) and that a name followed by "(" is a function or an aggregation.
func scanPromQL(expr string) (promRefs, error) {
	var r promRefs
	rs := []rune(expr)
	i := 0
	skipSpace := func() {
		for i < len(rs) && unicode.IsSpace(rs[i]) {
			i++
		}
	}
	isStart := func(c rune) bool { return c == '_' || c == ':' || unicode.IsLetter(c) }
	isPart := func(c rune) bool { return isStart(c) || unicode.IsDigit(c) }
	ident := func() string {
		j := i
		for i < len(rs) && isPart(rs[i]) {
			i++
		}
		return string(rs[j:i])
	}
	skipString := func() error {
		q := rs[i]
		for i++; i < len(rs); i++ {
			if rs[i] == '\\' && q != '`' {
				i++
				continue
			}
			if rs[i] == q {
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	for i < len(rs) {
		c := rs[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return r, err
			}
		case c == '[':
			j := strings.IndexRune(string(rs[i:]), ']')
			if j < 0 {
				return r, fmt.Errorf("unterminated range in %q", expr)
			}
			i += len([]rune(string(rs[i:])[:j])) + 1
		case c == '{':
			// a selector without a name, or the matchers of the metric before it
			i++
			for {
				skipSpace()
				if i >= len(rs) {
					return r, fmt.Errorf("unterminated selector in %q", expr)
				}
				if rs[i] == '}' {
					i++
					break
				}
				if rs[i] == ',' {
					i++
					continue
				}
				if !isStart(rs[i]) {
					return r, fmt.Errorf("unexpected %q in a selector of %q", rs[i], expr)
				}
				r.Matchers = append(r.Matchers, ident())
				skipSpace()
				for i < len(rs) && strings.ContainsRune("=!~", rs[i]) {
					i++
				}
				skipSpace()
				if i >= len(rs) || (rs[i] != '"' && rs[i] != '\'' && rs[i] != '`') {
					return r, fmt.Errorf("a matcher without a quoted value in %q", expr)
				}
				if err := skipString(); err != nil {
					return r, err
				}
			}
		case unicode.IsDigit(c) || (c == '.' && i+1 < len(rs) && unicode.IsDigit(rs[i+1])):
			for i < len(rs) && (isPart(rs[i]) || rs[i] == '.' || ((rs[i] == '+' || rs[i] == '-') && (rs[i-1] == 'e' || rs[i-1] == 'E'))) {
				i++ // a number or a duration: 0.8, 1e18, 5m
			}
		case isStart(c):
			name := ident()
			j := i
			skipSpace()
			next := rune(0)
			if i < len(rs) {
				next = rs[i]
			}
			switch {
			case labelLists[name]:
				if next != '(' {
					if name == "group_left" || name == "group_right" {
						continue // without a list
					}
					return r, fmt.Errorf("%s without a label list in %q", name, expr)
				}
				k := strings.IndexRune(string(rs[i:]), ')')
				if k < 0 {
					return r, fmt.Errorf("unterminated label list in %q", expr)
				}
				list := string(rs[i+1:])[:k-1]
				i += len([]rune(string(rs[i:])[:k])) + 1
				for _, l := range strings.Split(list, ",") {
					if l = strings.TrimSpace(l); l != "" {
						r.Grouping = append(r.Grouping, l)
						if name == "by" {
							r.By = append(r.By, l)
						}
					}
				}
			case promKeywords[name], promAggregations[name]:
			case next == '(':
				// a function or an aggregation: its arguments come next
			default:
				i = j
				r.Metrics = append(r.Metrics, name)
			}
		default:
			i++ // operators, parentheses, commas
		}
	}
	return r, nil
}

var legendRE = regexp.MustCompile(`\{\{\s*([^}\s]+)\s*\}\}`)

// checkQuery says what is wrong with a query of the docs: a metric not in the table, a label
// that none of its metrics has, a legend label its result cannot have.
func checkQuery(doc map[string][]string, expr, legend string) []string {
	r, err := scanPromQL(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if len(r.Metrics) == 0 {
		problems = append(problems, "queries no metric")
	}
	have := append([]string(nil), targetLabels...)
	for _, m := range r.Metrics {
		labels, ok := doc[m]
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not in docs/metrics.md", m))
		}
		have = append(have, labels...)
	}
	for _, l := range append(append([]string(nil), r.Matchers...), r.Grouping...) {
		if !slices.Contains(have, l) {
			problems = append(problems, fmt.Sprintf("label %q: none of %s has it", l, strings.Join(r.Metrics, ", ")))
		}
	}
	for _, m := range legendRE.FindAllStringSubmatch(legend, -1) {
		l := m[1]
		switch {
		case !slices.Contains(have, l):
			problems = append(problems, fmt.Sprintf("legend label %q: none of %s has it", l, strings.Join(r.Metrics, ", ")))
		case len(r.By) > 0 && !slices.Contains(r.By, l):
			problems = append(problems, fmt.Sprintf("legend label %q: the aggregation keeps only %s", l, strings.Join(r.By, ", ")))
		}
	}
	return problems
}

// TestPromQLScanner holds the scanner to expressions of every form the docs use, and
// checkQuery to the mistakes it must catch.
func TestPromQLScanner(t *testing.T) {
	for _, c := range []struct {
		expr string
		want promRefs
	}{
		{`edgegate_ready == 0`, promRefs{Metrics: []string{"edgegate_ready"}}},
		{`sum by (source, outcome) (rate(edgegate_ingest_messages_total{instance=~"$instance", job!="x"}[$__rate_interval]))`,
			promRefs{Metrics: []string{"edgegate_ingest_messages_total"}, Matchers: []string{"instance", "job"}, Grouping: []string{"source", "outcome"}, By: []string{"source", "outcome"}}},
		{`edgegate_buffer_bytes / (edgegate_buffer_budget_bytes > 0) > 0.8`, promRefs{Metrics: []string{"edgegate_buffer_bytes", "edgegate_buffer_budget_bytes"}}},
		{`max(rate(a_total{l="}{[5m]"}[5m] offset 1h)) without (x) and on (y) group_left b > 1e18`,
			promRefs{Metrics: []string{"a_total", "b"}, Matchers: []string{"l"}, Grouping: []string{"x", "y"}}},
		{`sum(increase(edgegate_watchdog_stalls_total[15m])) by (component) > bool 0`,
			promRefs{Metrics: []string{"edgegate_watchdog_stalls_total"}, Grouping: []string{"component"}, By: []string{"component"}}},
	} {
		got, err := scanPromQL(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("scanPromQL(%s)\n = %+v\nwant %+v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`a{l="x"`, `a{l=x}`, `rate(a[5m`, `sum by x (a)`, `a{l="x}`} {
		if _, err := scanPromQL(bad); err == nil {
			t.Errorf("scanPromQL(%s): no error", bad)
		}
	}
	doc := map[string][]string{"m_total": {"uplink"}, "g": nil}
	for _, c := range []struct {
		expr, legend string
		problems     int
	}{
		{`sum by (uplink) (rate(m_total{instance=~"$instance"}[5m]))`, "{{uplink}}", 0},
		{`rate(m_total[5m]) / g`, "{{instance}} {{uplink}}", 0},
		{`rate(m_totl[5m])`, "", 1},                      // a typo in a metric
		{`sum by (sensor) (rate(m_total[5m]))`, "", 1},   // a label no metric has
		{`g{uplink="x"}`, "", 1},                         // … in a selector
		{`sum by (uplink) (m_total)`, "{{instance}}", 1}, // a legend label the sum drops
		{`g`, "{{ pipeline }}", 1},
		{`1 + 1`, "", 1}, // no metric at all
	} {
		if got := checkQuery(doc, c.expr, c.legend); len(got) != c.problems {
			t.Errorf("checkQuery(%s, %q) = %q, want %d problems", c.expr, c.legend, got, c.problems)
		}
	}
}

// TestAlertRules: every alerting rule of docs/metrics.md queries documented metrics and
// labels, and its annotations use only labels its result has.
func TestAlertRules(t *testing.T) {
	doc := docMetrics(t)
	p := readPage(t, "docs/metrics.md")
	exprRE := regexp.MustCompile(`^\s+expr:\s*(.+?)\s*$`)
	labelsRE := regexp.MustCompile(`\$labels\.(\w+)`)
	n := 0
	for _, f := range p.Fences {
		if !strings.Contains(f.Content, "groups:") {
			continue
		}
		// one rule per "- alert:" item: its expr, then its annotations
		for _, rule := range strings.Split(f.Content, "- alert:")[1:] {
			name, _, _ := strings.Cut(strings.TrimSpace(rule), "\n")
			var expr string
			for _, l := range strings.Split(rule, "\n") {
				if m := exprRE.FindStringSubmatch(l); m != nil {
					expr = m[1]
				}
			}
			if expr == "" {
				t.Errorf("docs/metrics.md:%d: alert %s has no expr", f.Line, name)
				continue
			}
			n++
			var legend strings.Builder
			for _, m := range labelsRE.FindAllStringSubmatch(rule, -1) {
				legend.WriteString("{{" + m[1] + "}}")
			}
			for _, pr := range checkQuery(doc, expr, legend.String()) {
				t.Errorf("docs/metrics.md:%d: alert %s: %s: %s", f.Line, name, expr, pr)
			}
		}
	}
	if n < 3 {
		t.Fatalf("docs/metrics.md: %d alerting rules found: is the parser broken?", n)
	}
	t.Logf("%d alerting rules query documented metrics", n)
}

var metricNameRE = regexp.MustCompile(`\bedgegate_[a-z0-9_]*[a-z0-9]\b`)

// TestMetricNamesInDocs: every edgegate_ metric a page names (in code) is one the table of
// docs/metrics.md has, so a renamed metric cannot live on elsewhere in the docs. Names that
// end in "_" or "_*" stand for a family (edgegate_clock_*).
func TestMetricNamesInDocs(t *testing.T) {
	doc := docMetrics(t)
	seen := map[string]bool{}
	for _, sec := range codeChunks(t) {
		for _, c := range sec {
			for _, m := range metricNameRE.FindAllStringIndex(c, -1) {
				name := c[m[0]:m[1]]
				if rest := c[m[1]:]; strings.HasPrefix(rest, "_*") || strings.HasPrefix(rest, "*") {
					continue
				}
				if m[0] > 0 && strings.ContainsRune("/.-", rune(c[m[0]-1])) {
					continue // a path or a file name (dist/edgegate_…)
				}
				seen[name] = true
			}
		}
	}
	var bad []string
	for n := range seen {
		if _, ok := doc[n]; !ok {
			bad = append(bad, n)
		}
	}
	sort.Strings(bad)
	for _, n := range bad {
		t.Errorf("the docs name %s, which is not in the table of docs/metrics.md", n)
	}
	if len(seen) < 20 {
		t.Fatalf("only %d metric names found in the docs: is the scan broken?", len(seen))
	}
	t.Logf("%d metric names in the docs, all in the table", len(seen))
}

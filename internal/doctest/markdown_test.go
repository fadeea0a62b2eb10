package doctest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's top directory, from this package's.
const repoRoot = "../.."

// docPages lists README.md and every page under docs/ (at any depth), relative to the
// repository root.
func docPages(t *testing.T) []string { return docPagesIn(t, repoRoot) }

func docPagesIn(t *testing.T, root string) []string {
	t.Helper()
	pages := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		rel, err := filepath.Rel(root, p)
		pages = append(pages, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(pages[1:])
	return pages
}

// mdLine is one line of a page outside fenced code blocks, or the first line of a block.
type fence struct {
	Line    int    // 1-based line of the opening fence
	Info    string // the info string (sh, yaml, text…)
	Indent  string // the opening fence's indentation, stripped from its lines
	Content string // the block's lines, without the fences, newline-terminated
	End     int    // line after the closing fence
}

var fenceRE = regexp.MustCompile("^([ \t]*)(```+|~~~+)[ \t]*([^ \t`]*)")

// parseFence reads the fenced block that opens at lines[i], if one does.
func parseFence(lines []string, i int) (fence, bool, error) {
	m := fenceRE.FindStringSubmatch(lines[i])
	if m == nil {
		return fence{}, false, nil
	}
	f := fence{Line: i + 1, Indent: m[1], Info: m[3]}
	var b strings.Builder
	for j := i + 1; j < len(lines); j++ {
		l := lines[j]
		if strings.HasPrefix(strings.TrimLeft(l, " \t"), m[2]) && strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), m[2][:1])) == "" {
			f.Content = b.String()
			f.End = j + 1
			return f, true, nil
		}
		b.WriteString(strings.TrimPrefix(l, f.Indent))
		b.WriteByte('\n')
	}
	return f, true, fmt.Errorf("line %d: fenced block never closed", i+1)
}

// page is a markdown file split into prose lines and fenced blocks.
type page struct {
	Path   string   // relative to the repository root
	Lines  []string // every line
	Fences []fence
	prose  []bool // prose[i]: line i is outside fenced blocks
}

func readPage(t *testing.T, rel string) *page { return readPageIn(t, repoRoot, rel) }

func readPageIn(t *testing.T, root, rel string) *page {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	p := &page{Path: rel, Lines: strings.Split(string(b), "\n")}
	p.prose = make([]bool, len(p.Lines))
	for i := 0; i < len(p.Lines); {
		f, ok, err := parseFence(p.Lines, i)
		if err != nil {
			t.Fatalf("%s:%v", rel, err)
		}
		if !ok {
			p.prose[i] = true
			i++
			continue
		}
		p.Fences = append(p.Fences, f)
		i = f.End
	}
	return p
}

// fenceAfter returns the fenced block that starts on the first non-blank line after line
// (0-based index), if it does.
func (p *page) fenceAfter(line int) (fence, bool) {
	for j := line + 1; j < len(p.Lines); j++ {
		if strings.TrimSpace(p.Lines[j]) == "" {
			continue
		}
		for _, f := range p.Fences {
			if f.Line == j+1 {
				return f, true
			}
		}
		return fence{}, false
	}
	return fence{}, false
}

var headingRE = regexp.MustCompile(`^(#{1,6})[ \t]+(.*?)[ \t#]*$`)

// anchors returns the anchors GitHub gives the page's headings (and explicit
// <a id="…"> / <a name="…"> targets).
func (p *page) anchors() map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for i, l := range p.Lines {
		if !p.prose[i] {
			continue
		}
		for _, m := range htmlAnchorRE.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := slug(m[2])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

var htmlAnchorRE = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)

var mdLinkTextRE = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// slug is GitHub's anchor for a heading: its text (a link's text for a link), lower-cased,
// with every character but letters, digits, '-', '_' and spaces dropped and spaces turned
// into '-'.
func slug(h string) string {
	h = mdLinkTextRE.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// proseText is the page with its fenced blocks and inline code spans blanked (line
// numbers kept), where links are looked for.
func (p *page) proseText() string {
	var b strings.Builder
	for i, l := range p.Lines {
		if p.prose[i] {
			b.WriteString(codeSpanRE.ReplaceAllStringFunc(l, func(s string) string { return strings.Repeat(" ", len(s)) }))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

var codeSpanRE = regexp.MustCompile("`+[^`]*`+")

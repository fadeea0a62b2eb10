package doctest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var (
	// [text](target "title"), the text possibly over several lines.
	inlineLinkRE = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// [ref]: target
	refDefRE = regexp.MustCompile(`(?m)^[ \t]{0,3}\[[^\]]+\]:[ \t]*<?([^\s>]+)>?`)
	// <a href="target"> and <img src="target">
	htmlLinkRE = regexp.MustCompile(`(?:href|src)="([^"]+)"`)
	schemeRE   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// TestLinks checks every relative link of README.md and docs/ (at any depth): the file or
// directory it names exists inside the repository, and an anchor names a heading of its
// page.
func TestLinks(t *testing.T) {
	problems, checked := checkLinks(t, repoRoot)
	for _, p := range problems {
		t.Error(p)
	}
	if checked < 10 {
		t.Fatalf("only %d relative links found: is the link parser broken?", checked)
	}
	t.Logf("%d relative links in %d pages resolve", checked, len(docPages(t)))
}

// checkLinks checks the relative links of the pages of the tree at root; it returns what is
// wrong, one line each as FILE:LINE: link TARGET: why, and the number of links checked.
func checkLinks(t *testing.T, root string) (problems []string, checked int) {
	t.Helper()
	pages := map[string]*page{}
	get := func(rel string) *page {
		if p, ok := pages[rel]; ok {
			return p
		}
		p := readPageIn(t, root, rel)
		pages[rel] = p
		return p
	}
	root, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range docPagesIn(t, root) {
		p := get(rel)
		text := p.proseText()
		var targets []struct {
			line int
			to   string
		}
		for _, re := range []*regexp.Regexp{inlineLinkRE, refDefRE, htmlLinkRE} {
			for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
				targets = append(targets, struct {
					line int
					to   string
				}{1 + strings.Count(text[:m[0]], "\n"), text[m[2]:m[3]]})
			}
		}
		for _, l := range targets {
			if schemeRE.MatchString(l.to) || strings.HasPrefix(l.to, "//") {
				continue // an external address
			}
			checked++
			at := rel + ":" + strconv.Itoa(l.line) + ": link " + l.to
			file, anchor, _ := strings.Cut(l.to, "#")
			target := rel
			if file != "" {
				abs := filepath.Join(root, filepath.Dir(filepath.FromSlash(rel)), filepath.FromSlash(file))
				r, err := filepath.Rel(root, abs)
				if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					problems = append(problems, at+": leaves the repository")
					continue
				}
				if _, err := os.Stat(abs); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", at, errors.Unwrap(err)))
					continue
				}
				target = filepath.ToSlash(r)
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				problems = append(problems, fmt.Sprintf("%s: an anchor into %s, which is not a markdown page", at, target))
				continue
			}
			if !get(target).anchors()[anchor] {
				problems = append(problems, fmt.Sprintf("%s: %s has no heading with the anchor #%s", at, target, anchor))
			}
		}
	}
	return problems, checked
}

// TestLinkChecker: the checker finds each kind of broken link, in the README and in a page
// of a subdirectory of docs/, and takes what GitHub resolves.
func TestLinkChecker(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("LICENSE", "text\n")
	write("README.md", "# Top\n\n## The `refused` log\n\n"+
		"[ok](docs/a.md) [ok](docs/a.md#second-part) [ok](#the-refused-log) [ok](LICENSE)\n"+
		"[ok, over\ntwo lines](docs/sub/b.md \"title\") <a href=\"docs/a.md#first\">ok</a>\n"+
		"[ok](https://example.com/x.md#nothing) `[not a link](nowhere.md)`\n"+
		"[gone](docs/missing.md) [bad anchor](docs/a.md#third) [bad anchor](#top-1)\n"+
		"[out](../outside.md) [anchor into a file](LICENSE#x)\n\n"+
		"```md\n[in a block](nowhere.md)\n```\n\n[ref]: docs/gone.md\n")
	write("docs/a.md", "# First\n\n## Second part\n\n[back](../README.md#the-refused-log) [bad](../README.md#refused)\n")
	write("docs/sub/b.md", "# B\n\n[up](../a.md#first) [up](../../README.md) [bad](a.md) <img src=\"../../pic.png\">\n")
	problems, checked := checkLinks(t, root)
	want := []string{
		"README.md:9: link docs/missing.md: no such file or directory",
		"README.md:9: link docs/a.md#third: docs/a.md has no heading with the anchor #third",
		"README.md:9: link #top-1: README.md has no heading with the anchor #top-1",
		"README.md:10: link ../outside.md: leaves the repository",
		"README.md:10: link LICENSE#x: an anchor into LICENSE, which is not a markdown page",
		"README.md:16: link docs/gone.md: no such file or directory",
		"docs/a.md:5: link ../README.md#refused: README.md has no heading with the anchor #refused",
		"docs/sub/b.md:3: link a.md: no such file or directory",
		"docs/sub/b.md:3: link ../../pic.png: no such file or directory",
	}
	sort.Strings(problems)
	sort.Strings(want)
	if strings.Join(problems, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
	if checked != 18 {
		t.Errorf("checked %d links, want 18", checked)
	}
}

// TestPagesLinkBack: every page of docs/ says what it is for and leads back to the README.
func TestPagesLinkBack(t *testing.T) {
	for _, rel := range docPages(t)[1:] {
		p := readPage(t, rel)
		head := strings.Join(p.Lines[:min(len(p.Lines), 12)], "\n")
		if !strings.HasPrefix(p.Lines[0], "# ") {
			t.Errorf("%s: does not start with a title", rel)
		}
		back := strings.Repeat("../", strings.Count(rel, "/")) + "README.md"
		if !strings.Contains(head, "]("+back) {
			t.Errorf("%s: no link back to %s in its first lines", rel, back)
		}
	}
}

// TestSlug holds slug to what GitHub renders for headings of these pages.
func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"3.1 Record (a reading)":                  "31-record-a-reading",
		"2. Device side (the local topic layer)":  "2-device-side-the-local-topic-layer",
		"Windows, watermarks and lateness":        "windows-watermarks-and-lateness",
		"edgegate — product contract":             "edgegate--product-contract",
		"The `refused` log":                       "the-refused-log",
		"AWS IoT Core over mutual TLS":            "aws-iot-core-over-mutual-tls",
		"Back up and restore the buffer":          "back-up-and-restore-the-buffer",
		"[Refusals](devices.md#refusals) by code": "refusals-by-code",
		"max_rate_per_client":                     "max_rate_per_client",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}

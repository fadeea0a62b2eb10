package doctest

import (
	"os"
	"path/filepath"
	"regexp"
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

// TestLinks checks every relative link of README.md and docs/*.md: the file or directory
// it names exists inside the repository, and an anchor names a heading of its page.
func TestLinks(t *testing.T) {
	pages := map[string]*page{}
	get := func(rel string) *page {
		if p, ok := pages[rel]; ok {
			return p
		}
		p := readPage(t, rel)
		pages[rel] = p
		return p
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, rel := range docPages(t) {
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
				abs := filepath.Join(root, filepath.Dir(rel), filepath.FromSlash(file))
				r, err := filepath.Rel(root, abs)
				if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					t.Errorf("%s: leaves the repository", at)
					continue
				}
				if _, err := os.Stat(abs); err != nil {
					t.Errorf("%s: %v", at, err)
					continue
				}
				target = filepath.ToSlash(r)
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				t.Errorf("%s: an anchor into %s, which is not a markdown page", at, target)
				continue
			}
			if !get(target).anchors()[anchor] {
				t.Errorf("%s: %s has no heading with the anchor #%s", at, target, anchor)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d relative links found: is the link parser broken?", checked)
	}
	t.Logf("%d relative links in %d pages resolve", checked, len(docPages(t)))
}

// TestPagesLinkBack: every page of docs/ says what it is for and leads back to the README.
func TestPagesLinkBack(t *testing.T) {
	for _, rel := range docPages(t)[1:] {
		p := readPage(t, rel)
		head := strings.Join(p.Lines[:min(len(p.Lines), 12)], "\n")
		if !strings.HasPrefix(p.Lines[0], "# ") {
			t.Errorf("%s: does not start with a title", rel)
		}
		if !strings.Contains(head, "](../README.md") {
			t.Errorf("%s: no link back to ../README.md in its first lines", rel)
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

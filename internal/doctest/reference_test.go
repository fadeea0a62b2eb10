package doctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/edgegate/edgegate/internal/testutil"
)

// codeChunks returns, per section of every page (the text under one heading), its code:
// each fenced block and each inline code span. Keys, commands and flags count as
// documented only where they are written as code.
func codeChunks(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	for _, rel := range docPages(t) {
		p := readPage(t, rel)
		var sec []string
		fences := map[int]string{} // 0-based line of an opening fence → its block
		for _, f := range p.Fences {
			fences[f.Line-1] = f.Content
		}
		for i, l := range p.Lines {
			if c, ok := fences[i]; ok {
				sec = append(sec, c)
			}
			if !p.prose[i] {
				continue
			}
			if headingRE.MatchString(l) {
				out = append(out, sec)
				sec = nil
			}
			for _, m := range codeSpanRE.FindAllString(l, -1) {
				sec = append(sec, strings.Trim(m, "`"))
			}
		}
		out = append(out, sec)
	}
	return out
}

// word matches w as a whole token: not inside a longer name.
func word(w string) *regexp.Regexp {
	return regexp.MustCompile(`(?:^|[^\w-])` + regexp.QuoteMeta(w) + `(?:$|[^\w-])`)
}

// freeForm are the config maps whose keys are the user's (metric names, label names,
// header names), not config keys: below them, a key's parent is the map itself.
var freeForm = map[string]bool{"calibration": true, "labels": true, "headers": true}

// configKeys returns every key path of the reference config, as its key names.
func configKeys(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "configs", "edgegate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("configs/edgegate.yaml: %v", err)
	}
	seen := map[string]bool{}
	var out [][]string
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if len(path) > 0 && freeForm[path[len(path)-1]] {
					walk(n.Content[i+1], path) // a user's name: its keys are the map's
					continue
				}
				p := append(append([]string(nil), path...), k)
				if id := strings.Join(p, "."); !seen[id] {
					seen[id] = true
					out = append(out, p)
				}
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&doc, nil)
	return out
}

// TestConfigKeysDocumented: every key of the reference config (configs/edgegate.yaml) is
// written as code in README.md or docs/. A key whose name is unique in the config counts
// wherever it is; one whose name several sections share (max_bytes, address, tls…) counts
// as `parent.key`, or beside its parent in the same code, or in a section that also names
// its parent.
func TestConfigKeysDocumented(t *testing.T) {
	keys := configKeys(t)
	if len(keys) < 100 {
		t.Fatalf("only %d keys in configs/edgegate.yaml: is the parser broken?", len(keys))
	}
	parents := map[string]map[string]bool{} // key name → the names of its parents
	for _, k := range keys {
		name := k[len(k)-1]
		if parents[name] == nil {
			parents[name] = map[string]bool{}
		}
		parents[name][strings.Join(k[:len(k)-1], ".")] = true
	}
	secs := codeChunks(t)
	in := func(sec []string, re *regexp.Regexp) bool {
		for _, c := range sec {
			if re.MatchString(c) {
				return true
			}
		}
		return false
	}
	var missing []string
	for _, k := range keys {
		name := k[len(k)-1]
		self := word(name)
		ok := false
		if len(parents[name]) == 1 || len(k) == 1 {
			for _, sec := range secs {
				if ok = in(sec, self); ok {
					break
				}
			}
		} else {
			parent := word(k[len(k)-2])
			dotted := word(k[len(k)-2] + "." + name)
			for _, sec := range secs {
				for _, c := range sec {
					if dotted.MatchString(c) || (parent.MatchString(c) && self.MatchString(c)) {
						ok = true
					}
				}
				if ok = ok || (in(sec, self) && in(sec, parent)); ok {
					break
				}
			}
		}
		if !ok {
			missing = append(missing, strings.Join(k, "."))
		}
	}
	for _, k := range missing {
		t.Errorf("config key %s (configs/edgegate.yaml) is in neither README.md nor docs/", k)
	}
	t.Logf("%d config keys documented", len(keys))
}

// buildEdgegate builds the binary of this tree into a temporary directory.
func buildEdgegate(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgegate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/edgegate")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/edgegate: %v\n%s", err, out)
	}
	return bin
}

var (
	usageCmdRE = regexp.MustCompile(`^  ([a-z]+)\b`)
	flagRE     = regexp.MustCompile(`^\s+-([a-zA-Z][\w-]*)`)
)

// TestCommandLineDocumented: every command that `edgegate help` lists, every subcommand of
// `edgegate buffer` and every flag each of them takes (from its -h) is written as code in
// README.md or docs/: the command as `edgegate CMD`, a flag as -flag or --flag.
func TestCommandLineDocumented(t *testing.T) {
	bin := buildEdgegate(t)
	help := func(args ...string) string {
		out, _ := testutil.BinCommand(bin, args...).CombinedOutput() // -h exits 0 or 2: the text counts
		return string(out)
	}
	var cmds [][]string
	in := false
	for _, l := range strings.Split(help("help"), "\n") {
		if strings.HasPrefix(l, "commands:") {
			in = true
			continue
		}
		if m := usageCmdRE.FindStringSubmatch(l); in && m != nil {
			cmds = append(cmds, []string{m[1]})
		}
	}
	if len(cmds) < 5 {
		t.Fatalf("edgegate help lists %d commands: is the parser broken?\n%s", len(cmds), help("help"))
	}
	var all [][]string
	for _, c := range cmds {
		if c[0] != "buffer" {
			all = append(all, c)
			continue
		}
		// usage: edgegate buffer <stats|tail> [flags]
		m := regexp.MustCompile(`edgegate buffer <([a-z|]+)>`).FindStringSubmatch(help("buffer"))
		if m == nil {
			t.Fatalf("edgegate buffer: no <sub|commands> in its usage:\n%s", help("buffer"))
		}
		for _, s := range strings.Split(m[1], "|") {
			all = append(all, []string{"buffer", s})
		}
	}
	var code []string
	for _, sec := range codeChunks(t) {
		code = append(code, sec...)
	}
	text := strings.Join(code, "\n")
	nflags := 0
	for _, c := range all {
		name := "edgegate " + strings.Join(c, " ")
		if !word(name).MatchString(text) {
			t.Errorf("command %q is in neither README.md nor docs/", name)
		}
		for _, l := range strings.Split(help(append(c, "-h")...), "\n") {
			m := flagRE.FindStringSubmatch(l)
			if m == nil || m[1] == "h" || m[1] == "help" {
				continue
			}
			nflags++
			if !word("-"+m[1]).MatchString(text) && !word("--"+m[1]).MatchString(text) {
				t.Errorf("flag -%s of %q is in neither README.md nor docs/", m[1], name)
			}
		}
	}
	if nflags < 5 {
		t.Fatalf("only %d flags found: is the -h parser broken?", nflags)
	}
	names := make([]string, len(all))
	for i, c := range all {
		names[i] = strings.Join(c, " ")
	}
	sort.Strings(names)
	t.Logf("commands %s and %d flags documented", strings.Join(names, ", "), nflags)
}

// TestREADMEFirstScreen: the README's first screen (its first 25 lines) gives the two
// commands a newcomer sets up with, `make run` and `make test`, in one block of their own.
func TestREADMEFirstScreen(t *testing.T) {
	p := readPage(t, "README.md")
	for _, f := range p.Fences {
		if f.Line > 25 {
			break
		}
		var cmds []string
		for _, l := range templateLines(f.Content) {
			c, _, _ := strings.Cut(l, "#")
			cmds = append(cmds, strings.TrimSpace(c))
		}
		if strings.Join(cmds, "; ") == "make run; make test" {
			return
		}
	}
	t.Error("README.md: no block of `make run` and `make test` in its first 25 lines")
}

// pageRefRE finds a reference to a page, and to a section of it by its heading:
// docs/devices.md, "Client ids belong to users" · README "Connect a device" · "The disk
// buffer" in docs/operations.md.
var pageRefRE = regexp.MustCompile(`(?:"([^"\n]+)" in )?\b(README(?:\.md)?|docs/[\w-]+\.md)\b(?:,? "([^"\n]+)"|: "([^"\n]+)")?`)

// TestReferencesFromConfigAndUnit: the pages and sections the reference configs and the
// systemd unit send their reader to exist (the README's sections moved to docs/ once).
func TestReferencesFromConfigAndUnit(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "configs", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repoRoot, "systemd", "edgegate.service"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, f)
		for i, l := range strings.Split(string(b), "\n") {
			for _, m := range pageRefRE.FindAllStringSubmatch(l, -1) {
				n++
				page := m[2]
				if page == "README" {
					page = "README.md"
				}
				at := fmt.Sprintf("%s:%d: %s", rel, i+1, m[0])
				if _, err := os.Stat(filepath.Join(repoRoot, page)); err != nil {
					t.Errorf("%s: %v", at, err)
					continue
				}
				for _, h := range []string{m[1], m[3], m[4]} {
					if h != "" && !readPage(t, page).anchors()[slug(h)] {
						t.Errorf("%s: %s has no section %q", at, page, h)
					}
				}
			}
		}
	}
	t.Logf("%d references to the docs", n)
}

// Package edgegate_test holds the checks of the tree as a whole: the import rules of the
// package table (DESIGN.md, "must not"; README, folder table).
package edgegate_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/edgegate/edgegate/"

// rule forbids the packages under from (a folder of the module, with its sub-folders) to
// import a package under any of the folders in not, with why.
type rule struct {
	from string
	not  []string
	why  string
}

var rules = []rule{
	{"sensors", []string{"gateway", "buffer", "uplink", "pipeline", "cmd"}, "readings leave through the broker's ingest path; a driver owns its config"},
	{"uplink", []string{"gateway", "sensors", "pipeline", "cmd"}, "a sink owns its config; the gateway wires uplinks to the store"},
	{"pipeline", []string{"gateway", "sensors", "uplink", "cmd"}, "the pipeline owns its config and knows no sink"},
	{"buffer", []string{"gateway", "sensors", "uplink", "pipeline", "record", "cmd"}, "the store knows no MQTT, windows or sinks"},
	{"record", []string{"gateway", "sensors", "uplink", "pipeline", "buffer", "cmd"}, "the wire forms are the bottom of the graph"},
	{"internal/conf", []string{"gateway", "sensors", "uplink", "pipeline", "buffer", "record", "cmd"}, "the YAML decoder is shared ground"},
	{"internal/logs", []string{"gateway", "sensors", "uplink", "pipeline", "buffer", "record", "cmd"}, "the log schema is shared ground"},
	{"internal/topic", []string{"gateway", "sensors", "uplink", "pipeline", "buffer", "record", "cmd"}, "topic matching is shared ground"},
	{"internal/backoff", []string{"gateway", "sensors", "uplink", "pipeline", "buffer", "record", "cmd"}, "backoff is shared ground"},
}

// under reports whether the module path p is the folder dir or below it.
func under(p, dir string) bool {
	return p == module+dir || strings.HasPrefix(p, module+dir+"/")
}

// imports lists, per package of the module, the module's packages it imports (without its
// tests).
func imports(t *testing.T) map[string][]string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goBin, "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m[f[0]] = nil
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module) {
				m[f[0]] = append(m[f[0]], imp)
			}
		}
	}
	return m
}

// TestImportRules: no arrow of the package table's "must not" column appears. The leaves
// (sensors, uplink, pipeline, buffer, record) import nothing from gateway: each owns its
// config, and the gateway composes them.
func TestImportRules(t *testing.T) {
	pkgs := imports(t)
	for _, r := range rules {
		found := false
		for p, imps := range pkgs {
			if !under(p, r.from) {
				continue
			}
			found = true
			for _, imp := range imps {
				for _, not := range r.not {
					if under(imp, not) {
						t.Errorf("%s imports %s: %s must not import %s/ (%s)",
							strings.TrimPrefix(p, module), strings.TrimPrefix(imp, module), r.from, not, r.why)
					}
				}
			}
		}
		if !found {
			t.Errorf("rule for %s/: no such package (moved? update the rule)", r.from)
		}
	}
}

// TestRuleCatches: the check sees an arrow when there is one (pipeline imports buffer).
func TestRuleCatches(t *testing.T) {
	pkgs := imports(t)
	seen := false
	for _, imp := range pkgs[module+"pipeline"] {
		seen = seen || under(imp, "buffer")
	}
	if !seen {
		t.Fatalf("go list shows no import of buffer by pipeline: %v", pkgs[module+"pipeline"])
	}
}

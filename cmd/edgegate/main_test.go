package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestValidate(t *testing.T) {
	code, out, errOut := runCmd("validate", "-c", "../../configs/demo.yaml")
	if code != 0 || !strings.Contains(out, "valid") || errOut != "" {
		t.Fatalf("demo config: code %d, out %q, err %q", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("gateway:\n  idd: x\n"), 0o644)
	code, _, errOut = runCmd("validate", "-c", bad)
	if code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	for _, want := range []string{bad + `:2:3: gateway: unknown key "idd"`, bad + ":2:3: gateway.id is required", "problem(s) found"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	code, _, errOut = runCmd("validate", "-c", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	if code, _, e := runCmd(); code != 2 || !strings.Contains(e, "usage") {
		t.Errorf("no args: %d %q", code, e)
	}
	if code, _, e := runCmd("frobnicate"); code != 2 || !strings.Contains(e, "unknown command") {
		t.Errorf("unknown command: %d %q", code, e)
	}
	if code, _, _ := runCmd("validate", "--nope"); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	if code != 0 || !strings.HasPrefix(out, "edgegate ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %d %q", code, out)
	}
}

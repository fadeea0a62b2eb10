package packaging

import (
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// debLayout returns the files nfpm.yaml puts in the .deb: destination path → mode.
func debLayout(t *testing.T) map[string]fs.FileMode {
	t.Helper()
	b, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Contents []struct {
			Src      string `yaml:"src"`
			Dst      string `yaml:"dst"`
			Type     string `yaml:"type"`
			FileInfo struct {
				Mode fs.FileMode `yaml:"mode"`
			} `yaml:"file_info"`
		} `yaml:"contents"`
	}
	if err := yaml.Unmarshal(b, &spec); err != nil {
		t.Fatalf("nfpm.yaml: %v", err)
	}
	out := map[string]fs.FileMode{}
	for _, c := range spec.Contents {
		if c.Type != "tree" {
			out[c.Dst] = c.FileInfo.Mode
			continue
		}
		err := filepath.WalkDir(filepath.Join("..", c.Src), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(filepath.Join("..", c.Src), p)
			out[path.Join(c.Dst, filepath.ToSlash(rel))] = c.FileInfo.Mode
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// installed returns the regular files under root: path inside root → permission bits.
func installed(t *testing.T, root string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out["/"+strings.TrimPrefix(p, root+"/")] = info.Mode().Perm()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	cmd := exec.Command("make", append([]string{"-C", "..", "--no-print-directory"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func sortedKeys(m map[string]fs.FileMode) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestMakeInstall checks that `make install PREFIX=/usr` lays out exactly what the .deb
// installs, with the same modes; that another PREFIX points the unit at its binary; that
// an edited config survives a second install; and that `make uninstall` leaves only the
// config.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	root := t.TempDir()
	makeIn(t, "install", "DESTDIR="+root, "PREFIX=/usr")
	got, want := installed(t, root), debLayout(t)
	if strings.Join(sortedKeys(got), "\n") != strings.Join(sortedKeys(want), "\n") {
		t.Fatalf("make install PREFIX=/usr installed\n%s\nthe .deb installs\n%s",
			strings.Join(sortedKeys(got), "\n"), strings.Join(sortedKeys(want), "\n"))
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: mode %v, the .deb's %v", p, got[p], m)
		}
	}

	// The config is the user's: a second install keeps an edited copy.
	cfg := filepath.Join(root, "etc/edgegate/edgegate.yaml")
	if err := os.WriteFile(cfg, []byte("# edited\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	makeIn(t, "install", "DESTDIR="+root, "PREFIX=/usr")
	if b, _ := os.ReadFile(cfg); string(b) != "# edited\n" {
		t.Errorf("a second install replaced the edited config: %q", b)
	}

	makeIn(t, "uninstall", "DESTDIR="+root, "PREFIX=/usr")
	if left := sortedKeys(installed(t, root)); strings.Join(left, " ") != "/etc/edgegate/edgegate.yaml" {
		t.Errorf("after uninstall, left %v; want only the config", left)
	}

	// Under /usr/local the unit runs the binary installed there.
	local := t.TempDir()
	makeIn(t, "install", "DESTDIR="+local)
	unit, err := os.ReadFile(filepath.Join(local, "usr/local/lib/systemd/system/edgegate.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/edgegate run -c /etc/edgegate/edgegate.yaml") {
		t.Errorf("unit under PREFIX=/usr/local does not run /usr/local/bin/edgegate:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(local, "usr/local/bin/edgegate")); err != nil {
		t.Error(err)
	}
}

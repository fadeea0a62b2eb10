// Package packaging holds the .deb definition (nfpm.yaml, maintainer scripts, the default
// config); its test checks the packages `make dist` built.
package packaging

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// debs returns the packages of EDGEGATE_DIST (make check-dist sets it), by architecture.
func debs(t *testing.T) map[string]string {
	t.Helper()
	dir := os.Getenv("EDGEGATE_DIST")
	if dir == "" {
		// `make test` runs before the packages exist; CI checks them with make check-dist.
		t.Skip("no packages to check: run `make dist check-dist`")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	out := map[string]string{}
	for _, arch := range []string{"arm64", "amd64"} {
		m, _ := filepath.Glob(filepath.Join(dir, "edgegate_*_"+arch+".deb"))
		if len(m) != 1 {
			t.Fatalf("want one %s package in %s, found %v", arch, dir, m)
		}
		out[arch] = m[0]
	}
	return out
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestDebContents(t *testing.T) {
	for arch, deb := range debs(t) {
		t.Run(arch, func(t *testing.T) {
			// dpkg-deb -c lines: mode owner/group size date time path
			files := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(dpkgDeb(t, "-c", deb)), "\n") {
				f := strings.Fields(l)
				files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0]
			}
			for path, mode := range map[string]string{
				"/usr/bin/edgegate":                                  "-rwxr-xr-x",
				"/usr/lib/systemd/system/edgegate.service":           "-rw-r--r--",
				"/usr/lib/sysusers.d/edgegate.conf":                  "-rw-r--r--",
				"/usr/lib/udev/rules.d/60-edgegate.rules":            "-rw-r--r--",
				"/etc/edgegate/edgegate.yaml":                        "-rw-r-----",
				"/usr/share/doc/edgegate/README.md":                  "-rw-r--r--",
				"/usr/share/doc/edgegate/edgegate.yaml.example":      "-rw-r--r--",
				"/usr/share/doc/edgegate/LICENSE":                    "-rw-r--r--",
				"/usr/share/doc/edgegate/NOTICE":                     "-rw-r--r--",
				"/usr/share/doc/edgegate/docs/operations.md":         "-rw-r--r--",
				"/usr/share/doc/edgegate/docs/grafana/edgegate.json": "-rw-r--r--",
			} {
				got, ok := files[path]
				if !ok {
					t.Errorf("%s is not in the package:\n%v", path, files)
				} else if got != mode {
					t.Errorf("%s: mode %s, want %s", path, got, mode)
				}
			}

			info := dpkgDeb(t, "-I", deb)
			for _, want := range []string{"Package: edgegate", "Architecture: " + arch, "Section: net"} {
				if !strings.Contains(info, want) {
					t.Errorf("control lacks %q:\n%s", want, info)
				}
			}
			if !regexp.MustCompile(`(?m)^ Version: [0-9]`).MatchString(info) {
				t.Errorf("version must start with a digit:\n%s", info)
			}

			// The config is a conffile: dpkg keeps an edited copy on upgrade.
			ctl := t.TempDir()
			dpkgDeb(t, "-e", deb, ctl)
			conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/edgegate/edgegate.yaml" {
				t.Errorf("conffiles = %q (%v), want /etc/edgegate/edgegate.yaml", conffiles, err)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				if _, err := os.Stat(filepath.Join(ctl, s)); err != nil {
					t.Errorf("no %s script: %v", s, err)
				}
			}

			// A static binary for the package's architecture.
			root := t.TempDir()
			dpkgDeb(t, "-x", deb, root)
			bin := filepath.Join(root, "usr/bin/edgegate")
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}[arch]
			if f.Machine != want {
				t.Errorf("binary for %v, want %v", f.Machine, want)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("binary is dynamically linked (has an ELF interpreter)")
				}
			}
			// The shipped config is valid for the shipped binary.
			run := []string{bin}
			if arch == "arm64" {
				q, err := exec.LookPath("qemu-aarch64-static")
				if err != nil {
					t.Log("qemu-aarch64-static not installed: the arm64 binary is not run")
					return
				}
				run = []string{q, bin}
			}
			cmd := exec.Command(run[0], append(run[1:], "validate", "-c", filepath.Join(root, "etc/edgegate/edgegate.yaml"))...)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "valid") {
				t.Errorf("shipped config does not validate: %v\n%s", err, out)
			}
			out, err := exec.Command(run[0], append(run[1:], "version")...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "linux/"+arch) {
				t.Errorf("version: %v %s", err, out)
			}
			st, _ := os.Stat(bin)
			t.Logf("%s: binary %.1f MiB, package %s", arch, float64(st.Size())/(1<<20), deb)
		})
	}
}

// TestDebSums checks that SHA256SUMS covers every package and binary of the release and
// that each sum is right (what a user runs after downloading: sha256sum -c SHA256SUMS).
func TestDebSums(t *testing.T) {
	debs(t) // skips unless make check-dist
	dir := os.Getenv("EDGEGATE_DIST")
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "edgegate_*"))
	if n := strings.Count(string(sums), "\n"); n != len(files) || n != 4 {
		t.Errorf("SHA256SUMS has %d lines for %d release files (want 2 binaries and 2 packages):\n%s", n, len(files), sums)
	}
	cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
}

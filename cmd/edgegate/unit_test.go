package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitHardening pins the directives SPEC §6 and the install guide rely on.
func TestUnitHardening(t *testing.T) {
	b, err := os.ReadFile("../../systemd/edgegate.service")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=notify", "WatchdogSec=30s", "TimeoutStopSec=30s", "Restart=on-failure",
		"ExecStartPre=/usr/bin/edgegate validate -c /etc/edgegate/edgegate.yaml",
		"ExecStart=/usr/bin/edgegate run -c /etc/edgegate/edgegate.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"After=network-online.target time-sync.target",
		"User=edgegate", "SupplementaryGroups=i2c gpio",
		"StateDirectory=edgegate", "ConfigurationDirectory=edgegate",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
		"DevicePolicy=closed", "DeviceAllow=char-i2c rw", "DeviceAllow=/dev/gpiomem rw",
		"MemoryHigh=192M", "MemoryMax=256M", "Environment=GOMEMLIMIT=96MiB",
	} {
		if !lines[want] {
			t.Errorf("unit lacks %q", want)
		}
	}
	if !strings.Contains(string(b), "LoadCredential=") {
		t.Error("unit does not document LoadCredential=")
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit (with ExecStart pointing at an
// executable that exists here), when systemd-analyze is installed.
func TestUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd)")
	}
	b, err := os.ReadFile("../../systemd/edgegate.service")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	unit := filepath.Join(t.TempDir(), "edgegate.service")
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), "/usr/bin/edgegate", self)), 0o644)
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSysusers applies the sysusers snippet to an empty root: the edgegate user exists and
// belongs to i2c and gpio.
func TestSysusers(t *testing.T) {
	su, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers not installed (Debian: apt-get install systemd)")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	conf, _ := filepath.Abs("../../systemd/edgegate.sysusers")
	if out, err := exec.Command(su, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !strings.Contains(string(passwd), "edgegate:x:") || !strings.Contains(string(passwd), ":/var/lib/edgegate:/usr/sbin/nologin") {
		t.Errorf("passwd:\n%s", passwd)
	}
	for _, g := range []string{"i2c", "gpio"} {
		found := false
		for _, l := range strings.Split(string(group), "\n") {
			if strings.HasPrefix(l, g+":") && strings.HasSuffix(l, ":edgegate") {
				found = true
			}
		}
		if !found {
			t.Errorf("edgegate is not in group %s:\n%s", g, group)
		}
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateChecksFilesAndHardware (issue 22): validate refuses what run would refuse at
// start — a password file that is not there, an I2C bus this machine does not have — each
// at its key's FILE:LINE:COL; --offline checks the config alone and accepts it.
func TestValidateChecksFilesAndHardware(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgegate.yaml")
	y := fmt.Sprintf(`gateway: {id: gw-val, data_dir: %q}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:1883"}]
sensors:
  - name: bme
    driver: bme280
    bus: /dev/i2c-250
uplinks:
  - name: cloud
    type: mqtt
    url: tcp://broker.example:1883
    username: gw
    password_file: %s
`, filepath.Join(dir, "data"), filepath.Join(dir, "cloud.pw"))
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("validate", "-c", cfg)
	if code != exitUser {
		t.Errorf("validate: exit %d, want %d; stdout %q", code, exitUser, out)
	}
	for _, want := range []string{
		cfg + ":7:10: sensors[0].bus /dev/i2c-250: no such I2C bus on this machine",
		cfg + ":13:20: uplinks[0].password_file " + filepath.Join(dir, "cloud.pw") + ": no such file (run reads it at start)",
		"2 problem(s) found",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if i, j := strings.Index(errOut, cfg+":7:10:"), strings.Index(errOut, cfg+":13:20:"); i > j {
		t.Errorf("problems not in file order:\n%s", errOut)
	}
	code, out, errOut = runCmd("validate", "--offline", "-c", cfg)
	if code != exitOK || !strings.Contains(out, ": valid: gateway \"gw-val\"") || errOut != "" {
		t.Errorf("validate --offline: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// With the file there, only the bus is left.
	if err := os.WriteFile(filepath.Join(dir, "cloud.pw"), []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut = runCmd("validate", "-c", cfg); code != exitUser || strings.Contains(errOut, "password_file") || !strings.Contains(errOut, "1 problem(s) found") {
		t.Errorf("validate with the password file: exit %d, stderr:\n%s", code, errOut)
	}
}

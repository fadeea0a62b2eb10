package preflight

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/uplink/pubsubsink"
)

// machine lays out what the testdata configs refer to in a temporary directory: the files
// (certificates, secrets) in it, and a board's hardware under root (I2C bus 1, a 1-Wire
// master with one probe, a GPIO chip, a thermal zone), less the paths in without.
func machine(t *testing.T, without ...string) (dir, root string) {
	t.Helper()
	dir = t.TempDir()
	c := testutil.NewCerts(t)
	for from, to := range map[string]string{c.CAFile: "ca.pem", c.ServerCert: "server.pem", c.ServerKey: "server.key", c.ClientCert: "client.pem", c.ClientKey: "client.key"} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, to), string(b))
	}
	write(t, filepath.Join(dir, "cloud.pw"), "secret\n")
	write(t, filepath.Join(dir, "empty.pw"), "\n")
	write(t, filepath.Join(dir, "token"), "tok\n")
	root = filepath.Join(dir, "root")
	skip := map[string]bool{}
	for _, w := range without {
		skip[w] = true
	}
	for _, p := range []string{
		"/dev/i2c-1", "/dev/gpiochip0", "/sys/class/thermal/thermal_zone0/temp",
		"/sys/bus/w1/devices/w1_bus_master1/w1_master_slaves", "/sys/bus/w1/devices/28-0316a2797aff/temperature",
	} {
		if !skip[p] {
			write(t, filepath.Join(root, p), "")
		}
	}
	return dir, root
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// load parses testdata/name.yaml with $TMP standing for dir.
func load(t *testing.T, name, dir string) *config.Config {
	t.Helper()
	file := filepath.Join("testdata", name+".yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(file, []byte(strings.ReplaceAll(string(b), "$TMP", dir)), registry())
	if err != nil {
		t.Fatalf("%s does not pass config.Validate: %v", file, err)
	}
	return c
}

// TestRefusals (issue 22): each config is valid on its own, but names a file or hardware
// that is not there or not usable: Check refuses it at the key's position, with the fix.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		without []string // hardware paths absent from the machine
		want    []string // "LINE:COL: message" substrings, one per error, in order
	}{
		{name: "password_file_missing", want: []string{
			`:10:20: uplinks[0].password_file $TMP/missing.pw: no such file (run reads it at start)`}},
		{name: "password_file_empty", want: []string{
			`:6:94: uplinks[0].password_file $TMP/empty.pw: the file is empty`}},
		{name: "password_file_dir", want: []string{
			`:10:20: uplinks[0].password_file $TMP: is a directory`}},
		{name: "bearer_token_missing", want: []string{
			`:9:24: uplinks[0].bearer_token_file $TMP/missing.token: no such file`}},
		{name: "uplink_ca_missing", want: []string{
			`:10:16: uplinks[0].tls.ca_file $TMP/missing-ca.pem: no such file`}},
		{name: "uplink_client_key_missing", want: []string{
			`:11:17: uplinks[0].tls.key_file $TMP/missing.key: no such file`}},
		{name: "credentials_not_service_account", want: []string{
			`:10:23: uplinks[0].credentials_file $TMP/token: expected a service account key`}},
		{name: "credentials_missing", want: []string{
			`:10:23: uplinks[0].credentials_file $TMP/missing-sa.json: no such file`}},
		{name: "i2c_bus_missing", want: []string{
			`:8:10: sensors[0].bus /dev/i2c-7: no such I2C bus on this machine; ` + "`ls /dev/i2c-*`" + ` lists the buses`}},
		{name: "i2c_default_bus_missing", without: []string{"/dev/i2c-1"}, want: []string{
			`:6:5: sensors[0].bus /dev/i2c-1: no such I2C bus on this machine`}},
		{name: "onewire_master_missing", want: []string{
			`:8:10: sensors[0].bus w1_bus_master3: no such 1-Wire bus master on this machine; ` + "`ls /sys/bus/w1/devices`"}},
		{name: "onewire_probe_missing", want: []string{
			`:11:21: sensors[0].ds18b20.probes[1].address 28-00000000beef: no such 1-Wire device on this machine`}},
		{name: "gpio_no_chip", without: []string{"/dev/gpiochip0"}, want: []string{
			`:9:12: sensors[0].gpio.pin GPIO17: this machine has no GPIO chip (no /dev/gpiochip*)`}},
		{name: "cpu_temp_missing", want: []string{
			`:8:22: sensors[0].cpu_temp.path /sys/class/thermal/thermal_zone5/temp: no such thermal zone on this machine`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, root := machine(t, tc.without...)
			c := load(t, tc.name, dir)
			err := Check(c, Options{Root: root})
			var es conf.Errors
			if !errors.As(err, &es) {
				t.Fatalf("Check: %v, want conf.Errors", err)
			}
			if len(es) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, w := range tc.want {
				w = strings.ReplaceAll(w, "$TMP", dir)
				if i < len(es) && !strings.Contains(es[i].Error(), c.File()+w) {
					t.Errorf("error %d:\n got %s\nwant %s…", i, es[i], c.File()+w)
				}
			}
		})
	}
}

// TestAcceptsWhatIsThere: a config naming every kind of file and hardware, all present
// (and one sensor whose bus is absent but on_missing: degraded, as run starts without it),
// passes, so the unit's ExecStartPre keeps passing on the board.
func TestAcceptsWhatIsThere(t *testing.T) {
	dir, root := machine(t)
	if err := Check(load(t, "good", dir), Options{Root: root}); err != nil {
		t.Errorf("good config refused:\n%v", err)
	}
}

// TestNoHardwareNoHardwareCheck: a config without hardware sensors does not look for any,
// so it passes on a machine without I2C, 1-Wire or GPIO.
func TestNoHardwareNoHardwareCheck(t *testing.T) {
	dir, _ := machine(t)
	if err := Check(load(t, "password_file_empty", dir), Options{Root: filepath.Join(dir, "nothing")}); err == nil ||
		strings.Contains(err.Error(), "sensors") {
		t.Errorf("want only the password file refused, got:\n%v", err)
	}
}

// TestNotReadableByThisUser: a file the edgegate user may not read (root runs the tests,
// so the error is made up here) gets the fix, not only the errno.
func TestNotReadableByThisUser(t *testing.T) {
	got := fileProblem("/etc/edgegate/cloud.pw", &fs.PathError{Op: "open", Path: "/etc/edgegate/cloud.pw", Err: fs.ErrPermission})
	for _, want := range []string{"not readable by this user (uid ", "the unit runs edgegate as user edgegate",
		"`sudo chgrp edgegate /etc/edgegate/cloud.pw && sudo chmod g+r /etc/edgegate/cloud.pw`", "LoadCredential="} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}

// registry is the daemon's: gatewaytest's and the Pub/Sub sink.
func registry() config.Registry {
	r := gatewaytest.Registry()
	r.Sinks = append(r.Sinks, pubsubsink.Type())
	r.Omitted = nil
	return r
}

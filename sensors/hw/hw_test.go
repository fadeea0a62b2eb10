package hw

import (
	"io/fs"
	"strings"
	"syscall"
	"testing"
)

// Opening a device file fails with EACCES when its mode keeps the user out, and with EPERM
// when a device cgroup does (systemd's DevicePolicy=closed without DeviceAllow for it, as
// seen on the emulated board): each error names its own fix.
func TestPermissionErrorsNameTheirFix(t *testing.T) {
	tests := []struct {
		name  string
		errno syscall.Errno
		group string
		want  []string
		not   string
	}{
		{"file mode", syscall.EACCES, "i2c", []string{"permission denied on /dev/i2c-1", "group i2c", "SupplementaryGroups=i2c"}, "DeviceAllow"},
		{"device policy, i2c", syscall.EPERM, "i2c", []string{"device policy blocks /dev/i2c-1", "DeviceAllow=char-i2c rw"}, "SupplementaryGroups"},
		{"device policy, gpio", syscall.EPERM, "gpio", []string{"DeviceAllow=char-gpiochip rw"}, "SupplementaryGroups"},
		{"no device class", syscall.EPERM, "", []string{"run edgegate as root"}, "DeviceAllow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openError("/dev/i2c-1", "I2C bus", &fs.PathError{Op: "open", Path: "/dev/i2c-1", Err: tt.errno},
				func() string { return "enable it" }, tt.group)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tt.not) {
				t.Errorf("%q mentions %q", err, tt.not)
			}
		})
	}
}

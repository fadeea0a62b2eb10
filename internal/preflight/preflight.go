// Package preflight checks what a valid config refers to on this machine — the files it
// names and the hardware its sensors use — so that `edgegate validate` refuses what `run`
// would refuse at start (issue 22), each problem at the position of its key.
package preflight

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/cputemp"
	"github.com/edgegate/edgegate/sensors/ds18b20"
	"github.com/edgegate/edgegate/sensors/gpiosensor"
	"github.com/edgegate/edgegate/uplink"
)

// Options tunes Check.
type Options struct {
	// Root is prepended to the hardware paths (/dev/i2c-1, /sys/bus/w1/devices/…,
	// /dev/gpiochip*, a thermal zone), so that tests can lay out a machine of their own.
	// Empty: the real root. Files the config names are read as they are, as run reads them.
	Root string
}

// Check reads every file c names and looks for the hardware its sensors need, as `run`
// would at start. It returns nil or a conf.Errors, one per problem, positioned at the key
// that names the file or device. Sensors with on_missing: degraded are not checked: run
// starts without their hardware.
func Check(c *config.Config, o Options) error {
	k := &checker{c: c, root: o.Root}
	k.files()
	k.hardware()
	if len(k.errs) == 0 {
		return nil
	}
	sort.SliceStable(k.errs, func(i, j int) bool { // in file order, as config.Validate reports
		a, b := k.errs[i].Pos, k.errs[j].Pos
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	return k.errs
}

type checker struct {
	c    *config.Config
	root string
	errs conf.Errors
}

func (k *checker) at(key, format string, args ...any) {
	k.errs = append(k.errs, &conf.Error{File: k.c.File(), Pos: k.c.Position(key), Msg: fmt.Sprintf(format, args...)})
}

// files checks every file the config names that run reads at start.
func (k *checker) files() {
	// The listeners' certificates are loaded by config.Validate already.
	// Each sink names the files it reads (uplink.FileNamer).
	for i, u := range k.c.Uplinks {
		fn, ok := u.Sink.(uplink.FileNamer)
		if !ok {
			continue
		}
		p := fmt.Sprintf("uplinks[%d]", i)
		var cert, key string
		for _, f := range fn.Files() {
			switch f.Kind {
			case uplink.FileSecret:
				k.secret(p+"."+f.Key, f.Path)
			case uplink.FileCA:
				k.caFile(p+"."+f.Key, f.Path)
			case uplink.FileCert:
				cert = f.Path
			case uplink.FileKey:
				key = f.Path
			case uplink.FileServiceAccount:
				k.serviceAccount(p+"."+f.Key, f.Path)
			}
		}
		k.keyPair(p+".tls", cert, key)
	}
}

func (k *checker) serviceAccount(key, path string) {
	b, ok := k.read(key, path)
	if !ok {
		return
	}
	var sa struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &sa); err != nil || sa.Type != "service_account" {
		k.at(key, "%s %s: expected a service account key (JSON with \"type\": \"service_account\")", key, path)
	}
}

// read reads the file at path, named by key, or reports why it cannot.
func (k *checker) read(key, path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, true
	}
	k.at(key, "%s %s: %s", key, path, fileProblem(path, err))
	return nil, false
}

func fileProblem(path string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file (run reads it at start)"
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("not readable by this user (uid %d); the unit runs edgegate as user edgegate: "+
			"`sudo chgrp edgegate %s && sudo chmod g+r %s`, or hand it over with LoadCredential= (docs/operations.md#secrets)", os.Getuid(), path, path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error() // "is a directory": the path is already in the message
	}
	return err.Error()
}

func (k *checker) secret(key, path string) {
	if path == "" {
		return
	}
	if b, ok := k.read(key, path); ok && strings.TrimRight(string(b), "\r\n") == "" {
		k.at(key, "%s %s: the file is empty", key, path)
	}
}

func (k *checker) caFile(key, path string) {
	if path == "" {
		return
	}
	if b, ok := k.read(key, path); ok && !x509.NewCertPool().AppendCertsFromPEM(b) {
		k.at(key, "%s %s: no PEM certificate in it", key, path)
	}
}

// keyPair checks p.cert_file and p.key_file (an uplink's client certificate), each
// readable, then that they make a pair.
func (k *checker) keyPair(p, cert, key string) {
	if cert == "" && key == "" {
		return
	}
	var ok = true
	for _, f := range []struct{ key, path string }{{p + ".cert_file", cert}, {p + ".key_file", key}} {
		if f.path == "" {
			continue // config.Validate asks for both
		}
		if _, r := k.read(f.key, f.path); !r {
			ok = false
		}
	}
	if !ok || cert == "" || key == "" {
		return
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		k.at(p+".cert_file", "%s.cert_file %s and key_file %s: %v", p, cert, key, err)
	}
}

// hardware checks that the buses, pins and files of the hardware sensors exist.
func (k *checker) hardware() {
	for i, s := range k.c.Sensors {
		if s.OnMissing == "degraded" {
			continue
		}
		p := fmt.Sprintf("sensors[%d]", i)
		switch s.Driver {
		case "bme280", "bmp280", "ads1115":
			k.i2cBus(p, s.Bus)
		case "ds18b20":
			k.oneWire(p, s)
		case "gpio":
			k.gpio(p, s)
		case "cpu_temp":
			if c, ok := s.Device.(*cputemp.Config); ok {
				if _, err := os.Stat(k.path(c.Path)); err != nil {
					k.at(p+".cpu_temp.path", "%s.cpu_temp.path %s: %s; `ls /sys/class/thermal` lists the thermal zones (or set on_missing: degraded to start without it)",
						p, c.Path, hwProblem("no such thermal zone", err))
				}
			}
		}
	}
}

func (k *checker) path(p string) string { return filepath.Join(k.root, p) }

func hwProblem(missing string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return missing + " on this machine"
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Sprintf("not accessible to this user (uid %d)", os.Getuid())
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func (k *checker) i2cBus(p, bus string) {
	f, err := os.OpenFile(k.path(bus), os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return
	}
	fix := "`ls /dev/i2c-*` lists the buses; on a Raspberry Pi enable I2C with `sudo raspi-config nonint do_i2c 0` and reboot"
	if errors.Is(err, fs.ErrPermission) {
		fix = "add the user to group i2c (the unit does: SupplementaryGroups=i2c)"
	}
	k.at(p+".bus", "%s.bus %s: %s; %s (or set on_missing: degraded to start without it)", p, bus, hwProblem("no such I2C bus", err), fix)
}

func (k *checker) oneWire(p string, s sensors.Config) {
	const devices = "/sys/bus/w1/devices"
	if _, err := os.Stat(k.path(filepath.Join(devices, s.Bus))); err != nil {
		k.at(p+".bus", "%s.bus %s: %s; `ls %s` lists the masters; on a Raspberry Pi add dtoverlay=w1-gpio to /boot/firmware/config.txt and reboot (or set on_missing: degraded to start without it)",
			p, s.Bus, hwProblem("no such 1-Wire bus master", err), devices)
		return
	}
	c, ok := s.Device.(*ds18b20.Config)
	if !ok {
		return
	}
	for j, pr := range c.Probes {
		if _, err := os.Stat(k.path(filepath.Join(devices, pr.Address))); err != nil {
			key := fmt.Sprintf("%s.ds18b20.probes[%d].address", p, j)
			k.at(key, "%s %s: %s; `ls %s` lists the probes the kernel found (or set on_missing: degraded to start without it)",
				key, pr.Address, hwProblem("no such 1-Wire device", err), devices)
		}
	}
}

func (k *checker) gpio(p string, s sensors.Config) {
	c, ok := s.Device.(*gpiosensor.Config)
	if !ok {
		return
	}
	chips, _ := filepath.Glob(k.path("/dev/gpiochip*"))
	if len(chips) == 0 {
		k.at(p+".gpio.pin", "%s.gpio.pin %s: this machine has no GPIO chip (no /dev/gpiochip*) (or set on_missing: degraded to start without it)", p, c.Pin)
	}
}

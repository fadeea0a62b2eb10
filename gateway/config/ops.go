package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
)

// Ops configures how the daemon reports on itself and how it stops.
type Ops struct {
	// Listen is the ops HTTP address (/metrics, /healthz, /readyz, /status, the status
	// page); "off" disables it.
	Listen string `yaml:"listen"`
	// AllowedHosts are the host names (the Host header of a request, port aside) the ops
	// server answers to; an IP address literal is always accepted. Any other name is
	// refused (421), so a web page whose name rebinds to this board (DNS rebinding) cannot
	// read it from a browser. Default ["localhost"].
	AllowedHosts []string `yaml:"allowed_hosts"`
	Log          Log      `yaml:"log"`
	// FlushTimeout bounds how long uplinks may send what is buffered at shutdown; it must
	// stay well below the unit's TimeoutStopSec (30 s).
	FlushTimeout conf.Duration `yaml:"flush_timeout"`
	Clock        Clock         `yaml:"clock"`
}

// Log configures log/slog output on stderr.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Clock says how far the wall clock is trusted for readings edgegate stamps itself (sensor
// readings, payloads without a ts) on a board without a real-time clock.
type Clock struct {
	// Mode auto holds self-stamped readings while the kernel reports the clock
	// unsynchronised (adjtimex) or it reads before the binary was built, and rewrites them
	// to wall time once it syncs; trust takes the clock as it is.
	Mode string `yaml:"mode"`
	// MaxWait is how long auto mode waits for a sync before trusting a clock that reads
	// after the build time (held readings are then released flagged); 0 waits forever.
	MaxWait conf.Duration `yaml:"max_wait"`
}

// DefaultOpsListen is where the ops HTTP server listens unless configured (SPEC §6).
const DefaultOpsListen = "127.0.0.1:9464"

func defaultOps() Ops {
	return Ops{
		Listen:       DefaultOpsListen,
		AllowedHosts: []string{"localhost"},
		Log:          Log{Level: "info", Format: "text"},
		FlushTimeout: conf.Duration(10 * time.Second),
		Clock:        Clock{Mode: "auto", MaxWait: conf.Duration(30 * time.Minute)},
	}
}

func (c *Config) validateOps(v *conf.Reporter) {
	if c.Ops.Listen != "off" {
		host, port, err := net.SplitHostPort(c.Ops.Listen)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil || p < 0 || p > 65535 || (host != "" && net.ParseIP(host) == nil && host != "localhost") {
			v.Errorf("ops.listen", "ops.listen %q: expected HOST:PORT with an IP address (e.g. 127.0.0.1:9464), or off", c.Ops.Listen)
		}
	}
	for i, h := range c.Ops.AllowedHosts {
		if h == "" || strings.ContainsAny(h, ":/ \t") || net.ParseIP(h) != nil {
			v.Errorf(fmt.Sprintf("ops.allowed_hosts[%d]", i), "ops.allowed_hosts[%d] %q: expected a host name without port (IP addresses are always accepted)", i, h)
		}
	}
	if !oneOf(c.Ops.Log.Level, "debug", "info", "warn", "error") {
		v.Errorf("ops.log.level", "ops.log.level %q: expected debug, info, warn or error", c.Ops.Log.Level)
	}
	if !oneOf(c.Ops.Log.Format, "text", "json") {
		v.Errorf("ops.log.format", "ops.log.format %q: expected text or json", c.Ops.Log.Format)
	}
	if d := c.Ops.FlushTimeout.D(); d <= 0 || d > 10*time.Minute {
		v.Errorf("ops.flush_timeout", "ops.flush_timeout %s: expected more than 0 and at most 10m (keep it below the unit's TimeoutStopSec)", d)
	}
	if !oneOf(c.Ops.Clock.Mode, "auto", "trust") {
		v.Errorf("ops.clock.mode", "ops.clock.mode %q: expected auto or trust", c.Ops.Clock.Mode)
	}
	if c.Ops.Clock.MaxWait.D() < 0 {
		v.Errorf("ops.clock.max_wait", "ops.clock.max_wait %s: expected 0 (wait forever) or more", c.Ops.Clock.MaxWait.D())
	}
}

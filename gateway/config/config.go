// Package config is edgegate's YAML configuration (SPEC §7): the types, their defaults, a
// strict loader and one Validate that reports every problem as FILE:LINE:COL: message.
package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Config is the whole file. Each section's type and checks live in its own file.
type Config struct {
	Gateway  Gateway  `yaml:"gateway"`
	Broker   Broker   `yaml:"broker"`
	Routes   []Route  `yaml:"routes"`
	Unrouted string   `yaml:"unrouted"`
	Dedup    Dedup    `yaml:"dedup"`
	Sensors  []Sensor `yaml:"sensors"`
	Buffer   Buffer   `yaml:"buffer"`
	Uplinks  []Uplink `yaml:"uplinks"`
	Ops      Ops      `yaml:"ops"`

	Pipelines []Pipeline `yaml:"pipelines"`

	file string
	pos  map[string]Pos
}

// Default returns a config holding every default; Load decodes the file over it.
func Default() *Config {
	return &Config{
		Gateway:  defaultGateway(),
		Broker:   defaultBroker(),
		Unrouted: "forward",
		Dedup:    Dedup{TTL: Duration(24 * 60 * 60 * 1e9)},
		Buffer:   defaultBuffer(),
		Ops:      defaultOps(),
	}
}

// Load reads, decodes and validates the config file at path. The error, when not nil, is
// an Errors listing every problem, or a file-system error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data, naming it file in errors.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	c.file = file
	pos, err := decodeFile(file, data, c)
	c.pos = pos
	// Defaults that depend on other sections (an uplink's client id on the gateway id).
	c.resolve()
	if err != nil {
		var es Errors
		if errors.As(err, &es) && len(pos) > 0 {
			// Also report the semantic problems of what did decode, so one run shows all.
			if verr := c.Validate(); verr != nil {
				var ves Errors
				if errors.As(verr, &ves) {
					es = append(es, ves...)
				}
			}
			sortErrors(es)
			return nil, dedupErrors(es)
		}
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// File is the path the config was loaded from.
func (c *Config) File() string { return c.file }

// Validate checks the semantics of every section and returns every problem at once.
func (c *Config) Validate() error {
	if c.pos == nil {
		c.pos = map[string]Pos{}
	}
	v := &validator{c: c}
	c.validateGateway(v)
	c.validateBroker(v)
	c.validateRoutes(v)
	c.validateSensors(v)
	c.validateBuffer(v)
	c.validatePipelines(v)
	c.validateUplinks(v)
	c.validateOps(v)
	if len(v.errs) == 0 {
		return nil
	}
	sortErrors(v.errs)
	return dedupErrors(v.errs)
}

// validator collects errors positioned by config path.
type validator struct {
	c    *Config
	errs Errors
}

// at reports a problem with the value at path (e.g. "uplinks[0].url"). When that key is
// absent from the file, the nearest enclosing value that is present gives the position.
func (v *validator) at(path string, format string, args ...any) {
	for p := path; ; {
		if _, bad := v.c.pos[badPrefix+p]; bad {
			return // already reported as a decode error
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	v.errs = append(v.errs, &Error{File: v.c.file, Pos: v.c.Position(path), Msg: fmt.Sprintf(format, args...)})
}

// Position returns where the value at path is in the file, or where its nearest present
// parent is; the zero Pos when none is.
func (c *Config) Position(path string) Pos {
	for p := path; ; {
		if pos, ok := c.pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			if pos, ok := c.pos[""]; ok {
				return pos
			}
			return Pos{}
		}
		p = p[:i]
	}
}

// Has reports whether the file set the value at path.
func (c *Config) Has(path string) bool {
	_, ok := c.pos[path]
	return ok
}

func sortErrors(es Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Pos.Line != es[j].Pos.Line {
			return es[i].Pos.Line < es[j].Pos.Line
		}
		return es[i].Pos.Col < es[j].Pos.Col
	})
}

func dedupErrors(es Errors) Errors {
	out := es[:0]
	seen := map[string]bool{}
	for _, e := range es {
		k := e.Error()
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

func (c *Config) resolve() {
	for i := range c.Sensors {
		c.Sensors[i].resolve()
	}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		if u.ClientID == "" {
			u.ClientID = c.Gateway.ID + "-" + u.Name
		}
	}
}

// uniqueName checks the name of the i-th entry at path p (e.g. "uplinks[2]"): usable, and
// not the name of an earlier entry of the same list; names maps each name seen to its index.
func (v *validator) uniqueName(p, name string, i int, names map[string]int) {
	if !nameOK(name) {
		v.at(p+".name", "%s.name %q: use 1 to 64 letters, digits, '.', '_' or '-'", p, name)
	} else if j, dup := names[name]; dup {
		v.at(p+".name", "%s.name %q is also the name of %s[%d]", p, name, p[:strings.IndexByte(p, '[')], j)
	}
	names[name] = i
}

// nameOK reports whether s is a usable component name (sensor, uplink, pipeline): it ends
// up in metric labels, store keys and log lines.
func nameOK(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

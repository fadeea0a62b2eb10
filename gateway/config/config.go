// Package config composes edgegate's YAML configuration (SPEC §7): the gateway's own
// sections (gateway, broker, routes, dedup, buffer, ops) and the sections whose entries
// other packages own (sensors, uplinks, pipelines), decoded with the registry of what the
// binary contains and checked across sections. Every problem is reported at once as
// FILE:LINE:COL: message (internal/conf).
package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/uplink"
)

// Registry names what the binary contains: its sensor drivers and uplink sinks (in the
// order messages list them), and the sinks its build leaves out, with why. cmd/edgegate
// builds it; nothing registers itself. validate and run check against the same one.
type Registry struct {
	Sensors []sensors.DriverType
	Sinks   []uplink.SinkType
	// Omitted maps a sink type this build leaves out to why (a build tag).
	Omitted map[string]string
}

// Config is the whole file. The gateway's own sections are declared in this package, each
// in its own file; the entries of sensors, uplinks and pipelines by their packages.
type Config struct {
	Gateway  Gateway          `yaml:"gateway"`
	Broker   Broker           `yaml:"broker"`
	Routes   []Route          `yaml:"routes"`
	Unrouted string           `yaml:"unrouted"`
	Dedup    Dedup            `yaml:"dedup"`
	Sensors  []sensors.Config `yaml:"sensors"`
	Buffer   Buffer           `yaml:"buffer"`
	Uplinks  []uplink.Config  `yaml:"uplinks"`
	Ops      Ops              `yaml:"ops"`

	Pipelines []pipeline.Config `yaml:"pipelines"`

	file string
	doc  *conf.Doc
	reg  Registry
}

// Default returns a config holding every default; Parse decodes the file over it.
func Default() *Config {
	return &Config{
		Gateway:  defaultGateway(),
		Broker:   defaultBroker(),
		Unrouted: "forward",
		Dedup:    Dedup{TTL: conf.Duration(24 * time.Hour)},
		Buffer:   defaultBuffer(),
		Ops:      defaultOps(),
	}
}

// Load reads, decodes and validates the config file at path against the registry. The
// error, when not nil, is a conf.Errors listing every problem, or a file-system error.
func Load(path string, reg Registry) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, reg)
}

// Parse decodes and validates data against the registry, naming it file in errors.
func Parse(file string, data []byte, reg Registry) (*Config, error) {
	c := Default()
	c.file, c.reg = file, reg
	doc := conf.Decode(file, data, c)
	if !doc.Decoded() {
		return nil, doc.Err()
	}
	c.doc = doc
	c.resolve(doc)
	c.validate(doc)
	if err := doc.Err(); err != nil {
		return nil, err
	}
	c.doc = doc.Positions()
	return c, nil
}

// File is the path the config was loaded from.
func (c *Config) File() string { return c.file }

// Position returns where the value at key (sensors[0].bus) is in the file, or its nearest
// present parent; the zero Pos for a config built in code.
func (c *Config) Position(key string) conf.Pos {
	if c.doc == nil {
		return conf.Pos{}
	}
	return c.doc.Position(key)
}

// Registry is the registry the config was checked against: the drivers and sinks its
// sensors and uplinks are built with.
func (c *Config) Registry() Registry { return c.reg }

// WithRegistry sets the registry of a config built in code (Default, then edited), before
// Validate.
func (c *Config) WithRegistry(reg Registry) *Config {
	c.reg = reg
	return c
}

// Validate checks the semantics of every section again (a config built or edited in code)
// and returns every problem at once.
func (c *Config) Validate() error {
	doc := conf.NewDoc(c.file)
	if c.doc != nil {
		doc = c.doc.Positions()
	}
	c.validate(doc)
	return doc.Err()
}

// resolve runs the second decoding pass (the blocks of drivers and sinks) and fills the
// defaults that depend on other sections (an uplink's client id on the gateway id).
func (c *Config) resolve(doc *conf.Doc) {
	for i := range c.Sensors {
		p := fmt.Sprintf("sensors[%d]", i)
		c.Sensors[i].Resolve(doc, doc.Reporter(p), c.reg.Sensors)
	}
	for i := range c.Uplinks {
		p := fmt.Sprintf("uplinks[%d]", i)
		c.Uplinks[i].Resolve(doc, doc.Reporter(p), c.reg.Sinks, c.reg.Omitted, c.Gateway.ID)
	}
}

func (c *Config) validate(doc *conf.Doc) {
	r := doc.Reporter("")
	c.validateGateway(r)
	c.validateBroker(r)
	c.validateRoutes(r)
	c.validateSensors(r)
	c.validateBuffer(r)
	c.validatePipelines(r)
	c.validateUplinks(r)
	c.validateOps(r)
}

func (c *Config) validateSensors(r *conf.Reporter) {
	names := map[string]int{}
	for i := range c.Sensors {
		sr := r.At(fmt.Sprintf("sensors[%d]", i))
		uniqueName(sr, c.Sensors[i].Name, i, names)
		c.Sensors[i].Validate(sr, c.reg.Sensors)
	}
}

func (c *Config) validateUplinks(r *conf.Reporter) {
	names := map[string]int{}
	for i := range c.Uplinks {
		ur := r.At(fmt.Sprintf("uplinks[%d]", i))
		uniqueName(ur, c.Uplinks[i].Name, i, names)
		c.Uplinks[i].Validate(ur, c.reg.Sinks, c.reg.Omitted)
	}
}

// uniqueName checks the name of the i-th entry of a list (r is at it): usable, and not the
// name of an earlier entry; names maps each name seen to its index.
func uniqueName(r *conf.Reporter, name string, i int, names map[string]int) {
	p := r.Path("")
	if !nameOK(name) {
		r.Errorf("name", "%s.name %q: use 1 to 64 letters, digits, '.', '_' or '-'", p, name)
	} else if j, dup := names[name]; dup {
		r.Errorf("name", "%s.name %q is also the name of %s[%d]", p, name, p[:strings.IndexByte(p, '[')], j)
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

package config

import (
	"fmt"
	"strings"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// Route maps a topic pattern with named wildcards to a series (SPEC §2).
type Route struct {
	// Topic is a pattern such as devices/+device/+metric.
	Topic string `yaml:"topic"`
	// Format of the payload: json (an object with value, ts, id, unit, or several numeric
	// fields), senml (RFC 8428 JSON) or number.
	Format string `yaml:"format"`
	// Series is a template over the pattern's names, {topic}, {field} and {unit}; default
	// "{topic}". Readings named by the payload (JSON fields, SenML names) get "/<field>"
	// appended unless the template places {field} itself.
	Series string `yaml:"series"`
	// Unit is the SenML unit of the readings unless Units or the payload gives one.
	Unit string `yaml:"unit"`
	// Units maps a field name (JSON field or SenML name) to its unit.
	Units map[string]string `yaml:"units"`
	// Labels are attached to every record; values may use placeholders too.
	Labels map[string]string `yaml:"labels"`
}

// SetDefaults implements conf.Defaulter.
func (r *Route) SetDefaults() {
	r.Format = "json"
	r.Series = "{topic}"
}

// Dedup configures the ingest dedup index (SPEC §5).
type Dedup struct {
	// TTL is how long a record id is remembered; 0 disables dedup.
	TTL conf.Duration `yaml:"ttl"`
}

// RouteFormats lists the payload formats routes accept.
var RouteFormats = []string{"json", "senml", "number"}

// routePlaceholders are the names a route's series and labels may use besides the
// pattern's wildcard names; a wildcard may not take one of them.
var routePlaceholders = []string{"topic", "field", "unit"}

func (c *Config) validateRoutes(v *conf.Reporter) {
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		pat, err := topic.ParsePattern(r.Topic)
		if err != nil {
			v.Errorf(p+".topic", "%s.topic: %v", p, err)
		}
		if !oneOf(r.Format, RouteFormats...) {
			v.Errorf(p+".format", "%s.format %q: expected one of %s", p, r.Format, strings.Join(RouteFormats, ", "))
		}
		names := map[string]bool{}
		for _, n := range routePlaceholders {
			names[n] = true
		}
		if pat != nil {
			for _, n := range pat.Names() {
				if oneOf(n, routePlaceholders...) {
					v.Errorf(p+".topic", "%s.topic: wildcard name %q is reserved (%s are placeholders of their own)", p, n, strings.Join(routePlaceholders, ", "))
				}
				names[n] = true
			}
		}
		check := func(key, tmpl string) {
			t, err := topic.ParseTemplate(tmpl)
			if err != nil {
				v.Errorf(key, "%s: %v", key, err)
				return
			}
			if pat == nil {
				return
			}
			for _, n := range t.Names() {
				if !names[n] {
					v.Errorf(key, "%s: placeholder {%s} is not a wildcard name of %q (names: %s)", key, n, r.Topic, strings.Join(sortedKeys(names), ", "))
				}
			}
		}
		if r.Series == "" {
			v.Errorf(p+".series", "%s.series must not be empty (default {topic})", p)
		} else {
			check(p+".series", r.Series)
		}
		for k, u := range r.Units {
			if k == "" {
				v.Errorf(p+".units", "%s.units: empty field name", p)
			}
			if len(u) > 32 {
				v.Errorf(p+".units."+k, "%s.units.%s: a unit is at most 32 bytes", p, k)
			}
		}
		if len(r.Unit) > 32 {
			v.Errorf(p+".unit", "%s.unit: a unit is at most 32 bytes", p)
		}
		for k, val := range r.Labels {
			if k == "" {
				v.Errorf(p+".labels", "%s.labels: empty label name", p)
			}
			check(p+".labels."+k, val)
		}
	}
	if !oneOf(c.Unrouted, "forward", "drop") {
		v.Errorf("unrouted", "unrouted %q: expected forward (raw, as-is) or drop", c.Unrouted)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

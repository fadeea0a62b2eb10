package config

import (
	"fmt"
	"strings"

	"github.com/edgegate/edgegate/gateway/topic"
)

// Route maps a topic pattern with named wildcards to a series (SPEC §2).
type Route struct {
	// Topic is a pattern such as devices/+device/+metric.
	Topic string `yaml:"topic"`
	// Format of the payload: json (an object with value, ts, id, unit) or number.
	Format string `yaml:"format"`
	// Series is a template over the pattern's names and {topic}; default "{topic}".
	Series string `yaml:"series"`
	// Unit is the SenML unit of the readings unless the payload gives one.
	Unit string `yaml:"unit"`
	// Labels are attached to every record; values may use placeholders too.
	Labels map[string]string `yaml:"labels"`
}

func (r *Route) setDefaults() {
	r.Format = "json"
	r.Series = "{topic}"
}

// Dedup configures the ingest dedup index (SPEC §5).
type Dedup struct {
	// TTL is how long a record id is remembered; 0 disables dedup.
	TTL Duration `yaml:"ttl"`
}

// RouteFormats lists the payload formats routes accept.
var RouteFormats = []string{"json", "number"}

func (c *Config) validateRoutes(v *validator) {
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		pat, err := topic.ParsePattern(r.Topic)
		if err != nil {
			v.at(p+".topic", "%s.topic: %v", p, err)
		}
		if !oneOf(r.Format, RouteFormats...) {
			v.at(p+".format", "%s.format %q: expected one of %s", p, r.Format, strings.Join(RouteFormats, ", "))
		}
		names := map[string]bool{"topic": true}
		if pat != nil {
			for _, n := range pat.Names() {
				names[n] = true
			}
		}
		check := func(key, tmpl string) {
			t, err := topic.ParseTemplate(tmpl)
			if err != nil {
				v.at(key, "%s: %v", key, err)
				return
			}
			if pat == nil {
				return
			}
			for _, n := range t.Names() {
				if !names[n] {
					v.at(key, "%s: placeholder {%s} is not a wildcard name of %q (names: %s)", key, n, r.Topic, strings.Join(sortedKeys(names), ", "))
				}
			}
		}
		if r.Series == "" {
			v.at(p+".series", "%s.series must not be empty (default {topic})", p)
		} else {
			check(p+".series", r.Series)
		}
		for k, val := range r.Labels {
			if k == "" {
				v.at(p+".labels", "%s.labels: empty label name", p)
			}
			check(p+".labels."+k, val)
		}
	}
	if !oneOf(c.Unrouted, "forward", "drop") {
		v.at("unrouted", "unrouted %q: expected forward (raw, as-is) or drop", c.Unrouted)
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

package config

import (
	"fmt"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// validatePipelines checks each pipeline (its package's Validate), and across sections:
// names, and output and late topics that no other pipeline, route or sensor uses.
func (c *Config) validatePipelines(r *conf.Reporter) {
	names := map[string]int{}
	topics := map[string]string{} // output and late topics → who publishes there
	for i := range c.Pipelines {
		pl := &c.Pipelines[i]
		pr := r.At(fmt.Sprintf("pipelines[%d]", i))
		uniqueName(pr, pl.Name, i, names)
		if !pl.Validate(pr) {
			continue
		}
		key := pr.Path("output")
		for _, t := range []struct{ topic, what string }{{pl.OutputTopic(), "output"}, {pl.LateTopic(), "late topic"}} {
			if other, dup := topics[t.topic]; dup {
				pr.Errorf("output", "%s: the %s %q is also the %s", key, t.what, t.topic, other)
			}
			topics[t.topic] = fmt.Sprintf("%s of %s", t.what, pr.Path(""))
			c.checkNotDeviceTopic(pr, key, t.what, t.topic)
		}
	}
}

// checkNotDeviceTopic reports a pane topic that routes or sensors also use: local
// subscribers could not tell panes from readings.
func (c *Config) checkNotDeviceTopic(r *conf.Reporter, key, what, t string) {
	for k, rt := range c.Routes {
		if pat, err := topic.ParsePattern(rt.Topic); err == nil && topic.Match(pat.Filter(), t) {
			r.Errorf("output", "%s: the %s %q matches routes[%d].topic %q: panes and readings would share a topic", key, what, t, k, rt.Topic)
		}
	}
	for k, s := range c.Sensors {
		tm, err := topic.ParseTemplate(s.Topic)
		if err != nil {
			continue
		}
		f := tm.Expand(func(n string) string {
			if n == "name" {
				return s.Name
			}
			return "+"
		})
		if topic.ValidFilter(f) == nil && topic.Match(f, t) {
			r.Errorf("output", "%s: the %s %q is a topic of sensors[%d] %q: panes and readings would share a topic", key, what, t, k, s.Name)
		}
	}
}

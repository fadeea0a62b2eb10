// Package ingest turns MQTT messages into records (SPEC §2): it matches a topic against the
// configured routes, decodes the payload in the route's format and fills series, unit,
// labels, timestamp and id. It is pure: no I/O, time passed in.
package ingest

import (
	"fmt"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/record"
)

// Placeholders a route's series and labels may use besides its wildcard names.
const (
	PlaceholderTopic = "topic" // the whole topic
	PlaceholderField = "field" // the JSON field name ("value" for a single reading) or the SenML name
	PlaceholderUnit  = "unit"  // the reading's unit after resolution
)

// Route is one compiled routes[] entry.
type Route struct {
	pattern    *topic.Pattern
	format     string
	series     *topic.Template
	fieldInTpl bool // series places {field} itself
	unit       string
	units      map[string]string
	labels     map[string]*topic.Template
}

// NewRoute compiles a route from its config.
func NewRoute(c config.Route) (*Route, error) {
	p, err := topic.ParsePattern(c.Topic)
	if err != nil {
		return nil, err
	}
	s, err := topic.ParseTemplate(c.Series)
	if err != nil {
		return nil, fmt.Errorf("series: %w", err)
	}
	r := &Route{pattern: p, format: c.Format, series: s, unit: c.Unit, units: c.Units}
	for _, n := range s.Names() {
		if n == PlaceholderField {
			r.fieldInTpl = true
		}
	}
	if len(c.Labels) > 0 {
		r.labels = make(map[string]*topic.Template, len(c.Labels))
		for k, v := range c.Labels {
			t, err := topic.ParseTemplate(v)
			if err != nil {
				return nil, fmt.Errorf("label %q: %w", k, err)
			}
			r.labels[k] = t
		}
	}
	return r, nil
}

// Router holds the routes in config order; the first match wins.
type Router struct {
	routes  []*Route
	forward bool // unrouted: forward
}

// NewRouter compiles routes; unrouted says what happens to topics no route matches.
func NewRouter(routes []config.Route, unrouted string) (*Router, error) {
	rt := &Router{forward: unrouted == "forward"}
	for i, c := range routes {
		r, err := NewRoute(c)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		rt.routes = append(rt.routes, r)
	}
	return rt, nil
}

// Outcome of Decode for a message that is not refused.
type Outcome int

// Outcomes.
const (
	Routed  Outcome = iota // records decoded from a matching route
	Raw                    // no route matched; forwarded raw
	Dropped                // no route matched; unrouted: drop
)

// captures holds a topic's named wildcard values without allocating for the usual few.
type captures struct {
	n    int
	kv   [4][2]string
	more map[string]string
}

func (c *captures) set(name, value string) {
	if c.n < len(c.kv) {
		c.kv[c.n] = [2]string{name, value}
		c.n++
		return
	}
	if c.more == nil {
		c.more = map[string]string{}
	}
	c.more[name] = value
}

func (c *captures) get(name string) string {
	for i := 0; i < c.n; i++ {
		if c.kv[i][0] == name {
			return c.kv[i][1]
		}
	}
	return c.more[name]
}

// Decode turns one message into records. now stamps readings without a timestamp and
// anchors SenML relative times. A refusal is an *Error with ReasonMalformed; nothing of a
// refused message is returned.
func (rt *Router) Decode(tp string, payload []byte, now time.Time) ([]record.Record, Outcome, error) {
	now = record.TruncTime(now)
	for _, r := range rt.routes {
		var caps captures
		if !r.pattern.Match(tp, caps.set) {
			continue
		}
		recs, err := r.decode(tp, payload, now, &caps)
		if err != nil {
			return nil, Routed, err
		}
		return recs, Routed, nil
	}
	if !rt.forward {
		return nil, Dropped, nil
	}
	return []record.Record{{
		ID: record.RawID(tp, now, payload), Topic: tp, TS: now, Raw: true, Payload: payload,
	}}, Raw, nil
}

func (r *Route) decode(tp string, payload []byte, now time.Time, caps *captures) ([]record.Record, error) {
	var (
		rds []reading
		err error
	)
	switch r.format {
	case "number":
		rds, err = decodeNumber(payload)
	case "senml":
		rds, err = decodeSenML(payload, now)
	default:
		rds, err = decodeJSON(payload)
	}
	if err != nil {
		return nil, err
	}
	recs := make([]record.Record, len(rds))
	for i := range rds {
		rd := &rds[i]
		rec := &recs[i]
		rec.Topic = tp
		rec.Value = rd.value
		rec.TS = now
		if rd.hasTS {
			rec.TS = record.TruncTime(rd.ts)
		}
		rec.Unit = r.unit
		if u, ok := r.units[rd.field]; ok {
			rec.Unit = u
		}
		if rd.unit != "" {
			rec.Unit = rd.unit
		}
		lookup := func(name string) string {
			switch name {
			case PlaceholderTopic:
				return tp
			case PlaceholderField:
				return rd.field
			case PlaceholderUnit:
				return rec.Unit
			}
			return caps.get(name)
		}
		rec.Series = r.series.Expand(lookup)
		if rd.named && !r.fieldInTpl {
			rec.Series = rec.Series + "/" + rd.field // one concatenation, one allocation
		}
		if len(r.labels) > 0 {
			rec.Labels = make(map[string]string, len(r.labels))
			for k, t := range r.labels {
				rec.Labels[k] = t.Expand(lookup)
			}
		}
		if rd.id != "" {
			rec.ID = rd.id
		} else {
			rec.ID = record.HashID(rec.Series, rec.TS, rec.Value)
		}
	}
	return recs, nil
}

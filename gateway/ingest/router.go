// Package ingest turns MQTT messages into records (SPEC §2): it matches a topic against the
// configured routes, decodes the payload in the route's format and fills series, unit,
// labels, timestamp and id. It is pure: no I/O, time passed in.
package ingest

import (
	"fmt"
	"math"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/topic"
	"github.com/edgegate/edgegate/record"
)

// Reason says why a message was refused; it labels metrics and maps to an MQTT 5 code.
type Reason string

// Refusal reasons (SPEC §2).
const (
	ReasonMalformed  Reason = "malformed"
	ReasonTooLarge   Reason = "too_large"
	ReasonBufferFull Reason = "buffer_full"
	ReasonStore      Reason = "store_error"
	ReasonShutdown   Reason = "shutting_down"
)

// Code is the MQTT 5 reason code sent in the PUBACK of a refused message.
func (r Reason) Code() byte {
	switch r {
	case ReasonMalformed:
		return 0x99 // payload format invalid
	case ReasonTooLarge:
		return 0x95 // packet too large
	case ReasonBufferFull:
		return 0x97 // quota exceeded
	default:
		return 0x80 // unspecified error
	}
}

// Error is a refusal with its reason.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func malformed(format string, args ...any) error {
	return &Error{Reason: ReasonMalformed, Err: fmt.Errorf(format, args...)}
}

// Route is one compiled routes[] entry.
type Route struct {
	pattern *topic.Pattern
	format  string
	series  *topic.Template
	unit    string
	labels  map[string]*topic.Template
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
	r := &Route{pattern: p, format: c.Format, series: s, unit: c.Unit}
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

// Decode turns one message into records. now stamps readings without a timestamp. A
// refusal is an *Error with ReasonMalformed.
func (rt *Router) Decode(tp string, payload []byte, now time.Time) ([]record.Record, Outcome, error) {
	now = record.TruncTime(now)
	for _, r := range rt.routes {
		var caps [4][2]string
		n := 0
		var more map[string]string
		ok := r.pattern.Match(tp, func(name, value string) {
			if n < len(caps) {
				caps[n] = [2]string{name, value}
				n++
				return
			}
			if more == nil {
				more = map[string]string{}
			}
			more[name] = value
		})
		if !ok {
			continue
		}
		lookup := func(name string) string {
			if name == "topic" {
				return tp
			}
			for i := 0; i < n; i++ {
				if caps[i][0] == name {
					return caps[i][1]
				}
			}
			return more[name]
		}
		recs, err := r.decode(tp, payload, now, lookup)
		return recs, Routed, err
	}
	if !rt.forward {
		return nil, Dropped, nil
	}
	return []record.Record{{
		ID: record.RawID(tp, now, payload), Topic: tp, TS: now, Raw: true, Payload: payload,
	}}, Raw, nil
}

func (r *Route) decode(tp string, payload []byte, now time.Time, lookup func(string) string) ([]record.Record, error) {
	var rd reading
	var err error
	switch r.format {
	case "number":
		rd, err = decodeNumber(payload)
	default:
		rd, err = decodeJSON(payload)
	}
	if err != nil {
		return nil, err
	}
	if math.IsNaN(rd.value) || math.IsInf(rd.value, 0) {
		return nil, malformed("value is not a finite number")
	}
	rec := record.Record{
		Topic:  tp,
		Series: r.series.Expand(lookup),
		TS:     now,
		Value:  rd.value,
		Unit:   r.unit,
	}
	if rd.hasTS {
		rec.TS = record.TruncTime(rd.ts)
	}
	if rd.unit != "" {
		rec.Unit = rd.unit
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
	return []record.Record{rec}, nil
}

// Package fleet is the cloud side of a fleet of edgegate gateways as a Beam pipeline: it
// unpacks the gateways' batches (SPEC §3.3) into records and panes, drops the duplicates
// at-least-once delivery makes (by id, counted in a metric), and aggregates the records of
// every gateway in fleet-wide windows, per series or per label, written in the daemon's
// window spec language.
package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/timers"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/edgegate/edgegate/cloud/beam/agg"
	"github.com/edgegate/edgegate/cloud/beam/winspec"
	"github.com/edgegate/edgegate/cloud/beam/wire"
)

// Metric names, in the namespace Namespace.
const (
	Namespace = "edgegate-fleet"
	// MetricDuplicates counts records and panes dropped because their id was seen before.
	MetricDuplicates = "duplicates"
	// MetricRecords counts distinct records that went into fleet windows.
	MetricRecords = "records"
	// MetricPanes counts distinct gateway panes passed through.
	MetricPanes = "gateway_panes"
	// MetricRaw counts raw forwarded messages (no value), which no window takes.
	MetricRaw = "raw_records"
	// MetricUngrouped counts records without the label the job groups by.
	MetricUngrouped = "ungrouped_records"
	// MetricBad counts batches, records and panes that do not decode; they are skipped.
	MetricBad = "bad_input"
)

var (
	duplicates = beam.NewCounter(Namespace, MetricDuplicates)
	records    = beam.NewCounter(Namespace, MetricRecords)
	panesSeen  = beam.NewCounter(Namespace, MetricPanes)
	raw        = beam.NewCounter(Namespace, MetricRaw)
	ungrouped  = beam.NewCounter(Namespace, MetricUngrouped)
	bad        = beam.NewCounter(Namespace, MetricBad)
)

// Options configure the job.
type Options struct {
	// Name is the pipeline name the fleet panes carry (their "pipeline", part of their id).
	Name string
	// Spec is the fleet windowing: window, aggregates, allowed lateness, accumulation.
	// Its out_of_order is not used: the runner's watermark comes from its source.
	Spec winspec.Spec
	// GroupBy is "series" (a fleet window per series) or "label:NAME" (per value of the
	// record label NAME, across series and gateways).
	GroupBy string
	// DedupTTL is how long, in event time after a record's ts, its id is remembered.
	DedupTTL time.Duration
	// Late is how the trigger asks for a pane per late record (see winspec.Late).
	Late winspec.Late
}

// Validate reports what is wrong with o.
func (o *Options) Validate() error {
	var errs []error
	if o.Name == "" {
		errs = append(errs, errors.New("fleet: a name is needed"))
	}
	if o.GroupBy != "series" && (!strings.HasPrefix(o.GroupBy, "label:") || len(o.GroupBy) == len("label:")) {
		errs = append(errs, fmt.Errorf("fleet: group by %q: want series or label:NAME", o.GroupBy))
	}
	if o.DedupTTL <= 0 {
		errs = append(errs, fmt.Errorf("fleet: dedup ttl %v: must be > 0", o.DedupTTL))
	}
	return errors.Join(errs...)
}

// Rec is a record on its way through the job.
type Rec struct {
	ID      string
	Gateway string
	Series  string
	Group   string // the key of its fleet windows
	TS      int64  // Unix ms
	Value   float64
}

// Pane is a gateway pane passed through, as it came.
type Pane struct {
	ID      string
	Gateway string
	JSON    string
}

// unpackFn reads batches (file lines) and emits each record keyed by its id at its event
// time, and each gateway pane keyed by its gateway and id.
type unpackFn struct {
	GroupBy string
}

func (f *unpackFn) ProcessElement(ctx context.Context, line string, recs func(beam.EventTime, string, Rec), panes func(beam.EventTime, string, Pane)) {
	f.batch(ctx, []byte(line), recs, panes)
}

// batch unpacks one SPEC §3.3 batch.
func (f *unpackFn) batch(ctx context.Context, b []byte, recs func(beam.EventTime, string, Rec), panes func(beam.EventTime, string, Pane)) {
	bt, err := wire.DecodeBatch(b)
	if err != nil {
		bad.Inc(ctx, 1)
		return
	}
	for _, it := range bt.Items {
		f.item(ctx, bt.Gateway, bt.Kind, it, recs, panes)
	}
}

// item unpacks one record or pane of kind.
func (f *unpackFn) item(ctx context.Context, gateway, kind string, b []byte, recs func(beam.EventTime, string, Rec), panes func(beam.EventTime, string, Pane)) {
	if kind == wire.KindAggregates {
		p, err := wire.DecodePane(b)
		if err != nil {
			bad.Inc(ctx, 1)
			return
		}
		end, err := wire.ParseTime(p.End)
		if err != nil {
			bad.Inc(ctx, 1)
			return
		}
		// A pane belongs to the last instant of its window, as Beam stamps its own. Its id
		// is unique per gateway only: two gateways that run the same pipeline over the same
		// series name give their panes the same ids (SPEC §3.2 hashes no gateway in).
		panes(mtime.FromMilliseconds(end-1), gateway+"\x00"+p.ID, Pane{ID: p.ID, Gateway: gateway, JSON: string(b)})
		return
	}
	r, err := wire.DecodeRecord(b)
	if err != nil {
		bad.Inc(ctx, 1)
		return
	}
	if r.Raw {
		raw.Inc(ctx, 1)
		return
	}
	ts, _ := wire.ParseTime(r.TS) // DecodeRecord checked it
	group := r.Series
	if label, ok := strings.CutPrefix(f.GroupBy, "label:"); ok {
		if group, ok = r.Labels[label]; !ok {
			ungrouped.Inc(ctx, 1)
			return
		}
	}
	recs(mtime.FromMilliseconds(ts), r.ID, Rec{ID: r.ID, Gateway: gateway, Series: r.Series, Group: group, TS: ts, Value: *r.Value})
}

// unpackMessageFn reads Pub/Sub messages: a whole batch, or one record or pane as the
// pubsub uplink publishes them, its kind and gateway in the attributes.
type unpackMessageFn struct {
	unpackFn
}

func (f *unpackMessageFn) ProcessElement(ctx context.Context, m *pb.PubsubMessage, recs func(beam.EventTime, string, Rec), panes func(beam.EventTime, string, Pane)) {
	if bytes.HasPrefix(bytes.TrimSpace(m.Data), []byte(`{"v":`)) {
		f.batch(ctx, m.Data, recs, panes)
		return
	}
	kind := m.Attributes["kind"]
	if kind != wire.KindRecords && kind != wire.KindAggregates {
		bad.Inc(ctx, 1)
		return
	}
	f.item(ctx, m.Attributes["gateway"], kind, m.Data, recs, panes)
}

// dedupFn passes the first element of each id and counts the others. It remembers an id
// until the watermark passes the element's timestamp + TTL.
type dedupFn[T any] struct {
	Seen   state.Value[bool]
	Forget timers.EventTime
	TTL    int64 // ms
	// Count, when set, counts each element passed under this metric name.
	Count string
}

func (f *dedupFn[T]) ProcessElement(ctx context.Context, et beam.EventTime, sp state.Provider, tp timers.Provider, id string, v T, emit func(T)) error {
	seen, ok, err := f.Seen.Read(sp)
	if err != nil {
		return fmt.Errorf("dedup %q: %w", id, err)
	}
	if ok && seen {
		duplicates.Inc(ctx, 1)
		return nil
	}
	if err := f.Seen.Write(sp, true); err != nil {
		return fmt.Errorf("dedup %q: %w", id, err)
	}
	f.Forget.Set(tp, et.Add(time.Duration(f.TTL)*time.Millisecond).ToTime())
	switch f.Count {
	case MetricRecords:
		records.Inc(ctx, 1)
	case MetricPanes:
		panesSeen.Inc(ctx, 1)
	}
	emit(v)
	return nil
}

// OnTimer forgets the id. (Beam wants the emitters of ProcessElement here too.)
func (f *dedupFn[T]) OnTimer(ctx context.Context, sp state.Provider, tp timers.Provider, id string, t timers.Context, _ func(T)) error {
	return f.Seen.Clear(sp)
}

// Unpack reads lines of the file uplink (one batch per line) and returns the records and
// the gateway panes, keyed by id, duplicates included.
func Unpack(s beam.Scope, lines beam.PCollection, o Options) (recs, panes beam.PCollection) {
	s = s.Scope("fleet.Unpack")
	return beam.ParDo2(s, &unpackFn{GroupBy: o.GroupBy}, lines)
}

// UnpackMessages does what Unpack does for Pub/Sub messages.
func UnpackMessages(s beam.Scope, msgs beam.PCollection, o Options) (recs, panes beam.PCollection) {
	s = s.Scope("fleet.UnpackMessages")
	return beam.ParDo2(s, &unpackMessageFn{unpackFn{GroupBy: o.GroupBy}}, msgs)
}

// Dedup keeps the first record of each id, across gateways (a reading two gateways heard
// counts once), and the first pane of each gateway and id (at-least-once delivery made
// exactly-once), counting the rest in the metric MetricDuplicates.
func Dedup(s beam.Scope, recs, panes beam.PCollection, o Options) (beam.PCollection, beam.PCollection) {
	s = s.Scope("fleet.Dedup")
	ttl := o.DedupTTL.Milliseconds()
	r := beam.ParDo(s, &dedupFn[Rec]{Seen: state.MakeValueState[bool]("seen"), Forget: timers.InEventTime("forget"), TTL: ttl, Count: MetricRecords}, recs)
	p := beam.ParDo(s, &dedupFn[Pane]{Seen: state.MakeValueState[bool]("seen"), Forget: timers.InEventTime("forget"), TTL: ttl, Count: MetricPanes}, panes)
	return r, p
}

// reading keys a record by its group. Records of several gateways have no common arrival
// order: equal timestamps are ordered by a hash of the id, so first and last are the same
// whatever order the runner sees them in.
func reading(r Rec) (string, agg.Reading) {
	h := fnv.New64a()
	h.Write([]byte(r.ID))
	return r.Group, agg.Reading{TS: r.TS, Arrival: int64(h.Sum64() >> 1), Value: r.Value}
}

// Aggregate windows the records as the spec says and returns each pane fired, in the
// SPEC §3.2 form (JSON), keyed by the group.
func Aggregate(s beam.Scope, recs beam.PCollection, o Options) beam.PCollection {
	s = s.Scope("fleet.Aggregate")
	keyed := beam.ParDo(s, reading, recs)
	win := o.Spec.WindowInto(s, keyed, o.Late)
	// GroupByKey and a fold of the combiner's accumulator rather than CombinePerKey: the Go
	// SDK's combine drops the PaneInfo (index and timing) that pane ids are made of.
	return beam.ParDo(s, &paneFn{Name: o.Name, Aggregates: o.Spec.Aggregates}, beam.GroupByKey(s, win))
}

// paneFn writes one fleet pane.
type paneFn struct {
	Name       string
	Aggregates []string
}

func (f *paneFn) ProcessElement(pn beam.PaneInfo, w beam.Window, key string, values func(*agg.Reading) bool, emit func(string)) error {
	iw, ok := w.(window.IntervalWindow)
	if !ok {
		return fmt.Errorf("fleet pane of %q: window %v is not an interval", key, w)
	}
	var a agg.Acc
	var r agg.Reading
	for values(&r) {
		a.Add(r)
	}
	p := a.Pane(f.Name, key, iw.Start.Milliseconds(), iw.End.Milliseconds(), pn.Index, agg.Timing(pn.Timing), f.Aggregates)
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("fleet pane of %q: %w", key, err)
	}
	emit(string(b))
	return nil
}

// paneJSON is a passed-through gateway pane as it came, with its gateway added as the
// first member: pane ids are unique per gateway only.
func paneJSON(p Pane) (string, error) {
	body, ok := strings.CutPrefix(strings.TrimSpace(p.JSON), "{")
	if !ok {
		return "", fmt.Errorf("gateway pane %q of %q: not a JSON object", p.ID, p.Gateway)
	}
	gw, err := json.Marshal(p.Gateway)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(body) == "}" {
		return `{"gateway":` + string(gw) + "}", nil
	}
	return `{"gateway":` + string(gw) + "," + body, nil
}

// Build adds the job to s over the batches in lines (file uplink JSON Lines) and returns
// the fleet panes and the deduplicated gateway panes, as JSON strings.
func Build(s beam.Scope, lines beam.PCollection, o Options) (fleetPanes, gatewayPanes beam.PCollection) {
	recs, panes := Unpack(s, lines, o)
	return finish(s, recs, panes, o)
}

// BuildMessages is Build over Pub/Sub messages.
func BuildMessages(s beam.Scope, msgs beam.PCollection, o Options) (fleetPanes, gatewayPanes beam.PCollection) {
	recs, panes := UnpackMessages(s, msgs, o)
	return finish(s, recs, panes, o)
}

func finish(s beam.Scope, recs, panes beam.PCollection, o Options) (beam.PCollection, beam.PCollection) {
	r, p := Dedup(s, recs, panes, o)
	return Aggregate(s, r, o), beam.ParDo(s, paneJSON, p)
}

func init() {
	beam.RegisterType(reflect.TypeOf((*Rec)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Pane)(nil)).Elem())
	register.DoFn4x0[context.Context, string, func(beam.EventTime, string, Rec), func(beam.EventTime, string, Pane)](&unpackFn{})
	register.DoFn4x0[context.Context, *pb.PubsubMessage, func(beam.EventTime, string, Rec), func(beam.EventTime, string, Pane)](&unpackMessageFn{})
	register.Emitter3[beam.EventTime, string, Rec]()
	register.Emitter3[beam.EventTime, string, Pane]()
	register.DoFn7x1[context.Context, beam.EventTime, state.Provider, timers.Provider, string, Rec, func(Rec), error](&dedupFn[Rec]{})
	register.DoFn7x1[context.Context, beam.EventTime, state.Provider, timers.Provider, string, Pane, func(Pane), error](&dedupFn[Pane]{})
	register.Emitter1[Rec]()
	register.Emitter1[Pane]()
	register.Function1x2(reading)
	register.DoFn5x1[beam.PaneInfo, beam.Window, string, func(*agg.Reading) bool, func(string), error](&paneFn{})
	register.Iter1[agg.Reading]()
	register.Emitter1[string]()
	register.Function1x2(paneJSON)
}

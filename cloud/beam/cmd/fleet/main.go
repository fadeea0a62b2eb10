// Command fleet is the fleet job of edgegate gateways: it reads their batches, drops the
// duplicates at-least-once delivery makes (by id, counted), and aggregates every
// gateway's records in fleet-wide windows per series or per label. Locally it reads the
// file uplink's JSON Lines and runs on Prism (in process); on Google Cloud Dataflow it
// reads Pub/Sub. See the README section "The fleet job on Dataflow".
//
//	fleet --input 'gw-*.jsonl' --output fleet.jsonl \
//	      --spec '{window: {type: tumbling, size: 1m}, aggregates: [count, mean, max]}'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/pubsubio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/gcpopts"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"

	// The file systems textio reads and writes, and the runners this job is for.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"

	"github.com/edgegate/edgegate/cloud/beam/fleet"
	"github.com/edgegate/edgegate/cloud/beam/winspec"
)

var (
	input        = flag.String("input", "", "file uplink JSON Lines to read, a glob (local or gs://); a batch job")
	subscription = flag.String("subscription", "", "Pub/Sub subscription (id in --project) to read; a streaming job, Dataflow only")
	idAttribute  = flag.String("id_attribute", "id", "with --subscription: the message attribute Dataflow deduplicates on (edgegate's pubsub uplink sets id); empty: none")
	tsAttribute  = flag.String("timestamp_attribute", "", "with --subscription: the message attribute holding the event time; empty: publish time, records are stamped with their ts")
	output       = flag.String("output", "", "file for the fleet panes, one JSON object a line (with --input)")
	outputTopic  = flag.String("output_topic", "", "Pub/Sub topic (id in --project) for the fleet panes (with --subscription)")
	panesOut     = flag.String("panes_output", "", "file for the gateways' panes, deduplicated (with --input; optional)")
	panesTopic   = flag.String("panes_topic", "", "Pub/Sub topic for the gateways' panes, deduplicated (with --subscription; optional)")
	spec         = flag.String("spec", "", "fleet windowing in the daemon's pipeline keys, inline YAML or @FILE: window (type, size, every, gap), aggregates, allowed_lateness, accumulation")
	groupBy      = flag.String("group_by", "series", "series, or label:NAME for one window per value of the record label NAME")
	name         = flag.String("name", "fleet", "pipeline name the fleet panes carry")
	dedupTTL     = flag.Duration("dedup_ttl", 24*time.Hour, "how long after a record's ts (event time) its id is remembered")
)

func main() {
	flag.Parse()
	beam.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// runner is the --runner flag, prism (in process) by default.
func runner() string {
	if *runners.Runner == "" {
		return "prism"
	}
	return *runners.Runner
}

func options() (fleet.Options, error) {
	text := *spec
	if f, ok := strings.CutPrefix(text, "@"); ok {
		b, err := os.ReadFile(f)
		if err != nil {
			return fleet.Options{}, fmt.Errorf("--spec: %w", err)
		}
		text = string(b)
	}
	if text == "" {
		return fleet.Options{}, errors.New("--spec is required, e.g. --spec '{window: {type: tumbling, size: 1m}}'")
	}
	s, err := winspec.Parse([]byte(text))
	if err != nil {
		return fleet.Options{}, fmt.Errorf("--spec: %w", err)
	}
	o := fleet.Options{Name: *name, Spec: s, GroupBy: *groupBy, DedupTTL: *dedupTTL}
	// Prism refuses AfterCount late firings with session windows (the conformance suite's
	// gap sessions-count-trigger); Always fires the same panes.
	if s.Window.Type == winspec.Session && runner() == "prism" {
		o.Late = winspec.LateAlways
	}
	return o, o.Validate()
}

func run(ctx context.Context) error {
	o, err := options()
	if err != nil {
		return err
	}
	p, s := beam.NewPipelineWithRoot()
	switch {
	case *input != "" && *subscription == "":
		if *output == "" {
			return errors.New("--input needs --output")
		}
		fleetPanes, gwPanes := fleet.Build(s, textio.Read(s, *input), o)
		fleet.WriteFile(s, *output, fleetPanes)
		if *panesOut != "" {
			fleet.WriteFile(s, *panesOut, gwPanes)
		}
	case *subscription != "" && *input == "":
		if *outputTopic == "" {
			return errors.New("--subscription needs --output_topic")
		}
		project := gcpopts.GetProject(ctx)
		msgs := pubsubio.Read(s, project, pubsubio.ReadOptions{
			Subscription: *subscription, IDAttribute: *idAttribute,
			TimestampAttribute: *tsAttribute, WithAttributes: true,
		})
		fleetPanes, gwPanes := fleet.BuildMessages(s, msgs, o)
		pubsubio.Write(s, project, *outputTopic, fleet.Bytes(s, fleetPanes))
		if *panesTopic != "" {
			pubsubio.Write(s, project, *panesTopic, fleet.Bytes(s, gwPanes))
		}
	default:
		return errors.New("give one of --input (files) or --subscription (Pub/Sub)")
	}
	start := time.Now()
	res, err := beam.Run(ctx, runner(), p)
	if err != nil {
		return err
	}
	if res == nil { // a dry run, or a job submitted asynchronously
		return nil
	}
	// Counters come per step (dedup runs for records and for panes): add them up.
	sums := map[string]int64{}
	for _, c := range res.Metrics().AllMetrics().Counters() {
		if c.Key.Namespace == fleet.Namespace {
			sums[c.Key.Name] += c.Result()
		}
	}
	var counts []string
	for _, n := range []string{fleet.MetricRecords, fleet.MetricPanes, fleet.MetricDuplicates, fleet.MetricRaw, fleet.MetricUngrouped, fleet.MetricBad} {
		counts = append(counts, fmt.Sprintf("%s=%d", n, sums[n]))
	}
	fmt.Fprintf(os.Stderr, "fleet: done in %v: %s\n", time.Since(start).Round(time.Millisecond), strings.Join(counts, " "))
	return nil
}

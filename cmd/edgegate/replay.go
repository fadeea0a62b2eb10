package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/pipeline"
	"github.com/edgegate/edgegate/record"
)

// cmdReplay is `edgegate replay` (SPEC §1): the config's pipelines over a JSON Lines file
// of records in arrival order, panes to stdout in emission order, with the daemon's core.
func cmdReplay(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, path := newFlags("replay", stderr)
	only := fs.String("pipeline", "", "run only the pipeline of this name (default: every pipeline)")
	input := fs.String("input", "", "JSON Lines file of records (SPEC §3.1 form) or of batches, as the file uplink writes them (default: stdin)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate replay: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(*path, registry())
	if err != nil {
		printConfigError(stderr, err)
		return exitUser
	}
	specs, err := replaySpecs(cfg, *path, *only)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
		return exitUser
	}
	r := &replayRun{in: stdin, name: "stdin"}
	if *input != "" {
		f, err := os.Open(*input)
		if err != nil {
			fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
			return exitUser
		}
		defer f.Close()
		r.in, r.name = f, *input
	}
	if r.rp, err = pipeline.NewReplay(specs); err != nil {
		fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
		return exitUser
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	emit := func(p []byte) error {
		out.Write(p)
		return out.WriteByte('\n')
	}
	if err := r.feed(emit); err != nil {
		out.Flush()
		fmt.Fprintln(stderr, err)
		return exitUser
	}
	if err := r.rp.Finish(emit); err != nil {
		fmt.Fprintf(stderr, "edgegate replay: write: %v\n", err)
		return exitUser
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "edgegate replay: write: %v\n", err)
		return exitUser
	}
	fmt.Fprintf(stderr, "edgegate replay: %s\n", r.summary(specs))
	return exitOK
}

// replaySpecs are the specs of the config's pipelines, or of the one named only.
func replaySpecs(cfg *config.Config, path, only string) ([]pipeline.Spec, error) {
	var specs []pipeline.Spec
	var names []string
	for _, pc := range cfg.Pipelines {
		names = append(names, pc.Name)
		if only != "" && pc.Name != only {
			continue
		}
		s, err := pipeline.SpecFromConfig(pc)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	switch {
	case len(cfg.Pipelines) == 0:
		return nil, fmt.Errorf("%s has no pipelines to replay", path)
	case len(specs) == 0:
		return nil, fmt.Errorf("%s has no pipeline %q (it has: %s)", path, only, strings.Join(names, ", "))
	}
	return specs, nil
}

// replayRun feeds an input to a replay, counting what it read.
type replayRun struct {
	rp   *pipeline.Replay
	in   io.Reader
	name string

	line, records, batches, aggBatches int
}

// feed runs every record of the input through the replay. Its error names the input's
// line (and the record of a batch).
func (r *replayRun) feed(emit func([]byte) error) error {
	sc := bufio.NewScanner(r.in)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		r.line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		items := [][]byte{b}
		if record.IsBatch(b) { // a line of the file uplink's output: a batch of records
			bt, err := record.DecodeBatch(b)
			if err != nil {
				return fmt.Errorf("%s:%d: %v", r.name, r.line, err)
			}
			r.batches++
			if bt.Kind != record.KindRecords {
				r.aggBatches++ // panes are the output, not the input
				continue
			}
			items = items[:0]
			for _, raw := range bt.Records {
				items = append(items, raw)
			}
		}
		for i, it := range items {
			r.records++
			if err := r.rp.Record(it, emit); err != nil {
				where := fmt.Sprintf("%s:%d", r.name, r.line)
				if r.batches > 0 && len(items) > 1 {
					where += fmt.Sprintf(": record %d of the batch", i+1)
				}
				return fmt.Errorf("%s: %v", where, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s:%d: %v", r.name, r.line+1, err)
	}
	return nil
}

// summary is what was read and what each pipeline made of it.
func (r *replayRun) summary(specs []pipeline.Spec) string {
	var parts []string
	for i, c := range r.rp.Counters() {
		part := fmt.Sprintf("%s: %d records, %d panes, %d too late", specs[i].Name, c.Records,
			c.Panes[pipeline.Early]+c.Panes[pipeline.OnTime]+c.Panes[pipeline.Late], c.TooLate)
		if c.Oversized > 0 { // as the daemon does (edgegate_pipeline_dropped_total{reason="oversized"})
			part += fmt.Sprintf(", %d too large to aggregate", c.Oversized)
		}
		parts = append(parts, part)
	}
	read := fmt.Sprintf("%d lines", r.records)
	if r.batches > 0 {
		read = fmt.Sprintf("%d records from %s", r.records, plural(r.batches-r.aggBatches, "batch", "batches"))
		if r.aggBatches > 0 {
			read += fmt.Sprintf(" (%s of aggregates skipped)", plural(r.aggBatches, "batch", "batches"))
		}
	}
	return read + "; " + strings.Join(parts, "; ")
}

// plural is "1 batch" or "n batches".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

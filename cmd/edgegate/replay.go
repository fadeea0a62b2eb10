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
	var specs []pipeline.Spec
	var names []string
	for _, pc := range cfg.Pipelines {
		names = append(names, pc.Name)
		if *only != "" && pc.Name != *only {
			continue
		}
		s, err := pipeline.SpecFromConfig(pc)
		if err != nil {
			fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
			return exitUser
		}
		specs = append(specs, s)
	}
	switch {
	case len(cfg.Pipelines) == 0:
		fmt.Fprintf(stderr, "edgegate replay: %s has no pipelines to replay\n", *path)
		return exitUser
	case len(specs) == 0:
		fmt.Fprintf(stderr, "edgegate replay: %s has no pipeline %q (it has: %s)\n", *path, *only, strings.Join(names, ", "))
		return exitUser
	}
	in, name := stdin, "stdin"
	if *input != "" {
		f, err := os.Open(*input)
		if err != nil {
			fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
			return exitUser
		}
		defer f.Close()
		in, name = f, *input
	}
	rp, err := pipeline.NewReplay(specs)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate replay: %v\n", err)
		return exitUser
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	panes := 0
	emit := func(p []byte) error {
		panes++
		out.Write(p)
		return out.WriteByte('\n')
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	line, records, batches, aggBatches := 0, 0, 0, 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		items := [][]byte{b}
		if record.IsBatch(b) { // a line of the file uplink's output: a batch of records
			bt, err := record.DecodeBatch(b)
			if err != nil {
				out.Flush()
				fmt.Fprintf(stderr, "%s:%d: %v\n", name, line, err)
				return exitUser
			}
			batches++
			if bt.Kind != record.KindRecords {
				aggBatches++ // panes are the output, not the input
				continue
			}
			items = items[:0]
			for _, raw := range bt.Records {
				items = append(items, raw)
			}
		}
		for i, it := range items {
			records++
			if err := rp.Record(it, emit); err != nil {
				out.Flush()
				where := fmt.Sprintf("%s:%d", name, line)
				if batches > 0 && len(items) > 1 {
					where += fmt.Sprintf(": record %d of the batch", i+1)
				}
				fmt.Fprintf(stderr, "%s: %v\n", where, err)
				return exitUser
			}
		}
	}
	if err := sc.Err(); err != nil {
		out.Flush()
		fmt.Fprintf(stderr, "%s:%d: %v\n", name, line+1, err)
		return exitUser
	}
	if err := rp.Finish(emit); err != nil {
		fmt.Fprintf(stderr, "edgegate replay: write: %v\n", err)
		return exitUser
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "edgegate replay: write: %v\n", err)
		return exitUser
	}
	var parts []string
	for i, c := range rp.Counters() {
		part := fmt.Sprintf("%s: %d records, %d panes, %d too late", specs[i].Name, c.Records,
			c.Panes[pipeline.Early]+c.Panes[pipeline.OnTime]+c.Panes[pipeline.Late], c.TooLate)
		if c.Oversized > 0 { // as the daemon does (edgegate_pipeline_dropped_total{reason="oversized"})
			part += fmt.Sprintf(", %d too large to aggregate", c.Oversized)
		}
		parts = append(parts, part)
	}
	read := fmt.Sprintf("%d lines", records)
	if batches > 0 {
		read = fmt.Sprintf("%d records from %s", records, plural(batches-aggBatches, "batch", "batches"))
		if aggBatches > 0 {
			read += fmt.Sprintf(" (%s of aggregates skipped)", plural(aggBatches, "batch", "batches"))
		}
	}
	fmt.Fprintf(stderr, "edgegate replay: %s; %s\n", read, strings.Join(parts, "; "))
	return exitOK
}

// plural is "1 batch" or "n batches".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgegate/edgegate/buffer"
)

const defaultDataDir = "/var/lib/edgegate"

const bufferUsage = `usage: edgegate buffer <stats|tail> [flags]

  stats -d DIR [-json] [-repair]          logs, depth, bytes, oldest/newest, cursors, disk use
  tail  -d DIR [-n N] [-log NAME] [-repair] the last N entries of a log (default 10 of "raw"), one per line

DIR is the daemon's data_dir (or its buffer/ directory); default ` + defaultDataDir + `.
The daemon must be stopped: the store is opened read-only and shared.
`

// cmdBuffer inspects a stopped daemon's buffer (SPEC §1).
func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bufferUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("edgegate buffer "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("d", defaultDataDir, "data_dir of the daemon, or its buffer/ directory")
	repair := fs.Bool("repair", false, "recover a store that was not closed cleanly (as the daemon does at start), then inspect it")
	var (
		asJSON *bool
		n      *int
		log    *string
	)
	switch args[0] {
	case "stats":
		asJSON = fs.Bool("json", false, "print JSON instead of a table")
	case "tail":
		n = fs.Int("n", 10, "number of entries")
		log = fs.String("log", "raw", "log to read (raw, agg, refused, deadletter, ...)")
	case "help", "-h", "--help":
		fmt.Fprint(stdout, bufferUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "edgegate buffer: unknown command %q\n%s", args[0], bufferUsage)
		return exitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate buffer %s: unexpected argument %q\n", args[0], fs.Arg(0))
		return exitUsage
	}
	if n != nil && *n < 0 {
		fmt.Fprintf(stderr, "edgegate buffer tail: -n %d: expected a count ≥ 0\n", *n)
		return exitUsage
	}
	s, err := openForInspection(*dir, *repair, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate: %v\n", err)
		return exitUser
	}
	defer s.Close()
	if args[0] == "stats" {
		err = bufferStats(s, *asJSON, stdout)
	} else {
		err = bufferTail(s, *log, *n, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgegate: %v\n", err)
		return exitUser
	}
	return exitOK
}

// bufferTail prints the last n entries of a log, one per line. When it prints none, it says
// why on stderr (stdout stays the entries alone, for pipes): the log is empty, or the buffer
// has no such log, and which logs it has.
func bufferTail(s *buffer.Store, log string, n int, stdout, stderr io.Writer) error {
	printed := 0
	err := s.Tail(log, n, func(_ uint64, v []byte) error {
		printed++
		_, err := fmt.Fprintf(stdout, "%s\n", v)
		return err
	})
	if err != nil || printed > 0 || n == 0 {
		return err
	}
	logs, err := s.Logs()
	if err != nil {
		return err
	}
	var names []string
	for _, l := range logs {
		if l.Name == log {
			fmt.Fprintf(stderr, "edgegate buffer tail: log %q is empty (%d appended so far: all delivered and trimmed, or dropped; see buffer stats)\n", log, l.High)
			return nil
		}
		names = append(names, l.Name)
	}
	have := "none yet"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	fmt.Fprintf(stderr, "edgegate buffer tail: log %q has had no entries (logs in this buffer: %s)\n", log, have)
	return nil
}

// openForInspection opens the store under dir (a data_dir or the buffer directory itself)
// read-only; with repair, a read-write open first recovers a store left by a crash.
func openForInspection(dir string, repair bool, stderr io.Writer) (*buffer.Store, error) {
	path := dir
	if !isStore(path) {
		path = filepath.Join(dir, "buffer")
	}
	if !isStore(path) {
		return nil, fmt.Errorf("%s: no edgegate buffer here (expected a data_dir holding buffer/, or the buffer directory)", dir)
	}
	if repair {
		// Recovery reports what it had to cut, as the daemon would.
		lg := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		s, err := buffer.Open(buffer.Options{Dir: path, Logger: lg})
		if err != nil {
			return nil, err
		}
		if err := s.Close(); err != nil {
			return nil, fmt.Errorf("close %s after recovery: %w", path, err)
		}
	}
	s, err := buffer.Open(buffer.Options{Dir: path, ReadOnly: true})
	switch {
	case errors.Is(err, buffer.ErrNeedsRecovery):
		return nil, fmt.Errorf("%s was not closed cleanly (a crash or power cut): add -repair to recover it as the daemon does at start (only unacknowledged, torn writes are cut)", path)
	case errors.Is(err, buffer.ErrInUse):
		return nil, fmt.Errorf("%s is in use, probably by the running daemon: stop it first (systemctl stop edgegate)", path)
	case err != nil:
		return nil, err
	}
	return s, nil
}

func isStore(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	return err == nil
}

type statsJSON struct {
	Dir       string    `json:"dir"`
	DiskBytes int64     `json:"disk_bytes"`
	FreeBytes int64     `json:"free_bytes"`
	DedupIDs  int64     `json:"dedup_ids"`
	Logs      []logJSON `json:"logs"`
}

type logJSON struct {
	Name    string            `json:"name"`
	Entries int64             `json:"entries"`
	Bytes   int64             `json:"bytes"`
	First   uint64            `json:"first"`
	Last    uint64            `json:"last"`
	High    uint64            `json:"high"`
	Oldest  *time.Time        `json:"oldest,omitempty"`
	Newest  *time.Time        `json:"newest,omitempty"`
	Cursors map[string]uint64 `json:"cursors"`
	// Missed: per consumer, the entries deleted before it had them.
	Missed map[string]missedJSON `json:"missed,omitempty"`
}

type missedJSON struct {
	Room      uint64 `json:"room"`
	Retention uint64 `json:"retention"`
}

func bufferStats(s *buffer.Store, asJSON bool, w io.Writer) error {
	logs, err := s.Logs()
	if err != nil {
		return err
	}
	du, avail, err := s.DiskUsage()
	if err != nil {
		return err
	}
	out := statsJSON{Dir: s.Dir(), DiskBytes: du, FreeBytes: avail, DedupIDs: s.DedupIDs(), Logs: []logJSON{}}
	for _, l := range logs {
		lj := logJSON{Name: l.Name, Entries: l.Count, Bytes: l.Bytes, First: l.First, Last: l.Last, High: l.High, Cursors: l.Cursors}
		for c, m := range l.Missed {
			if lj.Missed == nil {
				lj.Missed = map[string]missedJSON{}
			}
			lj.Missed[c] = missedJSON{Room: m.Room, Retention: m.Retention}
		}
		if !l.Oldest.IsZero() {
			lj.Oldest, lj.Newest = &l.Oldest, &l.Newest
		}
		out.Logs = append(out.Logs, lj)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	free := "unknown"
	if avail >= 0 {
		free = size(avail)
	}
	fmt.Fprintf(w, "buffer %s: %s on disk, %s free on its file system, ~%d dedup ids\n\n", out.Dir, size(du), free, out.DedupIDs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOG\tENTRIES\tBYTES\tFIRST\tLAST\tOLDEST\tNEWEST")
	for _, l := range out.Logs {
		oldest, newest := "-", "-"
		if l.Oldest != nil {
			oldest, newest = l.Oldest.Format("2006-01-02 15:04Z"), l.Newest.Format("2006-01-02 15:04Z")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\t%s\n", l.Name, l.Entries, size(l.Bytes), l.First, l.Last, oldest, newest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range out.Logs {
		consumers := maps.Clone(l.Cursors)
		for c := range l.Missed { // one that never committed has missed counts only
			if _, ok := consumers[c]; !ok {
				if consumers == nil {
					consumers = map[string]uint64{}
				}
				consumers[c] = 0
			}
		}
		for _, c := range slices.Sorted(maps.Keys(consumers)) {
			pos := consumers[c]
			behind := int64(0)
			if l.Entries > 0 && pos <= l.Last {
				behind = int64(l.Last - max(pos, l.First) + 1)
			}
			never := ""
			if m, ok := l.Missed[c]; ok {
				never = fmt.Sprintf("; never had %d: %d dropped for room, %d expired", m.Room+m.Retention, m.Room, m.Retention)
			}
			fmt.Fprintf(w, "cursor %s/%s: next %d (%d entries behind%s)\n", l.Name, c, pos, behind, never)
		}
	}
	if len(out.Logs) == 0 {
		fmt.Fprintln(w, "(no logs yet)")
	}
	return nil
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

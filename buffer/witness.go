package buffer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// witnessFile sits next to Badger's files and holds, per log, the highest sequence number of
// the last group that was committed (and, with sync: always, fsynced) before its waiters
// were released. It lives outside Badger on purpose: when Badger silently cuts a torn or
// corrupt tail off its write-ahead log at open, the witness still says how far the log went,
// so the store can report exactly which entries were lost and never hand their numbers out
// again (an uplink may already have sent a batch with those numbers in its id).
//
// It is rewritten in place after every group without an fsync of its own: a process crash
// keeps it (page cache), a power cut may leave it stale, which only under-reports.
const witnessFile = "EDGEGATE-WITNESS"

type witness struct {
	f    *os.File
	buf  []byte
	size int
}

func openWitness(dir string) (*witness, map[string]uint64, error) {
	path := filepath.Join(dir, witnessFile)
	prev, err := readWitness(path)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("buffer: stat %s: %w", path, err)
	}
	return &witness{f: f, size: int(fi.Size())}, prev, nil
}

// readWitness parses the witness; a missing file is an empty witness, and a line that does
// not parse (a torn rewrite after a power cut) is ignored.
func readWitness(path string) (map[string]uint64, error) {
	out := map[string]uint64{}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("buffer: read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, num, ok := strings.Cut(sc.Text(), " ")
		if !ok || checkName(name) != nil {
			continue
		}
		if v, err := strconv.ParseUint(num, 10, 64); err == nil {
			out[name] = v
		}
	}
	return out, nil
}

// write records highs. Fixed-width numbers keep the file the same size while the set of
// logs is unchanged, so one pwrite replaces it.
func (w *witness) write(highs map[string]uint64) error {
	w.buf = w.buf[:0]
	for _, n := range sortedKeys(highs) {
		w.buf = append(w.buf, n...)
		w.buf = append(w.buf, ' ')
		w.buf = fmt.Appendf(w.buf, "%020d", highs[n])
		w.buf = append(w.buf, '\n')
	}
	if _, err := w.f.WriteAt(w.buf, 0); err != nil {
		return fmt.Errorf("buffer: write witness: %w", err)
	}
	if len(w.buf) < w.size {
		if err := w.f.Truncate(int64(len(w.buf))); err != nil {
			return fmt.Errorf("buffer: truncate witness: %w", err)
		}
	}
	w.size = len(w.buf)
	return nil
}

func (w *witness) close() error {
	if w == nil || w.f == nil {
		return nil
	}
	return w.f.Close()
}

package buffer

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// badgerOptions sizes Badger for a 512 MiB board (DESIGN, "Badger v4.9.6"). Defaults take
// ~510 MiB of RSS after a million writes; these stay near 160 MiB before Go returns freed
// arenas, and far less with GOMEMLIMIT set.
//   - two 8 MiB memtables: the bound on unflushed data in RAM;
//   - an 8 MiB block cache (compression needs one: a zero cache with compression panics);
//   - values up to 1 MiB live in the LSM tree (ValueThreshold ≤ 15% of the memtable), so
//     the value log only holds the WAL-like tail and never needs GC;
//   - 16 MiB value-log files instead of 1 GiB ones (mmapped at twice their size);
//   - L0 of 2 tables, stalling at 4, with the minimum of two compactors.
func badgerOptions(dir string, lg *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{lg}).
		WithSyncWrites(false). // the writer fsyncs once per group
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueThreshold(1 << 20).
		WithValueLogFileSize(16 << 20).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithMetricsEnabled(true)
}

// badgerLogger adapts Badger's printf logger to slog. Badger's info chatter is debug here.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(trim(fmt.Sprintf(f, a...))) }

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}

package buffer

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

const (
	// defaultMemTableSize is Badger's memtable size here: the unit of unflushed data in RAM,
	// and of what a flush builds in memory. Measured at 10k durable msg/s from 100
	// publishers (BenchmarkDaemonAt10k in internal/loadgen; the sweep is in BENCHMARKS.md,
	// "The daemon at 10k msg/s"): 1 MiB halves the steady RSS but writes 1.6× the bytes
	// to flash and limits values to 134 KiB; 2 MiB saves ~25% at 1.3× the bytes and
	// 272 KiB values; 3 MiB saves nothing. 4 MiB keeps values up to ~550 KiB (a 256 KiB
	// packet always fits) with the fewest bytes written per reading.
	defaultMemTableSize = 4 << 20
	// valueThreshold keeps every value in the LSM tree; Badger requires it ≤ 15% of the
	// memtable. Accepted MQTT packets are at most 256 KiB (broker.max_packet_bytes), and
	// the record a payload becomes is bounded by the store, not by hope (MaxValueSize).
	valueThreshold = 1 << 20
)

// badgerOptions sizes Badger for a 512 MiB board (DESIGN, "Badger v4.9.6"). Defaults take
// ~510 MiB of RSS after a million writes. Here:
//   - two memtables of 4 MiB: the bound on unflushed data in RAM;
//   - a 4 MiB block cache (compression needs one: a zero cache with compression panics)
//     and a 2 MiB index cache, so table indexes and bloom filters are not all resident;
//   - values up to ~550 KiB live in the LSM tree (ValueThreshold ≤ 15% of the memtable),
//     so the value log stays empty and never needs garbage collection; larger values are
//     refused (MaxValueSize);
//   - 16 MiB value-log files instead of 1 GiB ones (mmapped at twice their size);
//   - 1 MiB tables at every level and an 8 MiB base level: small compactions, hence a
//     small headroom in the disk budget for their transient output;
//   - L0 of 2 tables, stalling at 4, with the minimum of two compactors;
//   - Snappy: turned off, the daemon wrote 2.6× the bytes per reading to flash
//     (BenchmarkDaemonAt10k in BENCHMARKS.md: 1 728 against 665).
//
// What remains is mostly Go garbage from table building (flushes and compactions allocate
// their tables in memory): set GOMEMLIMIT (README, "The disk buffer").
func badgerOptions(dir string, memTable int64, lg *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir)
	// Tables of one size at every level (default: doubling per level): a compaction then
	// rewrites at most a few base-size tables (a quarter of a memtable), so its transient
	// output beside its input stays small. No test here compares the two settings; what
	// the headroom must hold with this one is measured by TestMeasureCompactionSpikes
	// (see the tuning comment).
	o.TableSizeMultiplier = 1
	return o.
		WithLogger(badgerLogger{lg}).
		WithSyncWrites(false). // the writer fsyncs once per group
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTable).
		WithNumMemtables(2).
		WithBaseTableSize(memTable / 4).
		WithBaseLevelSize(2 * memTable).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(2 << 20).
		WithValueThreshold(min(valueThreshold, memTable*15/100)).
		WithValueLogFileSize(16 << 20).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithMetricsEnabled(true)
}

// tuning holds what the budget derives from Badger's sizes.
type tuning struct {
	// headroom is kept free below the limit for what the store cannot see coming between
	// two measurements of its directory: a memtable flushed to L0 while its write-ahead
	// log still exists, and compactions whose output exists beside their input. With
	// 4 MiB memtables, under sustained appends and trims, the directory grew beyond what
	// was written by up to 15.3–16.8 MiB within 100 ms, 25.5–26.5 MiB within 250 ms and
	// 60–66 MiB within a second (TestMeasureCompactionSpikes, two runs; BENCHMARKS.md);
	// measurements come every 100 ms.
	headroom int64
	// floor is what Badger holds whatever the data: the write-ahead logs of the memtables
	// (each up to a memtable) and level-0 tables waiting for compaction.
	floor int64
	// dropSlack is how much more than needed drop_oldest frees at once.
	dropSlack int64
	maxValue  int
}

func newTuning(memTable int64) tuning {
	return tuning{
		headroom:  8 * memTable,
		floor:     3 * memTable,
		dropSlack: memTable / 8,
		// Within Badger's value threshold (kept in the LSM tree) and, with its key, within
		// one transaction (Badger's batch limit is 15% of a memtable; the writer uses 90%).
		maxValue: int(min(valueThreshold-1, memTable*15/100*9/10-4096)),
	}
}

// MinMaxBytes is the smallest max_bytes that leaves room for data: Badger's floor (12 MiB)
// and headroom (32 MiB) come first, and the dedup index may take a quarter of the rest.
const MinMaxBytes = 128 << 20

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

package buffer

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Stats are the store's counters and gauges, read by metrics and `edgegate buffer stats`.
// Nothing leaves the buffer uncounted: an entry is either still there, or trimmed after
// every consumer had it, or expired by the retention, or dropped for room; an append is
// either stored, a duplicate, or rejected.
type Stats struct {
	Groups atomic.Uint64 // write groups committed
	Syncs  atomic.Uint64 // fsyncs
	// SyncNanos is the time spent in them, so that SyncNanos/Syncs is the mean fsync: what
	// decides between sync: always and an interval on slow flash.
	SyncNanos atomic.Uint64
	Appended  atomic.Uint64 // entries stored
	DedupHits atomic.Uint64 // entries not stored: their id was seen within the TTL

	Trimmed  atomic.Uint64 // entries deleted after every consumer committed past them
	Expired  atomic.Uint64 // entries deleted by the retention before every consumer had them
	Dropped  atomic.Uint64 // entries deleted to make room (on_full: drop_oldest)
	Rejected atomic.Uint64 // entries refused with ErrFull (on_full: reject, or nothing left to drop)
	// Guarded counts the entries of Rejected refused by the guard on the measured size
	// rather than by the policy (Badger's compaction far behind, or data that does not
	// compress).
	Guarded atomic.Uint64
	// RejectedAppends counts the Append calls refused with ErrFull (one per MQTT message).
	RejectedAppends atomic.Uint64
	// DedupEvicted counts ids forgotten before their TTL: the oldest, deleted to keep the
	// dedup index within its share of the capacity.
	DedupEvicted atomic.Uint64
	// Resends counts publishes recognised as resends by their client, packet id and payload
	// (Store.Arrive): given the arrival time of the first copy, hence its ids.
	Resends atomic.Uint64
	// DedupLookups counts the ids looked up in the dedup index on disk: those the cache
	// and the filter of ids never stored could not answer.
	DedupLookups atomic.Uint64
	// DedupFilterBytes is the memory the filter of stored ids takes.
	DedupFilterBytes atomic.Int64
	// Lost counts entries that were committed but found missing at open (a torn or
	// corrupt write-ahead-log tail; see Store.Lost).
	Lost atomic.Uint64

	DiskBytes atomic.Int64 // allocated bytes of the directory at the last measurement (at most a maintenance round old)

	mu         sync.Mutex // guards the per-log maps
	droppedBy  map[string]uint64
	expiredBy  map[string]uint64
	rejectedBy map[string]uint64
}

// PerLog returns the dropped, expired and rejected counts of each log that had any.
func (st *Stats) PerLog() map[string]LogCounts {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := map[string]LogCounts{}
	for _, m := range []map[string]uint64{st.droppedBy, st.expiredBy, st.rejectedBy} {
		for log := range m {
			out[log] = LogCounts{Dropped: st.droppedBy[log], Expired: st.expiredBy[log], Rejected: st.rejectedBy[log]}
		}
	}
	return out
}

// LogCounts are one log's losses, by cause.
type LogCounts struct {
	Dropped, Expired, Rejected uint64
}

func (s *Store) addLogCounter(m *map[string]uint64, log string, n uint64) {
	if n == 0 {
		return
	}
	s.stats.mu.Lock()
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[log] += n
	s.stats.mu.Unlock()
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

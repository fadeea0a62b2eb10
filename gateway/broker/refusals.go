package broker

import (
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
)

// Connection-level refusal reasons, counted beside the PUBLISH reasons of package ingest.
const (
	ReasonAuthFailed     ingest.Reason = "auth_failed"      // unknown user, wrong password, or anonymous when not allowed
	ReasonAuthBackoff    ingest.Reason = "auth_backoff"     // refused unchecked: its source (or user) failed too often lately
	ReasonAuthBusy       ingest.Reason = "auth_busy"        // the password check did not get its turn in time
	ReasonBadIdentity    ingest.Reason = "bad_identity"     // user name or client id with + # / or a reserved client id
	ReasonTakeover       ingest.Reason = "session_takeover" // client id of another user (session, binding, name or client_ids)
	ReasonWillDenied     ingest.Reason = "will_denied"      // will topic outside the publish grants
	ReasonConnLimit      ingest.Reason = "connection_limit" // max_clients or max_connections_per_ip reached
	ReasonConnectTimeout ingest.Reason = "connect_timeout"  // no CONNECT within connect_timeout
	ReasonFlood          ingest.Reason = "flood"            // disconnected for staying over its rate without a pause for flood_after
	ReasonWriteTimeout   ingest.Reason = "write_timeout"    // disconnected for taking nothing the broker sent for write_timeout
	ReasonSubscription   ingest.Reason = "subscription_limit"
	ReasonSessionLimit   ingest.Reason = "session_limit" // a persistent session over max_sessions_per_user or max_sessions
)

// RefusalReasons lists every reason Refusals counts, in a stable order.
var RefusalReasons = []ingest.Reason{
	ingest.ReasonMalformed, ingest.ReasonTooLarge, ingest.ReasonOverQuota,
	ingest.ReasonBufferFull, ingest.ReasonNotAuthorized, ingest.ReasonTopicInvalid,
	ingest.ReasonStore, ingest.ReasonShutdown,
	ReasonAuthFailed, ReasonAuthBackoff, ReasonAuthBusy, ReasonBadIdentity, ReasonTakeover, ReasonWillDenied, ReasonConnLimit,
	ReasonConnectTimeout, ReasonFlood, ReasonWriteTimeout, ReasonSubscription, ReasonSessionLimit,
}

// refusalLogEvery is how often one reason may be logged: a misbehaving device must not
// flood the journal (STYLE rule 9).
const refusalLogEvery = 10 * time.Second

// Refusals counts refused messages and connections by reason, for metrics, and logs them
// at most once per reason every 10 s with the number left unlogged. Safe for concurrent use.
type Refusals struct {
	counts map[ingest.Reason]*atomic.Uint64 // fixed at construction: read without a lock
	logs   *throttleState                   // keyed by reason
	log    *slog.Logger
}

// NewRefusals builds the counters.
func NewRefusals(c clock.Clock, log *slog.Logger) *Refusals {
	r := &Refusals{
		counts: make(map[ingest.Reason]*atomic.Uint64, len(RefusalReasons)),
		logs:   newThrottleState(c.Now),
		log:    log,
	}
	for _, reason := range RefusalReasons {
		r.counts[reason] = new(atomic.Uint64)
	}
	return r
}

// Add counts one refusal and logs it unless this reason was logged in the last 10 s.
// client and topic may be empty.
func (r *Refusals) Add(reason ingest.Reason, client, topic string, err error) {
	if c, ok := r.counts[reason]; ok {
		c.Add(1)
	}
	n, ok := r.logs.allow(string(reason))
	if !ok {
		return
	}
	attrs := []any{"reason", string(reason)}
	if client != "" {
		attrs = append(attrs, "client", client)
	}
	if topic != "" {
		attrs = append(attrs, "topic", topic)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if n > 0 {
		attrs = append(attrs, "unlogged_since_last", n)
	}
	r.log.Warn("refused", attrs...)
}

// Count returns the refusals counted for reason.
func (r *Refusals) Count(reason ingest.Reason) uint64 {
	if c, ok := r.counts[reason]; ok {
		return c.Load()
	}
	return 0
}

// Snapshot returns every counter, by reason.
func (r *Refusals) Snapshot() map[ingest.Reason]uint64 {
	out := make(map[ingest.Reason]uint64, len(r.counts))
	for k, c := range r.counts {
		out[k] = c.Load()
	}
	return out
}

// Reasons returns the counted reasons sorted by name (for stable metric output).
func (r *Refusals) Reasons() []ingest.Reason {
	out := append([]ingest.Reason(nil), RefusalReasons...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

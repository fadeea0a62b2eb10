package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/record"
)

// upstreamView is what the upstreams received, decoded.
type upstreamView struct {
	keyIDs    map[string]map[string]bool // reading key → the record ids it arrived with
	stamps    map[string]time.Time       // record id → its time (the arrival, for stamped ones)
	idKeys    map[string]map[string]bool // record id → the reading keys that carried it
	delivered map[string]map[string]bool // uplink → reading keys in accepted batches
	refused   map[string]map[string]bool // uplink → reading keys in batches refused for good
	panes     map[string]string          // pane id → its JSON, as first received
	batches   map[string]string          // uplink/batch id → payload, as first received
	problems  []string
	nBatches  int
	nRecords  int
}

func (s *soak) upstream() *upstreamView {
	v := &upstreamView{
		keyIDs: map[string]map[string]bool{}, idKeys: map[string]map[string]bool{}, stamps: map[string]time.Time{},
		delivered: map[string]map[string]bool{"cloud": {}, "collector": {}},
		refused:   map[string]map[string]bool{"cloud": {}, "collector": {}},
		panes:     map[string]string{}, batches: map[string]string{},
	}
	arrivals := s.col.all()
	for _, m := range s.mqttUp.Messages() {
		arrivals = append(arrivals, arrival{uplink: "cloud", payload: m.Payload})
	}
	for _, a := range arrivals {
		v.add(a)
	}
	return v
}

func (v *upstreamView) problem(format string, args ...any) {
	if len(v.problems) < 50 {
		v.problems = append(v.problems, fmt.Sprintf(format, args...))
	}
}

func add(m map[string]map[string]bool, k, v string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][v] = true
}

// add decodes one batch. A batch id must always come with the same bytes (a resend after
// a crash or reconnect carries the same id and records).
func (v *upstreamView) add(a arrival) {
	v.nBatches++
	b, err := record.DecodeBatch(a.payload)
	if err != nil {
		v.problem("%s: undecodable batch: %v", a.uplink, err)
		return
	}
	bk := a.uplink + "/" + b.Batch
	if prev, ok := v.batches[bk]; !ok {
		v.batches[bk] = string(a.payload)
	} else if prev != string(a.payload) {
		v.problem("batch %s re-sent with different bytes: %s", bk, batchDiff([]byte(prev), a.payload))
	}
	for _, item := range b.Records {
		if b.Kind == record.KindAggregates {
			var p struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(item, &p); err != nil || p.ID == "" {
				v.problem("%s: pane without id: %s", a.uplink, item)
				continue
			}
			if a.refused {
				continue
			}
			if prev, ok := v.panes[p.ID]; !ok {
				v.panes[p.ID] = string(item)
			} else if prev != string(item) {
				v.problem("pane %s arrived with two contents:\n  %s\n  %s", p.ID, prev, item)
			}
			continue
		}
		var r record.Record
		if err := json.Unmarshal(item, &r); err != nil {
			v.problem("%s: undecodable record: %v: %s", a.uplink, err, item)
			continue
		}
		v.nRecords++
		k := keyOf(&r)
		if a.refused {
			add(v.refused, a.uplink, k)
			continue
		}
		add(v.delivered, a.uplink, k)
		add(v.keyIDs, k, r.ID)
		v.stamps[r.ID] = r.TS
		add(v.idKeys, r.Series+"|"+r.ID, k) // ids are scoped to the device (its series)
	}
}

// stampsOf lists the times of ids (the arrivals the gateway stamped them with).
func (v *upstreamView) stampsOf(ids map[string]bool) string {
	var out []string
	for _, id := range sortedSet(ids) {
		out = append(out, v.stamps[id].Local().Format("15:04:05.000"))
	}
	return strings.Join(out, ", ")
}

// batchDiff tells how two payloads of one batch differ: their records' ids, or their
// lengths when they decode the same.
func batchDiff(a, b []byte) string {
	ids := func(p []byte) []string {
		bt, err := record.DecodeBatch(p)
		if err != nil {
			return []string{"undecodable: " + err.Error()}
		}
		var out []string
		for _, item := range bt.Records {
			var r struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(item, &r)
			out = append(out, r.ID)
		}
		return out
	}
	ia, ib := ids(a), ids(b)
	if slices.Equal(ia, ib) {
		return fmt.Sprintf("the same %d records, %d and %d bytes", len(ia), len(a), len(b))
	}
	return fmt.Sprintf("first %d records %v, then %d records %v", len(ia), shortAll(ia), len(ib), shortAll(ib))
}

// keyOf is how a record is matched to the reading a device published: series and value
// (values are unique per device and reading), or topic and payload for raw records.
func keyOf(r *record.Record) string {
	if r.Raw {
		return r.Topic + "|" + string(r.Payload)
	}
	return r.Series + "|" + strconv.FormatFloat(r.Value, 'f', -1, 64)
}

// check runs every check of the promise over what the devices were told and what arrived
// upstream, and reports the soak's figures.
func (s *soak) check() {
	t := s.t
	v := s.upstream()
	for _, p := range v.problems {
		t.Error(p)
	}

	// Every record arrived with one id, and no id stands for two readings.
	byKey := map[string]*reading{}
	for _, dv := range s.ledgers() {
		for _, r := range dv.all() {
			byKey[r.key] = r
		}
	}
	for k, ids := range v.keyIDs {
		if len(ids) > 1 {
			how := "no device sent it"
			if r := byKey[k]; r != nil {
				how = fmt.Sprintf("published %d times, acknowledged %v, ids stamped %s; wire:\n    %s",
					r.sends.Load(), r.acked.Load(), v.stampsOf(ids), r.history())
			}
			t.Errorf("reading %s arrived with %d ids (%s): %v", short(k), len(ids), how, sortedSet(ids))
		}
	}
	for id, ks := range v.idKeys {
		if len(ks) > 1 {
			t.Errorf("id %s arrived for %d readings: %v", id, len(ks), shortAll(sortedSet(ks)))
		}
	}

	// Every acknowledged reading arrived at every uplink (or was dead-lettered there, or
	// counted as dropped); nothing refused went upstream; nothing arrived that nobody sent.
	known := map[string]bool{}
	var sent, acked, refusedOK, unacked, qos0 int
	missing := map[string][]string{}
	notDelivered := map[string]int{} // sent readings (acknowledged or not) not delivered
	for _, dv := range s.ledgers() {
		for _, r := range dv.all() {
			sent++
			if r.kind == malformed {
				if k := r.topic + "|" + r.payload; v.delivered["cloud"][k] || v.delivered["collector"][k] {
					t.Errorf("%s: refused reading %q went upstream", dv.spec.name, r.payload)
				}
				// 3.1.1 gets a PUBACK for a permanent refusal (SPEC §2), MQTT 5 its code.
				switch code := r.refused.Load(); {
				case dv.spec.v5 && code == 0x99:
					refusedOK++
				case !dv.spec.v5 && r.acked.Load():
					refusedOK++
				case dv.resends():
					t.Errorf("%s: malformed reading %d: acked %v, reason %#x; want a PUBACK (3.1.1) or 0x99 (MQTT 5)", dv.spec.name, r.seq, r.acked.Load(), code)
				}
				continue
			}
			known[r.key] = true
			for _, up := range []string{"cloud", "collector"} {
				if !v.delivered[up][r.key] && !v.refused[up][r.key] {
					notDelivered[up]++
				}
			}
			if r.qos == 0 {
				qos0++
				continue
			}
			if !r.acked.Load() {
				unacked++
				if dv.resends() && !r.abandoned.Load() {
					t.Errorf("%s: reading %d (%s) never acknowledged (sent %d times), though the device kept resending (a wedged client?); its wire:\n%s", dv.spec.name, r.seq, r.payload, r.sends.Load(), r.history())
				}
				continue
			}
			acked++
			for _, up := range []string{"cloud", "collector"} {
				if !v.delivered[up][r.key] && !v.refused[up][r.key] {
					missing[up] = append(missing[up], r.key)
				}
			}
		}
	}
	wills := s.checkWills(v, known, missing)
	for k := range v.keyIDs {
		if !known[k] {
			t.Errorf("a record arrived that no device sent: %s", short(k))
		}
	}
	losses := s.countedLosses()
	// The count can exceed what is missing upstream: an entry deleted while a batch holding
	// it was acknowledged but not yet committed (the HTTP sink sends 4 batches at once and
	// commits only the acknowledged prefix) counts as never had, though it arrived.
	for up, n := range losses {
		if n > notDelivered[up] {
			t.Logf("uplink %s: %d records counted as never had, %d readings sent are missing there (the rest arrived in batches acknowledged but not yet committed when they were deleted)", up, n, notDelivered[up])
		}
	}
	for up, ks := range missing {
		if len(ks) > losses[up] {
			sort.Strings(ks)
			t.Errorf("uplink %s: %d acknowledged readings never arrived, %d counted as dropped or expired; first: %v",
				up, len(ks), losses[up], shortAll(ks[:min(5, len(ks))]))
		}
	}

	s.checkPanes(v, losses)
	s.checkRefusedLog()

	if len(s.d.slowStops) > 0 {
		t.Errorf("%d SIGTERMs took longer than flush_timeout (%s) + 5s: %v", len(s.d.slowStops), flushTimeout, s.d.slowStops)
	}
	t.Logf("%s: %d readings sent (%d QoS 0), %d acknowledged, %d malformed answered as SPEC §2 says, %d not acknowledged (clean sessions lose what was in flight); "+
		"upstream: %d batches, %d records, %d distinct readings at cloud and %d at collector, %d refused for good at collector, %d panes; "+
		"acknowledged but missing (counted as never had): cloud %d (%d), collector %d (%d); "+
		"faults: %v, attacks: %v, daemon starts %d (kill -9 %d, SIGTERM %d); the slow reader was disconnected %d times",
		s.policy, sent, qos0, acked, refusedOK, unacked, v.nBatches, v.nRecords, len(v.delivered["cloud"]), len(v.delivered["collector"]),
		len(v.refused["collector"]), len(v.panes), len(missing["cloud"]), losses["cloud"], len(missing["collector"]), losses["collector"],
		s.faults, s.att.count, s.d.starts, s.d.kills, s.d.terms, s.slowDisc.Load())
	t.Logf("%s: daemon RSS peak over the run %d MiB (no GOMEMLIMIT in the soak)", s.policy, s.rssPeak.Load()>>10)
	for _, line := range s.attackReport(wills) {
		t.Logf("%s: %s", s.policy, line)
	}
}

// countedLosses is, per uplink, how many raw records the daemon deleted (for room, or by
// the retention) before the uplink had them: its durable count, exact across kill -9.
func (s *soak) countedLosses() map[string]int {
	out := map[string]int{}
	stats := s.d.cli("buffer", "stats", "-d", s.d.dataDir, "-json")
	var st struct {
		Logs []struct {
			Name   string `json:"name"`
			Missed map[string]struct {
				Room      int `json:"room"`
				Retention int `json:"retention"`
			} `json:"missed"` // per consumer: entries deleted before it had them
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(stats), &st); err != nil {
		s.t.Fatalf("buffer stats -json: %v\n%s", err, stats)
	}
	for _, l := range st.Logs {
		if l.Name == "raw" {
			for up, m := range l.Missed {
				out[up] = m.Room + m.Retention
			}
		}
	}
	return out
}

// checkPanes replays the pipelines' input (p0's readings, which it publishes one by one,
// so the store has them in publish order) through `edgegate replay` and compares the panes
// with those that arrived upstream: same ids, same bytes. Panes of windows still open in
// the daemon (their end is past its final watermark) fire in replay only, at end of input.
//
// A pipeline that never had some readings (drop_oldest deleted them before it read them,
// counted durably as its loss) fires panes without them: its panes may then miss readings
// (a lower count, or a window replay has and it never fired), never have more.
func (s *soak) checkPanes(v *upstreamView, losses map[string]int) {
	t := s.t
	var p0 *device
	for _, dv := range s.devices {
		if dv.spec.name == "p0" {
			p0 = dv
		}
	}
	if p0 == nil {
		return // not in this run (SOAK_DEVICES)
	}
	var lines []string
	maxTS := int64(0)
	for _, r := range p0.all() {
		if !r.acked.Load() {
			continue
		}
		maxTS = max(maxTS, r.ts)
		lines = append(lines, fmt.Sprintf(`{"id":%q,"topic":%q,"series":"p0/id","ts":%q,"value":%s}`,
			r.id, r.topic, time.UnixMilli(r.ts).UTC().Format(record.TimeLayout), strings.SplitN(r.key, "|", 2)[1]))
	}
	in := filepath.Join(s.dir, "p0.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := s.d.cli("replay", "-c", s.d.cfg, "--input", in)
	watermark := maxTS - 2000 // out_of_order
	want, compared, open := 0, 0, 0
	short := map[string]int{} // by pipeline: panes with fewer readings, or none, upstream
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var p struct {
			ID       string `json:"id"`
			End      string `json:"end"`
			Pipeline string `json:"pipeline"`
			Count    int    `json:"count"`
		}
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("replay output: %v: %s", err, line)
		}
		end, err := time.Parse(time.RFC3339Nano, p.End)
		if err != nil {
			t.Fatalf("replay pane end %q: %v", p.End, err)
		}
		got, ok := v.panes[p.ID]
		var up struct {
			Count int `json:"count"`
		}
		if ok {
			_ = json.Unmarshal([]byte(got), &up)
		}
		lost := losses["pipeline/"+p.Pipeline] > 0
		switch {
		case end.UnixMilli() > watermark:
			open++ // fired by the end of input only
		case lost && (!ok || got != line && up.Count < p.Count):
			short[p.Pipeline]++
		case !ok:
			want++
			if want <= 5 {
				t.Errorf("pane missing upstream: %s", line)
			}
		case got != line:
			t.Errorf("pane %s differs from replay:\n  upstream %s\n  replay   %s", p.ID, got, line)
		default:
			compared++
		}
	}
	if want > 0 {
		t.Errorf("%d panes of closed windows never arrived upstream", want)
	}
	for pl, n := range short {
		t.Logf("%s: pipeline %s never had %d records (counted): %d of replay's panes have fewer readings upstream, or none", s.policy, pl, losses["pipeline/"+pl], n)
	}
	t.Logf("%s: %d panes equal to replay's, %d windows still open (fired by replay's end of input only), from %d readings",
		s.policy, compared, open, len(lines))
}

// checkRefusedLog checks that every malformed reading a 3.1.1 device was acknowledged for
// is kept in the refused log (SPEC §2: nothing refused is silently dropped): those since
// the soak went quiet, as older ones may have expired (retention). The refused log has
// its own room in the budget, so neither policy's full buffer may lose them.
func (s *soak) checkRefusedLog() {
	t := s.t
	out := s.d.cli("buffer", "tail", "-d", s.d.dataDir, "-log", "refused", "-n", "1000000")
	// The drain after the schedule may outlast the retention: entries acknowledged before
	// the daemon's last minutes may have expired since.
	since := s.quietSince
	if stop := s.d.stoppedAt.Add(-retention + 30*time.Second); stop.After(since) {
		since = stop
	}
	checked := 0
	for _, dv := range s.devices {
		for _, r := range dv.all() {
			if r.kind != malformed || !r.acked.Load() || r.ackedAt.Load() < since.UnixMilli() {
				continue
			}
			checked++
			if !strings.Contains(out, strconv.Quote(r.payload)) {
				t.Errorf("%s: malformed reading %q was acknowledged but is not in the refused log", dv.spec.name, r.payload)
			}
		}
	}
	t.Logf("%s: %d malformed readings acknowledged since the soak went quiet, each in the refused log", s.policy, checked)
}

func sortedSet(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// short cuts a reading key for a message (bulk payloads are 16 KiB).
func short(k string) string {
	if len(k) > 60 {
		return k[:60] + "…"
	}
	return k
}

func shortAll(ks []string) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = short(k)
	}
	return out
}

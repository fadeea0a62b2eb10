package pipeline

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// base is a minute boundary; test times are milliseconds after it.
var base = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixMilli()

func sec(s float64) int64 { return base + int64(s*1000) }

func newCore(t testing.TB, s Spec) *Core {
	t.Helper()
	if s.Name == "" {
		s.Name = "p"
	}
	if s.Output == "" {
		s.Output = "agg/" + s.Name
	}
	if s.Aggs == 0 {
		s.Aggs = AggSum
	}
	c, err := NewCore(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// paneString renders a pane in the tests' notation, times in seconds after base:
// "key [0,10) ON_TIME#0 n=4 sum=11".
func paneString(p *Pane) string {
	s := fmt.Sprintf("[%s,%s) %s#%d n=%d sum=%g", fmtSec(p.Start), fmtSec(p.End), p.Timing, p.Index, p.agg.count, p.agg.sum)
	if p.Key != "k" {
		s = p.Key + " " + s
	}
	return s
}

func fmtSec(ms int64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", float64(ms-base)/1000), "0"), ".")
}

func wmString(w int64) string {
	switch w {
	case NegInf:
		return "-inf"
	case PosInf:
		return "+inf"
	}
	return fmtSec(w)
}

// step feeds one record of key "k" and returns the panes it fired.
func step(c *Core, key string, tsSec, v float64) (Outcome, []string) {
	c.ClearPanes()
	out := c.Step(&Input{Topic: "t/" + key, Series: key, TS: sec(tsSec), Value: v})
	c.Fire(-1)
	return out, panes(c)
}

func panes(c *Core) []string {
	var ps []string
	for i := range c.Panes() {
		ps = append(ps, paneString(&c.Panes()[i]))
	}
	c.ClearPanes()
	return ps
}

// TestWorkedExample reproduces the table of SPEC §4 row by row: tumbling 10s,
// out_of_order 2s, allowed_lateness 5s; W after each arrival and what fires.
func TestWorkedExample(t *testing.T) {
	rows := []struct {
		ts, value float64
		w         string
		out       Outcome
		acc, disc []string // panes fired, accumulating and discarding
	}{
		{1.000, 1, "-1", Aggregated, nil, nil},
		{4.000, 2, "2", Aggregated, nil, nil},
		{9.999, 3, "7.999", Aggregated, nil, nil},
		{10.000, 4, "8", Aggregated, nil, nil}, // a record at exactly end belongs to the next window
		{8.000, 5, "8", Aggregated, nil, nil},  // end 10 > W 8: on time though out of order
		{12.500, 6, "10.5", Aggregated, []string{"[0,10) ON_TIME#0 n=4 sum=11"}, []string{"[0,10) ON_TIME#0 n=4 sum=11"}},
		{7.000, 7, "10.5", LateAccepted, []string{"[0,10) LATE#1 n=5 sum=18"}, []string{"[0,10) LATE#1 n=1 sum=7"}},
		{18.000, 8, "16", Aggregated, nil, nil},
		{3.000, 9, "16", TooLate, nil, nil}, // late and W ≥ 15: dropped
		{21.000, 10, "19", Aggregated, nil, nil},
	}
	final := []string{"[10,20) ON_TIME#0 n=3 sum=18", "[20,30) ON_TIME#0 n=1 sum=10"}
	for _, mode := range []string{"accumulating", "discarding"} {
		t.Run(mode, func(t *testing.T) {
			c := newCore(t, Spec{Kind: Tumbling, Size: 10000, OutOfOrder: 2000, AllowedLateness: 5000, Discarding: mode == "discarding"})
			for i, r := range rows {
				out, got := step(c, "k", r.ts, r.value)
				want := r.acc
				if mode == "discarding" {
					want = r.disc
				}
				if fmt.Sprint(got) != fmt.Sprint(want) || out != r.out || wmString(c.Watermark()) != r.w {
					t.Errorf("#%d ts %.3f: W %s, outcome %d, panes %q; want W %s, outcome %d, panes %q",
						i+1, r.ts, wmString(c.Watermark()), out, got, r.w, r.out, want)
				}
			}
			c.Finish()
			if got := panes(c); fmt.Sprint(got) != fmt.Sprint(final) || c.Watermark() != PosInf {
				t.Errorf("end of replay: %q, want %q", got, final)
			}
			cn := c.Counters()
			if cn.TooLate != 1 || cn.LateRecords != 1 || cn.Records != 10 || cn.Panes[OnTime] != 3 || cn.Panes[Late] != 1 {
				t.Errorf("counters %+v", cn)
			}
			if c.OpenWindows() != 0 {
				t.Errorf("%d windows left after +inf", c.OpenWindows())
			}
		})
	}
}

type rec struct {
	key   string
	ts, v float64
}

type tcase struct {
	name string
	spec Spec
	recs []rec
	// want lists, per record, the panes it fired (joined by "; "), then "end: ..." for
	// what Finish fires.
	want []string
}

func runCase(t *testing.T, tc tcase) {
	t.Helper()
	c := newCore(t, tc.spec)
	var got []string
	for _, r := range tc.recs {
		key := r.key
		if key == "" {
			key = "k"
		}
		_, ps := step(c, key, r.ts, r.v)
		got = append(got, strings.Join(ps, "; "))
	}
	c.Finish()
	got = append(got, "end: "+strings.Join(panes(c), "; "))
	if len(got) != len(tc.want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
	}
	for i := range got {
		if got[i] != tc.want[i] {
			t.Errorf("line %d: got %q\n              want %q", i, got[i], tc.want[i])
		}
	}
}

func TestTumblingBoundaries(t *testing.T) {
	runCase(t, tcase{
		spec: Spec{Kind: Tumbling, Size: 10000},
		recs: []rec{
			{ts: 0, v: 1},       // [0,10)
			{ts: 9.999, v: 2},   // last ms of [0,10)
			{ts: 10, v: 4},      // exactly end: next window; W=10 ≥ end fires [0,10)
			{ts: -0.001, v: 8},  // before base: window [-10,0), too late (no lateness)
			{ts: 19.999, v: 16}, // W 19.999
			{ts: 20, v: 32},     // W 20 fires [10,20)
		},
		want: []string{
			"", "", "[0,10) ON_TIME#0 n=2 sum=3", "", "",
			"[10,20) ON_TIME#0 n=2 sum=20",
			"end: [20,30) ON_TIME#0 n=1 sum=32",
		},
	})
}

func TestNegativeTimesAlign(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 7000})
	c.Step(&Input{Series: "k", TS: -1, Value: 1})
	c.Step(&Input{Series: "k", TS: -7000, Value: 1})
	c.Step(&Input{Series: "k", TS: -7001, Value: 1})
	c.Finish()
	var got []string
	for _, p := range c.Panes() {
		got = append(got, fmt.Sprintf("[%d,%d) n=%d", p.Start, p.End, p.Count()))
	}
	// Windows align to the epoch below 0 too: -1 and -7000 share [-7000,0); -7001 is in
	// [-14000,-7000), whose end W (-1) passed with no allowed lateness: dropped.
	want := "[[-7000,0) n=2]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestSlidingMembership(t *testing.T) {
	// size 30s every 10s: a record belongs to 3 windows.
	runCase(t, tcase{
		spec: Spec{Kind: Sliding, Size: 30000, Every: 10000},
		recs: []rec{
			{ts: 5, v: 1},  // [-20,10) [-10,20) [0,30)
			{ts: 10, v: 2}, // [-10,20) [0,30) [10,40); W=10 fires [-20,10)
			{ts: 29.999, v: 4},
			{ts: 30, v: 8}, // fires [0,30)
		},
		want: []string{
			"",
			"[-20,10) ON_TIME#0 n=1 sum=1",
			"[-10,20) ON_TIME#0 n=2 sum=3",
			"[0,30) ON_TIME#0 n=3 sum=7",
			"end: [10,40) ON_TIME#0 n=3 sum=14; [20,50) ON_TIME#0 n=2 sum=12; [30,60) ON_TIME#0 n=1 sum=8",
		},
	})
}

func TestSlidingPartlyLate(t *testing.T) {
	// A record too late for its oldest windows still counts in the newer ones.
	c := newCore(t, Spec{Kind: Sliding, Size: 30000, Every: 10000})
	step(c, "k", 25, 1) // W = 25
	out, ps := step(c, "k", 12, 2)
	if out != Aggregated || len(ps) != 0 {
		t.Fatalf("outcome %d panes %v: [0,30) and [10,40) are open", out, ps)
	}
	if cn := c.Counters(); cn.TooLate != 0 {
		t.Fatalf("counted too late: %+v", cn)
	}
	out, _ = step(c, "k", 5, 4) // all its windows ([-20,10) [-10,20) [0,30)) ... [0,30) open
	if out != Aggregated {
		t.Fatalf("outcome %d", out)
	}
	out, _ = step(c, "k", -1, 4) // windows [-30,0) [-20,10) [-10,20): all closed
	if out != TooLate {
		t.Fatalf("outcome %d, want TooLate", out)
	}
}

func TestSessions(t *testing.T) {
	cases := []tcase{{
		name: "merge and gap boundary",
		spec: Spec{Kind: Session, Gap: 10000},
		recs: []rec{
			{ts: 0, v: 1},
			{ts: 9.999, v: 2}, // closer than gap: [0,19.999)
			{ts: 30, v: 4},    // 30 - 9.999 ≥ gap: new session; W=30 fires the first
			{ts: 40, v: 8},    // exactly gap after: a new session, [30,40) fires
		},
		want: []string{
			"", "",
			"[0,19.999) ON_TIME#0 n=2 sum=3",
			"[30,40) ON_TIME#0 n=1 sum=4",
			"end: [40,50) ON_TIME#0 n=1 sum=8",
		},
	}, {
		name: "on-time record bridges two open sessions",
		spec: Spec{Kind: Session, Gap: 10000, OutOfOrder: 100000},
		recs: []rec{
			{ts: 0, v: 1},
			{ts: 15, v: 2}, // [0,10) and [15,25)
			{ts: 8, v: 4},  // [8,18) overlaps both: one session [0,25)
		},
		want: []string{"", "", "", "end: [0,25) ON_TIME#0 n=3 sum=7"},
	}, {
		name: "late record bridges two fired sessions",
		spec: Spec{Kind: Session, Gap: 10000, OutOfOrder: 10000, AllowedLateness: 20000},
		recs: []rec{
			{ts: 0, v: 1},  // [0,10)
			{ts: 15, v: 2}, // [15,25)
			{ts: 36, v: 4}, // W=26: both fire
			{ts: 8, v: 8},  // [8,18): late (18 ≤ 26) but 18+20 > 26; merges both into [0,25), born late
			{ts: 5, v: 16}, // inside [0,25): LATE #1
			{ts: 45, v: 32},
		},
		want: []string{
			"", "",
			"[0,10) ON_TIME#0 n=1 sum=1; [15,25) ON_TIME#0 n=1 sum=2",
			"[0,25) LATE#0 n=3 sum=11",
			"[0,25) LATE#1 n=4 sum=27",
			"", // W=35: [36,55) open; [0,25) kept until W ≥ 45, never fires again
			"end: [36,55) ON_TIME#0 n=2 sum=36",
		},
	}, {
		name: "a fired session past its lateness is forgotten, not merged",
		spec: Spec{Kind: Session, Gap: 10000, OutOfOrder: 10000, AllowedLateness: 10000},
		recs: []rec{
			{ts: 0, v: 1},  // [0,10)
			{ts: 15, v: 2}, // [15,25)
			{ts: 36, v: 4}, // W=26: both fire; [0,10) forgotten (10+10 ≤ 26)
			{ts: 8, v: 8},  // [8,18) merges with [15,25) only
		},
		want: []string{
			"", "",
			"[0,10) ON_TIME#0 n=1 sum=1; [15,25) ON_TIME#0 n=1 sum=2",
			"[8,25) LATE#0 n=2 sum=10",
			"end: [36,46) ON_TIME#0 n=1 sum=4",
		},
	}, {
		name: "late record extends a fired session into an open one",
		spec: Spec{Kind: Session, Gap: 10000, OutOfOrder: 5000, AllowedLateness: 30000},
		recs: []rec{
			{ts: 0, v: 1},  // [0,10)
			{ts: 20, v: 2}, // W=15 fires [0,10); [20,30) open
			{ts: 9, v: 4},  // [9,19): end 19 > W 15, on time; merges with [0,10) → [0,19) open
			{ts: 25, v: 8}, // W=20: [0,19) fires ON_TIME #0 (new bounds)
		},
		want: []string{
			"",
			"[0,10) ON_TIME#0 n=1 sum=1",
			"",
			"[0,19) ON_TIME#0 n=2 sum=5",
			"end: [20,35) ON_TIME#0 n=2 sum=10",
		},
	}, {
		name: "session discarding: a merge carries only what no pane carried",
		spec: Spec{Kind: Session, Gap: 10000, OutOfOrder: 10000, AllowedLateness: 20000, Discarding: true},
		recs: []rec{
			{ts: 0, v: 1}, {ts: 15, v: 2}, {ts: 36, v: 4}, {ts: 8, v: 8},
		},
		want: []string{
			"", "",
			"[0,10) ON_TIME#0 n=1 sum=1; [15,25) ON_TIME#0 n=1 sum=2",
			"[0,25) LATE#0 n=1 sum=8",
			"end: [36,46) ON_TIME#0 n=1 sum=4",
		},
	}, {
		name: "keys are separate sessions",
		spec: Spec{Kind: Session, Gap: 10000},
		recs: []rec{{key: "a", ts: 0, v: 1}, {key: "b", ts: 5, v: 2}, {key: "a", ts: 9, v: 4}},
		want: []string{"", "", "", "end: b [5,15) ON_TIME#0 n=1 sum=2; a [0,19) ON_TIME#0 n=2 sum=5"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

func TestWatermarkNeverDecreases(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 1000, OutOfOrder: 3000, AllowedLateness: 1 << 40, Idle: time.Minute})
	if c.Watermark() != NegInf {
		t.Fatalf("initial W = %d, want -inf", c.Watermark())
	}
	prev := NegInf
	for i, ts := range []float64{10, 5, 12, 1, 11.5, 13, 0, 20} {
		step(c, "k", ts, 1)
		w := c.Watermark()
		if w < prev {
			t.Fatalf("record %d: W went back from %s to %s", i, wmString(prev), wmString(w))
		}
		prev = w
	}
	if wmString(prev) != "17" {
		t.Fatalf("W = %s, want 17 (max ts 20 − 3)", wmString(prev))
	}
	// The idle clock behind the newest event time does not move W back either.
	behind := time.UnixMilli(sec(-200))
	c.Tick(behind.UnixNano())
	c.Tick(behind.Add(time.Minute).UnixNano()) // idle: W follows a clock at -140 s
	if !c.idleOn || c.Watermark() != prev {
		t.Fatalf("W = %s after ticks (idle %v), want %s", wmString(c.Watermark()), c.idleOn, wmString(prev))
	}
}

func TestIdleAdvance(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, OutOfOrder: 2000, Idle: time.Minute})
	ns := func(s float64) int64 { return time.UnixMilli(sec(s)).UnixNano() }
	// Processing time 1000 s after base; the device's clock says 1..5 s.
	now := ns(1000)
	c.Tick(now)
	if d, ok := c.NextDeadline(); !ok || d != now+int64(time.Minute) {
		t.Fatalf("deadline %d %v, want start + idle", d, ok)
	}
	step(c, "k", 1, 1)
	step(c, "k", 5, 2)
	c.Tick(now + int64(59*time.Second))
	if c.Fire(-1); len(c.Panes()) != 0 || wmString(c.Watermark()) != "3" {
		t.Fatalf("before idle: W %s, panes %v", wmString(c.Watermark()), panes(c))
	}
	// Idle for 60 s: W follows the clock as if a record stamped now (1060 s) arrived.
	c.Tick(now + int64(60*time.Second))
	c.Fire(-1)
	if got := fmt.Sprint(panes(c)); got != "[[0,10) ON_TIME#0 n=2 sum=3]" || wmString(c.Watermark()) != "1058" {
		t.Fatalf("idle: W %s, panes %s", wmString(c.Watermark()), got)
	}
	// A record now late is dropped; it does not undo idleness of W, only resets the timer.
	if out, _ := step(c, "k", 6, 4); out != TooLate {
		t.Fatalf("outcome %d, want TooLate", out)
	}
	// A new record opens a window; while idle again, the deadline is when the clock makes
	// W reach its end (end + out_of_order).
	c.Tick(now + int64(61*time.Second))
	step(c, "k", 1065, 8)
	c.Tick(now + int64(200*time.Second))
	c.Fire(-1)
	if got := fmt.Sprint(panes(c)); got != "[[1060,1070) ON_TIME#0 n=1 sum=8]" {
		t.Fatalf("second idle: %s (W %s)", got, wmString(c.Watermark()))
	}
	step(c, "k", 1300, 1)
	c.Tick(now + int64(300*time.Second))
	c.Tick(now + int64(400*time.Second)) // idle again
	if d, ok := c.NextDeadline(); !ok || d != time.UnixMilli(sec(1310+2)).UnixNano() {
		t.Fatalf("deadline %v %v, want the processing time W reaches 1310", time.Unix(0, d).UTC(), ok)
	}
}

func TestOnTimeFiringOrder(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, OutOfOrder: 100000})
	for _, r := range []rec{{"b", 25, 1}, {"a", 5, 1}, {"c", 15, 1}, {"a", 15, 1}, {"b", 5, 1}, {"c", 35, 1}} {
		step(c, r.key, r.ts, r.v)
	}
	c.ClearPanes()
	c.Step(&Input{Series: "z", TS: sec(140), Value: 1}) // W = 40: closes everything before
	c.Fire(-1)
	want := "[a [0,10) ON_TIME#0 n=1 sum=1 b [0,10) ON_TIME#0 n=1 sum=1 a [10,20) ON_TIME#0 n=1 sum=1 c [10,20) ON_TIME#0 n=1 sum=1 b [20,30) ON_TIME#0 n=1 sum=1 c [30,40) ON_TIME#0 n=1 sum=1]"
	if got := fmt.Sprint(panes(c)); got != want {
		t.Fatalf("order:\n got %s\nwant %s", got, want)
	}
}

func TestFireBoundedThenStep(t *testing.T) {
	// A caller may cut firing into bounded pieces; a Step in between still sees every
	// due window fired first.
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000})
	for _, k := range []string{"a", "b", "c"} {
		c.Step(&Input{Series: k, TS: sec(1), Value: 1})
	}
	c.Step(&Input{Series: "a", TS: sec(10), Value: 1})
	if n := c.Fire(1); n != 1 || !c.Pending() {
		t.Fatalf("Fire(1) = %d, pending %v", n, c.Pending())
	}
	c.Step(&Input{Series: "b", TS: sec(9), Value: 1}) // late: [0,10) of b must have fired first
	got := fmt.Sprint(panes(c))
	want := "[a [0,10) ON_TIME#0 n=1 sum=1 b [0,10) ON_TIME#0 n=1 sum=1 c [0,10) ON_TIME#0 n=1 sum=1]"
	if got != want || c.Counters().TooLate != 1 {
		t.Fatalf("got %s (too late %d), want %s", got, c.Counters().TooLate, want)
	}
}

func TestLateness(t *testing.T) {
	cases := []tcase{{
		name: "late pane within allowed lateness, dropped beyond, never fired ON_TIME",
		spec: Spec{Kind: Tumbling, Size: 10000, AllowedLateness: 10000},
		recs: []rec{
			{ts: 25, v: 1}, // W 25
			{ts: 5, v: 2},  // [0,10): first data after W passed end: LATE #0; 10+10 ≤ 25: dropped
			{ts: 15, v: 4}, // [10,20): LATE #0 (born late)
			{ts: 16, v: 8}, // LATE #1
			{ts: 30, v: 16},
			{ts: 17, v: 32}, // W 30 ≥ 20+10: dropped
		},
		want: []string{
			"", "",
			"[10,20) LATE#0 n=1 sum=4",
			"[10,20) LATE#1 n=2 sum=12",
			"[20,30) ON_TIME#0 n=1 sum=1",
			"",
			"end: [30,40) ON_TIME#0 n=1 sum=16",
		},
	}, {
		name: "discarding: pane indexes and contents",
		spec: Spec{Kind: Tumbling, Size: 10000, AllowedLateness: 20000, Discarding: true},
		recs: []rec{
			{ts: 1, v: 1}, {ts: 2, v: 2}, {ts: 10, v: 4}, {ts: 3, v: 8}, {ts: 4, v: 16},
		},
		want: []string{
			"", "",
			"[0,10) ON_TIME#0 n=2 sum=3",
			"[0,10) LATE#1 n=1 sum=8",
			"[0,10) LATE#2 n=1 sum=16",
			"end: [10,20) ON_TIME#0 n=1 sum=4",
		},
	}, {
		name: "accumulating: the same stream",
		spec: Spec{Kind: Tumbling, Size: 10000, AllowedLateness: 20000},
		recs: []rec{
			{ts: 1, v: 1}, {ts: 2, v: 2}, {ts: 10, v: 4}, {ts: 3, v: 8}, {ts: 4, v: 16},
		},
		want: []string{
			"", "",
			"[0,10) ON_TIME#0 n=2 sum=3",
			"[0,10) LATE#1 n=3 sum=11",
			"[0,10) LATE#2 n=4 sum=27",
			"end: [10,20) ON_TIME#0 n=1 sum=4",
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

func TestEarlyPanes(t *testing.T) {
	for _, mode := range []string{"accumulating", "discarding"} {
		t.Run(mode, func(t *testing.T) {
			c := newCore(t, Spec{Kind: Tumbling, Size: 60000, Early: 10 * time.Second, Discarding: mode == "discarding"})
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
			tick := func(d time.Duration) []string {
				c.Tick(now + int64(d))
				c.Fire(-1)
				return panes(c)
			}
			tick(0)
			step(c, "k", 1, 1)
			if got := tick(9 * time.Second); got != nil {
				t.Fatalf("early pane before its period: %v", got)
			}
			step(c, "k", 2, 2)
			got := tick(10 * time.Second) // due 10 s after the first record of the pane
			if fmt.Sprint(got) != "[[0,60) EARLY#0 n=2 sum=3]" {
				t.Fatalf("first early: %v", got)
			}
			if got := tick(30 * time.Second); got != nil {
				t.Fatalf("early pane without change: %v", got)
			}
			step(c, "k", 3, 4)
			want := "[[0,60) EARLY#1 n=3 sum=7]"
			if mode == "discarding" {
				want = "[[0,60) EARLY#1 n=1 sum=4]"
			}
			if got := tick(40 * time.Second); fmt.Sprint(got) != want {
				t.Fatalf("second early: %v, want %s", got, want)
			}
			// The watermark closes the window: the ON_TIME pane fires even with nothing new
			// (Beam's default), empty in discarding mode.
			_, got = step(c, "k", 60, 8)
			want = "[[0,60) ON_TIME#2 n=3 sum=7]"
			if mode == "discarding" {
				want = "[[0,60) ON_TIME#2 n=0 sum=0]"
			}
			if fmt.Sprint(got) != want {
				t.Fatalf("on time: %v, want %s", got, want)
			}
			// No early pane for a closed window.
			if got := tick(time.Hour); fmt.Sprint(got) != "[[60,120) EARLY#0 n=1 sum=8]" {
				t.Fatalf("after close: %v", got)
			}
		})
	}
}

func TestOpenWindowCap(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, MaxOpenWindows: 2, OutOfOrder: 100000})
	outs := []Outcome{}
	for _, k := range []string{"a", "b", "c", "a"} {
		o, _ := step(c, k, 1, 1)
		outs = append(outs, o)
	}
	if fmt.Sprint(outs) != fmt.Sprint([]Outcome{Aggregated, Aggregated, Capped, Aggregated}) || c.Counters().CapDrops != 1 {
		t.Fatalf("outcomes %v, counters %+v", outs, c.Counters())
	}
	if c.OpenWindows() != 2 {
		t.Fatalf("open %d", c.OpenWindows())
	}
}

func TestInputFilter(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, Input: "sensors/+/temperature"})
	for i, tc := range []struct {
		topic string
		want  Outcome
	}{
		{"sensors/a/temperature", Aggregated},
		{"sensors/a/humidity", Skipped},
		{"sensors/a/temperature/x", Skipped},
		{"sensors/a/temperature", Aggregated},
	} {
		if got := c.Step(&Input{Topic: tc.topic, Series: "s", TS: sec(1), Value: 1}); got != tc.want {
			t.Errorf("%d %s: %d, want %d", i, tc.topic, got, tc.want)
		}
	}
	if c.Counters().Records != 2 {
		t.Fatalf("records %d", c.Counters().Records)
	}
}

func TestFirstLastTies(t *testing.T) {
	c := newCore(t, Spec{Kind: Tumbling, Size: 10000, OutOfOrder: 10000, Aggs: AggFirst | AggLast})
	for _, r := range []rec{{"k", 5, 1}, {"k", 3, 2}, {"k", 3, 3}, {"k", 7, 4}, {"k", 7, 5}, {"k", 6, 6}} {
		step(c, r.key, r.ts, r.v)
	}
	c.Finish()
	p := c.Panes()[0]
	// first: ts 3, earliest arrival (2); last: ts 7, latest arrival (5).
	if p.agg.first != 2 || p.agg.last != 5 {
		t.Fatalf("first %v last %v, want 2 and 5", p.agg.first, p.agg.last)
	}
}

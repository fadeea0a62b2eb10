package ingest

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/record"
)

func TestParseTS(t *testing.T) {
	base := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		raw  string
		want time.Time // zero: refused
		none bool      // null: no timestamp
	}{
		{`1795694400`, base, false},                                             // seconds
		{`1795694400.5`, base.Add(500 * time.Millisecond), false},               // seconds with fraction
		{`1795694400.123`, base.Add(123 * time.Millisecond), false},             // no float drift to .122
		{`1795694400123`, base.Add(123 * time.Millisecond), false},              // milliseconds
		{`1.795694400123e12`, base.Add(123 * time.Millisecond), false},          // ms with exponent
		{`99999999999`, time.Date(5138, 11, 16, 9, 46, 39, 0, time.UTC), false}, // just below 1e11: seconds, year 5138: refused below
		{`100000000000`, time.Time{}, false},                                    // 1e11 ms = 1973: refused
		{`946684800`, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), false},       // first accepted second
		{`946684799`, time.Time{}, false},                                       // 1999: refused
		{`"2026-11-26T12:00:00Z"`, base, false},
		{`"2026-11-26T12:00:00.123456789Z"`, base.Add(123456789), false},
		{`"2026-11-26T07:00:00-05:00"`, base, false},
		{`"2026-11-26 12:00:00"`, time.Time{}, false},
		{`"1795694400"`, time.Time{}, false},
		{`null`, time.Time{}, true},
		{`true`, time.Time{}, false},
		{`{}`, time.Time{}, false},
		{`-1795694400`, time.Time{}, false},
		{`1e300`, time.Time{}, false},
	}
	for _, c := range cases {
		ts, ok, err := parseTS([]byte(c.raw))
		switch {
		case c.none:
			if ok || err != nil {
				t.Errorf("parseTS(%s) = %v, %v, %v; want no timestamp", c.raw, ts, ok, err)
			}
		case c.want.IsZero() || c.want.Year() > 2200:
			if err == nil {
				t.Errorf("parseTS(%s) = %v, want a refusal", c.raw, ts)
			}
		default:
			if err != nil || !ok || !ts.Equal(c.want) {
				t.Errorf("parseTS(%s) = %v, %v, %v; want %v", c.raw, ts, ok, err, c.want)
			}
		}
	}
}

func TestRouterDecode(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	routes := []config.Route{
		{Topic: "climate/+device", Format: "json", Series: "{device}/{field}", Units: map[string]string{"temperature": "Cel"}},
		{Topic: "devices/+device/+metric", Format: "json", Series: "{device}/{metric}", Unit: "Cel", Labels: map[string]string{"site": "north"}},
		{Topic: "devices/#", Format: "number", Series: "never"}, // shadowed by the route above for two levels
		{Topic: "senml/+device", Format: "senml", Series: "{device}/{field}/{unit}"},
		{Topic: "n/+a/+b/+c/+d/+e", Format: "number", Series: "{e}{d}{c}{b}{a}"},
	}
	rt, err := NewRouter(routes, "forward")
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		id, series, unit, ts string
		value                float64
	}
	cases := []struct {
		name, topic, payload string
		want                 []rec
		outcome              Outcome
		refused              bool
	}{
		{name: "fields with {field} and units", topic: "climate/t1",
			payload: `{"temperature": 21.5, "humidity": 40, "id": "x"}`,
			want: []rec{
				{id: "x:temperature", series: "t1/temperature", unit: "Cel", value: 21.5, ts: "2026-11-26T12:00:00.000Z"},
				{id: "x:humidity", series: "t1/humidity", value: 40, ts: "2026-11-26T12:00:00.000Z"},
			}},
		{name: "payload unit beats route units", topic: "climate/t1", payload: `{"temperature": 70, "unit": "degF"}`,
			want: []rec{{series: "t1/temperature", unit: "degF", value: 70, ts: "2026-11-26T12:00:00.000Z"}}},
		{name: "first route wins", topic: "devices/d1/t", payload: `21.5`,
			want: []rec{{series: "d1/t", unit: "Cel", value: 21.5, ts: "2026-11-26T12:00:00.000Z"}}},
		{name: "deeper topic goes to the next route", topic: "devices/d1/t/x", payload: `7`,
			want: []rec{{series: "never", value: 7, ts: "2026-11-26T12:00:00.000Z"}}},
		{name: "senml {unit}", topic: "senml/s1", payload: `[{"bn":"a:","n":"t","u":"Cel","v":1},{"n":"h","v":2}]`,
			want: []rec{
				{series: "s1/a:t/Cel", unit: "Cel", value: 1, ts: "2026-11-26T12:00:00.000Z"},
				{series: "s1/a:h/", value: 2, ts: "2026-11-26T12:00:00.000Z"},
			}},
		{name: "many captures", topic: "n/1/2/3/4/5", payload: `1`,
			want: []rec{{series: "54321", value: 1, ts: "2026-11-26T12:00:00.000Z"}}},
		{name: "malformed for its route", topic: "devices/d1/t", payload: `{"value": "x"}`, refused: true},
		{name: "unrouted forwarded raw", topic: "other/x", payload: `anything`, outcome: Raw,
			want: []rec{{ts: "2026-11-26T12:00:00.000Z"}}},
		{name: "$ topics do not match leading wildcards", topic: "$SYS/x", payload: `1`, outcome: Raw,
			want: []rec{{ts: "2026-11-26T12:00:00.000Z"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs, outcome, err := rt.Decode(c.topic, []byte(c.payload), now)
			if c.refused {
				var e *Error
				if !errors.As(err, &e) || e.Reason != ReasonMalformed || recs != nil {
					t.Fatalf("Decode = %v, %v; want a malformed refusal and no records", recs, err)
				}
				return
			}
			if err != nil || outcome != c.outcome || len(recs) != len(c.want) {
				t.Fatalf("Decode = %d records, outcome %v, %v; want %d, %v", len(recs), outcome, err, len(c.want), c.outcome)
			}
			for i, w := range c.want {
				r := recs[i]
				if w.id == "" && !r.Raw {
					w.id = record.HashID(r.Series, r.TS, r.Value)
				}
				if r.Raw {
					w.id = record.RawID(c.topic, now, []byte(c.payload))
				}
				got := rec{r.ID, r.Series, r.Unit, r.TS.Format(record.TimeLayout), r.Value}
				if got != w {
					t.Errorf("record %d = %+v, want %+v", i, got, w)
				}
				if r.Topic != c.topic {
					t.Errorf("record %d topic %q", i, r.Topic)
				}
			}
		})
	}

	drop, err := NewRouter(routes, "drop")
	if err != nil {
		t.Fatal(err)
	}
	if recs, outcome, err := drop.Decode("other/x", []byte("1"), now); recs != nil || outcome != Dropped || err != nil {
		t.Errorf("unrouted with drop: %v, %v, %v", recs, outcome, err)
	}
}

func TestResentReadingKeepsItsID(t *testing.T) {
	rt, err := NewRouter([]config.Route{{Topic: "s/+d", Format: "senml", Series: "{d}"}}, "drop")
	if err != nil {
		t.Fatal(err)
	}
	p := []byte(`[{"n":"t","bt":1795694400,"v":1}]`)
	a, _, _ := rt.Decode("s/x", p, time.Unix(1795694400, 0))
	b, _, _ := rt.Decode("s/x", p, time.Unix(1795694500, 0)) // re-sent later
	if len(a) != 1 || len(b) != 1 || a[0].ID != b[0].ID {
		t.Errorf("ids differ across a re-send: %v / %v", a, b)
	}
}

func TestMaxReadings(t *testing.T) {
	var obj, pack strings.Builder
	obj.WriteString("{")
	pack.WriteString("[")
	for i := 0; i <= MaxReadings; i++ {
		if i > 0 {
			obj.WriteString(",")
			pack.WriteString(",")
		}
		obj.WriteString(`"f` + strconv.Itoa(i) + `":1`)
		pack.WriteString(`{"n":"f` + strconv.Itoa(i) + `","v":1}`)
	}
	obj.WriteString("}")
	pack.WriteString("]")
	if _, err := decodeJSON([]byte(obj.String())); err == nil {
		t.Error("JSON object with too many readings accepted")
	}
	if _, err := decodeSenML([]byte(pack.String()), time.Now()); err == nil {
		t.Error("SenML pack with too many readings accepted")
	}
}

func TestReasonCodes(t *testing.T) {
	for r, want := range map[Reason]byte{
		ReasonMalformed: 0x99, ReasonOverQuota: 0x97, ReasonBufferFull: 0x97,
		ReasonNotAuthorized: 0x87, ReasonTopicInvalid: 0x90, ReasonTooLarge: 0x95, ReasonStore: 0x80,
	} {
		if got := r.Code(); got != want {
			t.Errorf("%s.Code() = %#x, want %#x", r, got, want)
		}
	}
	// SPEC §2: what resending cannot fix is permanent; what time fixes is transient.
	for r, want := range map[Reason]bool{
		ReasonMalformed: true, ReasonTooLarge: true, ReasonNotAuthorized: true, ReasonTopicInvalid: true,
		ReasonOverQuota: true, ReasonBufferFull: false, ReasonStore: false, ReasonShutdown: false,
	} {
		if got := r.Permanent(); got != want {
			t.Errorf("%s.Permanent() = %v, want %v", r, got, want)
		}
	}
}

// TestDuplicateMembers: a repeated name is refused wherever it repeats, before and after
// nameSet moves from its array to its map.
func TestDuplicateMembers(t *testing.T) {
	obj := func(names ...string) []byte {
		var b strings.Builder
		b.WriteString("{")
		for i, n := range names {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"` + n + `":1`)
		}
		b.WriteString("}")
		return []byte(b.String())
	}
	var names []string
	for i := 0; i < 20; i++ {
		names = append(names, "f"+strconv.Itoa(i))
	}
	if rds, err := decodeJSON(obj(names...)); err != nil || len(rds) != 20 {
		t.Fatalf("20 distinct members: %d readings, %v", len(rds), err)
	}
	for _, at := range []int{3, 8, 9, 19} {
		for _, of := range []int{0, at - 1} {
			dup := append(append([]string(nil), names[:at]...), names[of])
			_, err := decodeJSON(obj(dup...))
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(e.Err.Error(), "appears twice") {
				t.Errorf("member %d repeating member %d: %v, want a duplicate refusal", at, of, err)
			}
		}
	}
}

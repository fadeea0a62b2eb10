package pipeline

import (
	"math"
	"testing"
	"time"

	"github.com/edgegate/edgegate/record"
)

func sampleRecords() [][]byte {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123e6, time.UTC)
	recs := []record.Record{
		{ID: "dev-7:000123", Topic: "devices/t1/temperature", Series: "greenhouse/t1/temperature", TS: ts, Value: 21.5, Unit: "Cel", Labels: map[string]string{"site": "north", "z": "é"}},
		{ID: "h-1", Topic: "sensors/sim-1/temperature", Series: "sim-1/temperature", TS: ts, Value: -0.000123},
		{ID: "h-2", Topic: "t", Series: "température/€", TS: ts.Add(-100 * 365 * 24 * time.Hour), Value: 1e21},
		{ID: "r-1", Topic: "raw/x", TS: ts, Raw: true, Payload: []byte("hello")},
		{ID: "q\"uote", Topic: "a\\b", Series: "s\n", TS: ts, Value: 3},
	}
	var out [][]byte
	for i := range recs {
		out = append(out, recs[i].AppendJSON(nil))
	}
	return out
}

func TestParseRecord(t *testing.T) {
	cases := []struct {
		in      string
		reading bool
		want    Input
		err     bool
		fast    bool
	}{
		{in: `{"id":"a","topic":"t/1","series":"s","ts":"2026-11-26T12:00:00.123Z","value":21.5,"unit":"Cel","labels":{"site":"north"}}`,
			reading: true, want: Input{"t/1", "s", 1795694400123, 21.5}, fast: true},
		{in: " {\n\"value\": -1e-3 , \"ts\" : \"2026-11-26T13:00:00.1239+01:00\", \"topic\":\"t\" } ",
			reading: true, want: Input{"t", "", 1795694400123, -0.001}, fast: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"labels":{}}`, reading: true, want: Input{"t", "", 1795694400000, 1}, fast: true},
		{in: `{"Topic":"t","ts":"2026-11-26T12:00:00Z","value":1}`, reading: true, want: Input{"t", "", 1795694400000, 1}}, // encoding/json folds case
		{in: `{"topic":"t\u002f1","ts":"2026-11-26T12:00:00Z","value":1}`, reading: true, want: Input{"t/1", "", 1795694400000, 1}},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","payload":"x"}`, reading: false},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"value":2}`, reading: true, want: Input{"t", "", 1795694400000, 2}},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z"}`, err: true},
		{in: `{"topic":"t","ts":"yesterday","value":1}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1e400}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":01}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1} x`, err: true},
		{in: `{"ts":"2026-11-26T12:00:00Z","value":1}`, err: true},
		{in: `[]`, err: true},
	}
	for i, tc := range cases {
		var in Input
		reading, err := ParseRecord([]byte(tc.in), &in)
		if (err != nil) != tc.err || reading != tc.reading || (reading && in != tc.want) {
			t.Errorf("%d %s: %v %+v %v; want %v %+v err=%v", i, tc.in, reading, in, err, tc.reading, tc.want, tc.err)
		}
		if fast := parseFast([]byte(tc.in), &in); fast != tc.fast {
			t.Errorf("%d %s: fast path %v, want %v", i, tc.in, fast, tc.fast)
		}
	}
	for _, b := range sampleRecords()[:3] {
		var in Input
		if !parseFast(b, &in) {
			t.Errorf("stored record %s takes the slow path", b)
		}
	}
}

func TestParseRecordAllocs(t *testing.T) {
	b := sampleRecords()[0]
	var in Input
	if n := testing.AllocsPerRun(100, func() { ParseRecord(b, &in) }); n != 0 {
		t.Fatalf("%v allocs per parse of a stored record", n)
	}
}

// FuzzParseRecord: the fast path, when it answers, agrees with record.UnmarshalJSON.
func FuzzParseRecord(f *testing.F) {
	for _, b := range sampleRecords() {
		f.Add(b)
	}
	f.Add([]byte(`{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"labels":{"a":"b","a":"c"}}`))
	f.Add([]byte(`{"topic":"t","ts":"2026-11-26T12:00:00.5-00:30","value":-0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in Input
		fast := parseFast(b, &in)
		var r record.Record
		err := r.UnmarshalJSON(b)
		if fast {
			if err != nil || r.Raw {
				t.Fatalf("fast path accepted what record.UnmarshalJSON refuses (%v, raw %v)", err, r.Raw)
			}
			if in.Topic != r.Topic || in.Series != r.Series || in.TS != r.TS.UnixMilli() ||
				math.Float64bits(in.Value) != math.Float64bits(r.Value) {
				t.Fatalf("fast %+v, slow %+v", in, r)
			}
		}
		var in2 Input
		reading, perr := ParseRecord(b, &in2)
		if (perr != nil) != (err != nil) || perr == nil && reading == r.Raw {
			t.Fatalf("ParseRecord %v %v, UnmarshalJSON %v raw %v", reading, perr, err, r.Raw)
		}
	})
}

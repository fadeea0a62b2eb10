package record

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func sampleRecords() [][]byte {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123e6, time.UTC)
	recs := []Record{
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

func TestParseReading(t *testing.T) {
	cases := []struct {
		in      string
		reading bool
		want    Reading
		err     bool
		fast    bool
	}{
		{in: `{"id":"a","topic":"t/1","series":"s","ts":"2026-11-26T12:00:00.123Z","value":21.5,"unit":"Cel","labels":{"site":"north"}}`,
			reading: true, want: Reading{"t/1", "s", 1795694400123, 21.5}, fast: true},
		{in: " {\n\"value\": -1e-3 , \"ts\" : \"2026-11-26T13:00:00.1239+01:00\", \"topic\":\"t\" } ",
			reading: true, want: Reading{"t", "", 1795694400123, -0.001}, fast: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"labels":{}}`, reading: true, want: Reading{"t", "", 1795694400000, 1}, fast: true},
		{in: `{"Topic":"t","ts":"2026-11-26T12:00:00Z","value":1}`, reading: true, want: Reading{"t", "", 1795694400000, 1}}, // encoding/json folds case
		{in: `{"topic":"t\u002f1","ts":"2026-11-26T12:00:00Z","value":1}`, reading: true, want: Reading{"t/1", "", 1795694400000, 1}},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","payload":"x"}`, reading: false},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"value":2}`, reading: true, want: Reading{"t", "", 1795694400000, 2}},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z"}`, err: true},
		{in: `{"topic":"t","ts":"yesterday","value":1}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1e400}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":01}`, err: true},
		{in: `{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1} x`, err: true},
		{in: `{"ts":"2026-11-26T12:00:00Z","value":1}`, err: true},
		{in: `[]`, err: true},
	}
	for i, tc := range cases {
		var in Reading
		reading, err := ParseReading([]byte(tc.in), &in)
		if (err != nil) != tc.err || reading != tc.reading || (reading && in != tc.want) {
			t.Errorf("%d %s: %v %+v %v; want %v %+v err=%v", i, tc.in, reading, in, err, tc.reading, tc.want, tc.err)
		}
		if fast := parseFast([]byte(tc.in), &in); fast != tc.fast {
			t.Errorf("%d %s: fast path %v, want %v", i, tc.in, fast, tc.fast)
		}
	}
	for _, b := range sampleRecords()[:3] {
		var in Reading
		if !parseFast(b, &in) {
			t.Errorf("stored record %s takes the slow path", b)
		}
	}
}

func TestParseReadingAllocs(t *testing.T) {
	b := sampleRecords()[0]
	var in Reading
	if n := testing.AllocsPerRun(100, func() { ParseReading(b, &in) }); n != 0 {
		t.Fatalf("%v allocs per parse of a stored record", n)
	}
}

// FuzzParseReading: the fast path, when it answers, agrees with Record.UnmarshalJSON.
func FuzzParseReading(f *testing.F) {
	for _, b := range sampleRecords() {
		f.Add(b)
	}
	f.Add([]byte(`{"topic":"t","ts":"2026-11-26T12:00:00Z","value":1,"labels":{"a":"b","a":"c"}}`))
	f.Add([]byte(`{"topic":"t","ts":"2026-11-26T12:00:00.5-00:30","value":-0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in Reading
		fast := parseFast(b, &in)
		var r Record
		err := r.UnmarshalJSON(b)
		if fast {
			if err != nil || r.Raw {
				t.Fatalf("fast path accepted what Record.UnmarshalJSON refuses (%v, raw %v)", err, r.Raw)
			}
			if in.Topic != r.Topic || in.Series != r.Series || in.TS != r.TS.UnixMilli() ||
				math.Float64bits(in.Value) != math.Float64bits(r.Value) {
				t.Fatalf("fast %+v, slow %+v", in, r)
			}
		}
		var in2 Reading
		reading, perr := ParseReading(b, &in2)
		if (perr != nil) != (err != nil) || perr == nil && reading == r.Raw {
			t.Fatalf("ParseReading %v %v, UnmarshalJSON %v raw %v", reading, perr, err, r.Raw)
		}
	})
}

// BenchmarkParseReading is the fast path of the record parser on a stored record.
func BenchmarkParseReading(b *testing.B) {
	v := sampleRecords()[0]
	var in Reading
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseReading(v, &in); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTopicOf: the fast path agrees with a JSON decode, escapes included.
func TestTopicOf(t *testing.T) {
	for _, v := range []string{
		`{"id":"a","topic":"sensors/a/t","series":"s","ts":"2026-11-26T12:00:00.000Z","value":1}`,
		`{"id":"x\",\"topic\":\"fake","topic":"devices/d1/t","value":1}`,
		`{"id":"a","topic":"we\"ird/\u00e9","value":1}`,
		`{"id":"a","value":1}`,
		`not json`,
		`{"series":"s","ts":"2026-11-26T12:00:00.000Z","topic":"after/the/others","value":1,"id":"a"}`,
		`{"id":"a","topic":"first","topic":"second"}`,
		`{"Topic":"folded","id":"a"}`,
		`{"id":"a","labels":{"a":"b","topic":"not/this"},"topic":"t"}`,
		`{"id":"a","topic":"t","payload":"with \"escapes\""}`,
	} {
		var r struct {
			Topic string `json:"topic"`
		}
		json.Unmarshal([]byte(v), &r)
		if got := TopicOf([]byte(v)); got != r.Topic {
			t.Errorf("TopicOf(%s) = %q, want %q", v, got, r.Topic)
		}
	}
}

// FuzzTopicOf: for any record as record.AppendJSON writes it, the fast path reads back
// its topic exactly.
func FuzzTopicOf(f *testing.F) {
	f.Add("a", "sensors/a/t", false)
	f.Add(`x","topic":"fake`, "d/1", false)
	f.Add("r-1", "we\"ird/\u00e9", true)
	f.Fuzz(func(t *testing.T, id, topic string, raw bool) {
		r := Record{ID: id, Topic: topic, Series: "s", TS: time.UnixMilli(1764158400000).UTC(), Value: 1}
		if raw {
			r = Record{ID: id, Topic: topic, TS: r.TS, Raw: true, Payload: []byte(`,"topic":"no"`)}
		}
		v := r.AppendJSON(nil)
		var want struct {
			Topic string `json:"topic"`
		}
		if err := json.Unmarshal(v, &want); err != nil {
			t.Skip() // invalid UTF-8 and the like: not a record ingest would store
		}
		if got := TopicOf(v); got != want.Topic {
			t.Fatalf("TopicOf(%s) = %q, want %q", v, got, want.Topic)
		}
	})
}

package record

import (
	"encoding/json"
	"math"
	"os"
	"testing"
	"time"
)

func TestRecordJSONGolden(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123e6, time.UTC)
	cases := []struct {
		name string
		r    Record
		want string
	}{
		{"spec example", Record{ID: "dev-7:000123", Topic: "devices/t1/temperature", Series: "greenhouse/t1/temperature", TS: ts, Value: 21.5, Unit: "Cel", Labels: map[string]string{"site": "north"}},
			`{"id":"dev-7:000123","topic":"devices/t1/temperature","series":"greenhouse/t1/temperature","ts":"2026-11-26T12:00:00.123Z","value":21.5,"unit":"Cel","labels":{"site":"north"}}`},
		{"integer value keeps a float form", Record{ID: "a", Topic: "t", Series: "s", TS: ts, Value: 40},
			`{"id":"a","topic":"t","series":"s","ts":"2026-11-26T12:00:00.123Z","value":40.0}`},
		{"tiny and huge", Record{ID: "a", Topic: "t", Series: "s", TS: ts, Value: 1e-7},
			`{"id":"a","topic":"t","series":"s","ts":"2026-11-26T12:00:00.123Z","value":1e-07}`},
		{"labels sorted, escaped", Record{ID: "q\"", Topic: "t", Series: "s<>", TS: ts, Value: -1.25, Labels: map[string]string{"b": "2", "a": "\n"}},
			`{"id":"q\"","topic":"t","series":"s\u003c\u003e","ts":"2026-11-26T12:00:00.123Z","value":-1.25,"labels":{"a":"\n","b":"2"}}`},
		{"raw text", Record{ID: "r", Topic: "x/y", TS: ts, Raw: true, Payload: []byte("hello")},
			`{"id":"r","topic":"x/y","ts":"2026-11-26T12:00:00.123Z","payload":"hello"}`},
		{"raw binary", Record{ID: "r", Topic: "x/y", TS: ts, Raw: true, Payload: []byte{0xff, 0}},
			`{"id":"r","topic":"x/y","ts":"2026-11-26T12:00:00.123Z","payload_b64":"/wA="}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := string(c.r.AppendJSON(nil))
			if got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatal("not valid JSON")
			}
			var back Record
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatal(err)
			}
			if again := string(back.AppendJSON(nil)); again != got {
				t.Fatalf("round trip changed it:\n%s\n%s", got, again)
			}
		})
	}
}

func TestHashIDIsStable(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := HashID("s", ts, 1.5)
	if a != HashID("s", ts, 1.5) {
		t.Fatal("not deterministic")
	}
	for _, other := range []string{HashID("t", ts, 1.5), HashID("s", ts.Add(time.Millisecond), 1.5), HashID("s", ts, 1.5000001)} {
		if other == a {
			t.Fatal("different readings share an id")
		}
	}
}

func TestBatchIDAndEnvelope(t *testing.T) {
	id := BatchID("gw", "cloud", "raw", 1, 500)
	if id != BatchID("gw", "cloud", "raw", 1, 500) || id == BatchID("gw", "cloud", "raw", 1, 501) || id == BatchID("gw", "archive", "raw", 1, 500) {
		t.Fatal("batch ids must be a pure function of (gateway, uplink, log, range)")
	}
	b := AppendBatch(nil, "gw-01", id, KindRecords, [][]byte{[]byte(`{"a":1}`), []byte(`{"b":2}`)})
	want := `{"v":1,"gateway":"gw-01","batch":"` + id + `","kind":"records","records":[{"a":1},{"b":2}]}`
	if string(b) != want {
		t.Fatalf("got %s", b)
	}
}

func TestMarshalRefusesNaN(t *testing.T) {
	if _, err := json.Marshal(Record{ID: "x", Topic: "t", Value: math.NaN()}); err == nil {
		t.Fatal("NaN marshalled")
	}
}

func TestUnmarshalErrors(t *testing.T) {
	for _, in := range []string{`{}`, `{"topic":"t","ts":"2026-11-26T12:00:00Z"}`, `{"topic":"t","ts":"yesterday","value":1}`, `{"ts":"2026-11-26T12:00:00Z","value":1}`, `[1]`} {
		var r Record
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("%s accepted: %+v", in, r)
		}
	}
}

// FuzzAppendString checks the hand-written JSON string encoder against encoding/json.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"\\", "\x00\x1f\u2028", "é✓", "\xff\xfe", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendString(nil, s)
		want, _ := json.Marshal(s)
		if string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}

// FuzzRecordRoundTrip: whatever decodes re-encodes to JSON that decodes to the same record.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte(`{"id":"a","topic":"t","series":"s","ts":"2026-11-26T12:00:00.123Z","value":21.5,"unit":"Cel","labels":{"k":"v"}}`))
	f.Add([]byte(`{"id":"r","topic":"x","ts":"2026-11-26T12:00:00Z","payload":"hi"}`))
	if b, err := os.ReadFile("testdata/records.jsonl"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var r Record
		if json.Unmarshal(in, &r) != nil {
			return
		}
		if !r.Raw && (math.IsNaN(r.Value) || math.IsInf(r.Value, 0)) {
			return
		}
		out := r.AppendJSON(nil)
		var back Record
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-encoded record does not decode: %v: %s", err, out)
		}
		if again := back.AppendJSON(nil); string(again) != string(out) {
			t.Fatalf("not stable:\n%s\n%s", out, again)
		}
	})
}

// TestIDsArePinned: ids are a wire contract (downstream dedups on them, and a batch re-sent
// after an upgrade must keep its id); a change here is a breaking change.
func TestIDsArePinned(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct{ got, want string }{
		{HashID("greenhouse/t1/temperature", ts, 21.5), "h-a381961a08408568b7ca6af845abdcbe"},
		{RawID("x/y", ts, []byte("hello")), "r-a23cd9f392579bdde58e3baa31ccab7b"},
		{BatchID("gw-01", "cloud", "raw", 1, 500), "770105e4fe52316cc33ae84f9d382459"},
	} {
		if c.got != c.want {
			t.Errorf("id = %s, pinned %s", c.got, c.want)
		}
	}
}

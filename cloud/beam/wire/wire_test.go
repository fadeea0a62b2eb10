package wire

import (
	"strings"
	"testing"
)

func TestDecodeBatch(t *testing.T) {
	b, err := DecodeBatch([]byte(`{"v":1,"gateway":"gw-01","batch":"b1","kind":"records","records":[` +
		`{"id":"r1","topic":"devices/t1/temperature","series":"t1/temperature","ts":"2026-11-26T12:00:00.123Z","value":21.5,"labels":{"site":"north"}},` +
		`{"id":"r2","topic":"other/x","ts":"2026-11-26T12:00:01.000Z","payload":"hello"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if b.Gateway != "gw-01" || b.Kind != KindRecords || len(b.Items) != 2 {
		t.Fatalf("%+v", b)
	}
	r, err := DecodeRecord(b.Items[0])
	if err != nil || r.Raw || *r.Value != 21.5 || r.Labels["site"] != "north" {
		t.Fatalf("%+v %v", r, err)
	}
	if ms, _ := ParseTime(r.TS); FormatTime(ms) != "2026-11-26T12:00:00.123Z" {
		t.Fatalf("time round trip: %v", FormatTime(ms))
	}
	raw, err := DecodeRecord(b.Items[1])
	if err != nil || !raw.Raw {
		t.Fatalf("raw record: %+v %v", raw, err)
	}
	for _, bad := range []string{`{"v":2,"kind":"records","records":[]}`, `{"v":1,"kind":"logs","records":[]}`, `[`} {
		if _, err := DecodeBatch([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	for _, bad := range []string{`{"topic":"a","ts":"2026-11-26T12:00:00Z","value":1}`, `{"id":"x","ts":"yesterday","value":1}`, `{"id":"x","ts":"2026-11-26T12:00:00Z"}`} {
		if _, err := DecodeRecord([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// TestPaneID pins the SPEC §3.2 id: this pane is the first of SPEC §4's worked example as
// `edgegate replay` writes it (cmd/edgegate/testdata/replay/worked.golden.jsonl).
func TestPaneID(t *testing.T) {
	start, _ := ParseTime("2026-11-26T12:00:00.000Z")
	end, _ := ParseTime("2026-11-26T12:00:10.000Z")
	if got := PaneID("example", "t1/temperature", start, end, 0); got != "p-fb75d0eae9b51aee8b6e027379726ed1" {
		t.Fatalf("PaneID = %s", got)
	}
	if !strings.HasSuffix(FormatFloat(11), ".0") || FormatFloat(0.1) != "0.1" {
		t.Fatal(FormatFloat(11), FormatFloat(0.1))
	}
}

package record

import (
	"strings"
	"testing"
)

func TestDecodeBatch(t *testing.T) {
	rec := `{"id":"a","topic":"t","series":"s","ts":"2026-11-26T12:00:00.000Z","value":1.0}`
	good := string(AppendBatch(nil, "gw-1", "b1", KindRecords, [][]byte{[]byte(rec), []byte(rec)}))
	for _, tc := range []struct {
		in      string
		isBatch bool
		err     string // "" valid
		items   int
	}{
		{good, true, "", 2},
		{`{"v":1,"gateway":"g","batch":"x","kind":"aggregates","records":[]}`, true, "", 0},
		{`{"v":2,"gateway":"g","batch":"x","kind":"records","records":[]}`, true, "version 2, want 1", 0},
		{`{"v":1,"gateway":"g","batch":"x","kind":"panes","records":[]}`, true, `kind "panes"`, 0},
		{`{"v":1,"batch":"x","kind":"records","records":[`, false, "unexpected end", 0},
		{rec, false, "version 0", 0},
		{`[1,2]`, false, "cannot unmarshal array", 0},
	} {
		if got := IsBatch([]byte(tc.in)); got != tc.isBatch {
			t.Errorf("IsBatch(%.40s…) = %v, want %v", tc.in, got, tc.isBatch)
		}
		b, err := DecodeBatch([]byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("DecodeBatch(%.40s…): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("DecodeBatch(%.40s…) = %v, want an error with %q", tc.in, err, tc.err)
		case tc.err == "" && len(b.Records) != tc.items:
			t.Errorf("DecodeBatch(%.40s…): %d items, want %d", tc.in, len(b.Records), tc.items)
		}
	}
	b, _ := DecodeBatch([]byte(good))
	if b.Gateway != "gw-1" || b.Batch != "b1" || b.Kind != KindRecords || string(b.Records[1]) != rec {
		t.Errorf("decoded %+v", b)
	}
}

// FuzzDecodeBatch: any input is decoded or refused without panicking, and what decodes
// re-encodes to a batch that decodes to the same envelope and items.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"v":1,"gateway":"g","batch":"x","kind":"records","records":[{"topic":"t","value":1}]}`))
	f.Add([]byte(`{"v":1,"gateway":"g","batch":"x","kind":"aggregates","records":[]}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := DecodeBatch(in)
		if err != nil {
			return
		}
		items := make([][]byte, len(b.Records))
		for i, r := range b.Records {
			items[i] = r
		}
		again, err := DecodeBatch(AppendBatch(nil, b.Gateway, b.Batch, b.Kind, items))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if again.Gateway != b.Gateway || again.Batch != b.Batch || again.Kind != b.Kind || len(again.Records) != len(b.Records) {
			t.Fatalf("round trip changed the batch: %+v → %+v", b, again)
		}
	})
}

package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgegate/edgegate/gateway/config"
)

// addCorpus seeds f with every input file of testdata/<dir>.
func addCorpus(f *testing.F, dir string) {
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
	for _, in := range files {
		if strings.HasSuffix(in, ".golden") {
			continue
		}
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkReadings holds for every accepted payload of any format.
func checkReadings(t *testing.T, rds []reading, err error) {
	t.Helper()
	if err != nil {
		if _, ok := err.(*Error); !ok {
			t.Fatalf("error %v is not an *Error", err)
		}
		if rds != nil {
			t.Fatalf("readings returned with an error")
		}
		return
	}
	if len(rds) == 0 || len(rds) > MaxReadings {
		t.Fatalf("%d readings", len(rds))
	}
	ids := map[string]bool{}
	for _, r := range rds {
		if math.IsNaN(r.value) || math.IsInf(r.value, 0) {
			t.Fatalf("value %v", r.value)
		}
		if r.field == "" || len(r.unit) > maxUnitLen {
			t.Fatalf("reading %+v", r)
		}
		if r.id != "" {
			if ids[r.id] {
				t.Fatalf("id %q given to two readings", r.id)
			}
			ids[r.id] = true
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	addCorpus(f, "json")
	f.Fuzz(func(t *testing.T, p []byte) {
		rds, err := decodeJSON(p)
		checkReadings(t, rds, err)
		for _, r := range rds {
			if r.hasTS && (r.ts.Before(minTS) || !r.ts.Before(maxTS)) {
				t.Fatalf("ts %v accepted", r.ts)
			}
		}
	})
}

func FuzzDecodeSenML(f *testing.F) {
	addCorpus(f, "senml")
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, p []byte) {
		rds, err := decodeSenML(p, now)
		checkReadings(t, rds, err)
		for _, r := range rds {
			if checkSenMLName(r.field) != nil || !r.hasTS {
				t.Fatalf("reading %+v", r)
			}
		}
	})
}

func FuzzDecodeNumber(f *testing.F) {
	addCorpus(f, "number")
	f.Fuzz(func(t *testing.T, p []byte) {
		rds, err := decodeNumber(p)
		checkReadings(t, rds, err)
	})
}

// FuzzRouter drives the route matcher and every decoder through Router.Decode: a pattern,
// a topic and a payload. Nothing may panic; a routed record carries the topic it came on and
// a series; a refusal returns nothing.
func FuzzRouter(f *testing.F) {
	f.Add("devices/+device/+metric", "devices/d1/t", "json", []byte(`{"value":1}`))
	f.Add("site/+s/#rest", "site/n/a/b", "senml", []byte(`[{"n":"x","v":1}]`))
	f.Add("#all", "$SYS/x", "number", []byte(`1`))
	f.Add("a/+/c", "a//c", "json", []byte(`{"x":1,"y":true}`))
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, pattern, tp, format string, payload []byte) {
		if format != "senml" && format != "number" {
			format = "json"
		}
		rt, err := NewRouter([]config.Route{{Topic: pattern, Format: format, Series: "{topic}/{field}/{unit}",
			Labels: map[string]string{"l": "{topic}"}}}, "drop")
		if err != nil {
			return
		}
		recs, outcome, err := rt.Decode(tp, payload, now)
		if err != nil {
			if recs != nil || outcome != Routed {
				t.Fatalf("refusal with records or outcome %v", outcome)
			}
			return
		}
		if outcome == Dropped {
			if recs != nil {
				t.Fatal("dropped with records")
			}
			return
		}
		for _, r := range recs {
			if r.Topic != tp || !strings.HasPrefix(r.Series, tp+"/") || r.ID == "" || r.Labels["l"] != tp {
				t.Fatalf("record %+v from topic %q", r, tp)
			}
		}
	})
}

// refMembers is the decoder the scanner replaced: encoding/json's Decoder walking tokens.
// FuzzScanner holds the scanner to its answers.
func refMembers(p []byte) (names []string, raws []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		name, _ := tok.(string)
		if seen[name] {
			return nil, nil, false
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, false
		}
		names, raws = append(names, name), append(raws, string(raw))
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, false
	}
	return names, raws, true
}

// FuzzScanner: on any valid UTF-8 text, the scanner accepts exactly the objects
// encoding/json accepts (unique member names, nothing after), with the same members and
// the same raw values.
func FuzzScanner(f *testing.F) {
	addCorpus(f, "json")
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}],"c":"\u00e9\n"}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`,
		`{"a":1e+}`, `{"a" 1}`, `{"a":1,}`, `{"a":tru}`, `{"a":"\x"}`, "{\"a\":\"\t\"}", `{"\u0061":1,"a":2}`, ` { "a" : [ ] } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if !utf8.Valid(p) {
			return
		}
		p = bytes.Trim(p, " \t\r\n")
		names, raws, ok := refMembers(p)
		var gotNames, gotRaws []string
		sc := jsonScanner{p: p}
		err := sc.object(func(name string, raw json.RawMessage) error {
			gotNames, gotRaws = append(gotNames, name), append(gotRaws, string(raw))
			return nil
		})
		if err == nil {
			err = sc.end("object")
		}
		if (err == nil) != ok {
			t.Fatalf("%q: scanner error %v, encoding/json ok %v", p, err, ok)
		}
		if err != nil {
			if _, isErr := err.(*Error); !isErr {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		if !slices.Equal(names, gotNames) || !slices.Equal(raws, gotRaws) {
			t.Fatalf("%q:\n scanner %q %q\n encoding/json %q %q", p, gotNames, gotRaws, names, raws)
		}
	})
}

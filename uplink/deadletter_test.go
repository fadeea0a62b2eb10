package uplink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/httpsink"
)

// sizeLimitCollector is an HTTP upstream with a body limit: it answers 413 to a larger
// body, as nginx's client_max_body_size does, and keeps the ids of what it accepted.
type sizeLimitCollector struct {
	limit int
	mu    sync.Mutex
	ids   []string
	too   int // 413 answers
}

func (c *sizeLimitCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(body) > c.limit {
		c.too++
		http.Error(w, "request entity too large", http.StatusRequestEntityTooLarge)
		return
	}
	var b testutil.Batch
	if err := json.Unmarshal(body, &b); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, raw := range b.Records {
		var rec struct{ ID string }
		json.Unmarshal(raw, &rec)
		c.ids = append(c.ids, rec.ID)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *sizeLimitCollector) accepted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

// appendSized appends records of about size bytes each (a long label) to the raw log.
func appendSized(t *testing.T, s *buffer.Store, prefix string, from, n, size int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := record.Record{ID: fmt.Sprintf("%s%06d", prefix, i), Topic: "sensors/a/t", Series: "s",
			TS: time.UnixMilli(int64(1764158400000 + i)).UTC(), Value: float64(i),
			Labels: map[string]string{"pad": strings.Repeat("x", max(size-150, 1))}}
		if _, err := s.Append(context.Background(), "raw", []buffer.Entry{{Value: r.AppendJSON(nil)}}); err != nil {
			t.Fatalf("append record %d of %d bytes: %v", i, size, err)
		}
	}
}

// deadLetters reads the dead-letter log.
func deadLetters(t *testing.T, s *buffer.Store) []map[string]json.RawMessage {
	t.Helper()
	var out []map[string]json.RawMessage
	if _, err := s.Read(logs.DeadLetter, 0, 0, func(_ uint64, v []byte) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatalf("dead letter is not JSON: %v", err)
		}
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDeadLetterLargerThanAStoreValue: a batch larger than the store's largest value (an
// uplink whose batch.max_bytes was set before validation capped it, or a range recorded
// with it, rebuilt at restart) is refused by the upstream with 413. It goes to the
// dead-letter log in several entries that each fit, a record that does not fit even alone
// is recorded by its position and the error, the uplink keeps sending what comes next, and
// a restart neither fails nor dead-letters the batch again. Before, the dead-letter append
// failed with ErrTooLarge, Run returned, and every restart did the same: a crash loop.
func TestDeadLetterLargerThanAStoreValue(t *testing.T) {
	col := &sizeLimitCollector{limit: 256 << 10}
	srv := httptest.NewServer(col)
	defer srv.Close()
	dir := t.TempDir()
	s := openStore(t, dir)
	appendSized(t, s, "big", 0, 300, 4<<10)                   // ~1.2 MB
	appendSized(t, s, "huge", 300, 1, buffer.MaxValueSize-64) // fits the raw log, not a dead letter with its envelope
	appendSized(t, s, "big", 301, 10, 4<<10)
	cfg := uplinkConfig(fmt.Sprintf(`{name: col, type: http, url: %q, batch: {max_records: 10000, linger: 10ms}, backoff: {min: 10ms, max: 50ms}}`, srv.URL))
	// As set by a config from before batch.max_bytes was capped at what the store holds.
	cfg.Batch.MaxBytes = 8 << 20
	start := func() (*uplink.Uplink, func()) {
		sink, err := httpsink.New(&cfg, "gw", discard)
		own(t, sink)
		if err != nil {
			t.Fatal(err)
		}
		u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
		return u, run(t, u)
	}
	u, stop := start()
	testutil.Eventually(t, 20*time.Second, "the refused batch dead-lettered", func() bool { return u.Stats().DeadLetters.Load() == 1 })
	if st := u.Status(); st.DeadLetterRecords != 311 || st.DeadLetterOmitted != 1 {
		t.Errorf("%d dead-lettered records counted, %d omitted; want 311 and 1", st.DeadLetterRecords, st.DeadLetterOmitted)
	}
	// The uplink goes on with what comes next.
	fill(t, s, "sensors/a/t", 1000, 20)
	testutil.Eventually(t, 20*time.Second, "20 records after the refused batch", func() bool { return u.Stats().Records.Load() == 20 })
	stop()

	dead := deadLetters(t, s)
	if len(dead) < 3 {
		t.Fatalf("%d dead-letter entries, want the 1.2 MB batch split in several", len(dead))
	}
	batchID := string(dead[0]["batch"])
	kept := map[string]bool{}
	omitted := 0
	for i, d := range dead {
		if string(d["batch"]) != batchID || !strings.Contains(string(d["error"]), "413") {
			t.Errorf("entry %d: batch %s error %s, want batch %s and the 413", i, d["batch"], d["error"], batchID)
		}
		if string(d["part"]) != fmt.Sprint(i+1) || string(d["parts"]) != fmt.Sprint(len(dead)) {
			t.Errorf("entry %d: part %s of %s", i, d["part"], d["parts"])
		}
		if o, ok := d["omitted"]; ok {
			var om struct {
				Records     int
				First, Last uint64
				Reason      string
			}
			if err := json.Unmarshal(o, &om); err != nil {
				t.Fatalf("entry %d: omitted %s: %v", i, o, err)
			}
			if om.Records != 1 || om.First != 301 || om.Last != 301 || !strings.Contains(om.Reason, "does not fit") {
				t.Errorf("entry %d: omitted %s, want the huge record at seq 301", i, o)
			}
			omitted += om.Records
			continue
		}
		_, recs := testutil.DecodeBatch(t, d["payload"])
		for _, r := range recs {
			if kept[r.ID] {
				t.Errorf("record %s kept twice", r.ID)
			}
			kept[r.ID] = true
		}
	}
	if len(kept) != 310 || omitted != 1 {
		t.Errorf("%d records kept and %d omitted in the dead-letter log, want 310 and 1", len(kept), omitted)
	}
	for _, id := range col.accepted() {
		if strings.HasPrefix(id, "big") || strings.HasPrefix(id, "huge") {
			t.Errorf("record %s of the refused batch was delivered", id)
		}
	}

	// A restart finds the batch done: no error, nothing dead-lettered again.
	u, stop = start()
	fill(t, s, "sensors/a/t", 1020, 5)
	testutil.Eventually(t, 20*time.Second, "5 records after the restart", func() bool { return u.Stats().Records.Load() == 5 })
	stop()
	if n := len(deadLetters(t, s)); n != len(dead) {
		t.Errorf("%d dead-letter entries after the restart, want %d", n, len(dead))
	}
}

// TestDeadLetterAtTheCap: a batch as large as validation allows (batch.max_bytes at
// uplink.MaxBatchBytes), refused, is kept whole in one dead-letter entry, written with the
// commit in one transaction.
func TestDeadLetterAtTheCap(t *testing.T) {
	col := &sizeLimitCollector{limit: 1 << 10} // refuses every batch
	srv := httptest.NewServer(col)
	defer srv.Close()
	s := openStore(t, t.TempDir())
	appendSized(t, s, "big", 0, 200, 4<<10) // ~800 KB: more than one full batch
	cfg := uplinkConfig(fmt.Sprintf(`{name: col, type: http, url: %q, batch: {max_records: 10000, max_bytes: %d, linger: 10ms}, backoff: {min: 10ms, max: 50ms}}`, srv.URL, uplink.MaxBatchBytes))
	sink, err := httpsink.New(&cfg, "gw", discard)
	own(t, sink)
	if err != nil {
		t.Fatal(err)
	}
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 20*time.Second, "two batches dead-lettered", func() bool { return u.Stats().DeadLetters.Load() == 2 })
	dead := deadLetters(t, s)
	if len(dead) != 2 {
		t.Fatalf("%d dead-letter entries for 2 batches, want one each", len(dead))
	}
	b, recs := testutil.DecodeBatch(t, dead[0]["payload"])
	if string(dead[0]["parts"]) != "1" || len(recs) < 100 || `"`+b.Batch+`"` != string(dead[0]["batch"]) {
		t.Errorf("first entry: parts %s, %d records, batch %s", dead[0]["parts"], len(recs), dead[0]["batch"])
	}
	if size := len(dead[0]["payload"]); size < uplink.MaxBatchBytes-(8<<10) || size > uplink.MaxBatchBytes+(1<<10) {
		t.Errorf("the first batch is %d bytes, want close to max_bytes %d", size, uplink.MaxBatchBytes)
	}
}

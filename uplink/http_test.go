package uplink_test

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/httpsink"
)

// collector is an HTTP upstream that can fail, stall and refuse, and keeps what it accepted.
type collector struct {
	mu       sync.Mutex
	token    string        // required bearer token, if set
	failNext int           // answer 503 to this many requests
	delay    time.Duration // before answering the next request, once
	refuse   string        // answer 422 to batches holding a record with this id
	accepted []testutil.Batch
	keys     []string // Idempotency-Key of each accepted batch
	requests int
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.requests++
	delay := c.delay
	c.delay = 0
	c.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && r.Header.Get("Authorization") != "Bearer "+c.token {
		http.Error(w, "who are you", http.StatusUnauthorized)
		return
	}
	if c.failNext > 0 {
		c.failNext--
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	var b testutil.Batch
	if err := json.Unmarshal(data, &b); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if c.refuse != "" && strings.Contains(string(data), `"id":"`+c.refuse+`"`) {
		http.Error(w, "record "+c.refuse+" fails the schema", http.StatusUnprocessableEntity)
		return
	}
	c.accepted = append(c.accepted, b)
	c.keys = append(c.keys, r.Header.Get("Idempotency-Key"))
	w.WriteHeader(http.StatusNoContent)
}

func (c *collector) batches() ([]testutil.Batch, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]testutil.Batch(nil), c.accepted...), append([]string(nil), c.keys...)
}

// TestHTTPGzipBearerRotation: gzip bodies, a bearer token read from a file and re-read when
// the file is rotated, the batch id as Idempotency-Key, {gateway}/{kind} in the path.
func TestHTTPGzipBearerRotation(t *testing.T) {
	col := &collector{token: "t1"}
	var paths, encodings sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, true)
		encodings.Store(r.Header.Get("Content-Encoding"), true)
		col.ServeHTTP(w, r)
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t1\n"), 0o600)
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 20)
	cfg := uplinkConfig(fmt.Sprintf(`{name: col, type: http, url: %q, bearer_token_file: %q, compression: gzip, batch: {max_records: 10, linger: 10ms}, backoff: {min: 10ms, max: 50ms}}`,
		srv.URL+"/ingest/{gateway}/{kind}", tok))
	sink, err := httpsink.New(&cfg, "gw", discard)
	own(t, sink)
	if err != nil {
		t.Fatal(err)
	}
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "20 records", func() bool { return u.Stats().Records.Load() == 20 })

	// Rotate: the collector now wants t2; the file says t2 (a new mtime).
	col.mu.Lock()
	col.token = "t2"
	col.mu.Unlock()
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(tok, []byte("t2\n"), 0o600)
	fill(t, s, "sensors/a/t", 20, 10)
	testutil.Eventually(t, 10*time.Second, "30 records after rotation", func() bool { return u.Stats().Records.Load() == 30 })

	bs, keys := col.batches()
	for i, b := range bs {
		if keys[i] != b.Batch {
			t.Errorf("Idempotency-Key %q, batch id %q", keys[i], b.Batch)
		}
		if b.Gateway != "gw" || b.Kind != "records" {
			t.Errorf("batch envelope %+v", b)
		}
	}
	if _, ok := paths.Load("/ingest/gw/records"); !ok {
		t.Error("placeholders not expanded in the url path")
	}
	encodings.Range(func(k, _ any) bool {
		if k != "gzip" {
			t.Errorf("a request with Content-Encoding %q, want gzip", k)
		}
		return true
	})
}

// TestHTTPFailuresDelaysAndDeadLetter: the collector answers 503 a few times, stalls past
// the timeout once, and refuses one batch with 422. Every other record arrives, the
// refused batch is in the dead-letter log and counted, and the uplink keeps going.
func TestHTTPFailuresDelaysAndDeadLetter(t *testing.T) {
	col := &collector{failNext: 3, delay: 500 * time.Millisecond, refuse: "r000015"}
	srv := httptest.NewServer(col)
	defer srv.Close()
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 50)
	cfg := uplinkConfig(fmt.Sprintf(`{name: col, type: http, url: %q, timeout: 200ms, batch: {max_records: 10, linger: 10ms}, backoff: {min: 10ms, max: 50ms}}`, srv.URL))
	sink, _ := httpsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "40 records acked and 1 batch dead-lettered", func() bool {
		return u.Stats().Records.Load() == 40 && u.Stats().DeadLetters.Load() == 1
	})
	st := u.Status()
	if st.DeadLetterRecords != 10 || st.Errors < 5 || st.Backoffs < 4 || !strings.Contains(st.LastError, "422") {
		t.Errorf("status after the run: %+v", st)
	}
	if st.Backlog != 0 || !st.Connected || st.BackingOff {
		t.Errorf("uplink not caught up: %+v", st)
	}
	bs, _ := col.batches()
	ids := map[string]bool{}
	for _, b := range bs {
		for _, r := range b.Records {
			var rec struct{ ID string }
			json.Unmarshal(r, &rec)
			ids[rec.ID] = true
		}
	}
	for i := range 50 {
		id := fmt.Sprintf("r%06d", i)
		if want := i < 10 || i >= 20; ids[id] != want {
			t.Errorf("record %s delivered=%v, want %v", id, ids[id], want)
		}
	}
	// The dead-letter log holds the refused batch, whole, with the reason.
	var dead []map[string]json.RawMessage
	s.Read(logs.DeadLetter, 0, 0, func(_ uint64, v []byte) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatalf("dead letter is not JSON: %v: %s", err, v)
		}
		dead = append(dead, m)
		return nil
	})
	if len(dead) != 1 {
		t.Fatalf("dead-letter log has %d entries, want 1", len(dead))
	}
	b, recs := testutil.DecodeBatch(t, dead[0]["payload"])
	if len(recs) != 10 || recs[0].ID != "r000010" || !strings.Contains(string(dead[0]["error"]), "422") || string(dead[0]["batch"]) != `"`+b.Batch+`"` {
		t.Errorf("dead letter: %d records, first %s, error %s", len(recs), recs[0].ID, dead[0]["error"])
	}
}

// TestHTTPBacklogInParallel: a backlog goes out with several requests in flight (after one
// alone, as a probe), against a collector that takes 100 ms per request; every record
// arrives.
func TestHTTPBacklogInParallel(t *testing.T) {
	var mu sync.Mutex
	inFlight, most := 0, 0
	col := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		col.ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer srv.Close()
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 200)
	cfg := uplinkConfig(fmt.Sprintf(`{name: col, type: http, url: %q, max_rate: 0, batch: {max_records: 10, linger: 10ms}}`, srv.URL))
	sink, _ := httpsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 20*time.Second, "200 records", func() bool { return u.Stats().Records.Load() == 200 })
	mu.Lock()
	defer mu.Unlock()
	if most < 2 {
		t.Errorf("at most %d request in flight: the backlog was sent one batch at a time", most)
	}
	t.Logf("up to %d requests in flight", most)
}

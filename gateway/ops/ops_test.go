package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testRegistry() *Registry {
	r := NewRegistry()
	r.Describe(
		Desc{Name: "t_records_total", Type: Counter, Help: "Records.\nSecond line \\ backslash.", Labels: []string{"log"}},
		Desc{Name: "t_up", Type: Gauge, Help: "Up."},
		Desc{Name: "t_silent", Type: Gauge, Help: "Never collected: not written."},
	)
	r.Register(func(w *Writer) {
		w.AddUint("t_records_total", 7, "raw")
		w.AddUint("t_records_total", 3, `a"b\c`+"\n")
		w.AddBool("t_up", true)
	})
	r.Register(func(w *Writer) { w.Add("t_up", 0.5) })
	return r
}

func TestExpositionGolden(t *testing.T) {
	var b bytes.Buffer
	if err := testRegistry().Write(&b); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/exposition.golden"
	if *update {
		os.WriteFile(golden, b.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("exposition differs from %s:\n%s", golden, b.String())
	}
}

func TestWriterRejectsUndeclared(t *testing.T) {
	r := NewRegistry()
	r.Describe(Desc{Name: "t_a", Type: Gauge, Help: "a", Labels: []string{"x"}})
	r.Register(func(w *Writer) {
		w.Add("t_a", 1, "ok")
		w.Add("t_b", 1)
		w.Add("t_a", 1)
	})
	var b bytes.Buffer
	err := r.Write(&b)
	if err == nil || !strings.Contains(err.Error(), "undeclared family t_b") || !strings.Contains(err.Error(), "t_a: 0 label values for 1 labels") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(b.String(), `t_a{x="ok"} 1`) || strings.Contains(b.String(), "t_b") {
		t.Errorf("output:\n%s", b.String())
	}
}

func TestDescribeConflictPanics(t *testing.T) {
	r := NewRegistry()
	r.Describe(Desc{Name: "t_a", Type: Gauge})
	r.Describe(Desc{Name: "t_a", Type: Gauge}) // same shape: fine
	defer func() {
		if recover() == nil {
			t.Error("describing t_a as a counter too did not panic")
		}
	}()
	r.Describe(Desc{Name: "t_a", Type: Counter})
}

func TestRuntimeCollector(t *testing.T) {
	r := NewRegistry()
	r.Describe(RuntimeMetrics...)
	r.Register(RuntimeCollector(time.Unix(1700000000, 0)))
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	fams := testutil.ParseText(t, b.String())
	for _, d := range RuntimeMetrics {
		f, ok := fams[d.Name]
		if !ok {
			t.Errorf("%s missing", d.Name)
			continue
		}
		if f.Type != string(d.Type) {
			t.Errorf("%s: type %s, want %s", d.Name, f.Type, d.Type)
		}
	}
	if v := fams["process_start_time_seconds"].Samples[""]; v != 1700000000 {
		t.Errorf("start time %v", v)
	}
	if v := fams["process_resident_memory_bytes"].Samples[""]; v < 1<<20 {
		t.Errorf("rss %v, implausible", v)
	}
}

type fakeSource struct {
	st     Status
	checks []Check
}

func (f *fakeSource) Status() Status  { return f.st }
func (f *fakeSource) Checks() []Check { return f.checks }

func (f *fakeSource) IngestedRecords() uint64 { return f.st.Ingest.Records }

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", path, nil)
	req.Host = "127.0.0.1:9464"
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestHandlers(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	src := &fakeSource{
		st:     Status{Gateway: "gw-1", Ingest: IngestStatus{Records: 100}},
		checks: []Check{{Name: "broker", OK: true, Detail: "listening"}, {Name: "buffer", OK: true}},
	}
	s := New(Options{Listen: "127.0.0.1:0", Registry: testRegistry(), Source: src, Clock: clk})
	h := s.Handler()

	res, body := get(t, h, "/healthz")
	if res.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", res.StatusCode, body)
	}
	res, body = get(t, h, "/readyz")
	if res.StatusCode != 200 || !strings.Contains(body, "ok broker: listening") {
		t.Errorf("/readyz ready: %d %q", res.StatusCode, body)
	}
	src.checks[1] = Check{Name: "buffer", OK: false, Detail: "closed"}
	res, body = get(t, h, "/readyz")
	if res.StatusCode != 503 || !strings.Contains(body, "FAIL buffer: closed") {
		t.Errorf("/readyz not ready: %d %q", res.StatusCode, body)
	}
	res, body = get(t, h, "/metrics")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain; version=0.0.4") ||
		!strings.Contains(body, `t_records_total{log="raw"} 7`) {
		t.Errorf("/metrics: %d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	res, body = get(t, h, "/")
	if res.StatusCode != 200 || !strings.Contains(body, "<title>edgegate</title>") ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("/: %d %v", res.StatusCode, res.Header)
	}
	if res, _ = get(t, h, "/nope"); res.StatusCode != 404 {
		t.Errorf("/nope: %d", res.StatusCode)
	}

	// The rate comes from samples the server takes; 50 more records over 10 s is 5/s.
	s.sample()
	clk.Advance(10 * time.Second)
	src.st.Ingest.Records = 150
	res, body = get(t, h, "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || res.StatusCode != 200 {
		t.Fatalf("/status: %d %v %s", res.StatusCode, err, body)
	}
	if st.Gateway != "gw-1" || st.Ready || len(st.Checks) != 2 || st.Ingest.RecordsPerS != 5 {
		t.Errorf("status: %+v", st)
	}
}

func TestRateWindow(t *testing.T) {
	t0 := time.Unix(0, 0)
	r := rateWindow{keep: 3}
	if got := r.perSecond(t0, 10); got != 0 {
		t.Errorf("no samples: %v", got)
	}
	for i := 0; i < 5; i++ {
		r.add(t0.Add(time.Duration(i)*time.Second), uint64(i*10))
	}
	// kept: t=2,3,4 (20,30,40); at t=6 with 60 → (60-20)/4
	if got := r.perSecond(t0.Add(6*time.Second), 60); got != 10 {
		t.Errorf("rate = %v, want 10", got)
	}
	r.add(t0.Add(7*time.Second), 5) // counter reset: start over
	if got := r.perSecond(t0.Add(9*time.Second), 25); got != 10 {
		t.Errorf("after reset: %v, want 10", got)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServeAndShutdown: Run serves on the bound port and returns once ctx ends.
func TestServeAndShutdown(t *testing.T) {
	src := &fakeSource{st: Status{Gateway: "gw"}, checks: []Check{{Name: "broker", OK: true}}}
	s := New(Options{Listen: "127.0.0.1:0", Source: src})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	// issue 22: the error names the listener, its key, the holder of the port and the fix
	if err := New(Options{Listen: s.Addr(), Source: src}).Listen(); err == nil ||
		!strings.Contains(err.Error(), "ops: listen on "+s.Addr()+" (ops.listen): ") ||
		!strings.Contains(err.Error(), "address already in use") ||
		!strings.Contains(err.Error(), "holds port") ||
		!strings.Contains(err.Error(), "set ops.listen to another port") {
		t.Errorf("second listen on %s: %v", s.Addr(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	res, err := http.Get("http://" + s.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("/readyz: %d", res.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHostHeaderChecked (issue 21, low): the ops server answers only requests for the
// configured host names (localhost by default) or an IP address, so that a web page whose
// name rebinds to the board (DNS rebinding) cannot read /status from a browser on the LAN.
func TestHostHeaderChecked(t *testing.T) {
	src := &fakeSource{st: Status{Gateway: "gw-1"}, checks: []Check{{Name: "broker", OK: true}}}
	s := New(Options{Listen: "127.0.0.1:0", Registry: testRegistry(), Source: src, AllowedHosts: []string{"localhost", "gw.lan"}})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	_, port, _ := net.SplitHostPort(s.Addr())
	for _, c := range []struct {
		host string
		code int
	}{
		{"127.0.0.1:" + port, 200},
		{"localhost:" + port, 200},
		{"LOCALHOST", 200},
		{"gw.lan:" + port, 200},
		{"[::1]:" + port, 200},
		{"192.168.1.20:" + port, 200},
		{"evil.example:" + port, 421},
		{"localhost.evil.example", 421},
	} {
		for _, path := range []string{"/status", "/", "/metrics"} {
			req, _ := http.NewRequest("GET", "http://"+s.Addr()+path, nil)
			req.Host = c.host
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != c.code {
				t.Errorf("GET %s with Host %q: %d, want %d", path, c.host, res.StatusCode, c.code)
			}
			if c.code != 200 && strings.Contains(string(body), "gw-1") {
				t.Errorf("GET %s with Host %q leaked the status", path, c.host)
			}
		}
	}
}

package ops

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
)

// chromiumPath returns Debian's chromium, or skips (fails in CI, which installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, but CI must run this test (.ci/run installs it)")
	}
	t.Skip("chromium not installed: apt-get install chromium to run the status page test")
	return ""
}

// chromium runs headless Chromium on url with extra flags (--dump-dom, --screenshot=...)
// and returns its stdout. virtual-time-budget lets the page's fetch and render finish.
func chromium(t *testing.T, url string, extra ...string) string {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir(), "--window-size=1200,1000",
		"--virtual-time-budget=4000", "--run-all-compositor-stages-before-draw",
	}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath(t), args...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}

// pageSource serves a fixed status whose numbers the test can change.
type pageSource struct {
	mu sync.Mutex
	st Status
}

func (p *pageSource) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

func (p *pageSource) IngestedRecords() uint64 { return p.Status().Ingest.Records }

func (p *pageSource) Checks() []Check {
	return []Check{{Name: "broker", OK: true}, {Name: "buffer", OK: true}}
}

func (p *pageSource) set(f func(*Status)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.st)
}

func ptr[T any](v T) *T { return &v }

func sampleStatus(now time.Time) Status {
	wm := now.Add(-42 * time.Second)
	start := time.Date(2026, 11, 26, 11, 59, 0, 0, time.UTC)
	return Status{
		Gateway: "gw-page", Version: "v1.2.3", Time: now, UptimeS: 7260,
		Clock:  ClockStatus{Synced: true, State: "synced"},
		Ingest: IngestStatus{Records: 1234567, Duplicates: 89, Refused: 17, Messages: 1234600},
		Buffer: BufferStatus{Open: true, Bytes: 50 << 20, BudgetBytes: 512 << 20, Dropped: 3,
			Logs: []LogStatus{{Name: "raw", Records: 45678, OldestAgeS: ptr(3600.0)}}},
		Uplinks: []UplinkStatus{
			{Name: "cloud", Type: "mqtt", State: "backoff", Backlog: 40321, OldestUnsentAgeS: ptr(5400.0),
				Records: 1000, Errors: 12, LastError: "dial tcp: connection refused"},
			{Name: "archive", Type: "file", State: "sending", Backlog: 0, Records: 1234567},
		},
		Pipelines: []PipelineStatus{{
			Name: "climate-1m", Watermark: &wm, WatermarkLag: ptr(42.0),
			Panes:       map[string]uint64{"ON_TIME": 321, "LATE": 4},
			LateDropped: 7,
			LastPanes:   []PaneStatus{{Key: "greenhouse/t1/temperature", Start: start, End: start.Add(time.Minute), Timing: "ON_TIME", Count: 60}},
		}},
		Sensors: []SensorStatus{
			{Name: "greenhouse", Driver: "bme280", Up: true, State: "up", Reads: 9876, Errors: 1},
			{Name: "soil", Driver: "ds18b20", Up: false, State: "down", Reads: 55, Errors: 55, LastError: "w1_bus_master1: no DS18B20 found"},
		},
		Series: []SeriesStatus{
			{Series: "greenhouse/t1/temperature", Unit: "Cel", Value: 21.5, Time: now.Add(-2 * time.Second),
				Values: []float64{20.5, 21, 21.5}, From: now.Add(-22 * time.Second)},
			{Series: "greenhouse/t1/humidity", Unit: "%RH", Value: 61.25, Time: now.Add(-2 * time.Second),
				Values: []float64{64, 60, 61, 61.25, 64}, From: now.Add(-42 * time.Second)},
			{Series: "meter/power", Value: 566.8, Time: now.Add(-90 * time.Second), Values: []float64{566.8}, From: now.Add(-90 * time.Second)},
		},
	}
}

// TestStatusPageInChromium renders the embedded page in headless Chromium against a live
// ops server: the DOM holds every figure, and the screenshot's pixels change exactly when
// the numbers do (so they are painted, not just present in the DOM).
func TestStatusPageInChromium(t *testing.T) {
	chromiumPath(t)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now)
	src := &pageSource{st: sampleStatus(now)}
	s := New(Options{Listen: "127.0.0.1:0", Source: src, Clock: clk})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Two rate samples 10 s apart: 500 records/s.
	src.set(func(st *Status) { st.Ingest.Records = 1229567 })
	s.sample()
	clk.Advance(10 * time.Second)
	src.set(func(st *Status) { st.Ingest.Records = 1234567; st.Time = clk.Now() })
	url := "http://" + s.Addr() + "/"

	dom := chromium(t, url, "--dump-dom")
	for _, want := range []string{
		`id="gateway">gw-page<`, `id="ready" class="pill ok" title="">ready<`, `id="version">v1.2.3<`,
		`id="ingest-rate">500<`, `id="ingest-records">1,234,567<`, `id="ingest-dups">89<`, `id="ingest-refused">17<`,
		`id="buffer-records">45,678<`, `id="buffer-bytes">50.0 MiB<`, `id="buffer-budget">512.0 MiB<`, `id="buffer-dropped">3<`,
		`<tr id="uplink-cloud">`, `>backoff<`, `id="uplink-cloud-backlog">40,321<`, `1.5 h`, `dial tcp: connection refused`,
		`<tr id="pipeline-climate-1m">`, `2026-11-26 11:59:18Z`, `42 s`, `ON_TIME 321`, `LATE 4`,
		`greenhouse/t1/temperature 11:59:00–12:00:00 ON_TIME n=60`,
		`<tr id="sensor-greenhouse">`, `class="pill ok">up<`, `<tr id="sensor-soil">`, `class="pill bad">down<`, `w1_bus_master1: no DS18B20 found`,
		// The data: last value, unit, event time and a sparkline of the recent values, scaled
		// to 120×24 between their minimum and maximum (a single value: a dot in the middle).
		`id="series-count">3 series, newest first<`,
		`<tr id="series-greenhouse/t1/temperature"><td>greenhouse/t1/temperature</td><td class="n" id="value-greenhouse/t1/temperature">21.5</td><td>Cel</td><td>2026-11-26 11:59:58Z</td>`,
		`<polyline points="1,23 60,12 119,1"></polyline><title>min 20.5 · max 21.5 · 3 values</title>`,
		`id="value-greenhouse/t1/humidity">61.25<`, `>%RH<`,
		`<polyline points="1,1 30.5,23 60,17.5 89.5,16.1 119,1"></polyline>`,
		`id="value-meter/power">566.8<`, `2026-11-26 11:58:30Z`, `<circle cx="60" cy="12" r="2"></circle>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
		return
	}
	if n := strings.Count(dom, "<svg "); n != 3 {
		t.Errorf("%d sparklines, want 3", n)
	}
	// Nothing from elsewhere: no script or style by URL (the SVG namespace is a name only).
	if p := strings.ReplaceAll(string(page), `"http://www.w3.org/2000/svg"`, ""); strings.Contains(p, "src=") ||
		strings.Contains(p, "href=") || strings.Contains(p, "http://") || strings.Contains(p, "https://") || strings.Contains(p, "@import") {
		t.Errorf("the page refers to something outside it")
	}

	// The filter box, filled from ?filter=: only the series that match are listed.
	filtered := chromium(t, url+"?filter=GREENHOUSE/T1/H", "--dump-dom")
	for _, want := range []string{`id="series-count">1 of 3 series<`, `<tr id="series-greenhouse/t1/humidity">`} {
		if !strings.Contains(filtered, want) {
			t.Errorf("filtered DOM lacks %q", want)
		}
	}
	for _, unwanted := range []string{`<tr id="series-greenhouse/t1/temperature">`, `<tr id="series-meter/power">`} {
		if strings.Contains(filtered, unwanted) {
			t.Errorf("filtered DOM has %q", unwanted)
		}
	}

	dir := t.TempDir()
	shot := func(name string) image.Image {
		p := filepath.Join(dir, name)
		chromium(t, url, "--screenshot="+p)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		if out := os.Getenv("EDGEGATE_SCREENSHOT_DIR"); out != "" {
			b, _ := os.ReadFile(p)
			os.WriteFile(filepath.Join(out, name), b, 0o644)
		}
		return img
	}
	a := shot("status-a.png")
	a2 := shot("status-a2.png")
	if r := diffBounds(a, a2); !r.Empty() {
		t.Fatalf("the same status rendered differently (%v): the diff test below would prove nothing", r)
	}
	if colors := distinctColors(a); colors < 8 {
		t.Fatalf("screenshot has %d colours: blank page?", colors)
	}
	// Change only the numbers of the top cards: pixels change, and only in the top area.
	src.set(func(st *Status) { st.Ingest.Records = 7654321; st.Ingest.Duplicates = 98; st.Buffer.Dropped = 9 })
	b := shot("status-b.png")
	r := diffBounds(a, b)
	if r.Empty() {
		t.Fatal("changing the numbers changed no pixel: they are not painted")
	}
	if h := a.Bounds().Dy(); r.Max.Y > h/3 {
		t.Errorf("numbers of the top cards changed pixels down to y=%d of %d", r.Max.Y, h)
	}
	t.Logf("changed region %v of %v", r, a.Bounds())
}

// diffBounds is the smallest rectangle holding every pixel that differs visibly between a
// and b. Software rasterisation leaves ±1/255 noise on borders between runs, so a pixel
// counts as changed only past 16/255 on some channel (text drawn over a background is far
// beyond that).
func diffBounds(a, b image.Image) image.Rectangle {
	const threshold = 16 << 8
	d := func(p, q uint32) bool { return p > q+threshold || q > p+threshold }
	var r image.Rectangle
	bd := a.Bounds().Intersect(b.Bounds())
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := b.At(x, y).RGBA()
			if d(r1, r2) || d(g1, g2) || d(b1, b2) {
				r = r.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return r
}

func distinctColors(img image.Image) int {
	seen := map[[3]uint32]bool{}
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y += 3 {
		for x := bd.Min.X; x < bd.Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r, g, b}] = true
		}
	}
	return len(seen)
}

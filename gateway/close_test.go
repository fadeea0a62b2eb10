package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgegate/edgegate/buffer"
	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/uplink"
)

// countingBus is a sensor driver whose bus counts its opens and closes.
type countingBus struct{ opened, closed *atomic.Int32 }

func (b countingBus) Read(context.Context) ([]sensors.Reading, error) {
	return []sensors.Reading{{Metric: "v", Value: 1}}, nil
}

func (b countingBus) Close() error {
	b.closed.Add(1)
	return nil
}

// countingConfig is the counting driver's (empty) block.
type countingConfig struct{}

func (countingConfig) Validate(*sensors.Config, *conf.Reporter) {}
func (countingConfig) Metrics() []string                        { return []string{"v"} }

// countingSink is an uplink sink that counts its closes; it sends nothing.
type countingSink struct{ closed *atomic.Int32 }

func (s countingSink) Send(context.Context, *uplink.Batch) error { return nil }
func (s countingSink) Close() error {
	s.closed.Add(1)
	return nil
}

type countingSinkConfig struct{}

func (countingSinkConfig) Validate(*uplink.Config, *conf.Reporter) {}

// sinkCloses counts the closes of every counting sink; a sink named "refused" fails to build.
var sinkCloses atomic.Int32

// countingRegistry has the counting driver and sink.
func countingRegistry(opened, closed *atomic.Int32) config.Registry {
	return config.Registry{
		Sensors: []sensors.DriverType{{
			Name:      "counting",
			NewConfig: func() sensors.DriverConfig { return countingConfig{} },
			Open: func(*sensors.Config, clock.Clock) (sensors.Driver, error) {
				opened.Add(1)
				return countingBus{opened, closed}, nil
			},
		}},
		Sinks: []uplink.SinkType{{
			Name:      "counting",
			NewConfig: func() uplink.SinkConfig { return countingSinkConfig{} },
			New: func(cfg *uplink.Config, _ string, _ *slog.Logger) (uplink.Sink, error) {
				if cfg.Name == "refused" {
					return nil, errors.New("sink refused")
				}
				return countingSink{&sinkCloses}, nil
			},
		}},
	}
}

func countingConfigFile(t *testing.T, dir, addr string, reg config.Registry, uplinks ...string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`
gateway: {id: gw, data_dir: %q}
broker: {allow_anonymous: true, listeners: [{type: tcp, address: %q}]}
sensors:
  - {name: a, driver: counting, interval: 1h}
  - {name: b, driver: counting, interval: 1h}
uplinks:
  - {name: up, type: counting}
`, dir, addr)+strings.Join(uplinks, "")), reg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestFailedStartClosesBuses: a start that fails (the broker's port is taken) closes
// every sensor driver New opened, once, the uplinks' sinks, once (the gateway created
// them; the uplinks do not close them), and the store; Close afterwards is a no-op.
func TestFailedStartClosesBuses(t *testing.T) {
	sinkCloses.Store(0)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var opened, closed atomic.Int32
	dir := t.TempDir()
	cfg := countingConfigFile(t, dir, busy.Addr().String(), countingRegistry(&opened, &closed))
	g, err := gateway.New(cfg, gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if n := opened.Load(); n != 2 {
		t.Fatalf("%d buses opened, want 2", n)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("Run on a busy port: no error")
	}
	if n := closed.Load(); n != 2 {
		t.Errorf("after a failed start, %d of 2 buses closed", n)
	}
	if n := sinkCloses.Load(); n != 1 {
		t.Errorf("after a failed start, the sink closed %d times, want once", n)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
	if n, s := closed.Load(), sinkCloses.Load(); n != 2 || s != 1 {
		t.Errorf("Close after Run closed again: %d bus closes, %d sink closes", n, s)
	}
	// The store is closed: another gateway can open it.
	g2, err := gateway.New(countingConfigFile(t, dir, "127.0.0.1:0", countingRegistry(&opened, &closed)), gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("reopen after a failed start: %v", err)
	}
	if err := g2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if o, c := opened.Load(), closed.Load(); o != 4 || c != 4 {
		t.Errorf("a gateway closed without running: %d opened, %d closed", o, c)
	}
}

// TestFailedNewClosesSinks: New failing on an uplink's sink closes the sinks it built
// before, the sensors' buses and the store.
func TestFailedNewClosesSinks(t *testing.T) {
	sinkCloses.Store(0)
	var opened, closed atomic.Int32
	dir := t.TempDir()
	cfg := countingConfigFile(t, dir, "127.0.0.1:0", countingRegistry(&opened, &closed), "  - {name: refused, type: counting}\n")
	if _, err := gateway.New(cfg, gateway.Options{Logger: testLogger(t)}); err == nil {
		t.Fatal("New with a refused sink: no error")
	}
	if o, c, s := opened.Load(), closed.Load(), sinkCloses.Load(); o != 2 || c != 2 || s != 1 {
		t.Errorf("failed New: %d buses opened, %d closed; the built sink closed %d times, want once", o, c, s)
	}
	g, err := gateway.New(countingConfigFile(t, dir, "127.0.0.1:0", countingRegistry(&opened, &closed)), gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("the store was left open: %v", err)
	}
	g.Close()
}

// TestFailedNewClosesBuses: New failing after the sensors opened (a store that cannot be
// opened) closes their buses.
func TestFailedNewClosesBuses(t *testing.T) {
	var opened, closed atomic.Int32
	dir := t.TempDir()
	cfg := countingConfigFile(t, dir, "127.0.0.1:0", countingRegistry(&opened, &closed))
	// A file where the store's directory goes: the store cannot be opened.
	cfg.Gateway.DataDir = filepath.Join(dir, "up.jsonl", "nested")
	if err := os.WriteFile(filepath.Join(dir, "up.jsonl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.New(cfg, gateway.Options{Logger: testLogger(t)}); err == nil {
		t.Fatal("New with an unopenable store: no error")
	}
	if o, c := opened.Load(), closed.Load(); o != 2 || c != 2 {
		t.Errorf("failed New: %d buses opened, %d closed", o, c)
	}
}

// TestComponentErrorNamedOnce: a component that fails stops the gateway with its error,
// which names the uplink once (it was `uplink up: uplink "up": ...`).
func TestComponentErrorNamedOnce(t *testing.T) {
	var opened, closed atomic.Int32
	dir := t.TempDir()
	// A lane state the uplink cannot read: its Run fails at once.
	st, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "buffer")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(context.Background(), func(tx *buffer.Tx) { tx.Put("uplink/up/raw/lanes", []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(countingConfigFile(t, dir, "127.0.0.1:0", countingRegistry(&opened, &closed)), gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = g.Run(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), `uplink "up": decode lane state`) {
		t.Fatalf("Run: %v, want the uplink's error, naming it once", err)
	}
}

package sim

import (
	"context"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors"
)

func read(t *testing.T, d *Driver) float64 {
	t.Helper()
	rs, err := d.Read(context.Background())
	if err != nil || len(rs) != 1 {
		t.Fatalf("%+v, %v", rs, err)
	}
	return rs[0].Value
}

// TestSine: the signal follows the clock: mid at the start of a period, max a quarter in,
// min three quarters in.
func TestSine(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	dv, err := New(&sensors.Config{Name: "s", Device: &Config{Kind: "sine", Min: 18, Max: 24, Period: conf.Duration(time.Minute), Metric: "temperature", Unit: "Cel"}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	d := dv.(*Driver)
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 21}, {15 * time.Second, 24}, {30 * time.Second, 21}, {45 * time.Second, 18}, {60 * time.Second, 21}} {
		clk.Set(time.Unix(0, 0).Add(tc.at))
		if v := read(t, d); v != tc.want {
			t.Errorf("at %s: %v, want %v", tc.at, v, tc.want)
		}
	}
}

// TestRandomWalk: reproducible for a seed, within bounds, steps no larger than step.
func TestRandomWalk(t *testing.T) {
	cfg := &sensors.Config{Name: "s", Device: &Config{Kind: "random_walk", Min: 30, Max: 70, Step: 0.5, Seed: 42, Metric: "humidity"}}
	a, _ := New(cfg, clock.Real{})
	b, _ := New(cfg, clock.Real{})
	prev := 50.0
	for i := 0; i < 1000; i++ {
		va, vb := read(t, a.(*Driver)), read(t, b.(*Driver))
		if va != vb {
			t.Fatalf("reading %d differs for the same seed: %v vs %v", i, va, vb)
		}
		if va < 30 || va > 70 || va-prev > 0.5+1e-3 || prev-va > 0.5+1e-3 {
			t.Fatalf("reading %d = %v after %v", i, va, prev)
		}
		prev = va
	}
}

func TestMissingBlock(t *testing.T) {
	if _, err := New(&sensors.Config{Name: "s"}, clock.Real{}); err == nil {
		t.Error("a sim sensor without its block was accepted")
	}
}

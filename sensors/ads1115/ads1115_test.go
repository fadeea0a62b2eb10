package ads1115

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
)

const adc = uint16(0x48)

// waitClock records every wait the driver asks for and lets it pass at once.
type waitClock struct {
	*clock.Fake
	mu    sync.Mutex
	waits []time.Duration
}

func (c *waitClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

func newClock() *waitClock { return &waitClock{Fake: clock.NewFake(time.Unix(0, 0))} }

// conversion is the I2C traffic of one single-shot conversion: write the config (OS set),
// read the config while the ADC is busy (OS clear) busy times, then idle, then the result.
func conversion(cfg uint16, busy int, raw uint16) []i2ctest.IO {
	ops := []i2ctest.IO{{Addr: adc, W: []byte{0x01, byte(cfg >> 8), byte(cfg)}}}
	for i := 0; i < busy; i++ {
		ops = append(ops, i2ctest.IO{Addr: adc, W: []byte{0x01}, R: []byte{byte((cfg &^ 0x8000) >> 8), byte(cfg)}})
	}
	return append(ops,
		i2ctest.IO{Addr: adc, W: []byte{0x01}, R: []byte{byte(cfg >> 8), byte(cfg)}},
		i2ctest.IO{Addr: adc, W: []byte{0x00}, R: []byte{byte(raw >> 8), byte(raw)}})
}

// probe is the config read at open; 0x8583 is the register's reset value.
var probe = i2ctest.IO{Addr: adc, W: []byte{0x01}, R: []byte{0x85, 0x83}}

// TestChannelsGainsAndCodes converts four channels with four gains. The config words are
// the datasheet's bit layout (OS | MUX | PGA | MODE | DR | comparator off: AIN0 at ±4.096 V
// and 128 SPS is the well-known 0xC383), and the voltages are output code × FSR / 2^15
// (datasheet "Output Codes" table: 0x7FFF is +FS − 1 LSB, 0x8000 is −FS).
func TestChannelsGainsAndCodes(t *testing.T) {
	chans := []struct {
		ch     Channel
		config uint16
		raw    uint16
		busy   int
		want   float64
	}{
		{Channel{Channel: "0", Metric: "soil", Gain: "1"}, 0xC383, 0x7FFF, 1, 4.095875},       // 32767 × 125 µV
		{Channel{Channel: "1", Metric: "ain1", Gain: "2/3"}, 0xD183, 0x4000, 0, 3.072},        // 16384 × 187.5 µV
		{Channel{Channel: "0-1", Metric: "shunt", Gain: "16"}, 0x8B83, 0xFFFF, 0, -7.8125e-6}, // −1 × 7.8125 µV
		{Channel{Channel: "3", Metric: "ref", Gain: "2"}, 0xF583, 0x8000, 0, -2.048},          // −FS
	}
	ops := []i2ctest.IO{probe}
	var cfg Config
	cfg.DataRate = 128
	for _, c := range chans {
		cfg.Channels = append(cfg.Channels, c.ch)
		ops = append(ops, conversion(c.config, c.busy, c.raw)...)
	}
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	clk := newClock()
	d, err := Open(bus, "/dev/i2c-1", adc, cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chans {
		if want := (sensors.Reading{Metric: c.ch.Metric, Value: c.want, Unit: "V"}); rs[i] != want {
			t.Errorf("channel %s: %+v, want %+v", c.ch.Channel, rs[i], want)
		}
	}
	// A conversion period at 128 SPS (7.8125 ms) plus its 10% tolerance before the first
	// check, then a tenth of the period per busy poll.
	period := time.Second / 128
	want := []time.Duration{period + period/10, period / 10, period + period/10, period + period/10, period + period/10}
	if len(clk.waits) != len(want) {
		t.Fatalf("waits %v, want %v", clk.waits, want)
	}
	for i := range want {
		if clk.waits[i] != want[i] {
			t.Errorf("wait %d = %s, want %s", i, clk.waits[i], want[i])
		}
	}
	if err := d.Close(); err != nil { // every transaction consumed
		t.Fatal(err)
	}
}

// TestDataRates: the DR bits of each rate, and the wait before reading at that rate.
func TestDataRates(t *testing.T) {
	for rate, bits := range map[int]uint16{8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7} {
		cfgWord := uint16(0xC303) | bits<<5 // AIN0, ±4.096 V, single-shot, comparator off
		ops := append([]i2ctest.IO{probe}, conversion(cfgWord, 0, 0x0001)...)
		bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
		clk := newClock()
		d, err := Open(bus, "/dev/i2c-1", adc, Config{DataRate: rate, Channels: []Channel{{Channel: "0", Metric: "a", Gain: "1"}}}, clk)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := d.Read(context.Background())
		if err != nil || rs[0].Value != 125e-6 {
			t.Fatalf("rate %d: %+v, %v", rate, rs, err)
		}
		if p := time.Second / time.Duration(rate); clk.waits[0] != p+p/10 {
			t.Errorf("rate %d: waited %s", rate, clk.waits[0])
		}
		if err := d.Close(); err != nil {
			t.Fatalf("rate %d: %v", rate, err)
		}
	}
}

// TestStuckConversion: a channel whose conversion never finishes is an error after ten
// polls, returned with the other channel's reading; the result register is not read.
func TestStuckConversion(t *testing.T) {
	ops := []i2ctest.IO{probe}
	stuck := conversion(0xC383, 11, 0)
	ops = append(ops, stuck[:12]...) // config write + 11 busy reads: no idle read, no result read
	ops = append(ops, conversion(0xD383, 0, 0x2000)...)
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	cfg := Config{DataRate: 128, Channels: []Channel{
		{Channel: "0", Metric: "a", Gain: "1"}, {Channel: "1", Metric: "b", Gain: "1"}}}
	d, err := Open(bus, "/dev/i2c-1", adc, cfg, newClock())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if len(rs) != 1 || rs[0].Metric != "b" || rs[0].Value != 1.024 {
		t.Errorf("readings %+v", rs)
	}
	if !errors.Is(err, errNotDone) || !strings.HasPrefix(err.Error(), "channel 0: ") {
		t.Errorf("error %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNoAnswer(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true}
	_, err := Open(bus, "/dev/i2c-1", adc, Config{DataRate: 128, Channels: []Channel{{Channel: "0", Metric: "a", Gain: "1"}}}, newClock())
	if err == nil || !strings.HasPrefix(err.Error(), "device 0x48 on /dev/i2c-1: no answer: ") || !strings.Contains(err.Error(), "i2cdetect -y 1") {
		t.Fatalf("error %v", err)
	}
}

func TestReadHonoursContext(t *testing.T) {
	ops := []i2ctest.IO{probe, {Addr: adc, W: []byte{0x01, 0xC3, 0x83}}}
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	clk := clock.NewFake(time.Unix(0, 0)) // time never moves: the wait can only end by ctx
	d, err := Open(bus, "/dev/i2c-1", adc, Config{DataRate: 128, Channels: []Channel{{Channel: "0", Metric: "a", Gain: "1"}}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := d.Read(ctx); done <- err }()
	for clk.Timers() == 0 {
		time.Sleep(50 * time.Microsecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Read = %v, want context.Canceled", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

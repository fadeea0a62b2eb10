package ds18b20

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewiretest"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/sensors"
)

const (
	nameA = "28-0316a2797aff"
	nameB = "28-0316a2797b00"
)

func addr(t *testing.T, s string) onewire.Address {
	t.Helper()
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// match is what a command to one probe starts with: Match ROM and its 8 address bytes.
func match(a onewire.Address, cmd ...byte) []byte {
	b := make([]byte, 9, 9+len(cmd))
	b[0] = 0x55
	binary.LittleEndian.PutUint64(b[1:], uint64(a))
	return append(b, cmd...)
}

// scratchpad is what a probe answers to Read Scratchpad (0xBE): temperature LSB/MSB, TH,
// TL, configuration (resolution in bits 5–6), reserved bytes, CRC (datasheet §"Memory").
func scratchpad(raw uint16, bits int) []byte {
	b := []byte{byte(raw), byte(raw >> 8), 0x4B, 0x46, byte(bits-9)<<5 | 0x1F, 0xFF, 0x0C, 0x10, 0}
	b[8] = onewire.CalcCRC(b[:8])
	return b
}

func readSpad(a onewire.Address, raw uint16, bits int) onewiretest.IO {
	return onewiretest.IO{W: match(a, 0xBE), R: scratchpad(raw, bits), Pull: onewire.WeakPullup}
}

var convertAll = onewiretest.IO{W: []byte{0xCC, 0x44}, Pull: onewire.StrongPullup} // Skip ROM, Convert T

func search(n int) []onewiretest.IO {
	ops := make([]onewiretest.IO, n)
	for i := range ops {
		ops[i] = onewiretest.IO{W: []byte{0xF0}, Pull: onewire.WeakPullup}
	}
	return ops
}

// readAt runs Read while moving the fake clock through the conversion: it checks nothing
// comes back before the conversion time of the resolution has passed.
func readAt(t *testing.T, d *Driver, clk *clock.Fake, conv time.Duration) ([]sensors.Reading, error) {
	t.Helper()
	type res struct {
		rs  []sensors.Reading
		err error
	}
	done := make(chan res, 1)
	go func() {
		rs, err := d.Read(context.Background())
		done <- res{rs, err}
	}()
	for clk.Timers() == 0 {
		time.Sleep(50 * time.Microsecond)
	}
	clk.Advance(conv - time.Microsecond)
	select {
	case r := <-done:
		t.Fatalf("read returned before the conversion time: %+v", r)
	default:
	}
	clk.Advance(time.Microsecond)
	r := <-done
	return r.rs, r.err
}

// TestDatasheetTemperatures reads one probe through every row of the datasheet's
// temperature/data table (Table 1), at 12 bits, with exact results.
func TestDatasheetTemperatures(t *testing.T) {
	table := []struct {
		raw  uint16
		want float64
	}{
		{0x07D0, 125}, {0x0191, 25.0625}, {0x00A2, 10.125}, {0x0008, 0.5}, {0x0000, 0},
		{0xFFF8, -0.5}, {0xFF5E, -10.125}, {0xFE6F, -25.0625}, {0xFC90, -55},
	}
	a := addr(t, nameA)
	ops := append(search(1), readSpad(a, 0x0550, 12)) // power-on scratchpad: 85 °C, 12 bits
	for _, row := range table {
		ops = append(ops, convertAll, readSpad(a, row.raw, 12))
	}
	bus := &onewiretest.Playback{Ops: ops, Devices: []onewire.Address{a}, DontPanic: true}
	clk := clock.NewFake(time.Unix(0, 0))
	d, err := Open(bus, "w1_bus_master1", 12, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range table {
		rs, err := readAt(t, d, clk, 750*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 || rs[0] != (sensors.Reading{Metric: "temperature", Value: row.want, Unit: "Cel"}) {
			t.Errorf("raw %#04x: %+v, want %v Cel", row.raw, rs, row.want)
		}
	}
	if err := d.Close(); err != nil { // every transaction consumed
		t.Fatal(err)
	}
}

// TestTwoProbesOneConversion: several probes share one Convert T; each is read by address
// into its metric. One that stops answering is an error alongside the other's reading.
func TestTwoProbesOneConversion(t *testing.T) {
	a, b := addr(t, nameA), addr(t, nameB)
	ops := append(search(2), readSpad(a, 0x0550, 12), readSpad(b, 0x0550, 12),
		convertAll, readSpad(a, 0x0191, 12), readSpad(b, 0xFF5E, 12),
		convertAll, readSpad(a, 0x00A2, 12),
		onewiretest.IO{W: match(b, 0xBE), R: []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, Pull: onewire.WeakPullup},
		convertAll, readSpad(a, 0x00A2, 12), readSpad(b, 0x0550, 12), // b lost power: 85 °C
	)
	bus := &onewiretest.Playback{Ops: ops, Devices: []onewire.Address{a, b}, DontPanic: true}
	clk := clock.NewFake(time.Unix(0, 0))
	probes := []Probe{{Address: nameA, Metric: "top"}, {Address: nameB, Metric: "bottom"}}
	d, err := Open(bus, "w1_bus_master1", 12, probes, clk)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := readAt(t, d, clk, 750*time.Millisecond)
	if err != nil || len(rs) != 2 || rs[0] != (sensors.Reading{Metric: "top", Value: 25.0625, Unit: "Cel"}) ||
		rs[1] != (sensors.Reading{Metric: "bottom", Value: -10.125, Unit: "Cel"}) {
		t.Fatalf("read 1: %+v, %v", rs, err)
	}
	rs, err = readAt(t, d, clk, 750*time.Millisecond)
	if len(rs) != 1 || rs[0].Metric != "top" || err == nil || err.Error() != "probe 28-0316a2797b00: ds18b20: device did not respond" {
		t.Fatalf("read 2: %+v, %v", rs, err)
	}
	rs, err = readAt(t, d, clk, 750*time.Millisecond)
	if len(rs) != 1 || err == nil || err.Error() != "probe 28-0316a2797b00: reads the power-on value 85 °C: the conversion did not happen (check VDD and the 4.7 kΩ pull-up)" {
		t.Fatalf("read 3: %+v, %v", rs, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestResolutionIsProgrammed: a probe at another resolution gets its configuration
// register written and copied to EEPROM, and conversions then take that resolution's time.
func TestResolutionIsProgrammed(t *testing.T) {
	a := addr(t, nameA)
	ops := append(search(1), readSpad(a, 0x0550, 12),
		onewiretest.IO{W: match(a, 0x4E, 0, 0, 0x1F), Pull: onewire.WeakPullup}, // Write Scratchpad: 9 bits
		onewiretest.IO{W: match(a, 0x48), Pull: onewire.StrongPullup},           // Copy Scratchpad
		convertAll, readSpad(a, 0x0190, 9), // 25.0 at 9 bits
	)
	bus := &onewiretest.Playback{Ops: ops, Devices: []onewire.Address{a}, DontPanic: true}
	clk := clock.NewFake(time.Unix(0, 0))
	d, err := Open(bus, "w1_bus_master1", 9, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := readAt(t, d, clk, 93750*time.Microsecond)
	if err != nil || len(rs) != 1 || rs[0].Value != 25 {
		t.Fatalf("%+v, %v", rs, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	a, b := addr(t, nameA), addr(t, nameB)
	other := onewire.Address(0x3A | uint64(a)&^0xFF) // a DS2413 switch: not a probe
	var rom [7]byte
	for i := range rom {
		rom[i] = byte(other >> (8 * i))
	}
	other = other&(1<<56-1) | onewire.Address(onewire.CalcCRC(rom[:]))<<56
	tests := []struct {
		name    string
		devices []onewire.Address
		probes  []Probe
		want    string
	}{
		{"no DS18B20, only another 1-Wire chip", []onewire.Address{other}, nil,
			"w1_bus_master1: no DS18B20 found; check the probe's wiring (data with a 4.7 kΩ pull-up to 3V3, GND, VDD to 3V3)"},
		{"several, none listed", []onewire.Address{a, b}, nil,
			"w1_bus_master1: 2 DS18B20 found (28-0316a2797aff, 28-0316a2797b00); list them under ds18b20.probes, each with its metric"},
		{"listed probe missing", []onewire.Address{b}, []Probe{{Address: nameA, Metric: "top"}},
			"device 28-0316a2797aff on w1_bus_master1: not found; the bus has 28-0316a2797b00; check the probe's wiring (data with a 4.7 kΩ pull-up to 3V3) and its address in ls /sys/bus/w1/devices"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ops []onewiretest.IO
			if len(tt.devices) > 0 {
				ops = search(len(tt.devices))
			}
			bus := &onewiretest.Playback{Ops: ops, Devices: tt.devices, DontPanic: true}
			_, err := Open(bus, "w1_bus_master1", 12, tt.probes, clock.NewFake(time.Unix(0, 0)))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got  %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestAddress(t *testing.T) {
	a := addr(t, nameA)
	if byte(a) != 0x28 || FormatAddress(a) != nameA {
		t.Fatalf("%#x formats as %s", uint64(a), FormatAddress(a))
	}
	var rom [8]byte
	binary.LittleEndian.PutUint64(rom[:], uint64(a))
	if !onewire.CheckCRC(rom[:]) {
		t.Errorf("ROM %x has a bad CRC", rom)
	}
	for _, bad := range []string{"", "28-", "10-0316a2797aff", "28-0316a2797afff", "28-0316a2797axx", "280316a2797aff"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	f.Add(nameA)
	f.Add("28-ffffffffffff")
	f.Add("28--00000000000")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		if got := FormatAddress(a); got != strings.ToLower(s) {
			t.Fatalf("ParseAddress(%q) formats back as %q", s, got)
		}
	})
}

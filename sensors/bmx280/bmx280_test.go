package bmx280

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// Trimming values and raw readings of the worked example in the BMP280 datasheet
// (BST-BMP280-DS001, §3.11.3 and §8.1–8.2): dig_T1..3, dig_P1..9, adc_T, adc_P, for which
// it gives T = 25.08 °C and p = 100653.27 Pa (double precision).
var (
	digT   = [3]int{27504, 26435, -1000}
	digP   = [9]int{36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000}
	adcT   = 519888
	adcP   = 415148
	digH1  = 75                         // the BME280 datasheet has no worked example for humidity: values of a real chip
	digH   = [5]int{366, 0, 309, 0, 30} // H2, H3, H4, H5, H6
	adcH   = 27187
	sensor = uint16(0x76)
)

// calib returns registers 0x88..0xA1: T1..P9 little-endian, a reserved byte, H1.
func calib() []byte {
	b := make([]byte, 26)
	for i, v := range append(digT[:], digP[:]...) {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(int16(v)))
	}
	binary.LittleEndian.PutUint16(b[0:], uint16(digT[0]))
	binary.LittleEndian.PutUint16(b[6:], uint16(digP[0]))
	b[25] = byte(digH1)
	return b
}

// calibH returns registers 0xE1..0xE7: H2 (s16), H3, H4 and H5 packed in 12 bits each, H6.
func calibH() []byte {
	h2, h3, h4, h5, h6 := digH[0], digH[1], digH[2], digH[3], digH[4]
	return []byte{byte(h2), byte(h2 >> 8), byte(h3), byte(h4 >> 4), byte(h4&0xF) | byte(h5&0xF)<<4, byte(h5 >> 4), byte(int8(h6))}
}

// data returns registers 0xF7..0xFE: pressure and temperature as 20-bit values, humidity 16.
func data(humidity bool) []byte {
	b := []byte{byte(adcP >> 12), byte(adcP >> 4), byte(adcP << 4), byte(adcT >> 12), byte(adcT >> 4), byte(adcT << 4)}
	if humidity {
		b = append(b, byte(adcH>>8), byte(adcH))
	}
	return b
}

// transactions of one open and one read, as the chip sees them.
func openOps(id byte, ctrlMeas, ctrlHum byte, humidity bool) []i2ctest.IO {
	ops := []i2ctest.IO{
		{Addr: sensor, W: []byte{0xD0}, R: []byte{id}}, // our chip id check
		{Addr: sensor, W: []byte{0xD0}, R: []byte{id}}, // bmxx80's
		{Addr: sensor, W: []byte{0x88}, R: calib()},
	}
	if humidity {
		ops = append(ops,
			i2ctest.IO{Addr: sensor, W: []byte{0xE1}, R: calibH()},
			// ctrl_meas (sleep), ctrl_hum, config (t_sb 1 s, no filter), ctrl_meas last (§5.4.3),
			// one register per write (pairWrites).
			i2ctest.IO{Addr: sensor, W: []byte{0xF4, ctrlMeas}},
			i2ctest.IO{Addr: sensor, W: []byte{0xF2, ctrlHum}},
			i2ctest.IO{Addr: sensor, W: []byte{0xF5, 0xA0}},
			i2ctest.IO{Addr: sensor, W: []byte{0xF4, ctrlMeas}})
	} else {
		ops = append(ops,
			i2ctest.IO{Addr: sensor, W: []byte{0xF4, ctrlMeas}},
			i2ctest.IO{Addr: sensor, W: []byte{0xF5, 0xA0}},
			i2ctest.IO{Addr: sensor, W: []byte{0xF4, ctrlMeas}})
	}
	return ops
}

func readOps(ctrlMeas byte, humidity bool) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: sensor, W: []byte{0xF4, ctrlMeas | 1}},      // forced mode: one measurement
		{Addr: sensor, W: []byte{0xF3}, R: []byte{0x08}},   // status: measuring
		{Addr: sensor, W: []byte{0xF3}, R: []byte{0x00}},   // done
		{Addr: sensor, W: []byte{0xF7}, R: data(humidity)}, // burst read of the results
	}
}

// humidityDouble is the BME280 datasheet's double-precision compensation (§8.1), an
// independent check of the integer path the driver takes.
func humidityDouble() float64 {
	t1, t2, t3 := float64(digT[0]), float64(digT[1]), float64(digT[2])
	v1 := (float64(adcT)/16384 - t1/1024) * t2
	v2 := (float64(adcT)/131072 - t1/8192) * (float64(adcT)/131072 - t1/8192) * t3
	tFine := math.Floor(v1 + v2)
	h2, h3, h4, h5, h6 := float64(digH[0]), float64(digH[1]), float64(digH[2]), float64(digH[3]), float64(digH[4])
	h := tFine - 76800
	h = (float64(adcH) - (h4*64 + h5/16384*h)) * (h2 / 65536 * (1 + h6/67108864*h*(1+h3/67108864*h)))
	h = h * (1 - float64(digH1)*h/524288)
	return math.Max(0, math.Min(100, h))
}

func TestBME280(t *testing.T) {
	tests := []struct {
		name         string
		oversampling int
		ctrlMeas     byte // osrs_t<<5 | osrs_p<<2, sleep mode
		ctrlHum      byte
	}{
		{"1x", 1, 0x24, 0x01},
		{"16x", 16, 0xB4, 0x05},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: append(openOps(idBME280, tt.ctrlMeas, tt.ctrlHum, true), readOps(tt.ctrlMeas, true)...), DontPanic: true}
			d, err := Open(bus, "/dev/i2c-1", sensor, "bme280", tt.oversampling)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := d.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 3 || rs[0].Metric != "temperature" || rs[1].Metric != "humidity" || rs[2].Metric != "pressure" {
				t.Fatalf("readings %+v", rs)
			}
			// The datasheet's 25.08 °C; the 64-bit integer pressure 25767233/256 Pa, which its
			// double-precision formula gives as 100653.27.
			if rs[0].Value != 25.08 || rs[0].Unit != "Cel" {
				t.Errorf("temperature %v %s, want 25.08 Cel", rs[0].Value, rs[0].Unit)
			}
			if want := 25767233.0 / 256; rs[2].Value != want || rs[2].Unit != "Pa" {
				t.Errorf("pressure %v %s, want %v Pa", rs[2].Value, rs[2].Unit, want)
			}
			if math.Abs(rs[2].Value-100653.27) > 0.02 { // integer vs double rounding
				t.Errorf("pressure %v is off the datasheet's 100653.27 Pa", rs[2].Value)
			}
			// Integer path: 0.001 %RH steps (Q22.10, truncated to 0.0001 %RH by bmxx80).
			if want := 42.0917; rs[1].Value != want || rs[1].Unit != "%RH" {
				t.Errorf("humidity %v %s, want %v %%RH", rs[1].Value, rs[1].Unit, want)
			}
			if hd := humidityDouble(); math.Abs(rs[1].Value-hd) > 0.01 {
				t.Errorf("humidity %v is off the datasheet's double formula %v", rs[1].Value, hd)
			}
			if err := d.Close(); err != nil { // the playback: every transaction consumed
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// regFileBus is a chip as the kernel's i2c-stub models one (and as an SMBus-only adapter
// sends to it): 256 registers, a write is a register then data for it and the registers
// after it, a read starts at the register written.
type regFileBus struct {
	addr uint16
	regs [256]byte
}

func (b *regFileBus) String() string                  { return "regfile" }
func (b *regFileBus) SetSpeed(physic.Frequency) error { return nil }
func (b *regFileBus) Tx(addr uint16, w, r []byte) error {
	if addr != b.addr || len(w) == 0 {
		return errors.New("no answer")
	}
	reg := w[0]
	for i, v := range w[1:] {
		b.regs[reg+byte(i)] = v
	}
	for i := range r {
		r[i] = b.regs[reg+byte(i)]
	}
	return nil
}

// The chip's registers as a register file hold (the board test's i2c-stub at 0x76, filled
// with i2cset): the readings are the datasheet's. Writing the configuration as one
// block wrote the results registers after ctrl_meas (0xF4): 0xF7.. were clobbered.
func TestBME280RegisterFile(t *testing.T) {
	bus := &regFileBus{addr: sensor}
	bus.regs[regChipID] = idBME280
	copy(bus.regs[0x88:], calib())
	copy(bus.regs[0xE1:], calibH())
	copy(bus.regs[0xF7:], data(true))
	d, err := Open(bus, "/dev/i2c-0", sensor, "bme280", 1)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].Value != 25.08 || rs[1].Value != 42.0917 || rs[2].Value != 25767233.0/256 {
		t.Fatalf("readings %+v, want 25.08 Cel, 42.0917 %%RH, %v Pa", rs, 25767233.0/256)
	}
	if got := bus.regs[0xF5]; got != 0xA0 {
		t.Errorf("config register %#x, want 0xa0", got)
	}
}

func TestBMP280(t *testing.T) {
	const ctrlMeas = 0x24
	bus := &i2ctest.Playback{Ops: append(openOps(idBMP280, ctrlMeas, 0, false), readOps(ctrlMeas, false)...), DontPanic: true}
	d, err := Open(bus, "/dev/i2c-1", sensor, "bmp280", 1)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Value != 25.08 || rs[1].Metric != "pressure" || rs[1].Value != 25767233.0/256 {
		t.Fatalf("readings %+v", rs)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// A BME280 configured as bmp280 is read as one: temperature and pressure.
func TestBME280AsBMP280(t *testing.T) {
	const ctrlMeas = 0x24
	// bmxx80 reads the humidity calibration and registers of a BME280 whatever the options;
	// ctrl_hum is 0 (humidity skipped) and the humidity bytes are ignored.
	bus := &i2ctest.Playback{Ops: append(openOps(idBME280, ctrlMeas, 0, true), readOps(ctrlMeas, true)...), DontPanic: true}
	d, err := Open(bus, "/dev/i2c-1", sensor, "bmp280", 1)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Read(context.Background())
	if err != nil || len(rs) != 2 {
		t.Fatalf("readings %+v, %v", rs, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name  string
		ops   []i2ctest.IO
		model string
		want  string
	}{
		{"nothing answers", nil, "bme280",
			"device 0x76 on /dev/i2c-1: no answer: i2ctest: unexpected Tx() (count #0) expecting i2ctest.IO{Addr:118, W:[]byte{0xd0}, R:[]byte{0x0}}; check the wiring (SDA to GPIO2/pin 3, SCL to GPIO3/pin 5, VCC to 3V3, GND) and the address; i2cdetect -y 1 lists the addresses that answer"},
		{"a BMP280 configured as bme280", []i2ctest.IO{{Addr: sensor, W: []byte{0xD0}, R: []byte{idBMP280}}}, "bme280",
			"the chip at 0x76 on /dev/i2c-1 is a BMP280 (chip id 0x58), which has no humidity sensor: set driver: bmp280"},
		{"another chip", []i2ctest.IO{{Addr: sensor, W: []byte{0xD0}, R: []byte{0x55}}}, "bme280",
			"the chip at 0x76 on /dev/i2c-1 has id 0x55, not a BME280 (0x60) or BMP280 (0x58): another device answers at this address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
			_, err := Open(bus, "/dev/i2c-1", sensor, tt.model, 1)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got  %v\nwant %s", err, tt.want)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A chip that stops answering mid-read returns the bus error (the poller counts it).
func TestReadBusError(t *testing.T) {
	const ctrlMeas = 0x24
	ops := openOps(idBME280, ctrlMeas, 0x01, true)
	ops = append(ops, i2ctest.IO{Addr: sensor, W: []byte{0xF4, ctrlMeas | 1}})
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	d, err := Open(bus, "/dev/i2c-1", sensor, "bme280", 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unexpected Tx()") {
		t.Fatalf("Read = %v, want the bus error", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v", err)
	}
}

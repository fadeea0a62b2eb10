package hw

import (
	"bytes"
	"strings"
	"testing"
)

// i2c-stub's functionality (drivers/i2c/i2c-stub.c, STUB_FUNC_DEFAULT): SMBus quick,
// byte, byte data, word data and I²C block, and no plain I²C.
const stubFuncs = 0x00010000 | funcSMBusReadByte | funcSMBusWriteByte | funcSMBusReadByteD | funcSMBusWriteByteD |
	0x00600000 | funcSMBusReadI2CBlk | funcSMBusWriteI2CBlk

// regFile is a chip as i2c-stub models it: 256 registers and a pointer that transfers
// move forward; it records the SMBus transactions it gets.
type regFile struct {
	addr   uint16
	set    int
	regs   [256]byte
	ptr    byte
	log    []string
	closed bool
}

func (f *regFile) setAddr(addr uint16) error {
	f.set = int(addr)
	return nil
}

func (f *regFile) xfer(read bool, cmd byte, size uint32, data *[smbusBlockMax + 2]byte) error {
	if f.set != int(f.addr) {
		return errNoDevice
	}
	op := map[bool]string{true: "read", false: "write"}[read]
	switch size {
	case smbusByte:
		if read {
			data[0] = f.regs[f.ptr]
			f.ptr++
		} else {
			f.ptr = cmd
		}
	case smbusByteData:
		if read {
			data[0] = f.regs[cmd]
		} else {
			f.regs[cmd] = data[0]
		}
	case smbusI2CBlockData:
		for i := range int(data[0]) {
			if read {
				data[1+i] = f.regs[cmd+byte(i)]
			} else {
				f.regs[cmd+byte(i)] = data[1+i]
			}
		}
	}
	f.log = append(f.log, op+" "+map[uint32]string{smbusByte: "byte", smbusByteData: "byte-data", smbusI2CBlockData: "i2c-block"}[size])
	return nil
}

func (f *regFile) close() error {
	f.closed = true
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

const errNoDevice = errString("no device at this address")

func TestSMBusOnly(t *testing.T) {
	tests := []struct {
		name  string
		funcs uint64
		want  bool
	}{
		{"i2c-stub", stubFuncs, true},
		{"bcm2835 (a Pi's I2C controller: I2C plus emulated SMBus)", funcI2C | 0x0eff0008, false},
		{"nothing readable", funcSMBusWriteByte, false},
	}
	for _, tt := range tests {
		if got := smbusOnly(tt.funcs); got != tt.want {
			t.Errorf("%s: smbusOnly(%#x) = %v, want %v", tt.name, tt.funcs, got, tt.want)
		}
	}
}

// Each plain I²C transfer a driver makes becomes the SMBus transaction with the same bytes
// on the wire.
func TestSMBusBusTx(t *testing.T) {
	chip := &regFile{addr: 0x76}
	b := newSMBusBus("/dev/i2c-0", stubFuncs, chip)

	// Write a register and its data (2 bytes), a register and a block (4 bytes).
	if err := b.Tx(0x76, []byte{0xF4, 0x25}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Tx(0x76, []byte{0x88, 1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	if chip.regs[0xF4] != 0x25 || !bytes.Equal(chip.regs[0x88:0x8B], []byte{1, 2, 3}) {
		t.Fatalf("registers after the writes: F4=%#x 88..8A=% x", chip.regs[0xF4], chip.regs[0x88:0x8B])
	}
	// Read one register, then a block.
	r1 := make([]byte, 1)
	if err := b.Tx(0x76, []byte{0xF4}, r1); err != nil || r1[0] != 0x25 {
		t.Fatalf("read F4: % x, %v", r1, err)
	}
	r3 := make([]byte, 3)
	if err := b.Tx(0x76, []byte{0x88}, r3); err != nil || !bytes.Equal(r3, []byte{1, 2, 3}) {
		t.Fatalf("read 88..8A: % x, %v", r3, err)
	}
	// Set the pointer (1 byte out), then receive a byte (1 in).
	if err := b.Tx(0x76, []byte{0x89}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Tx(0x76, nil, r1); err != nil || r1[0] != 2 {
		t.Fatalf("receive byte at 89: % x, %v", r1, err)
	}
	want := []string{"write byte-data", "write i2c-block", "read byte-data", "read i2c-block", "write byte", "read byte"}
	if strings.Join(chip.log, ", ") != strings.Join(want, ", ") {
		t.Errorf("transactions %v, want %v", chip.log, want)
	}

	// No SMBus form: two register bytes then a read; more than a block.
	if err := b.Tx(0x76, []byte{1, 2}, r1); err == nil || !strings.Contains(err.Error(), "no SMBus form") {
		t.Errorf("2 out, 1 in: %v", err)
	}
	if err := b.Tx(0x76, []byte{0x88}, make([]byte, 33)); err == nil {
		t.Error("33 bytes in: no error")
	}
	// The adapter lacks a transaction.
	nb := newSMBusBus("/dev/i2c-0", funcSMBusReadByteD, chip)
	if err := nb.Tx(0x76, []byte{0x88}, r3); err == nil || !strings.Contains(err.Error(), "does not offer") {
		t.Errorf("block read without I2C_FUNC_SMBUS_READ_I2C_BLOCK: %v", err)
	}
	// Another address: nobody answers.
	if err := b.Tx(0x77, []byte{0xD0}, r1); err == nil {
		t.Error("no device at 0x77: no error")
	}
	if err := b.Close(); err != nil || !chip.closed {
		t.Fatalf("close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := b.Tx(0x76, []byte{0xD0}, r1); err == nil {
		t.Error("closed bus: no error")
	}
}

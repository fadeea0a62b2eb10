package hw

import (
	"fmt"
	"sync"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// SMBus-only adapters (a PC's SMBus controller, some USB bridges, the kernel's i2c-stub)
// refuse plain I²C transfers (I2C_RDWR: "operation not supported"), which is all periph's
// sysfs bus sends. SMBus is a subset of I²C: the transfers sensor drivers make (write a
// register address and read n bytes; write a register and its data) have SMBus
// equivalents that put the same bytes on the wire. SMBusBus sends those.

// Adapter functionality bits (linux/i2c.h).
const (
	funcI2C              = 0x00000001
	funcSMBusReadByte    = 0x00020000
	funcSMBusWriteByte   = 0x00040000
	funcSMBusReadByteD   = 0x00080000
	funcSMBusWriteByteD  = 0x00100000
	funcSMBusReadI2CBlk  = 0x04000000
	funcSMBusWriteI2CBlk = 0x08000000
)

// SMBus transaction sizes (linux/i2c.h).
const (
	smbusByte         = 1
	smbusByteData     = 2
	smbusI2CBlockData = 8
	smbusBlockMax     = 32
)

// smbusXfer is one SMBus transaction with the device at the address set last; data is
// the kernel's union i2c_smbus_data (for blocks: the length, then the bytes).
type smbusXfer interface {
	setAddr(addr uint16) error
	xfer(read bool, cmd byte, size uint32, data *[smbusBlockMax + 2]byte) error
	close() error
}

// SMBusBus is an I²C bus on an adapter that speaks only SMBus.
type SMBusBus struct {
	name  string
	funcs uint64
	mu    sync.Mutex // guards dev and addr: an address and its transfer go together
	dev   smbusXfer
	addr  int // the address set on dev; -1 none
}

var _ i2c.BusCloser = (*SMBusBus)(nil)

func newSMBusBus(name string, funcs uint64, dev smbusXfer) *SMBusBus {
	return &SMBusBus{name: name, funcs: funcs, dev: dev, addr: -1}
}

func (b *SMBusBus) String() string { return b.name + " (SMBus)" }

// SetSpeed is not possible through SMBus transfers.
func (b *SMBusBus) SetSpeed(physic.Frequency) error {
	return fmt.Errorf("%s: an SMBus adapter's speed is set by its driver", b.name)
}

// Close closes the device file.
func (b *SMBusBus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dev == nil {
		return nil
	}
	err := b.dev.close()
	b.dev = nil
	return err
}

// Tx maps an I²C transfer onto the SMBus transaction with the same bytes on the wire:
// write 1 byte (send byte), 2 (write byte data), up to 33 (write I²C block); write a
// register address and read 1 byte (read byte data) or up to 32 (read I²C block); read 1
// byte (receive byte). Anything else has no SMBus form.
func (b *SMBusBus) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dev == nil {
		return fmt.Errorf("%s: closed", b.name)
	}
	var (
		read bool
		cmd  byte
		size uint32
		need uint64
		data [smbusBlockMax + 2]byte
	)
	switch {
	case len(r) == 0 && len(w) == 1:
		cmd, size, need = w[0], smbusByte, funcSMBusWriteByte
	case len(r) == 0 && len(w) == 2:
		cmd, size, need = w[0], smbusByteData, funcSMBusWriteByteD
		data[0] = w[1]
	case len(r) == 0 && len(w) > 2 && len(w)-1 <= smbusBlockMax:
		cmd, size, need = w[0], smbusI2CBlockData, funcSMBusWriteI2CBlk
		data[0] = byte(len(w) - 1)
		copy(data[1:], w[1:])
	case len(w) == 1 && len(r) == 1:
		read, cmd, size, need = true, w[0], smbusByteData, funcSMBusReadByteD
	case len(w) == 1 && len(r) > 1 && len(r) <= smbusBlockMax:
		read, cmd, size, need = true, w[0], smbusI2CBlockData, funcSMBusReadI2CBlk
		data[0] = byte(len(r))
	case len(w) == 0 && len(r) == 1:
		read, size, need = true, smbusByte, funcSMBusReadByte
	default:
		return fmt.Errorf("%s: a transfer of %d bytes out and %d in has no SMBus form, and this adapter does only SMBus", b.name, len(w), len(r))
	}
	if b.funcs&need == 0 {
		return fmt.Errorf("%s: the adapter does not offer the SMBus transfer for %d bytes out and %d in (functionality %#x)", b.name, len(w), len(r), b.funcs)
	}
	if b.addr != int(addr) {
		if err := b.dev.setAddr(addr); err != nil {
			return fmt.Errorf("%s: address %#02x: %w", b.name, addr, err)
		}
		b.addr = int(addr)
	}
	if err := b.dev.xfer(read, cmd, size, &data); err != nil {
		return err
	}
	switch {
	case !read:
	case size == smbusI2CBlockData:
		copy(r, data[1:1+len(r)])
	default:
		r[0] = data[0]
	}
	return nil
}

// smbusOnly reports whether an adapter with these functionality bits needs SMBusBus:
// it cannot do plain I²C transfers but can do SMBus ones.
func smbusOnly(funcs uint64) bool {
	return funcs&funcI2C == 0 && funcs&(funcSMBusReadByteD|funcSMBusReadI2CBlk) != 0
}

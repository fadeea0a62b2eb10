//go:build linux

package hw

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// i2c-dev ioctls (linux/i2c-dev.h).
const (
	ioctlI2CSlave = 0x0703
	ioctlI2CFuncs = 0x0705
	ioctlI2CSMBus = 0x0720
)

// i2cFuncs asks the adapter behind an open /dev/i2c-N what it can do.
func i2cFuncs(f *os.File) (uint64, error) {
	var funcs uint // unsigned long
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlI2CFuncs, uintptr(unsafe.Pointer(&funcs))); errno != 0 {
		return 0, fmt.Errorf("I2C_FUNCS: %w", errno)
	}
	return uint64(funcs), nil
}

// smbusFile is an open /dev/i2c-N used through the I2C_SMBUS ioctl.
type smbusFile struct{ f *os.File }

func (s *smbusFile) setAddr(addr uint16) error {
	return unix.IoctlSetInt(int(s.f.Fd()), ioctlI2CSlave, int(addr))
}

// struct i2c_smbus_ioctl_data.
type smbusIoctlData struct {
	readWrite uint8
	command   uint8
	size      uint32
	data      unsafe.Pointer
}

func (s *smbusFile) xfer(read bool, cmd byte, size uint32, data *[smbusBlockMax + 2]byte) error {
	arg := smbusIoctlData{command: cmd, size: size, data: unsafe.Pointer(data)}
	if read {
		arg.readWrite = 1
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, s.f.Fd(), ioctlI2CSMBus, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return fmt.Errorf("smbus transfer: %w", errno)
	}
	return nil
}

func (s *smbusFile) close() error { return s.f.Close() }

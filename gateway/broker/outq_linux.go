package broker

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unacknowledged returns how many bytes written to c its peer has not acknowledged yet
// (TIOCOUTQ: sent but not acknowledged, and not yet sent); ok is false when c is not a
// socket the kernel can tell this of.
func unacknowledged(c net.Conn) (n int, ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCOUTQ) }); err != nil || ioErr != nil {
		return 0, false
	}
	return n, true
}

package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the daemon of a test end with the test's process, even when that
// one dies without cleaning up (a panic, a timeout).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

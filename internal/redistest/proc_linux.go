package redistest

import "syscall"

// sysProcAttr kills redis-server when the test binary dies without running
// its cleanups (a panic, or go test's timeout), so no server outlives it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

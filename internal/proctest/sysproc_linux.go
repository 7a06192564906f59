package proctest

import "syscall"

// sysProcAttr kills a child when the test binary dies without running its
// cleanups (a panic, or go test's timeout), so no agent or function outlives
// the run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

package hsm

import (
	"sync"

	"golang.org/x/sys/unix"
)

// stderrMu serialises holding file descriptor 2, which is the process's.
var stderrMu sync.Mutex

// holdStderr runs f with file descriptor 2 pointing at an anonymous memory
// file, then puts it back and returns what was written there. A memory file
// cannot fill up like a pipe, so a module that writes much cannot block.
// If the descriptors cannot be moved, f runs with standard error as it is.
func holdStderr(f func()) string {
	stderrMu.Lock()
	defer stderrMu.Unlock()
	mem, err := unix.MemfdCreate("mp-hsm-module-output", unix.MFD_CLOEXEC)
	if err != nil {
		f()
		return ""
	}
	defer unix.Close(mem)
	saved, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		f()
		return ""
	}
	defer unix.Close(saved)
	if err := unix.Dup3(mem, 2, 0); err != nil {
		f()
		return ""
	}
	f()
	if err := unix.Dup3(saved, 2, 0); err != nil {
		return "" // standard error is the memory file until the process ends; nothing better to do
	}
	buf := make([]byte, maxLoadOutput+1)
	n, _ := unix.Pread(mem, buf, 0)
	if n < 0 {
		n = 0
	}
	return trimLoadOutput(buf[:n])
}

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
	saved := -1
	mem, err := unix.MemfdCreate("mp-hsm-module-output", unix.MFD_CLOEXEC)
	if err == nil {
		defer unix.Close(mem)
		if saved, err = unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3); err == nil {
			defer unix.Close(saved)
			err = unix.Dup3(mem, 2, 0)
		}
	}
	f()
	if err != nil || unix.Dup3(saved, 2, 0) != nil {
		return "" // not held; or fd 2 stays the memory file, as nothing better can be done
	}
	buf := make([]byte, maxLoadOutput+1)
	n, _ := unix.Pread(mem, buf, 0)
	return trimLoadOutput(buf[:max(n, 0)])
}

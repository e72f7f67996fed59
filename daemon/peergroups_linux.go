//go:build linux && (amd64 || arm64 || arm || riscv64 || ppc64le || loong64)

package daemon

import (
	"syscall"
	"unsafe"
)

// soPeerGroups is SO_PEERGROUPS (Linux 4.13) on these architectures.
const soPeerGroups = 59

// peerGroups returns the supplementary groups of a unix socket's peer as
// the kernel recorded them when it connected; false where the kernel
// cannot tell.
func peerGroups(fd uintptr) ([]uint32, bool) {
	buf := make([]uint32, 32)
	for range 2 {
		n := uint32(len(buf) * 4)
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_SOCKET, soPeerGroups,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == syscall.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
			continue
		case e != 0:
			return nil, false
		}
		return buf[:n/4], true
	}
	return nil, false
}

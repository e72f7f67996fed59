package socket

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// PeerOf returns the peer of a unix socket connection (SO_PEERCRED,
// SO_PEERGROUPS), or nil. /proc is read only while its process has the
// peer's effective uid, so that a reused pid is not read as the caller.
func PeerOf(c net.Conn) *Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	var groups []uint32
	var cerr error
	kernelGroups := false
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		groups, kernelGroups = peerGroups(fd)
	}); err != nil || cerr != nil {
		return nil
	}
	p := &Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Groups: groups}
	if cred.Pid > 0 {
		dir := "/proc/" + strconv.Itoa(int(cred.Pid))
		if euid, procGroups, ok := procStatus(dir + "/status"); ok && euid == cred.Uid {
			if !kernelGroups {
				p.Groups = procGroups
			}
			p.ExeAtAccept, _ = os.Readlink(dir + "/exe")
		}
	}
	return p
}

// peerGroups returns the peer's supplementary groups (SO_PEERGROUPS, Linux 4.13); false where the kernel cannot tell.
func peerGroups(fd uintptr) ([]uint32, bool) {
	buf := make([]uint32, 32)
	for range 2 {
		n := uint32(len(buf) * 4)
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == syscall.ERANGE && int(n/4) > len(buf) {
			buf = make([]uint32, n/4)
			continue
		}
		if e != 0 {
			return nil, false
		}
		return buf[:n/4], true
	}
	return nil, false
}

// procStatus returns the effective uid and supplementary groups in /proc/PID/status (at most 1 MiB: 65536 groups).
func procStatus(path string) (euid uint32, groups []uint32, ok bool) {
	data, err := safefile.Read(path, 1<<20)
	if err != nil {
		return 0, nil, false
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		key, rest, _ := bytes.Cut(line, []byte(":"))
		switch f := bytes.Fields(rest); string(key) {
		case "Uid": // real, effective, saved, file system
			u, err := uint64(0), strconv.ErrSyntax
			if len(f) > 1 {
				u, err = strconv.ParseUint(string(f[1]), 10, 32)
			}
			if err != nil {
				return 0, nil, false
			}
			euid, ok = uint32(u), true
		case "Groups":
			for _, g := range f {
				if n, err := strconv.ParseUint(string(g), 10, 32); err == nil {
					groups = append(groups, uint32(n))
				}
			}
		}
	}
	return euid, groups, ok
}

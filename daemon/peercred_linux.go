package daemon

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// peerOf returns who is at the other end of a unix socket connection: the
// uid, gid and pid the kernel recorded when it connected (SO_PEERCRED),
// the supplementary groups (SO_PEERGROUPS where the kernel has it, else
// /proc/PID/status), and the executable the pid runs now, at accept
// (/proc/PID/exe; empty when /proc does not tell), which is not
// necessarily the one that connected (see peer). What /proc says is used only while its process has the
// peer's effective uid, so that a pid reused by another user's process
// is not read as the caller.
func peerOf(c net.Conn) (*peer, bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var cred *syscall.Ucred
	var cerr error
	var groups []uint32
	kernelGroups := false
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		groups, kernelGroups = peerGroups(fd)
	}); err != nil || cerr != nil {
		return nil, false
	}
	p := &peer{uid: cred.Uid, gid: cred.Gid, pid: cred.Pid, groups: groups}
	if cred.Pid > 0 {
		dir := "/proc/" + strconv.Itoa(int(cred.Pid))
		euid, procGroups, ok := procStatus(dir + "/status")
		if ok && euid == cred.Uid {
			if !kernelGroups {
				p.groups = procGroups
			}
			p.exeAtAccept, _ = os.Readlink(dir + "/exe")
		}
	}
	return p, true
}

// maxProcStatus bounds /proc/PID/status, which lists up to 65536
// supplementary groups.
const maxProcStatus = 1 << 20

// procStatus returns the effective uid and the supplementary groups of
// /proc/PID/status.
func procStatus(path string) (euid uint32, groups []uint32, ok bool) {
	data, err := safefile.Read(path, maxProcStatus)
	if err != nil {
		return 0, nil, false
	}
	uidSeen := false
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if rest, found := bytes.CutPrefix(line, []byte("Uid:")); found {
			f := bytes.Fields(rest)
			if len(f) < 2 {
				return 0, nil, false
			}
			u, err := strconv.ParseUint(string(f[1]), 10, 32)
			if err != nil {
				return 0, nil, false
			}
			euid, uidSeen = uint32(u), true
		}
		if rest, found := bytes.CutPrefix(line, []byte("Groups:")); found {
			for _, f := range bytes.Fields(rest) {
				if g, err := strconv.ParseUint(string(f), 10, 32); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	return euid, groups, uidSeen
}

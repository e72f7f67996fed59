package daemon

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"syscall"
)

// peerOf returns who is at the other end of a unix socket connection: the
// uid, gid and pid the kernel recorded when it connected (SO_PEERCRED),
// and, read from /proc/PID while the connection is new, the supplementary
// groups and the executable (empty when /proc does not tell, for instance
// when the caller already exited).
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
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return nil, false
	}
	p := &peer{uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}
	if cred.Pid > 0 {
		dir := "/proc/" + strconv.Itoa(int(cred.Pid))
		p.groups = procGroups(dir + "/status")
		p.exe, _ = os.Readlink(dir + "/exe")
	}
	return p, true
}

// procGroups returns the supplementary groups of /proc/PID/status's
// Groups line.
func procGroups(path string) []uint32 {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("Groups:"))
		if !ok {
			continue
		}
		var gids []uint32
		for _, f := range bytes.Fields(rest) {
			if g, err := strconv.ParseUint(string(f), 10, 32); err == nil {
				gids = append(gids, uint32(g))
			}
		}
		return gids
	}
	return nil
}

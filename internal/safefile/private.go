package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// ErrUnsafe is wrapped by the error for a file that a user other than its
// owner or root can change.
var ErrUnsafe = errors.New("another user can change it")

// ReadPrivate reads path as Read does, for a file whose content mp-hsm
// trusts (config, PIN, secret): it is refused (ErrUnsafe, with the chmod
// or chown that fixes it) when group or others may write the file opened,
// or its owner is neither root nor the effective uid. The information
// returned tells who may read it (ReadableByOthers).
func ReadPrivate(path string, max int64) ([]byte, fs.FileInfo, error) {
	data, fi, err := read(path, max)
	if err != nil {
		return nil, nil, err
	}
	if err := private(path, fi); err != nil {
		clear(data)
		return nil, nil, err
	}
	return data, fi, nil
}

// ReadableByOthers reports whether fi's mode lets group or others read the
// file.
func ReadableByOthers(fi fs.FileInfo) bool { return fi.Mode().Perm()&0o044 != 0 }

func private(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return &Error{Path: path, Err: ErrUnsafe, Reason: fmt.Sprintf(
			"can be changed by %s (mode %04o), and mp-hsm trusts what it holds; make it writable by its owner only: chmod go-w %s",
			writers(perm), perm, path)}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	euid := uint32(os.Geteuid())
	if st.Uid != 0 && st.Uid != euid {
		return &Error{Path: path, Err: ErrUnsafe, Reason: fmt.Sprintf(
			"is owned by %s, who is neither root nor %s that mp-hsm runs as, and could change it; give it to one of them: chown %s %s",
			userName(st.Uid), userName(euid), chownUser(euid), path)}
	}
	return nil
}

func writers(perm fs.FileMode) string {
	switch {
	case perm&0o020 != 0 && perm&0o002 != 0:
		return "group and others"
	case perm&0o020 != 0:
		return "its group"
	}
	return "others"
}

// userName names a uid for a message: "user NAME (uid N)", or "uid N".
func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if name := chownUser(uid); name != id {
		return "user " + name + " (uid " + id + ")"
	}
	return "uid " + id
}

// chownUser is the user to give to chown for uid: its name, or the number.
func chownUser(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		return u.Username
	}
	return id
}

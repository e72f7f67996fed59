package socket

import (
	"fmt"
	"os/user"
	"strconv"
)

// Peer is who is at the other end of a unix socket, as the kernel recorded
// when it connected (Groups from /proc where the kernel cannot tell).
//
// ExeAtAccept is not who asks: it is what the peer's pid ran at accept
// (/proc/PID/exe), and a caller may exec another program between connect
// and accept: a hint for the audit log, never used to admit.
type Peer struct {
	UID         uint32   `json:"uid"`
	GID         uint32   `json:"gid"`
	PID         int32    `json:"pid"`
	Groups      []uint32 `json:"groups,omitempty"` // supplementary groups
	ExeAtAccept string   `json:"-"`                // "" if unknown
}

// LookupID resolves a user, or a group, given by name or numeric id.
func LookupID(v string, isUser bool) (uint32, error) {
	id, err := v, error(nil)
	if _, perr := strconv.ParseUint(v, 10, 32); perr != nil && isUser {
		var u *user.User
		if u, err = user.Lookup(v); err == nil {
			id = u.Uid
		}
	} else if perr != nil {
		var g *user.Group
		if g, err = user.LookupGroup(v); err == nil {
			id = g.Gid
		}
	}
	if err != nil {
		return 0, fmt.Errorf("no %s %q on this system", map[bool]string{true: "user", false: "group"}[isUser], v)
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q has the id %q, not a number", v, id)
	}
	return uint32(n), nil
}

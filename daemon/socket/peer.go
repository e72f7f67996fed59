package socket

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

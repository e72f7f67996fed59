package socket

// Peer is who is at the other end of a unix socket. UID, GID and PID are
// the kernel's, recorded when the peer connected; Groups too
// (SO_PEERGROUPS), or /proc's when the kernel cannot tell.
//
// ExeAtAccept is not who asks: it is what the peer's pid ran when the
// daemon accepted (/proc/PID/exe). A caller may connect and then exec
// another program before the accept, so it can make ExeAtAccept name any
// program it can run: a hint for the audit log, never used to admit.
type Peer struct {
	UID, GID    uint32
	PID         int32
	Groups      []uint32 // supplementary groups
	ExeAtAccept string   // "" if unknown
}

package daemon

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
)

// callerID is who asks, for the per-caller bounds (the fair share of
// upstream slots, keys and resources in the cache), for counting failed
// authentication and for summarizing refusals: on a unix socket the peer's
// uid (SO_PEERCRED), on TCP the remote address, an IPv6 address by its
// /64, since one host usually has a whole /64, and every loopback address
// (127.0.0.0/8, ::1, and their IPv4-mapped forms) as one caller, since any
// local program may pick any of them. callerOf is the one place that
// decides it. It is comparable, for map keys, and made without
// allocating.
type callerID struct {
	unix    bool
	refresh bool       // refreshCaller
	uid     int64      // unix: the peer's uid; -1 if unknown
	ip      netip.Addr // TCP: the address or /64 prefix; invalid if unknown
}

// refreshCaller stands for the daemon's own background refreshes when they
// wait for a slot: no caller waits for them.
var refreshCaller = callerID{refresh: true, uid: -1}

// String names the caller in logs and error descriptions.
func (c callerID) String() string {
	switch {
	case c.refresh:
		return "background refreshes"
	case c.unix && c.uid >= 0:
		return "uid " + strconv.FormatInt(c.uid, 10)
	case c.unix:
		return "unix socket peer of unknown uid"
	case c.ip == loopbackCaller:
		return "loopback TCP (127.0.0.0/8, ::1)"
	case c.ip.Is6():
		return c.ip.String() + "/64"
	case c.ip.IsValid():
		return c.ip.String()
	}
	return "unknown address"
}

// peer is a unix socket's peer: who asks, for the clients' users and
// groups and the audit trail. The uid, gid and pid are the kernel's,
// recorded when the peer connected; the groups the kernel's too
// (SO_PEERGROUPS), or /proc's when the daemon accepted.
//
// exeAtAccept is not who asks: it is the program that the peer's pid ran
// when the daemon accepted the connection (/proc/PID/exe), read after the
// connect. A caller may connect and then exec another program before
// the accept, so it can make exeAtAccept name any program it can run. It
// is written to the audit log under that name, as a hint, and never
// used to admit.
type peer struct {
	uid, gid    uint32
	pid         int32
	groups      []uint32 // supplementary groups
	exeAtAccept string   // /proc/PID/exe when accepted; "" if unknown
}

// peerKey is the context key of a unix socket's *peer.
type peerKey struct{}

// connContext is the http.Server's ConnContext: it reads a unix socket's
// peer once per connection, so that requests need not.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if p, ok := peerOf(c); ok {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}

// onUnixSocket reports whether r came on a unix socket.
func onUnixSocket(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && la.Network() == "unix"
}

// peerOfRequest returns the unix socket peer that sent r, or nil.
func peerOfRequest(r *http.Request) *peer {
	p, _ := r.Context().Value(peerKey{}).(*peer)
	return p
}

// callerOf returns who sent r.
func callerOf(r *http.Request) callerID {
	if onUnixSocket(r) {
		uid := int64(-1)
		if p := peerOfRequest(r); p != nil {
			uid = int64(p.uid)
		}
		return callerID{unix: true, uid: uid}
	}
	return callerID{uid: -1, ip: addressOf(r.RemoteAddr)}
}

// loopbackCaller is the address every loopback TCP caller is counted as.
var loopbackCaller = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// addressOf returns the address of a TCP peer "host:port" as callerID
// keeps it: any loopback address as loopbackCaller, other IPv4 addresses
// as they are, IPv6 as its /64.
func addressOf(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.IsLoopback() {
		return loopbackCaller
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip
}

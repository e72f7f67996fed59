package daemon

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// hostAllowed reports whether a TCP request's Host header names the
// daemon as this machine knows it: localhost, a loopback address
// (127.0.0.1, [::1], ...), the address the connection came to (the listen
// address), or a name in Config.AllowedHosts; any port. Anything else is
// a name that merely resolves here, as a DNS rebinding attack makes a
// browser send, and is refused, so that a web page cannot read /metrics
// or the metadata through the user's browser. A request without a Host
// header (HTTP/1.0; no browser sends one) is allowed. Requests on a unix
// socket are not checked: no browser reaches one, and their Host is
// only a name in the client's URL.
func hostAllowed(r *http.Request, st *settings) bool {
	host := r.Host
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || st.hosts[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() {
		return true
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if !ok {
		return false
	}
	local, ok := netip.AddrFromSlice(la.IP)
	return ok && local.Unmap() == ip
}

// validHostEntry reports whether v may be an entry of AllowedHosts: a DNS
// name (letters, digits, '-' and '.'), without port or wildcard.
func validHostEntry(v string) bool {
	if v == "" || len(v) > 253 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// writeMisdirected answers a request whose Host is not the daemon's.
func writeMisdirected(w http.ResponseWriter) {
	writeText(w, http.StatusMisdirectedRequest, "421 misdirected request: the Host header does not name this daemon. "+
		"It answers on TCP only to localhost, a loopback address, its listen address, or a name its operator allows (--allowed-hosts); "+
		"this protects it from DNS rebinding.\n")
}

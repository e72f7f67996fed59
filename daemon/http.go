package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// callerID is who asks, for the per-caller bounds: a unix socket peer's uid, or a
// TCP address (IPv6 by its /64; all loopback as one: a local program picks any).
type callerID struct {
	unix    bool
	refresh bool       // refreshCaller
	uid     int64      // unix: the peer's uid; -1 if unknown
	ip      netip.Addr // TCP: the address or /64 prefix; invalid if unknown
}

var (
	refreshCaller  = callerID{refresh: true, uid: -1}       // the daemon's own background refreshes
	loopbackCaller = netip.AddrFrom4([4]byte{127, 0, 0, 1}) // every loopback TCP caller
)

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

// addressOf returns a TCP peer "host:port" as callerID keeps it.
func addressOf(hostport string) netip.Addr {
	ap, _ := netip.ParseAddrPort(hostport) // invalid if it does not parse
	ip := ap.Addr().Unmap().WithZone("")
	if ip.IsLoopback() {
		return loopbackCaller
	}
	p, _ := ip.Prefix(min(ip.BitLen(), 64))
	return p.Addr()
}

// peerKey is the context key of a unix socket's *socket.Peer, read once per connection.
type peerKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if p := socket.PeerOf(c); p != nil {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}

// ServeHTTP answers POST /token, GET /healthz, /readyz, /metrics and the RFC 8414
// metadata. It establishes who asks, once; on TCP Host must name the daemon (else 421).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	who := callerID{uid: -1}
	var peer *socket.Peer
	if la != nil && la.Network() == "unix" {
		who.unix = true
		if peer, _ = r.Context().Value(peerKey{}).(*socket.Peer); peer != nil {
			who.uid = int64(peer.UID)
		}
	} else {
		who.ip = addressOf(r.RemoteAddr)
		if !hostAllowed(r.Host, la, s.settings()) {
			writeText(w, http.StatusMisdirectedRequest, "421 misdirected request: the Host header does not name this daemon. "+
				"It answers on TCP only to localhost, a loopback address, its listen address, or a name its operator allows (--allowed-hosts); "+
				"this protects it from DNS rebinding.\n")
			return
		}
	}
	switch path := r.URL.Path; {
	case path == "/token":
		s.serveToken(w, r, who, peer)
	case !slices.Contains([]string{"/healthz", "/readyz", "/metrics", "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"}, path):
		s.writeError(w, &oauthError{status: http.StatusNotFound, code: errInvalidRequest,
			description: "no such endpoint; the token endpoint is POST /token"})
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
	case path == "/healthz":
		writeText(w, http.StatusOK, "ok\n")
	case path == "/readyz":
		if ok, reason := s.Ready(); !ok {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+reason+"\n")
		} else {
			writeText(w, http.StatusOK, "ready\n")
		}
	case path == "/metrics":
		s.metricsH.ServeHTTP(w, r)
	default:
		s.serveMetadata(w, r, who.unix, la)
	}
}

// hostAllowed reports whether a TCP request's Host names the daemon: localhost, a
// loopback address, the connection's local address, an AllowedHosts name, or none
// (HTTP/1.0); not a name that merely resolves here, as DNS rebinding sends.
func hostAllowed(host string, la net.Addr, st *settings) bool {
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
	if ip = ip.Unmap().WithZone(""); ip.IsLoopback() {
		return true
	}
	tcp, _ := la.(*net.TCPAddr)
	return tcp != nil && tcp.AddrPort().Addr().Unmap().WithZone("") == ip
}

// serveMetadata answers the RFC 8414 metadata with the URLs the request came by
// (without Host: the TCP listener's address, or http://mp-hsm, which resolves
// nowhere) and the listener's auth methods.
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request, unix bool, la net.Addr) {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	issuer := scheme + r.Host
	switch {
	case r.Host != "":
	case unix:
		issuer = "http://mp-hsm"
	case la != nil:
		issuer = scheme + la.String()
	default:
		issuer = scheme + "localhost"
	}
	methods := []string{string(authNone), string(authBasic), string(authPost)}
	if !unix {
		methods = methods[1:]
	}
	types := []string{}
	for _, c := range s.settings().clients {
		types = slices.AppendSeq(types, maps.Keys(c.authzTypes))
	}
	slices.Sort(types)
	h := w.Header()
	h["Content-Type"], h["Cache-Control"] = hdrJSON, hdrNoStore
	_ = json.NewEncoder(w).Encode(struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		ResponseTypes []string `json:"response_types_supported"` // required; no authorization endpoint
		AuthzTypes    []string `json:"authorization_details_types_supported"`
	}{issuer, issuer + "/token", []string{"client_credentials"}, methods, []string{}, slices.Compact(types)})
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// OAuth 2 error codes: RFC 6749 (5.2, 4.1.2.1), RFC 8707, RFC 9396.
const (
	errInvalidRequest         = "invalid_request"
	errInvalidClient          = "invalid_client"
	errUnsupportedGrantType   = "unsupported_grant_type"
	errInvalidScope           = "invalid_scope"
	errInvalidTarget          = "invalid_target"
	errInvalidAuthzDetails    = "invalid_authorization_details"
	errServerError            = "server_error"
	errTemporarilyUnavailable = "temporarily_unavailable"
)

type oauthError struct { // an OAuth 2 error answer
	status      int
	code        string
	description string
	retryAfter  int    // seconds, for 503
	reason      string // why a caller was refused before its request was read (reason...)
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func badRequest(code, description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, description: description}
}

func unavailable(description string, retryAfter int) *oauthError {
	return &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable, description: description, retryAfter: retryAfter}
}

func refuse(reason string, status int, code, description string) *oauthError {
	return &oauthError{status: status, code: code, description: description, reason: reason}
}

type notReadyError string // why there is no token while the daemon is not ready

func (e notReadyError) Error() string { return string(e) }

var (
	errSlotWait     = errors.New("waited too long for a turn to call Maskinporten: this caller's other requests take its share (--max-concurrent-per-caller), or all requests do (--max-concurrent)")
	errShuttingDown = errors.New("the daemon is shutting down")
)

var errAuditUnwritable = unavailable("the daemon cannot write its audit log and serves no token without its audit line; ask its operator (the daemon's log says why)", 30)

// mapError is the one table from an error to the answer: 503 when the card is away
// or Maskinporten fails or asks to slow down, 400 when Maskinporten refused what the
// caller asked for, 5xx for the daemon's own faults.
func (s *Server) mapError(err error) *oauthError {
	var oe *oauthError
	var nre notReadyError
	te := new(grant.TokenError) // zero unless err holds one
	isTE := errors.As(err, &te)
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.As(err, &nre):
		return unavailable("cannot get a token now: "+string(nre), 5)
	case isDeviceFault(err):
		return unavailable("the card or HSM failed while signing ("+err.Error()+"); reconnecting", 5)
	case tokenerr.IsPINRefused(err):
		return unavailable(loginRefusedReason(err), 0)
	case te.StatusCode == http.StatusTooManyRequests:
		return unavailable("Maskinporten asks the daemon to slow down: "+te.Error(), retrySeconds(te.RetryAfter))
	case isTE && te.StatusCode < 500:
		desc := "Maskinporten refused: " + te.Error()
		switch {
		case te.Code == errInvalidScope, te.StatusCode == http.StatusForbidden: // 403: a scope not delegated (MP-250/251)
			return badRequest(errInvalidScope, desc)
		case te.Code == errInvalidAuthzDetails && strings.HasPrefix(te.MPCode, "MP-30"): // no system user (MP-301..303)
			return badRequest(errInvalidRequest, desc+" (the request's system_user_org: "+
				"that organisation has no system user for this client in Altinn)")
		case te.Code == errInvalidAuthzDetails:
			return badRequest(errInvalidAuthzDetails, desc) // a consent unknown, or not given to this organisation
		}
		return &oauthError{status: http.StatusBadGateway, code: errServerError,
			description: desc + " (the daemon's client id, key or environment is wrong)"}
	case errors.Is(err, errSlotWait) && errors.Is(err, context.DeadlineExceeded):
		return unavailable(errSlotWait.Error(), 5)
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return unavailable("Maskinporten is unavailable: "+err.Error(), retrySeconds(te.RetryAfter))
	case errors.Is(err, errCacheFull):
		return unavailable(err.Error(), 5)
	case errors.Is(err, errShuttingDown), errors.Is(err, errCacheClosed):
		return unavailable(err.Error(), 1)
	case errors.Is(err, context.Canceled):
		return unavailable("the request was canceled", 1)
	case errors.Is(err, grant.ErrBadResponse):
		return &oauthError{status: http.StatusBadGateway, code: errServerError, description: err.Error()}
	case errors.Is(err, grant.ErrInvalidRequest):
		return badRequest(errInvalidRequest, err.Error())
	case errors.Is(err, grant.ErrInvalidConfig), errors.Is(err, ErrConfig):
		return &oauthError{status: http.StatusInternalServerError, code: errServerError,
			description: "the daemon's configuration is invalid: " + err.Error()}
	}
	return &oauthError{status: http.StatusInternalServerError, code: errServerError, description: err.Error()}
}

// retrySeconds is the Retry-After for an upstream's d: rounded up, or 5.
func retrySeconds(d time.Duration) int {
	if d <= 0 {
		return 5
	}
	return int((d + time.Second - 1) / time.Second)
}

var ( // header values shared, so that setting them allocates nothing
	hdrJSON    = []string{"application/json;charset=UTF-8"}
	hdrNoStore = []string{"no-store"}
	hdrNoCache = []string{"no-cache"}
)

// writeError answers oe, never cached, a 401 with its challenge; error_description keeps
// to RFC 6749 5.2's characters: " becomes ', \ a slash, any other byte outside %x20-7E a '?'.
func (s *Server) writeError(w http.ResponseWriter, oe *oauthError) {
	h := w.Header()
	h["Content-Type"], h["Cache-Control"], h["Pragma"] = hdrJSON, hdrNoStore, hdrNoCache
	if oe.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(oe.retryAfter))
	} else if oe.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="mp-hsm"`)
	}
	desc := []byte(oe.description)
	for i, c := range desc {
		switch {
		case c == '"':
			desc[i] = '\''
		case c == '\\':
			desc[i] = '/'
		case c < 0x20 || c > 0x7e:
			desc[i] = '?'
		}
	}
	w.WriteHeader(oe.status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{oe.code, string(desc)})
}

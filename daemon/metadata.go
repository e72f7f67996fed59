package daemon

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
)

// The paths of the authorization server metadata: RFC 8414's, and OpenID
// Connect Discovery's, which clients such as openid-client ask for by
// default.
const (
	metadataPath     = "/.well-known/oauth-authorization-server"
	oidcMetadataPath = "/.well-known/openid-configuration"
)

// unixIssuer is the issuer a unix-socket caller is told when it sent no
// Host header. The name resolves nowhere, so a client that follows the
// URL without the socket fails rather than reaching another server.
const unixIssuer = "http://mp-hsm"

// metadata is the RFC 8414 authorization server metadata of the daemon.
type metadata struct {
	Issuer        string   `json:"issuer"`
	TokenEndpoint string   `json:"token_endpoint"`
	GrantTypes    []string `json:"grant_types_supported"`
	AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	// ResponseTypes is required by RFC 8414; the daemon has no
	// authorization endpoint, so it supports none.
	ResponseTypes []string `json:"response_types_supported"`
	// AuthzTypes are the authorization_details types (RFC 9396 section
	// 10) some client's authorization-types allow.
	AuthzTypes []string `json:"authorization_details_types_supported"`
}

// serveMetadata answers GET of the metadata paths. The URLs are those by
// which r reached the daemon: its Host header (or, without one, the
// listener's address on TCP and http://mp-hsm on a unix socket), with
// scheme http (https when the request came over TLS), so the issuer is
// the URL the client discovered it from, as RFC 8414 section 3.3 asks. On
// a unix socket the host name is whatever the client put in its URL:
// only its path means anything, and the client must go on using the
// socket. The auth methods are what the listener accepts: on TCP the
// daemon's client id and secret in HTTP Basic or in the form; on a unix
// socket no credentials ("none"), and the other two are accepted too
// (their secret is not checked there).
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	issuer := issuerOf(r)
	m := metadata{
		Issuer:        issuer,
		TokenEndpoint: issuer + "/token",
		GrantTypes:    []string{"client_credentials"},
		AuthMethods:   []string{string(authBasic), string(authPost)},
		ResponseTypes: []string{},
		AuthzTypes:    []string{},
	}
	if onUnixSocket(r) {
		m.AuthMethods = []string{string(authNone), string(authBasic), string(authPost)}
	}
	for _, c := range s.settings().clients {
		for typ := range c.authzTypes {
			if !slices.Contains(m.AuthzTypes, typ) {
				m.AuthzTypes = append(m.AuthzTypes, typ)
			}
		}
	}
	slices.Sort(m.AuthzTypes)
	b, err := json.Marshal(m)
	if err != nil { // cannot happen: strings only
		writeText(w, http.StatusInternalServerError, "metadata: "+err.Error()+"\n")
		return
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	_, _ = w.Write(append(b, '\n'))
}

// issuerOf returns the daemon's issuer as r reached it: scheme and host,
// no path and no trailing slash. net/http has already refused a Host
// header that is not a valid host.
func issuerOf(r *http.Request) string {
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	if r.Host != "" {
		return scheme + r.Host
	}
	if onUnixSocket(r) {
		return unixIssuer
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return scheme + la.String()
	}
	return scheme + "localhost"
}

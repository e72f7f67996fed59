package daemon

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
)

// MinSecretLength is the fewest bytes a client secret (Config.ClientSecret,
// Client.Secret) may have. The delay after failed attempts (see
// authFailures) bounds how fast a secret can be guessed, not whether: a
// short one would still fall.
const MinSecretLength = 16

// checkSecret refuses a client secret that is set but shorter than
// MinSecretLength; what names it in the error, which never holds it.
func checkSecret(what, secret string) error {
	if secret == "" || len(secret) >= MinSecretLength {
		return nil
	}
	return fmt.Errorf("%w: %s is %d bytes; a client secret must have at least %d, "+
		"such as 32 random bytes in base64 (head -c 32 /dev/urandom | base64)", ErrConfig, what, len(secret), MinSecretLength)
}

// authMethod is how a token request presents client credentials, by the
// names of RFC 8414's token_endpoint_auth_methods_supported.
type authMethod string

const (
	authNone  authMethod = "none"                // no credentials (a unix-socket caller)
	authBasic authMethod = "client_secret_basic" // an HTTP Basic Authorization header
	authPost  authMethod = "client_secret_post"  // client_id and client_secret in the form
)

// credentials are the client credentials a token request presents. For
// HTTP Basic there are up to two candidates for the id and for the
// secret: the values form-decoded, as RFC 6749 section 2.3.1 says a client
// sends them, and the raw values, as many libraries send them (Python's
// requests-oauthlib and authlib). A raw value that does not decode, or
// decodes to itself, is one candidate. In the form, each is the one
// value given; repeated says one was given more than once.
type credentials struct {
	method   authMethod
	ids      candidates
	secrets  candidates
	repeated bool
}

// candidates are the values one credential may stand for, without
// allocating.
type candidates struct {
	v [2]string
	n int
}

// list returns the candidates.
func (c *candidates) list() []string { return c.v[:c.n] }

// presentedCredentials returns the credentials r and its form present. A
// request that uses two methods (HTTP Basic, and client_secret or another
// client_id in the form) is refused with 400 invalid_request, as RFC 6749
// section 2.3 says a client must not. A client_id in the form that names
// the Basic user again is not a second method.
func presentedCredentials(r *http.Request, form url.Values) (credentials, *oauthError) {
	id, secret, basic := r.BasicAuth()
	if !basic {
		ids, secrets := form["client_id"], form["client_secret"]
		if len(ids) == 0 && len(secrets) == 0 {
			return credentials{method: authNone}, nil
		}
		c := credentials{method: authPost, repeated: len(ids) > 1 || len(secrets) > 1}
		if len(ids) > 0 {
			c.ids = candidates{v: [2]string{ids[0]}, n: 1}
		}
		if len(secrets) > 0 {
			c.secrets = candidates{v: [2]string{secrets[0]}, n: 1}
		}
		return c, nil
	}
	c := credentials{method: authBasic, ids: decodedAndRaw(id), secrets: decodedAndRaw(secret)}
	if form.Has("client_secret") {
		return c, badRequest(errInvalidRequest,
			"the request authenticates twice, with HTTP Basic and client_secret in the body: use one method only (RFC 6749 section 2.3)")
	}
	for _, fid := range form["client_id"] {
		if fid != c.ids.v[0] && (c.ids.n < 2 || fid != c.ids.v[1]) {
			return c, badRequest(errInvalidRequest,
				"the client_id in the body differs from the HTTP Basic user: use one method only (RFC 6749 section 2.3)")
		}
	}
	return c, nil
}

// decodedAndRaw returns v form-decoded and v as it came, once if they are
// the same or v does not decode.
func decodedAndRaw(v string) candidates {
	d, err := url.QueryUnescape(v)
	if err != nil || d == v {
		return candidates{v: [2]string{v}, n: 1}
	}
	return candidates{v: [2]string{d, v}, n: 2}
}

// hashes returns the SHA-256 of each candidate, computed once per request
// for the comparison with every client's.
func (c *candidates) hashes() ([2][32]byte, int) {
	var h [2][32]byte
	for i := 0; i < c.n; i++ {
		h[i] = sha256.Sum256([]byte(c.v[i]))
	}
	return h, c.n
}

// matchesHash reports whether one of the hashed candidates equals want.
// Every candidate is compared in constant time, whether or not an earlier
// one matched, so the time taken does not depend on which one did.
func matchesHash(hashes [][32]byte, want *[32]byte) bool {
	ok := 0
	for i := range hashes {
		ok |= subtle.ConstantTimeCompare(hashes[i][:], want[:])
	}
	return ok == 1
}

// tcpClient returns the client whose name and secret a TCP caller
// presented in c, by either method, or nil. The presented values are
// hashed once and compared with every client's in constant time, each
// client's whether or not an earlier one matched. Repeated client_id or
// client_secret parameters authenticate nothing.
func tcpClient(c *credentials, clients []*client) *client {
	if c.method == authNone || c.repeated || c.ids.n == 0 || c.secrets.n == 0 {
		return nil
	}
	idH, nID := c.ids.hashes()
	secH, nSec := c.secrets.hashes()
	var found *client
	for _, cl := range clients {
		okID := matchesHash(idH[:nID], &cl.idHash)
		okSecret := matchesHash(secH[:nSec], &cl.secretHash)
		if cl.Secret != "" && okID && okSecret {
			found = cl
		}
	}
	return found
}

package grant

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mp-hsm/mp-hsm/signer"
)

// Config describes a Maskinporten client and its key; ClientID, Signer and Environment are
// required. It is safe for concurrent use, but must not be modified after its first use.
type Config struct {
	ClientID string        // the client's id in Maskinporten, the grant's iss
	Signer   signer.Signer // signs grants; its chain is sent as x5c unless KeyID is set
	// Algorithm is the JWS alg (signer.Method); if empty, the key's
	// signer.DefaultAlgorithm (RS256 for RSA).
	Algorithm string
	// KeyID, if set, is sent as kid instead of x5c: a key registered on the
	// client. It is required when the signer has no certificate chain.
	KeyID       string
	Environment Environment // the issuer and the endpoints, such as Test or Prod
	// AllowInsecure allows http endpoints for hosts that are not loopback
	// (http is always allowed for localhost, 127.0.0.0/8 and ::1).
	AllowInsecure bool
	// HTTPClient sends the token and exchange requests. If nil, a client
	// with a 30-second timeout and the environment's proxy. Redirects are
	// never followed, this client's neither: that would post the grant again.
	HTTPClient *http.Client
	// Logger receives debug records of requests, retries and clock skew,
	// never a grant, token or pid. If nil, nothing is logged.
	Logger *slog.Logger

	attempts  int                                        // at most this many requests; zero means maxAttempts
	now       func() time.Time                           // for tests; nil means time.Now
	retryBase time.Duration                              // for tests; zero means defaultRetryBase
	wait      func(ctx context.Context, d time.Duration) // for tests: the sleep before a retry; nil means a timer
}

// Grant returns a new signed grant for req (an RFC 7523 JWT with a new jti: a grant can be
// used once). The header holds alg and x5c or kid; the claims are aud, iss, iat, exp, jti,
// scope, and those req sets (resource, consumer_org, iss_onbehalfof, pid,
// authorization_details): no others, as Maskinporten refuses unknown claims.
func (c *Config) Grant(req Request) (string, error) {
	k, n, err := c.prepare(req)
	if err != nil {
		return "", err
	}
	g, _, err := c.grant(k, n)
	return g, err
}

// key is the signer's JWS method and the JOSE header, encoded.
type key struct {
	method *signer.SigningMethod
	header string // base64url of the header's JSON
}

// lastHeader is the last JOSE header encoded, by alg, kid and chain (the
// certificates' pointers): the one fast path of grant building. A program
// signs with one chain for hours, and encoding its x5c every time was over a
// third of building a grant (make bench's "a complete signed grant").
var lastHeader atomic.Pointer[encodedHeader]

type encodedHeader struct {
	alg, kid string
	chain    []*x509.Certificate // nil with a kid
	b64      string
}

// joseHeader returns the encoded header: alg, and kid or x5c; no typ, as
// Altinn's own example.
func joseHeader(alg, kid string, chain []*x509.Certificate) (string, error) {
	if h := lastHeader.Load(); h != nil && h.alg == alg && h.kid == kid && slices.Equal(h.chain, chain) {
		return h.b64, nil
	}
	hdr := map[string]any{"alg": alg}
	if kid != "" {
		hdr["kid"] = kid
	} else {
		x5c := make([][]byte, len(chain)) // []byte marshals as standard base64
		for i, cert := range chain {
			x5c[i] = cert.Raw
		}
		hdr["x5c"] = x5c
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	h := &encodedHeader{alg: alg, kid: kid, chain: slices.Clone(chain), b64: base64.RawURLEncoding.EncodeToString(js)}
	lastHeader.Store(h)
	return h.b64, nil
}

// prepare checks req and c; nothing is sent unless both are good.
func (c *Config) prepare(req Request) (*key, *normRequest, error) {
	n, err := req.normalize()
	if err != nil {
		return nil, nil, err
	}
	k, err := c.key()
	return k, n, err
}

func (c *Config) key() (*key, error) {
	if c.ClientID == "" {
		return nil, &ConfigError{Field: "ClientID", Reason: "missing"}
	}
	if !ValidScope(c.ClientID) {
		return nil, &ConfigError{Field: "ClientID", Value: c.ClientID, Reason: "must be printable ASCII without spaces"}
	}
	if c.Signer == nil {
		return nil, &ConfigError{Field: "Signer", Reason: "missing"}
	}
	if err := c.Environment.Validate(c.AllowInsecure); err != nil {
		return nil, err
	}
	pub := c.Signer.Public()
	alg := c.Algorithm
	if alg == "" {
		var err error
		if alg, err = signer.DefaultAlgorithm(pub); err != nil {
			return nil, &ConfigError{Field: "Signer", Reason: "cannot choose an algorithm for the key", Err: err}
		}
	}
	method, err := signer.Method(alg)
	if err != nil {
		return nil, &ConfigError{Field: "Algorithm", Value: alg, Reason: "unsupported", Err: err}
	}
	if err := method.Compatible(pub); err != nil {
		return nil, &ConfigError{Field: "Algorithm", Value: alg, Reason: "does not suit the key", Err: err}
	}
	k := &key{method: method}
	chain := c.Signer.Chain()
	if len(chain) > 0 {
		if err := signer.MatchCertificate(pub, chain[0]); err != nil {
			return nil, &ConfigError{Field: "Signer", Reason: "the leaf certificate does not hold the signer's key", Err: err}
		}
	}
	if c.KeyID != "" {
		k.header, err = joseHeader(alg, c.KeyID, nil)
		return k, err
	}
	if len(chain) == 0 {
		return nil, &ConfigError{Field: "KeyID", Reason: "missing, and the signer has no certificate chain to send as x5c"}
	}
	if err := CheckEnvironment(c.Environment, chain); err != nil {
		return nil, err
	}
	if now := c.clock(); now.After(chain[0].NotAfter) {
		return nil, &ConfigError{Field: "Signer", Reason: fmt.Sprintf("the certificate %q expired at %s; renew it", chain[0].Subject.CommonName, chain[0].NotAfter.UTC().Format(time.RFC3339)),
			Err: ErrCertificateExpired}
	}
	k.header, err = joseHeader(alg, "", chain)
	return k, err
}

// grant builds and signs a grant with golang-jwt, and returns it and its jti.
func (c *Config) grant(k *key, n *normRequest) (string, string, error) {
	id, err := uuid.NewRandom() // version 4, from crypto/rand
	if err != nil {
		return "", "", fmt.Errorf("grant: making a jti: %w", err)
	}
	iat := c.clock().Unix()
	cl := jwt.MapClaims{"aud": c.Environment.Issuer, "iss": c.ClientID, "iat": iat, "exp": iat + n.lifetime,
		"jti": id.String(), "scope": n.scope}
	for name, v := range map[string]string{"consumer_org": n.ConsumerOrg, "iss_onbehalfof": n.OnBehalfOf, "pid": n.PID} {
		if v != "" {
			cl[name] = v
		}
	}
	if len(n.resources) > 0 {
		cl["resource"] = n.resources
	}
	if len(n.authzDetails) > 0 {
		cl["authorization_details"] = n.authzDetails
	}
	payload, err := json.Marshal(cl)
	if err != nil {
		return "", "", fmt.Errorf("grant: encoding the claims: %w", err)
	}
	signing := k.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := k.method.Sign(signing, c.Signer) // golang-jwt's SigningMethod
	if err != nil {
		return "", "", fmt.Errorf("grant: signing the grant: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), id.String(), nil
}

package grant

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mp-hsm/mp-hsm/signer"
)

// Config describes a Maskinporten client and its key. Its zero value is not
// usable: ClientID, Signer and Environment are required.
//
// A Config is safe for concurrent use, but must not be modified after its
// first use.
type Config struct {
	// ClientID is the client's identifier in Maskinporten
	// ("integrasjonens identifikator"), sent as the grant's iss claim.
	ClientID string

	// Signer signs grants. If its chain is not empty and KeyID is empty,
	// the chain is sent in the x5c header.
	Signer signer.Signer

	// Algorithm is the JWS alg, such as "RS256" (see signer.Method). If
	// empty, it follows from the key (signer.DefaultAlgorithm): RS256 for
	// RSA keys.
	Algorithm string

	// KeyID, if set, is sent as the kid header instead of x5c: the id of a
	// key registered on the client. It is required when the signer has no
	// certificate chain.
	KeyID string

	// Environment names the issuer and the endpoints, such as Test or Prod.
	Environment Environment

	// AllowInsecure allows http endpoints for hosts that are not loopback.
	// http is always allowed for localhost, 127.0.0.0/8 and ::1.
	AllowInsecure bool

	// HTTPClient sends the token and exchange requests. If nil, a client
	// with a 30-second timeout that uses the proxy from the environment
	// (HTTPS_PROXY, NO_PROXY) and does not follow redirects is used.
	HTTPClient *http.Client

	// Logger receives debug records of requests, retries and clock skew.
	// Grants, tokens and personal identification numbers are never logged.
	// If nil, nothing is logged.
	Logger *slog.Logger

	// Cache holds tokens for TokenSource, AltinnTokenSource and Client. It
	// may be shared by many Configs. If nil, each token source caches its
	// own token.
	Cache *Cache

	now       func() time.Time // for tests; nil means time.Now
	retryBase time.Duration    // for tests; zero means defaultRetryBase
	// wait sleeps d or until ctx ends, before a retry; for tests; nil
	// means a timer.
	wait func(ctx context.Context, d time.Duration)
}

// Grant returns a new signed grant (a JWT per RFC 7523) for req. Each call
// makes a grant with a new jti; a grant can be used once.
//
// The header holds alg and either x5c or kid; the claims are aud, iss, iat,
// exp, jti and scope, and resource, consumer_org, iss_onbehalfof, pid and
// authorization_details when req sets them. No other claims are sent, as
// Maskinporten refuses unknown ones.
func (c *Config) Grant(req Request) (string, error) {
	n, err := req.normalize()
	if err != nil {
		return "", err
	}
	k, err := c.prepare()
	if err != nil {
		return "", err
	}
	g, _, err := c.grant(k, n)
	return g, err
}

// keyInfo is what a grant needs to know about the key, computed once per
// (alg, kid, chain) and kept in headerMemo.
type keyInfo struct {
	method   *signer.SigningMethod
	leaf     *x509.Certificate // chain[0], or nil
	header   string            // base64url of the JOSE header, then "."
	identity string            // the key's part of a cache key
}

// prepare checks the Config and returns the key information for the next
// grant. The expensive parts are memoised: see headerMemo.
func (c *Config) prepare() (*keyInfo, error) {
	if c.ClientID == "" {
		return nil, &ConfigError{Field: "ClientID", Reason: "missing"}
	}
	if !validScopeToken(c.ClientID) {
		return nil, &ConfigError{Field: "ClientID", Value: c.ClientID, Reason: "must be printable ASCII without spaces"}
	}
	if c.Signer == nil {
		return nil, &ConfigError{Field: "Signer", Reason: "missing"}
	}
	if err := c.Environment.validate(c.AllowInsecure); err != nil {
		return nil, err
	}
	alg := c.Algorithm
	if alg == "" {
		var err error
		if alg, err = signer.DefaultAlgorithm(c.Signer.Public()); err != nil {
			return nil, &ConfigError{Field: "Signer", Reason: "cannot choose an algorithm for the key", Err: err}
		}
	}
	chain := c.Signer.Chain()
	if c.KeyID == "" {
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
	}
	return headerMemo.get(c.Signer, alg, c.KeyID, chain)
}

// memoKey identifies a JOSE header: the alg, the kid, and the certificates
// by pointer (a signer returns the same certificates until it changes key).
type memoKey struct {
	alg, kid string
	n        int
	certs    [4]*x509.Certificate
}

// memo maps header inputs to keyInfo. It is bounded: when full, it is
// cleared. A package-level memo, rather than hidden state in Config, keeps
// Config a plain struct that may be copied.
type memo struct {
	mu sync.RWMutex
	m  map[memoKey]*keyInfo
}

const memoMax = 64

var headerMemo memo

func (m *memo) get(s signer.Signer, alg, kid string, chain []*x509.Certificate) (*keyInfo, error) {
	key := memoKey{alg: alg, kid: kid, n: len(chain)}
	copy(key.certs[:], chain)
	m.mu.RLock()
	k := m.m[key]
	m.mu.RUnlock()
	if k != nil {
		return k, nil
	}
	k, err := newKeyInfo(s, alg, kid, chain)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.m == nil || len(m.m) >= memoMax {
		m.m = make(map[memoKey]*keyInfo)
	}
	m.m[key] = k
	m.mu.Unlock()
	return k, nil
}

type joseHeader struct {
	Alg string   `json:"alg"`
	Kid string   `json:"kid,omitempty"`
	X5c []string `json:"x5c,omitempty"`
}

func newKeyInfo(s signer.Signer, alg, kid string, chain []*x509.Certificate) (*keyInfo, error) {
	method, err := signer.Method(alg)
	if err != nil {
		return nil, &ConfigError{Field: "Algorithm", Value: alg, Reason: "unsupported", Err: err}
	}
	if err := method.Compatible(s.Public()); err != nil {
		return nil, &ConfigError{Field: "Algorithm", Value: alg, Reason: "does not suit the key", Err: err}
	}
	k := &keyInfo{method: method}
	h := joseHeader{Alg: alg}
	var id strings.Builder
	if len(chain) > 0 {
		k.leaf = chain[0]
		if err := signer.MatchCertificate(s.Public(), chain[0]); err != nil {
			return nil, &ConfigError{Field: "Signer", Reason: "the leaf certificate does not hold the signer's key", Err: err}
		}
		sum := sha256.Sum256(chain[0].Raw)
		id.WriteString("x5c:")
		id.WriteString(hex.EncodeToString(sum[:]))
	}
	if kid != "" {
		h.Kid = kid
		if id.Len() > 0 {
			id.WriteString(" ")
		}
		id.WriteString("kid:")
		id.WriteString(kid)
	} else {
		h.X5c = make([]string, len(chain))
		for i, cert := range chain {
			h.X5c[i] = base64.StdEncoding.EncodeToString(cert.Raw)
		}
	}
	j, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	k.header = base64.RawURLEncoding.EncodeToString(j) + "."
	k.identity = id.String()
	return k, nil
}

// claims are the grant's claims, in the order they are written.
type claims struct {
	Aud                  string          `json:"aud"`
	Iss                  string          `json:"iss"`
	Iat                  int64           `json:"iat"`
	Exp                  int64           `json:"exp"`
	Jti                  string          `json:"jti"`
	Scope                string          `json:"scope"`
	Resource             []string        `json:"resource,omitempty"`
	ConsumerOrg          string          `json:"consumer_org,omitempty"`
	OnBehalfOf           string          `json:"iss_onbehalfof,omitempty"`
	PID                  string          `json:"pid,omitempty"`
	AuthorizationDetails json.RawMessage `json:"authorization_details,omitempty"`
}

// systemUserDetail is the authorization_details element asking for the
// Altinn system user of the organisation orgnr.
func systemUserDetail(orgnr string) json.RawMessage {
	type partyOrg struct {
		Authority string `json:"authority"`
		ID        string `json:"ID"`
	}
	b, _ := json.Marshal(struct {
		Type          string   `json:"type"`
		SystemUserOrg partyOrg `json:"systemuser_org"`
	}{SystemUserType, partyOrg{Authority: "iso6523-actorid-upis", ID: "0192:" + orgnr}})
	return b
}

// grant builds and signs a grant; it returns the grant and its jti.
func (c *Config) grant(k *keyInfo, n *normRequest) (string, string, error) {
	id, err := uuid.NewRandom() // version 4, from crypto/rand
	if err != nil {
		return "", "", fmt.Errorf("grant: making a jti: %w", err)
	}
	jti := id.String()
	iat := c.clock().Unix()
	cl := claims{
		Aud:         c.Environment.Issuer,
		Iss:         c.ClientID,
		Iat:         iat,
		Exp:         iat + n.lifetime,
		Jti:         jti,
		Scope:       n.scope,
		Resource:    n.resources,
		ConsumerOrg: n.consumerOrg,
		OnBehalfOf:  n.onBehalfOf,
		PID:         n.pid,

		AuthorizationDetails: n.authzDetails,
	}
	payload, err := json.Marshal(cl)
	if err != nil {
		return "", "", err
	}
	enc := base64.RawURLEncoding
	var b strings.Builder
	b.Grow(len(k.header) + enc.EncodedLen(len(payload)) + 1 + enc.EncodedLen(512))
	b.WriteString(k.header)
	b.WriteString(enc.EncodeToString(payload))
	sig, err := k.method.Sign(b.String(), c.Signer)
	if err != nil {
		return "", "", fmt.Errorf("grant: signing the grant: %w", err)
	}
	b.WriteByte('.')
	b.WriteString(enc.EncodeToString(sig))
	return b.String(), jti, nil
}

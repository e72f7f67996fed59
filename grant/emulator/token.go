package emulator

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/mp-hsm/mp-hsm/internal/orgid"
	"github.com/mp-hsm/mp-hsm/signer"
)

const jwtBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// tokenAnswer is the body of a successful token answer.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	drop, failStatus := s.fault()
	switch {
	case drop:
		s.cfg.Logf("emulator: /token: dropping the connection (DropNext)")
		s.drop(w)
		return
	case failStatus != 0:
		s.cfg.Logf("emulator: /token: answering %d (FailNext)", failStatus)
		injected(failStatus).write(w, s.Issuer())
		return
	}
	var clientID string
	tok, rej := s.issue(w, r, &clientID)
	if rej != nil {
		s.count(func(st *Stats) { st.Rejected[cmp.Or(rej.code, rej.error)]++ })
		s.cfg.Logf("emulator: /token: refused client %q: %v", clientID, rej)
		rej.write(w, s.Issuer())
		return
	}
	s.count(func(st *Stats) { st.Issued++ })
	s.cfg.Logf("emulator: /token: issued a token to client %q for %q, expires in %ds", clientID, tok.Scope, tok.ExpiresIn)
	writeJSON(w, http.StatusOK, tok)
}

// issue applies every rule of the token endpoint in the order of the grant's life: request,
// JWT, client and key, signature, audience, time, reuse, and last what the client asks for.
func (s *Server) issue(w http.ResponseWriter, r *http.Request, clientID *string) (*tokenAnswer, *rejection) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, mp("method", "The token endpoint takes POST only.")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, mp("request", "Content-Type must be application/x-www-form-urlencoded.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, mp("request", "The form body cannot be read.")
	}
	form := r.PostForm
	for name, vals := range form {
		if len(vals) > 1 {
			return nil, mp("request", "Parameter "+name+" is given more than once.")
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "":
		return nil, mp("request", "Missing grant_type.")
	case jwtBearer:
	default:
		return nil, mp("grant_type", "Use "+jwtBearer+".")
	}
	assertion := form.Get("assertion")
	if assertion == "" {
		return nil, mp("request", "Missing assertion.")
	}

	g, rej := parseGrant(assertion)
	if rej != nil {
		return nil, rej
	}
	*clientID = g.iss
	client, ok := s.client(g.iss)
	if !ok {
		return nil, mp("MP-100", "")
	}
	now := s.cfg.Now()

	// The key: a registered one by kid, or the leaf of a trusted chain.
	var pub crypto.PublicKey
	amr := "virksomhetssertifikat"
	if g.kid != "" {
		if pub, ok = client.Keys[g.kid]; !ok {
			return nil, mp("kid", "")
		}
		amr = "private_key_jwt"
	} else {
		if rej := verifyChain(g.x5c, s.roots, now); rej != nil {
			return nil, rej
		}
		org, ok := orgid.FromCertificate(g.x5c[0])
		if !ok {
			return nil, mp("MP-122", "The certificate carries no organisation number (organizationIdentifier NTRNO-<orgnr>, or serialNumber).")
		}
		if org != client.OrgNumber {
			return nil, mp("MP-122", "Client orgno "+client.OrgNumber+" does not match certificate orgno "+org+".")
		}
		pub = g.x5c[0].PublicKey
	}
	method, _ := signer.Method(g.alg) // RS256, RS384 or RS512 (readHeader)
	if err := method.Verify(g.input, g.sig, pub); err != nil {
		if errors.Is(err, jwt.ErrInvalidKeyType) {
			return nil, mp("MP-124", "The key is not an RSA key, so it cannot verify "+g.alg+".")
		}
		return nil, mp("MP-124", "The signature does not verify with the key named in the header.")
	}

	if rej := audience(g.aud, s.Issuer(), s.TokenURL()); rej != nil {
		return nil, rej
	}

	skew := s.cfg.ClockSkew
	switch {
	case g.iat.After(now.Add(skew)):
		return nil, mp("iat", "iat is "+g.iat.Sub(now).Round(time.Second).String()+" ahead of the server clock; at most "+skew.String()+" is allowed.")
	case !g.exp.After(g.iat):
		return nil, mp("MP-130", "exp is not after iat.")
	case g.exp.Sub(g.iat) > s.cfg.MaxGrantLifetime:
		return nil, mp("MP-130 long", "exp - iat is "+g.exp.Sub(g.iat).String()+"; at most "+s.cfg.MaxGrantLifetime.String()+" is allowed.")
	case now.Add(-skew).After(g.exp):
		return nil, mp("MP-130", "exp was "+now.Sub(g.exp).Round(time.Second).String()+" ago.")
	}

	if !s.useJTI(g.jti, g.exp) {
		return nil, mp("MP-012", "")
	}

	// What the client asks for.
	consumer := client.OrgNumber
	if g.consumerOrg != "" {
		if g.consumerOrg == client.OrgNumber {
			return nil, mp("consumer_org", "")
		}
		if !slices.Contains(client.DelegatedBy, g.consumerOrg) {
			return nil, mp("MP-251", g.consumerOrg+" has not delegated access to the scope "+g.scope+" to supplier "+client.OrgNumber)
		}
		consumer = g.consumerOrg
	}
	var sysUserOrg string
	var consent, asked *Consent
	if g.hasAuthz {
		if sysUserOrg, asked, rej = parseAuthzDetails(g.authzDetails); rej != nil {
			return nil, rej
		}
		if sysUserOrg != "" && !slices.Contains(client.SystemUserOrgs, sysUserOrg) {
			return nil, mp("MP-303", "No system user of organisation "+sysUserOrg+" is tied to this client's system.")
		}
		if asked != nil {
			if consent, rej = s.consentFor(*asked, consumer, now); rej != nil {
				return nil, rej
			}
		}
	}
	scopes := strings.Fields(g.scope)
	without := func(drop func(string) bool) string {
		return strings.Join(slices.DeleteFunc(slices.Clone(scopes), drop), " ")
	}
	if login := without(func(sc string) bool { return sc != "openid" && sc != "profile" }); login != "" {
		return nil, mp("MP-201", login) // ID-porten's user login, never Maskinporten's
	}
	if bad := without(func(sc string) bool { return slices.Contains(client.Scopes, sc) }); bad != "" {
		return nil, mp("MP-200", bad)
	}

	// The access token, with the claims Maskinporten's tokens carry.
	scope := strings.Join(scopes, " ")
	claims := map[string]any{
		"iss":        s.Issuer(),
		"client_id":  client.ID,
		"client_amr": amr,
		"token_type": "Bearer",
		"scope":      scope,
		"consumer":   orgID(consumer),
		"iat":        now.Unix(),
		"exp":        now.Add(s.cfg.TokenLifetime).Unix(),
		"jti":        randomID(32),
	}
	if len(g.resource) == 1 {
		claims["aud"] = g.resource[0]
	} else if len(g.resource) > 1 {
		claims["aud"] = g.resource
	}
	if g.consumerOrg != "" {
		claims["supplier"] = orgID(client.OrgNumber)
		claims["delegation_source"] = s.URL + "/"
	}
	if g.pid != "" {
		claims["pid"] = g.pid
	}
	var details []map[string]any
	if sysUserOrg != "" {
		details = append(details, map[string]any{
			"type":           systemUserType,
			"systemuser_org": orgID(sysUserOrg),
			// A stable id for the system user of the organisation on the client's system.
			"systemuser_id": []string{uuid.NewSHA1(uuid.NameSpaceURL, []byte("mp-hsm-emulator:systemuser:"+client.ID+":"+sysUserOrg)).String()},
			"system_id":     client.OrgNumber + "_" + client.ID,
		})
	}
	if consent != nil {
		details = append(details, s.consentClaim(consent))
	}
	if details != nil {
		claims["authorization_details"] = details
	}
	at, err := s.sign(claims)
	if err != nil {
		return nil, mp("server_error", err.Error())
	}
	return &tokenAnswer{AccessToken: at, TokenType: "Bearer", ExpiresIn: int64(s.cfg.TokenLifetime / time.Second), Scope: scope}, nil
}

// orgID is an organisation in ISO 6523 notation, as in consumer and supplier.
func orgID(orgnr string) map[string]string {
	return map[string]string{"authority": "iso6523-actorid-upis", "ID": "0192:" + orgnr}
}

// serveMetadata serves Maskinporten's RFC 8414 metadata, restricted to what the emulator does.
func (s *Server) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.Issuer(),
		"token_endpoint":                        s.TokenURL(),
		"jwks_uri":                              s.JWKSURL(),
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt"},
		"grant_types_supported":                 []string{jwtBearer},
		"token_endpoint_auth_signing_alg_values_supported": grantAlgs,
		"authorization_details_types_supported":            []string{systemUserType, consentType},
	})
}

func (s *Server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": []any{s.jwk}})
}

// sign signs an access or Altinn token with Config.Key, RS256 as Maskinporten does.
func (s *Server) sign(claims jwt.MapClaims) (string, error) {
	t := jwt.NewWithClaims(signer.RS256, claims)
	t.Header = map[string]any{"alg": "RS256", "kid": s.jwk.Kid}
	return t.SignedString(s.cfg.Key)
}

// randomID returns n random bytes, base64url, as Maskinporten's token jti.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

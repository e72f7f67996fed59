package emulator

import (
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// altinnExchangePath is the path of Altinn's exchange of a Maskinporten
// token for an Altinn token (platform.altinn.no, platform.tt02.altinn.no).
const altinnExchangePath = "/authentication/api/v1/exchange/maskinporten"

// serveAltinnExchange answers a GET with a valid access token of this
// emulator as Bearer with an Altinn token (a JWT as text/plain expiring with
// it), anything else with 401. Altinn test's ?test=true is ignored.
func (s *Server) serveAltinnExchange(w http.ResponseWriter, r *http.Request) {
	mp, why := s.verifyAccessToken(r.Header.Get("Authorization"))
	if mp == nil {
		s.count(func(st *Stats) { st.AltinnRejected++ })
		s.cfg.Logf("emulator: Altinn exchange refused: %s", why)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	now := s.cfg.Now()
	claims := map[string]any{
		"iss":                           s.URL + "/authentication/api/v1/openid/",
		"iat":                           now.Unix(),
		"nbf":                           now.Unix(),
		"jti":                           randomID(32),
		"token_type":                    "Bearer",
		"urn:altinn:authenticatemethod": "maskinporten",
		"urn:altinn:authlevel":          3,
	}
	if c, ok := mp["consumer"].(map[string]any); ok {
		id, _ := c["ID"].(string)
		claims["urn:altinn:orgNumber"] = strings.TrimPrefix(id, "0192:")
	}
	// The Maskinporten token's claims the Altinn token carries on, if present.
	for _, k := range []string{"exp", "scope", "client_id", "client_amr", "consumer", "supplier", "authorization_details"} {
		if v, ok := mp[k]; ok {
			claims[k] = v
		}
	}
	tok, err := s.sign(claims)
	if err != nil {
		http.Error(w, "cannot sign", http.StatusInternalServerError)
		return
	}
	s.count(func(st *Stats) { st.AltinnExchanges++ })
	s.cfg.Logf("emulator: Altinn exchange for client %v", mp["client_id"])
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(tok))
}

// verifyAccessToken returns the claims of this emulator's Bearer token, or why not.
func (s *Server) verifyAccessToken(authz string) (jwt.MapClaims, string) {
	scheme, tok, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, "no Bearer token"
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(s.Issuer()),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.cfg.Now),
	).ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		return s.cfg.Key.Public(), nil
	})
	if err != nil {
		return nil, err.Error()
	}
	if _, ok := claims["client_id"]; !ok {
		return nil, "not an access token"
	}
	return claims, ""
}

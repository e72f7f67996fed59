package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/signer"
)

// checkTokenRequest asks Maskinporten for a real token, and explains a
// refusal. The token is never shown.
func (r *run) checkTokenRequest(ctx context.Context) Result {
	const check = "token-request"
	cfg := r.cfg
	if len(cfg.Request.Scopes) == 0 || strings.TrimSpace(cfg.ClientID) == "" {
		return skip(check, "give --client-id and --scope to try a real token request")
	}
	switch {
	case r.key.Signer == nil:
		return skip(check, "needs the key and its certificate")
	case r.envr == nil:
		return skip(check, "needs the environment")
	case r.meta != nil && r.meta.err != nil:
		return skip(check, "the metadata could not be read")
	}
	validate := cfg.CheckRequest
	if validate == nil {
		validate = grant.Request.Validate
	}
	if err := validate(cfg.Request); err != nil {
		return Failed(check, ClassUsage, err, "fix the request flags")
	}
	if cfg.KeyID == "" && len(r.key.Signer.Chain()) == 0 {
		return fail(check, ClassToken, nil, "the key has no certificate on the token, so no x5c can be sent: register the key (mp-hsm jwk) and give its --kid, or add the certificate",
			"fix the flags named")
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	gc := &grant.Config{
		ClientID:      strings.TrimSpace(cfg.ClientID),
		Signer:        r.key.Signer,
		Algorithm:     cfg.Algorithm,
		KeyID:         cfg.KeyID,
		Environment:   *r.envr,
		AllowInsecure: cfg.AllowInsecure,
		HTTPClient:    cfg.HTTPClient,
		Logger:        cfg.Logger,
	}
	tok, err := gc.Exchange(ctx, cfg.Request)
	if err != nil {
		class := ClassOf(err, ClassUnavailable)
		hint := "check the network and Maskinporten's status (status.digdir.no)"
		if class != ClassUnavailable {
			// Refused before anything was sent (an expired certificate,
			// a bad setting): the network is not to blame.
			hint = "nothing was sent to Maskinporten: fix what the message (and any failed check above) says"
		}
		var te *grant.TokenError // its message has the code, description and any clock skew
		if errors.As(err, &te) {
			hint = te.Hint
			if hint == "" {
				hint = "see Maskinporten's error documentation for the code"
			}
		}
		return fail(check, class, err, err.Error(), hint)
	}
	return ok(check, fmt.Sprintf("Maskinporten issued a token for scope %q, valid %d s (not shown)", tok.Scope, tok.ExpiresIn))
}

// KeyAgeWarn is the key-set age the registered-key check warns at: a
// registered key is valid for a year (MP-121).
const KeyAgeWarn = 335 * 24 * time.Hour

// RegisteredKeysFunc reads the client's registered key set through the
// self-service API, authenticating with s (the key found) or a key beside it.
type RegisteredKeysFunc func(ctx context.Context, s signer.Signer) (*admin.KeySet, error)

// checkRegisteredKey looks the kid up in the client's registered keys. The
// API dates only the set, so a set last changed KeyAgeWarn ago warns.
func (r *run) checkRegisteredKey(ctx context.Context) Result {
	const check = "registered-key"
	cfg := r.cfg
	if cfg.RegisteredKeys == nil {
		return Result{} // not run
	}
	switch {
	case cfg.KeyID == "" || strings.TrimSpace(cfg.ClientID) == "":
		return skip(check, "give --client-id and --kid to look the key up in the self-service API")
	case r.key.Signer == nil:
		return skip(check, "needs the key and its certificate")
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	set, err := cfg.RegisteredKeys(ctx, r.key.Signer)
	if err != nil {
		class := ClassOf(err, ClassUnavailable)
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			class = ClassRefused
		}
		return fail(check, class, err, err.Error(), "check --admin-client-id and --admin-api, that the self-service client has idporten:dcr.read, "+
			"and that its key (--admin-key-id or --admin-key-label, else the key checked) has the enterprise certificate")
	}
	client := strings.TrimSpace(cfg.ClientID)
	if !slices.Contains(set.Kids(), cfg.KeyID) {
		return fail(check, ClassRefused, nil, fmt.Sprintf("kid %q is not registered on client %s (it has: %s)", cfg.KeyID, client, strings.Join(set.Kids(), ", ")),
			fmt.Sprintf("register it: mp-hsm jwk --kid %s | mp-hsm admin keys add --client-id %s -", cfg.KeyID, client))
	}
	day := "at a date the API did not give"
	if !set.LastUpdated.IsZero() {
		day = "on " + set.LastUpdated.UTC().Format("2006-01-02")
		if age := r.now().Sub(set.LastUpdated); age >= KeyAgeWarn {
			return warn(check, fmt.Sprintf("kid %q is registered on client %s, but the key set was last changed %s (%s ago): every key in it is that old or older, "+
				"and a registered key is valid for a year (MP-121)", cfg.KeyID, client, day, inspect.Duration(age)),
				fmt.Sprintf("rotate: mp-hsm admin keys rotate --client-id %s --label NEW --scope SCOPE --remove %s", client, cfg.KeyID))
		}
	}
	return ok(check, fmt.Sprintf("kid %q is registered on client %s (key set last changed %s)", cfg.KeyID, client, day))
}

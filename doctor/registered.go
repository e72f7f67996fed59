package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/signer"
)

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
	if !set.LastUpdated.IsZero() {
		if age := r.now().Sub(set.LastUpdated); age >= KeyAgeWarn {
			return warn(check, fmt.Sprintf("kid %q is registered on client %s, but the key set was last changed on %s (%s ago): every key in it is that old or older, "+
				"and a registered key is valid for a year (MP-121)", cfg.KeyID, client, set.LastUpdated.UTC().Format("2006-01-02"), inspect.Duration(age)),
				fmt.Sprintf("rotate: mp-hsm admin keys rotate --client-id %s --label NEW --scope SCOPE --remove %s", client, cfg.KeyID))
		}
	}
	day := "at a date the API did not give"
	if !set.LastUpdated.IsZero() {
		day = "on " + set.LastUpdated.UTC().Format("2006-01-02")
	}
	return ok(check, fmt.Sprintf("kid %q is registered on client %s (key set last changed %s)", cfg.KeyID, client, day))
}

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/xrash/smetrics"

	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// keySetup is what the key flags resolve to.
type keySetup struct {
	cfg          p11.Config
	moduleSource string   // "flag", "uri" or "default"
	pinFrom      string   // where the PIN comes from, for messages
	fromEnv      []string // the selectors (NAME=value) that came from the environment, for messages
}

// errNoCgo is a token asked of a build without cgo: exit 2, the token is fine.
var errNoCgo = errors.New("this mp-hsm was built without cgo: PKCS#11 tokens need a cgo build (CGO_ENABLED=1); --p12 works")

// resolveKey turns the key flags into a p11.Config; the PIN is read later.
func (e *env) resolveKey(c *cli.Context) (*keySetup, error) {
	if hsm.Available() != nil {
		return nil, usageErr(errNoCgo)
	}
	ks := &keySetup{}
	var uri *pkcs11uri.URI
	cfg := &ks.cfg
	sel, fromEnv := selectors(c)
	ks.fromEnv = fromEnv
	if raw := sel["key"]; raw != "" {
		u, err := pkcs11uri.Parse(raw)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--key: %w", err))
		}
		uri = u
		if c.String("module") != "" { // --module wins: the URI's module is not looked for
			v := *u
			v.ModuleName, v.ModulePath = "", ""
			u = &v
		}
		if *cfg, err = p11.ConfigFromURI(u); err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		if cfg.Module != "" {
			ks.moduleSource = "uri"
		}
	}
	cfg.Logger = e.log
	// What modules write while they load is shown only if no token is found;
	// serve (which logs) and doctor (which diagnoses) show it always.
	cfg.ModuleOptions.HoldLoadOutput = true
	if m := c.String("module"); m != "" {
		cfg.Module, ks.moduleSource = m, "flag"
	}
	if s := sel["slot"]; s != "" {
		id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 0)
		if err != nil {
			return nil, usagef("--slot %q: want the decimal slot ID the module reports (see mp-hsm list)", s)
		}
		if cfg.Token.SlotID != nil && uint(id) != *cfg.Token.SlotID {
			return nil, usagef("--slot %d and the --key URI's slot-id=%d disagree", id, *cfg.Token.SlotID)
		}
		v := uint(id)
		cfg.Token.SlotID = &v
	}
	for _, m := range []struct {
		name string
		dst  *string
		attr string
	}{{"token-label", &cfg.Token.Label, "token"}, {"token-serial", &cfg.Token.Serial, "serial"}, {"key-label", &cfg.Key.Label, "object"}} {
		if v := sel[m.name]; v != "" && *m.dst != "" && *m.dst != v {
			return nil, usagef("--%s %q and the --key URI's %s=%q disagree", m.name, v, m.attr, *m.dst)
		} else if v != "" {
			*m.dst = v
		}
	}
	if h := sel["key-id"]; h != "" {
		id, err := parseKeyID("--key-id", h)
		if err != nil {
			return nil, err
		}
		if cfg.Key.ID != nil && string(cfg.Key.ID) != string(id) {
			return nil, usagef("--key-id %x and the --key URI's id disagree", id)
		}
		cfg.Key.ID = id
	}
	if f := c.String("chain-file"); f != "" {
		var err error
		if cfg.ExtraChain, err = readCertFile("--chain-file", f); err != nil {
			return nil, err
		}
	}
	var explicit, prompt hsm.PINSource
	explicit, prompt, ks.pinFrom = e.pinSources(c.String("pin-file"), uri, cfg.PIN)
	cfg.PIN = explicit
	cfg.Login = hsm.LoginOptions{AllowFinalTry: c.Bool("allow-final-pin-try"), Prompt: prompt}
	if cfg.Module == "" {
		p, err := hsm.FindDefaultModule()
		if err != nil {
			return nil, withCode(exitToken, fmt.Errorf("%w; give --module", err))
		}
		cfg.Module, ks.moduleSource = p, "default"
	}
	// dlopen of a FIFO or device would hang the process for good.
	if err := safefile.CheckRegular(cfg.Module); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withCode(exitToken, fmt.Errorf("PKCS#11 module not found: %w%s", err, moduleSuggestion(cfg.Module)))
		}
		return nil, withCode(exitToken, fmt.Errorf("PKCS#11 module %w", err))
	}
	return ks, nil
}

// openSigner opens the key the flags name: in --p12, or on a token, where
// sel (if not nil) chooses the key instead of the key flags.
func (e *env) openSigner(c *cli.Context, sel *hsm.KeySelector) (keySigner, error) {
	if c.String("p12") != "" {
		return e.openP12(c)
	}
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, err
	}
	if sel != nil {
		ks.cfg.Key, ks.fromEnv = *sel, nil
	}
	s, err := p11.Open(ks.cfg)
	if err != nil {
		return nil, ks.explain(err)
	}
	return s, nil
}

// warnAlwaysAuthenticate warns of a key that wants the PIN for each signature:
// on a Buypass or Commfides card, the signing key, not the authentication key.
func (e *env) warnAlwaysAuthenticate(s signer.Signer) {
	ts, ok := s.(*p11.TokenSigner)
	if !ok {
		return
	}
	if info := ts.Key().Info(); info.AlwaysAuthenticate {
		e.log.Warn("the key asks for the PIN before every signature (CKA_ALWAYS_AUTHENTICATE): it is usually the card's signing key, "+
			"not its authentication key; every grant presents the PIN again (see mp-hsm list)", "key", info.String())
	}
}

// explain adds what to do to an error of opening the key: where a refused
// PIN came from; for a selection error, the flags, variables and module.
func (ks *keySetup) explain(err error) error {
	var pe *hsm.PINError
	if errors.As(err, &pe) && pe.Kind == tokenerr.ErrPINIncorrect {
		return fmt.Errorf("%w\nthe PIN came from %s: correct it there before the next try; a few wrong PINs lock the token", err, ks.pinFrom)
	}
	var se *hsm.SelectionError
	if !errors.As(err, &se) {
		return err
	}
	err = explainKeyError(err)
	if moduleHasNoToken(err) {
		how := map[string]string{"default": "the first default module found", "flag": "--module (MP_HSM_MODULE)", "uri": "the --key URI's module-path"}[ks.moduleSource]
		err = fmt.Errorf("%w\nthe module was %s (%s); if the token is behind another module, choose it with --module PATH", err, ks.cfg.Module, how)
	}
	if len(ks.fromEnv) > 0 {
		err = fmt.Errorf("%w\nfrom the environment: %s (a --key-id, --key-label or --key flag replaces the key's variables; --slot, --token-label or --token-serial the token's)",
			err, strings.Join(ks.fromEnv, ", "))
	}
	return err
}

// explainKeyError adds to a selection error the flags that pick each candidate.
func explainKeyError(err error) error {
	var se *hsm.SelectionError
	if !errors.As(err, &se) {
		return err
	}
	var hints []string
	switch se.Kind {
	case tokenerr.ErrAmbiguousToken, tokenerr.ErrTokenNotFound, tokenerr.ErrSlotNotFound:
		for _, s := range se.Tokens {
			if s.Token != nil && s.Token.Flags.Initialized() {
				hints = append(hints, fmt.Sprintf("--token-label %q or --token-serial %s or --slot %d", s.Token.Label, s.Token.Serial, s.ID))
			}
		}
	case tokenerr.ErrAmbiguousKey, tokenerr.ErrKeyNotFound:
		for _, k := range se.Keys {
			h := "--key-id " + k.IDHex()
			if k.Label != "" {
				h += fmt.Sprintf(" or --key-label %q", k.Label)
			}
			hints = append(hints, h)
		}
	}
	if len(hints) == 0 {
		return err
	}
	return fmt.Errorf("%w\npick one with: %s", err, strings.Join(hints, "; "))
}

// moduleSuggestion names the shared object beside a missing module path
// whose name is at most three edits away, or "".
func moduleSuggestion(path string) string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	best, bestDist := "", 4
	for _, e := range entries {
		name := e.Name()
		if !strings.Contains(name, ".so") || e.IsDir() {
			continue
		}
		if d := smetrics.WagnerFischer(base, name, 1, 1, 2); d < bestDist {
			best, bestDist = filepath.Join(dir, name), d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

// Within each group, a selector given as a flag (or in serve --config) replaces
// the group's variables: a sourced MP_HSM_KEY_ID=01 must not narrow --key-label.
var selectorGroups = [][]string{
	{"key", "key-id", "key-label"},
	{"slot", "token-label", "token-serial"},
}

// selectors returns the selector flags' values by the rule above, and those
// from the environment as NAME=value.
func selectors(c *cli.Context) (vals map[string]string, fromEnv []string) {
	vals = map[string]string{}
	for _, group := range selectorGroups {
		env := map[string]string{}
		given := false
		for _, name := range group {
			v := c.String(name)
			if v == "" {
				continue
			}
			if variable := envOrigin(c, name, v); variable != "" {
				env[name] = variable
			} else {
				given = true
			}
			vals[name] = v
		}
		for _, name := range group {
			if env[name] == "" {
				continue
			}
			if given {
				delete(vals, name)
			} else {
				fromEnv = append(fromEnv, env[name]+"="+vals[name])
			}
		}
	}
	return vals, fromEnv
}

// envOrigin returns the variable that gave flag name its value v, or "".
func envOrigin(c *cli.Context, name, v string) string {
	for _, f := range c.Command.Flags {
		ef, ok := f.(interface{ GetEnvVars() []string })
		if !ok || f.Names()[0] != name {
			continue
		}
		for _, variable := range ef.GetEnvVars() {
			if x, ok := os.LookupEnv(variable); ok && strings.TrimSpace(x) == strings.TrimSpace(v) {
				return variable
			}
		}
	}
	return ""
}

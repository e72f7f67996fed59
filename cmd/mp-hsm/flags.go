package main

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/signer"
)

const (
	catKey  = "Choosing the key"
	catMP   = "Choosing Maskinporten"
	catReq  = "The request"
	catOut  = "Output"
	catServ = "Daemon"
)

// keyFlags choose the module, token and key, and the PIN source.
func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Category: catKey, Name: "module", Usage: "PKCS#11 module `PATH` (default: first found of p11-kit-proxy, OpenSC, SoftHSM2)", EnvVars: []string{"MP_HSM_MODULE"}},
		&cli.StringFlag{Category: catKey, Name: "slot", Usage: "slot `ID` as the module reports it (as pkcs11-tool --slot)", EnvVars: []string{"MP_HSM_SLOT"}},
		&cli.StringFlag{Category: catKey, Name: "token-label", Usage: "token by `LABEL`", EnvVars: []string{"MP_HSM_TOKEN_LABEL"}},
		&cli.StringFlag{Category: catKey, Name: "token-serial", Usage: "token by `SERIAL`", EnvVars: []string{"MP_HSM_TOKEN_SERIAL"}},
		&cli.StringFlag{Category: catKey, Name: "key-id", Usage: "private key by CKA_ID in `HEX` (01, 0a1b)", EnvVars: []string{"MP_HSM_KEY_ID"}},
		&cli.StringFlag{Category: catKey, Name: "key-label", Usage: "private key by CKA_LABEL `LABEL`", EnvVars: []string{"MP_HSM_KEY_LABEL"}},
		&cli.StringFlag{Category: catKey, Name: "key", Usage: "RFC 7512 pkcs11: `URI` of the key (token, serial, slot-id, id, object; module-path, pin-source)", EnvVars: []string{"MP_HSM_KEY"}},
		&cli.StringFlag{Category: catKey, Name: "pin-file", Usage: "read the PIN from `PATH` (trailing newline trimmed); or set MP_HSM_PIN; else a prompt on a terminal", EnvVars: []string{"MP_HSM_PIN_FILE"}},
		&cli.StringFlag{Category: catKey, Name: "chain-file", Usage: "PEM `PATH` of issuer certificates that complete the chain on the token", EnvVars: []string{"MP_HSM_CHAIN_FILE"}},
		&cli.StringFlag{Category: catKey, Name: "p12", Usage: "use the key and chain in the PKCS#12 `FILE` (a soft enterprise certificate) instead of a token; password from MP_HSM_P12_PASSWORD or --p12-password-file", EnvVars: []string{"MP_HSM_P12"}},
		&cli.StringFlag{Category: catKey, Name: "p12-password-file", Usage: "read the PKCS#12 password from `PATH`", EnvVars: []string{"MP_HSM_P12_PASSWORD_FILE"}},
		&cli.BoolFlag{Category: catKey, Name: "allow-final-pin-try", Usage: "present the PIN even when the token says the next wrong PIN locks it", EnvVars: []string{"MP_HSM_ALLOW_FINAL_PIN_TRY"}},
	}
}

// mpFlags choose the Maskinporten client and environment.
func mpFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Category: catMP, Name: "client-id", Usage: "Maskinporten client `ID` (the grant's iss)", EnvVars: []string{"MP_HSM_CLIENT_ID", "MASKINPORTEN_CLIENT_ID"}},
		&cli.StringFlag{Category: catMP, Name: "env", Usage: "environment `NAME`: test or prod (default: from the certificate's issuing CA)", EnvVars: []string{"MP_HSM_ENV"}},
		&cli.StringFlag{Category: catMP, Name: "well-known", Usage: "authorization-server metadata `URL`: its issuer is the aud, its token_endpoint is called", EnvVars: []string{"MP_HSM_WELL_KNOWN"}},
		&cli.StringFlag{Category: catMP, Name: "issuer", Usage: "issuer `URL` (the grant's aud), with --token-endpoint", EnvVars: []string{"MP_HSM_ISSUER"}},
		&cli.StringFlag{Category: catMP, Name: "token-endpoint", Usage: "token endpoint `URL`, with --issuer", EnvVars: []string{"MP_HSM_TOKEN_ENDPOINT"}},
		&cli.StringFlag{Category: catMP, Name: "altinn-exchange", Usage: "Altinn token exchange `URL` (default: the environment's)", EnvVars: []string{"MP_HSM_ALTINN_EXCHANGE"}},
		&cli.StringFlag{Category: catMP, Name: "kid", Usage: "send kid `KID` instead of x5c (a key registered on the client)", EnvVars: []string{"MP_HSM_KID"}},
		&cli.StringFlag{Category: catMP, Name: "alg", Usage: "JWS `ALG`: RS256, RS384 or RS512 (default: RS256 for RSA keys)", EnvVars: []string{"MP_HSM_ALG"}},
		&cli.DurationFlag{Category: catMP, Name: "timeout", Value: 30 * time.Second, Usage: "give up on Maskinporten after `DURATION`, retries included", EnvVars: []string{"MP_HSM_TIMEOUT"}},
		&cli.BoolFlag{Category: catMP, Name: "allow-insecure", Usage: "allow http:// endpoints on hosts that are not loopback", EnvVars: []string{"MP_HSM_ALLOW_INSECURE"}},
	}
}

// requestFlags describe the token asked for.
func requestFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Category: catReq, Name: "scope", Usage: "`SCOPE` to ask for; repeat, or separate several by spaces", EnvVars: []string{"MP_HSM_SCOPE"}},
		&cli.StringSliceFlag{Category: catReq, Name: "resource", Usage: "audience `URL` of the token; repeatable (sent as an array)", EnvVars: []string{"MP_HSM_RESOURCE"}},
		&cli.StringFlag{Category: catReq, Name: "consumer-org", Usage: "`ORGNR` of the organisation that delegated to you in Altinn", EnvVars: []string{"MP_HSM_CONSUMER_ORG"}},
		&cli.StringFlag{Category: catReq, Name: "on-behalf-of", Usage: "legacy iss_onbehalfof `ID`", EnvVars: []string{"MP_HSM_ON_BEHALF_OF"}},
		&cli.StringFlag{Category: catReq, Name: "pid", Usage: "personal identification number `PID` (11 digits)", EnvVars: []string{"MP_HSM_PID"}},
		&cli.StringFlag{Category: catReq, Name: "system-user-org", Usage: "`ORGNR` of the customer whose Altinn system user the token is for", EnvVars: []string{"MP_HSM_SYSTEM_USER_ORG"}},
		&cli.DurationFlag{Category: catReq, Name: "lifetime", Value: grant.DefaultLifetime, Usage: "grant lifetime (exp - iat), at most 120s", EnvVars: []string{"MP_HSM_LIFETIME"}},
	}
}

func concat(groups ...[]cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// keySetup is what the key flags resolve to.
type keySetup struct {
	cfg          signer.Config
	uri          *hsm.URI
	explicitPIN  bool
	tokenChosen  bool
	keyChosen    bool
	moduleSource string // "flag", "uri" or "default"
	pinFrom      string // where the PIN comes from, for messages
}

// resolveKey turns the key flags into a signer.Config. The PIN is not read
// here: the token asks for it when it needs it.
func (e *env) resolveKey(c *cli.Context) (*keySetup, error) {
	ks := &keySetup{}
	cfg := &ks.cfg
	cfg.Logger = e.log
	if raw := c.String("key"); raw != "" {
		u, err := hsm.ParseURI(raw)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--key: %w", err))
		}
		ts, kso, err := u.Selectors()
		if err != nil {
			return nil, usageErr(fmt.Errorf("--key: %w", err))
		}
		ks.uri = u
		cfg.Token, cfg.Key = ts, kso
		if c.String("module") == "" {
			mod, err := u.Module()
			if err != nil {
				return nil, fmt.Errorf("--key: %w", err)
			}
			if mod != "" {
				cfg.Module, ks.moduleSource = mod, "uri"
			}
		}
	}
	if m := c.String("module"); m != "" {
		cfg.Module, ks.moduleSource = m, "flag"
	}
	if s := c.String("slot"); s != "" {
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
	if err := merge("--token-label", c.String("token-label"), &cfg.Token.Label, "token"); err != nil {
		return nil, err
	}
	if err := merge("--token-serial", c.String("token-serial"), &cfg.Token.Serial, "serial"); err != nil {
		return nil, err
	}
	if err := merge("--key-label", c.String("key-label"), &cfg.Key.Label, "object"); err != nil {
		return nil, err
	}
	if h := c.String("key-id"); h != "" {
		h = strings.TrimPrefix(strings.ReplaceAll(strings.ToLower(h), ":", ""), "0x")
		id, err := hex.DecodeString(h)
		if err != nil || len(id) == 0 {
			return nil, usagef("--key-id %q: want the CKA_ID in hex, such as 01 or 0a1b (see mp-hsm list)", c.String("key-id"))
		}
		if cfg.Key.ID != nil && string(cfg.Key.ID) != string(id) {
			return nil, usagef("--key-id %s and the --key URI's id disagree", h)
		}
		cfg.Key.ID = id
	}
	if f := c.String("chain-file"); f != "" {
		certs, err := readChainFile(f)
		if err != nil {
			return nil, usageErr(err)
		}
		cfg.ExtraChain = certs
	}
	explicit, prompt := e.pinSources(c.String("pin-file"), ks.uri)
	ks.pinFrom = e.pinOrigin(c.String("pin-file"), ks.uri)
	cfg.PIN = explicit
	cfg.Login = hsm.LoginOptions{AllowFinalTry: c.Bool("allow-final-pin-try"), Prompt: prompt}
	ks.explicitPIN = explicit != nil
	ks.tokenChosen = !cfg.Token.IsZero()
	ks.keyChosen = len(cfg.Key.ID) > 0 || cfg.Key.Label != ""
	if cfg.Module == "" {
		p, err := hsm.FindDefaultModule()
		if err != nil {
			return nil, withCode(exitToken, fmt.Errorf("%w; give --module", err))
		}
		cfg.Module, ks.moduleSource = p, "default"
	}
	// A module is loaded with dlopen, which no signal interrupts: a FIFO
	// or a device there would hang the process for good.
	if err := safefile.CheckRegular(cfg.Module); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withCode(exitToken, fmt.Errorf("PKCS#11 module not found: %w", err))
		}
		return nil, withCode(exitToken, fmt.Errorf("PKCS#11 module %w", err))
	}
	return ks, nil
}

func merge(flag, val string, dst *string, attr string) error {
	if val == "" {
		return nil
	}
	if *dst != "" && *dst != val {
		return usagef("%s %q and the --key URI's %s=%q disagree", flag, val, attr, *dst)
	}
	*dst = val
	return nil
}

func readChainFile(path string) ([]*x509.Certificate, error) {
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, fmt.Errorf("--chain-file %w", err)
	}
	certs, err := signer.ReadCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("--chain-file %s: %w", path, err)
	}
	return certs, nil
}

// keySigner is the key a command signs with: on a token, or in a PKCS#12
// file.
type keySigner interface {
	signer.Signer
	Close() error
}

// fileKey is a PKCS#12 key; it holds nothing to close.
type fileKey struct{ *signer.FileSigner }

func (fileKey) Close() error { return nil }

// openP12 reads the --p12 file with the password from MP_HSM_P12_PASSWORD
// or --p12-password-file.
func (e *env) openP12(c *cli.Context) (keySigner, error) {
	path := c.String("p12")
	var password string
	if f := c.String("p12-password-file"); f != "" {
		pw, err := e.readPINFile(f)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--p12-password-file: %w", err))
		}
		password = string(pw)
		clear(pw)
	} else {
		password = e.getenv("MP_HSM_P12_PASSWORD")
	}
	fs, err := signer.FromPKCS12File(path, password)
	if err != nil {
		return nil, withCode(exitToken, fmt.Errorf("--p12: %w", err))
	}
	return fileKey{fs}, nil
}

// openSigner opens the key the flags name: on a token, or in --p12.
func (e *env) openSigner(c *cli.Context) (keySigner, *keySetup, error) {
	if c.String("p12") != "" {
		s, err := e.openP12(c)
		return s, &keySetup{}, err
	}
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, nil, err
	}
	s, err := signer.Open(ks.cfg)
	if err != nil {
		return nil, ks, explainPINError(e.explainKeyError(err), ks)
	}
	return s, ks, nil
}

// warnAlwaysAuthenticate warns when the chosen key asks for the PIN before
// every signature: on a Buypass or Commfides card that is the signing
// (non-repudiation) key, not the authentication key grants are for.
func (e *env) warnAlwaysAuthenticate(s *signer.TokenSigner) {
	if info := s.Key().Info(); info.AlwaysAuthenticate {
		e.log.Warn("the key asks for the PIN before every signature (CKA_ALWAYS_AUTHENTICATE): it is usually the card's signing key, "+
			"not its authentication key; every grant presents the PIN again (see mp-hsm list)", "key", info.String())
	}
}

// explainPINError says where a PIN the token refused came from, and what to
// do: a wrong PIN is never retried, and the next ones lock the token.
func explainPINError(err error, ks *keySetup) error {
	var pe *hsm.PINError
	if !errors.As(err, &pe) || pe.Kind != hsm.ErrPINIncorrect {
		return err
	}
	return fmt.Errorf("%w\nthe PIN came from %s: correct it there before the next try; a few wrong PINs lock the token", err, ks.pinFrom)
}

// explainKeyError adds what to do to selection errors: which flag picks
// which token or key.
func (e *env) explainKeyError(err error) error {
	var se *hsm.SelectionError
	if !errors.As(err, &se) {
		return err
	}
	var hints []string
	switch se.Kind {
	case hsm.ErrAmbiguousToken, hsm.ErrTokenNotFound, hsm.ErrSlotNotFound:
		for _, s := range se.Tokens {
			if s.Token != nil && s.Token.Flags.Initialized() {
				hints = append(hints, fmt.Sprintf("--token-label %q or --token-serial %s or --slot %d", s.Token.Label, s.Token.Serial, s.ID))
			}
		}
	case hsm.ErrAmbiguousKey, hsm.ErrKeyNotFound:
		for _, k := range se.Keys {
			if k.Label != "" {
				hints = append(hints, fmt.Sprintf("--key-id %s or --key-label %q", k.IDHex(), k.Label))
			} else {
				hints = append(hints, "--key-id "+k.IDHex())
			}
		}
	}
	if len(hints) == 0 {
		return err
	}
	return fmt.Errorf("%w\npick one with: %s", err, strings.Join(hints, "; "))
}

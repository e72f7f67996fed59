package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
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
		&cli.StringFlag{Category: catReq, Name: "consent-id", Usage: "`UUID` of an Altinn consent to carry in the token (with --consent-from)", EnvVars: []string{"MP_HSM_CONSENT_ID"}},
		&cli.StringFlag{Category: catReq, Name: "consent-from", Usage: "`URN` of who gave the consent: urn:altinn:person:identifier-no:<fnr> or urn:altinn:organization:identifier-no:<orgnr> (with --consent-id)", EnvVars: []string{"MP_HSM_CONSENT_FROM"}},
		&cli.StringFlag{Category: catReq, Name: "authorization-details", Usage: "RFC 9396 authorization_details `JSON` array, sent as given after the system user's and the consent's", EnvVars: []string{"MP_HSM_AUTHORIZATION_DETAILS"}},
		&cli.DurationFlag{Category: catReq, Name: "lifetime", Value: grant.DefaultLifetime, Usage: "grant lifetime (exp - iat), at most 120s", EnvVars: []string{"MP_HSM_LIFETIME"}},
	}
}

// readCertFile reads the PEM certificates in the file path that flag names.
func readCertFile(flag, path string) ([]*x509.Certificate, error) {
	data, err := safefile.Read(path, safefile.MaxCertificates)
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s %w", flag, err))
	}
	certs, err := signer.ReadCertificates(data)
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s %s: %w", flag, path, err))
	}
	return certs, nil
}

// keySigner is the key a command signs with: on a token or in a PKCS#12 file.
type keySigner interface {
	signer.Signer
	Close() error
}

// fileKey is a PKCS#12 key; it holds nothing to close.
type fileKey struct{ *signer.FileSigner }

func (fileKey) Close() error { return nil }

// openP12 reads --p12 with MP_HSM_P12_PASSWORD or --p12-password-file.
func (e *env) openP12(c *cli.Context) (keySigner, error) {
	password := e.getenv("MP_HSM_P12_PASSWORD")
	if f := c.String("p12-password-file"); f != "" {
		var err error
		if password, err = e.readSecretString("--p12-password-file: password file", f, safefile.MaxPIN); err != nil {
			return nil, err
		}
	}
	fs, err := signer.FromPKCS12File(c.String("p12"), password)
	if err != nil {
		return nil, withCode(exitToken, fmt.Errorf("--p12: %w", err))
	}
	return fileKey{fs}, nil
}

// flagChoice reads a two-valued flag: false for def or "", true for alt.
func flagChoice(c *cli.Context, name, def, alt, want string) (bool, error) {
	switch v := strings.TrimSpace(c.String(name)); v {
	case def, "":
		return false, nil
	case alt:
		return true, nil
	default:
		return false, usagef("--%s %q: want %s", name, v, want)
	}
}

// outputFlag is every command's --output: "token" unless set, so that
// MP_HSM_OUTPUT can be shared (outputFormat reads it as the command's
// default, shown by --help).
func outputFlag(usage, shown string) cli.Flag {
	return &cli.StringFlag{Category: catOut, Name: "output", Aliases: []string{"o"}, Value: "token", DefaultText: shown, Usage: usage, EnvVars: []string{"MP_HSM_OUTPUT"}}
}

func textOutputFlag() cli.Flag { return outputFlag("`FORMAT`: text or json", "text") }

// outputFormat returns --output, one of formats (the first is the default);
// "token", MP_HSM_OUTPUT's shared default, means the default elsewhere.
func outputFormat(c *cli.Context, formats ...string) (string, error) {
	o := c.String("output")
	if o == "token" && !slices.Contains(formats, "token") {
		o = formats[0]
	}
	if slices.Contains(formats, o) {
		return o, nil
	}
	use := formats[0]
	if n := len(formats); n > 1 {
		use = strings.Join(formats[:n-1], ", ") + " or " + formats[n-1]
	}
	return "", usagef("--output %q: use %s", o, use)
}

// writeJSON writes v as JSON indented by two spaces: every --output json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var errNoPIN = errors.New("no PIN given and no terminal to ask on: set MP_HSM_PIN or --pin-file (or use a PIN-pad reader)")

// readSecretFile reads a PIN, password or secret file by safefile.ReadSecret
// (what names it in errors); one that others can read is used with a warning.
func (e *env) readSecretFile(what, path string, max int64) ([]byte, error) {
	b, shared, err := safefile.ReadSecret(path, max)
	if err != nil {
		return nil, fmt.Errorf("%s %w", what, err)
	}
	if shared {
		e.log.Warn("the "+what+" can be read by group or others; restrict it with chmod 600", "path", path)
	}
	return b, nil
}

// readSecretString reads a password or client secret file by readSecretFile
// ("" for none) as a string; an error is a usage error.
func (e *env) readSecretString(what, path string, max int64) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := e.readSecretFile(what, path, max)
	defer clear(b)
	return string(b), usageErr(err)
}

// pinSources returns the PIN source (--pin-file, MP_HSM_PIN, then the URI's),
// read when the token asks, the terminal prompt, and the source's name.
func (e *env) pinSources(pinFile string, uri *pkcs11uri.URI, fromURI hsm.PINSource) (explicit, prompt hsm.PINSource, origin string) {
	origin = "the terminal"
	switch {
	case pinFile != "":
		origin = "the PIN file " + pinFile
	case e.getenv("MP_HSM_PIN") != "":
		origin = "MP_HSM_PIN"
		explicit = func() ([]byte, error) { return []byte(e.getenv("MP_HSM_PIN")), nil }
	case uri != nil && uri.PINFile() != "":
		pinFile, origin = uri.PINFile(), "the --key URI's pin-source"
	default:
		explicit = fromURI
		if uri != nil && uri.PINSource != "" {
			origin = "the --key URI's pin-source"
		} else if uri != nil && uri.HasPIN() {
			origin = "the --key URI's pin-value"
		}
	}
	if pinFile != "" {
		explicit = func() ([]byte, error) { return e.readSecretFile("PIN file", pinFile, safefile.MaxPIN) }
	}
	prompt = func() ([]byte, error) { return nil, errNoPIN }
	if isTerminal(e.stdin) {
		fd := int(e.stdin.(*os.File).Fd())
		prompt = func() ([]byte, error) {
			fmt.Fprint(e.stderr, "PIN: ")
			pin, err := term.ReadPassword(fd)
			fmt.Fprintln(e.stderr)
			if err != nil {
				return nil, fmt.Errorf("reading the PIN from the terminal: %w", err)
			}
			if len(pin) == 0 {
				return nil, errNoPIN
			}
			return pin, nil
		}
	}
	return explicit, prompt, origin
}

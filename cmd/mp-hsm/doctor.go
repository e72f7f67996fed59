package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/doctor/tokencheck"
	"github.com/mp-hsm/mp-hsm/grant"
)

func doctorCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "check the whole setup and say what is wrong and how to fix it",
		UsageText: "mp-hsm doctor --slot 0 [--env test|prod | --well-known URL] [--client-id ID --scope SCOPE]",
		Description: "Checks, in order, printing one line per check (ok, warn, fail or skip, the check's name, and\n" +
			"for warn and fail a hint): the PKCS#11 module loads (module); the token is present (token);\n" +
			"its PIN flags (pin: a low count warns; final try or locked fails, and no login is tried);\n" +
			"the login (login: only with MP_HSM_PIN or --pin-file, or on a terminal); the key is found\n" +
			"(key) and signs a random digest that its public key verifies (signature); the certificate\n" +
			"belongs to the key (certificate), is valid now and for 60 more days (validity), is for\n" +
			"authentication (key-usage), comes from a Buypass or Commfides CA (issuer) and holds an\n" +
			"organisation number (org-number); the environment fits the certificate (environment); the\n" +
			"metadata can be fetched (metadata); the local clock is within 2 s (warn) or 5 s (fail) of\n" +
			"the server's Date header (clock); and, only with --client-id and --scope, a real token\n" +
			"request (token-request). The token itself is never shown; nor are the PIN or the grant.\n\n" +
			"--output json prints an array of {check, status, message, hint}.\n\n" +
			"Exit status: 0 when no check failed (warnings allowed); otherwise that of the first failed\n" +
			"check: 2 bad flags or input; 3 module, token, PIN, key or certificate (environment mismatch\n" +
			"included); 4 Maskinporten would refuse the grant: refused token request, or clock skew;\n" +
			"5 metadata or token endpoint unreachable or failing.",
		Flags:  concat(keyFlags(), mpFlags(), requestFlags(), []cli.Flag{textOutputFlag()}),
		Action: func(c *cli.Context) error { return e.doctor(c) },
	}
}

// doctor runs the checks of package doctor on the key and Maskinporten the
// flags choose, printing each line of text as its check ends.
func (e *env) doctor(c *cli.Context) error {
	out, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	cfg := e.doctorConfig(c)
	if out == "text" {
		colour := e.colourOK()
		cfg.Report = func(r doctor.Result) { writeDoctorLine(e.stdout, r, colour) }
	}
	rs := doctor.Run(c.Context, cfg)
	if out == "json" {
		if err := writeJSON(e.stdout, rs); err != nil {
			return err
		}
	} else {
		writeDoctorSummary(e.stdout, rs)
	}
	if first := rs.FirstFailure(); first != nil {
		return withCode(doctorExit(*first), fmt.Errorf("doctor: %d check(s) failed, first %s: %s", rs.Count(doctor.Fail), first.Check, first.Message))
	}
	return nil
}

// doctorConfig fills the doctor's configuration from the flags: the key as
// the key flags choose it (see tokencheck), the environment as token
// chooses it (resolveEnvironment) unless --well-known alone names it, and
// the request as token makes it.
func (e *env) doctorConfig(c *cli.Context) doctor.Config {
	cfg := doctor.Config{
		Key:           e.doctorKey(c),
		KeyID:         c.String("kid"),
		Algorithm:     c.String("alg"),
		WellKnown:     c.String("well-known"),
		ClientID:      c.String("client-id"),
		AllowInsecure: c.Bool("allow-insecure"),
		Timeout:       c.Duration("timeout"),
		Logger:        e.log,
	}
	if cfg.WellKnown == "" || c.String("env") != "" || c.String("issuer") != "" || c.String("token-endpoint") != "" {
		cfg.Environment = func(ctx context.Context, chain []*x509.Certificate) (grant.Environment, string, error) {
			return e.resolveEnvironment(ctx, c, chain)
		}
	}
	req, reqErr := requestFromFlags(c) // errors that name the flags
	cfg.Request = req
	cfg.CheckRequest = func(grant.Request) error { return reqErr }
	return cfg
}

// doctorKey returns the doctor's checks of the key the key flags choose,
// or, when the flags do not resolve, a module check that fails saying why.
func (e *env) doctorKey(c *cli.Context) doctor.KeyFinder {
	ks, err := e.resolveKey(c)
	if err != nil {
		hint := "fix the flag named; see mp-hsm --help"
		if exitCode(err) != exitUsage {
			hint = tokencheck.ModuleHint
		}
		return tokencheck.Failed(err, hint)
	}
	return &tokencheck.Checks{
		Config:        ks.cfg,
		DefaultModule: ks.moduleSource == "default",
		Interactive:   isTerminal(e.stdin),
		OnPINPad:      func() { fmt.Fprintln(e.stderr, "mp-hsm doctor: enter the PIN on the reader's PIN pad") },
		Explain:       e.explainKeyError,
	}
}

// isTerminal reports whether r is a terminal a person can type on.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/mp-hsm/mp-hsm/admin"
	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/doctor/tokencheck"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
	"github.com/mp-hsm/mp-hsm/signer"
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
			"request (token-request); and, only with --admin-client-id, --client-id and --kid, the kid looked up\n" +
			"in the client's keys through Digdir's self-service API (registered-key: missing fails; a key set\n" +
			"last changed 335 days or more ago warns, as registered keys last a year), as the self-service\n" +
			"client authenticated with the key --admin-key-id or --admin-key-label choose on the same token\n" +
			"(the one with the enterprise certificate), else with the key checked. The token itself is\n" +
			"never shown; nor are the PIN or the grant.\n" +
			"With --p12 the checks of the module, token, PIN and login give way to one that opens the\n" +
			"file (key).\n\n" +
			"--output json prints an array of {check, status, message, hint}.\n\n" +
			"Exit status: 0 when no check failed (warnings allowed); otherwise that of the first failed\n" +
			"check: 2 bad flags or input; 3 module, token, PIN, key or certificate (environment mismatch\n" +
			"included); 4 Maskinporten would refuse the grant: refused token request, or clock skew;\n" +
			"5 metadata or token endpoint unreachable or failing.",
		Flags: slices.Concat(keyFlags(), mpFlags(), requestFlags(), []cli.Flag{textOutputFlag(),
			&cli.StringFlag{Category: catAdmin, Name: "admin-client-id", Usage: "the self-service client `ID`: look --kid up in --client-id's registered keys", EnvVars: []string{"MP_HSM_ADMIN_CLIENT_ID"}},
			&cli.StringFlag{Category: catAdmin, Name: "admin-api", Usage: "the self-service API's base `URL` (default: the environment's)", EnvVars: []string{"MP_HSM_ADMIN_API"}},
		}, adminKeyFlags()),
		Action: func(c *cli.Context) error { return e.doctor(c) },
	}
}

// doctor runs package doctor's checks, printing each text line as it ends.
func (e *env) doctor(c *cli.Context) error {
	out, err := outputFormat(c, "text", "json")
	if err != nil {
		return err
	}
	cfg := e.doctorConfig(c)
	if out == "text" {
		// colour only on a terminal, without NO_COLOR or TERM=dumb
		colour := isTerminal(e.stdout) && e.getenv("NO_COLOR") == "" && e.getenv("TERM") != "dumb"
		cfg.Report = func(r doctor.Result) { writeDoctorLine(e.stdout, r, colour) }
	}
	rs := doctor.Run(c.Context, cfg)
	if out == "json" {
		if err := writeJSON(e.stdout, rs); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%d ok, %d warning(s), %d failed, %d skipped\n",
			rs.Count(doctor.OK), rs.Count(doctor.Warn), rs.Count(doctor.Fail), rs.Count(doctor.Skip))
	}
	if first := rs.FirstFailure(); first != nil {
		// The exit code of an error the command made from its flags, else the check's class's.
		code, ok := map[doctor.Class]int{doctor.ClassUsage: exitUsage, doctor.ClassToken: exitToken,
			doctor.ClassRefused: exitRefused, doctor.ClassUnavailable: exitUnavailable}[first.Class]
		if ce := (*codedError)(nil); errors.As(first.Err, &ce) {
			code = ce.code
		} else if !ok {
			code = exitInternal
		}
		return withCode(code, fmt.Errorf("doctor: %d check(s) failed, first %s: %s", rs.Count(doctor.Fail), first.Check, textsafe.EscapeN(first.Message, maxDoctorText)))
	}
	return nil
}

// doctorConfig fills the doctor's configuration from the flags.
func (e *env) doctorConfig(c *cli.Context) doctor.Config {
	var key doctor.KeyFinder = p12Check{e, c}
	if c.String("p12") == "" {
		key = e.doctorKey(c)
	}
	cfg := doctor.Config{
		Key:           key,
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
	if adminID := c.String("admin-client-id"); adminID != "" {
		cfg.RegisteredKeys = func(ctx context.Context, s signer.Signer) (*admin.KeySet, error) {
			sel, err := adminKeyChoice(c) // the key checked unless one is chosen
			if err != nil {
				return nil, err
			}
			if sel != nil {
				open, err := e.clientKeyOpener(c, *sel)
				if err != nil {
					return nil, err
				}
				as, err := open(ctx, s)
				if err != nil {
					return nil, fmt.Errorf("the self-service client's key (--admin-key-id, --admin-key-label): %w", err)
				}
				if cl, ok := as.(io.Closer); ok {
					defer cl.Close()
				}
				s = as
			}
			api, _, err := e.adminAPI(ctx, c, adminID, s)
			if err != nil {
				return nil, err
			}
			return api.List(ctx, strings.TrimSpace(c.String("client-id")))
		}
	}
	req, reqErr := requestFromFlags(c) // errors that name the flags
	cfg.Request = req
	cfg.CheckRequest = func(grant.Request) error { return reqErr }
	return cfg
}

// p12Check is a doctor.KeyFinder over the --p12 file: one check, key.
type p12Check struct {
	e *env
	c *cli.Context
}

func (p p12Check) FindKey(_ context.Context, report func(doctor.Result)) doctor.FoundKey {
	s, err := p.e.openP12(p.c)
	if err != nil {
		report(doctor.Failed("key", doctor.ClassToken, err,
			"check the file and its password (MP_HSM_P12_PASSWORD or --p12-password-file)"))
		return doctor.FoundKey{}
	}
	report(doctor.Result{Check: "key", Status: doctor.OK, Message: "the key in the PKCS#12 file " + p.c.String("p12")})
	return doctor.FoundKey{Key: s, Signer: s, Chain: s.Chain()}
}

// Close closes nothing: a PKCS#12 key holds no resource (fileKey).
func (p12Check) Close() error { return nil }

// isTerminal reports whether stdin or stdout v is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// doctorKey returns the doctor's checks of the key the key flags choose, or
// a failing module check when they do not resolve.
func (e *env) doctorKey(c *cli.Context) doctor.KeyFinder {
	ks, err := e.resolveKey(c)
	if err != nil {
		hint := "fix the flag named; see mp-hsm --help"
		switch {
		case errors.Is(err, errNoCgo):
			hint = "build mp-hsm with CGO_ENABLED=1 (and a C compiler) to use a smart card or HSM, or give --p12 FILE"
		case exitCode(err) != exitUsage:
			hint = tokencheck.ModuleHint
		}
		return tokencheck.Failed(err, hint)
	}
	// what modules write while they load is part of the diagnosis
	ks.cfg.ModuleOptions.HoldLoadOutput = false
	return &tokencheck.Checks{
		Config:        ks.cfg,
		DefaultModule: ks.moduleSource == "default",
		Interactive:   isTerminal(e.stdin),
		OnPINPad:      func() { fmt.Fprintln(e.stderr, "mp-hsm doctor: enter the PIN on the reader's PIN pad") },
		Explain:       explainKeyError,
	}
}

// writeDoctorLine writes one check as a line: status, check, message and,
// for warn or fail, the hint, escaped and bounded (they quote the card).
func writeDoctorLine(w io.Writer, r doctor.Result, colour bool) {
	status := fmt.Sprintf("%-4s", r.Status)
	if colour {
		status = "\x1b[" + map[doctor.Status]string{doctor.OK: "32", doctor.Warn: "33", doctor.Fail: "31", doctor.Skip: "2"}[r.Status] + "m" + status + "\x1b[0m"
	}
	line := fmt.Sprintf("%s  %-13s  %s", status, r.Check, textsafe.EscapeN(r.Message, maxDoctorText))
	if r.Hint != "" && (r.Status == doctor.Warn || r.Status == doctor.Fail) {
		line += "  hint: " + textsafe.EscapeN(r.Hint, maxDoctorText)
	}
	fmt.Fprintln(w, line)
}

const maxDoctorText = 2000

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/doctor"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

// outputFlag is token's and list's --output: "token" unless set, so that
// MP_HSM_OUTPUT can be shared; --help shows shown.
func outputFlag(usage, shown string) cli.Flag {
	return &cli.StringFlag{Category: catOut, Name: "output", Aliases: []string{"o"}, Value: "token", DefaultText: shown, Usage: usage, EnvVars: []string{"MP_HSM_OUTPUT"}}
}

// textOutputFlag is the --output flag of doctor and inspect.
func textOutputFlag() cli.Flag {
	return &cli.StringFlag{Category: catOut, Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "`FORMAT`: text or json", EnvVars: []string{"MP_HSM_OUTPUT"}}
}

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

// tokenJSON is Maskinporten's token response plus expires_at.
type tokenJSON struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
	ExpiresAt   string `json:"expires_at"`
}

// printToken writes tok as token's --output says: token, json or header.
func (e *env) printToken(out string, tok *grant.Token) error {
	switch out {
	case "json":
		return writeJSON(e.stdout, tokenJSON{
			AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresIn: tok.ExpiresIn,
			Scope: tok.Scope, ExpiresAt: tok.Expiry.UTC().Format(time.RFC3339),
		})
	case "header":
		_, err := fmt.Fprintf(e.stdout, "Authorization: Bearer %s\n", tok.AccessToken)
		return err
	}
	_, err := fmt.Fprintln(e.stdout, tok.AccessToken)
	return err
}

// colourOK: colour only on a terminal, without NO_COLOR or TERM=dumb.
func (e *env) colourOK() bool {
	return isTerminal(e.stdout) && e.getenv("NO_COLOR") == "" && e.getenv("TERM") != "dumb"
}

// doctorColours are the ANSI colours of the doctor's statuses.
var doctorColours = map[doctor.Status]string{doctor.OK: "32", doctor.Warn: "33", doctor.Fail: "31", doctor.Skip: "2"}

// writeDoctorLine writes one check as a line: status, check, message and,
// for warn or fail, the hint, escaped and bounded (they quote the card).
func writeDoctorLine(w io.Writer, r doctor.Result, colour bool) {
	status := fmt.Sprintf("%-4s", r.Status)
	if colour {
		status = "\x1b[" + doctorColours[r.Status] + "m" + status + "\x1b[0m"
	}
	line := fmt.Sprintf("%s  %-13s  %s", status, r.Check, textsafe.EscapeN(r.Message, maxDoctorText))
	if r.Hint != "" && (r.Status == doctor.Warn || r.Status == doctor.Fail) {
		line += "  hint: " + textsafe.EscapeN(r.Hint, maxDoctorText)
	}
	fmt.Fprintln(w, line)
}

const maxDoctorText = 2000

// writeDoctorSummary writes the last line of the doctor's text.
func writeDoctorSummary(w io.Writer, rs doctor.Results) {
	fmt.Fprintf(w, "%d ok, %d warning(s), %d failed, %d skipped\n",
		rs.Count(doctor.OK), rs.Count(doctor.Warn), rs.Count(doctor.Fail), rs.Count(doctor.Skip))
}

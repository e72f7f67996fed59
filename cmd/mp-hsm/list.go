package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/inspect"
	"github.com/mp-hsm/mp-hsm/internal/orgid"
	"github.com/mp-hsm/mp-hsm/internal/textsafe"
)

type listCert struct {
	ID          string    `json:"id"`
	Label       string    `json:"label"`
	Subject     string    `json:"subject"`
	CommonName  string    `json:"common_name"`
	Issuer      string    `json:"issuer"`
	OrgNumber   string    `json:"org_number,omitempty"`
	Environment string    `json:"environment,omitempty"`
	NotAfter    time.Time `json:"not_after"`
	DaysLeft    int       `json:"days_left"`
	KeyUsage    []string  `json:"key_usage,omitempty"`
}

type listKey struct {
	ID                 string `json:"id"`
	Label              string `json:"label"`
	Type               string `json:"type"`
	Bits               int    `json:"bits,omitempty"`
	CanSign            bool   `json:"can_sign"`
	AlwaysAuthenticate bool   `json:"always_authenticate"`
	Authentication     bool   `json:"authentication"`
	Certificate        string `json:"certificate,omitempty"`
}

type listToken struct {
	Label        string     `json:"label"`
	Serial       string     `json:"serial"`
	Manufacturer string     `json:"manufacturer"`
	Model        string     `json:"model"`
	Flags        []string   `json:"flags"`
	LoggedIn     bool       `json:"logged_in"`
	Note         string     `json:"note,omitempty"`
	Keys         []listKey  `json:"keys"`
	Certificates []listCert `json:"certificates"`
}

type listSlot struct {
	ID          uint       `json:"slot_id"`
	Description string     `json:"description"`
	Problem     string     `json:"problem,omitempty"`
	Token       *listToken `json:"token,omitempty"`
}

type listOutput struct {
	Module string     `json:"module"`
	Slots  []listSlot `json:"slots"`
}

func (e *env) list(c *cli.Context) error {
	out, err := outputFormat(c, "table", "json")
	if err != nil {
		return err
	}
	ks, err := e.resolveKey(c)
	if err != nil {
		return err
	}
	m, err := hsm.OpenWith(ks.cfg.Module, ks.cfg.ModuleOptions)
	if err != nil {
		return err
	}
	defer m.Close()
	slots, err := m.Slots()
	if err != nil {
		return err
	}
	res := listOutput{Module: m.Path()}
	now := time.Now()
	for _, s := range slots {
		ls := listSlot{ID: s.ID, Description: s.Description, Problem: s.Problem}
		if sel, t := ks.cfg.Token, s.Token; t != nil {
			if sel.SlotID != nil && *sel.SlotID != s.ID || sel.Label != "" && sel.Label != t.Label || sel.Serial != "" && sel.Serial != t.Serial {
				continue // another token was chosen
			}
			if ls.Token, err = e.listToken(m, s, ks, now); err != nil {
				return err
			}
		}
		res.Slots = append(res.Slots, ls)
	}
	if !slices.ContainsFunc(res.Slots, func(s listSlot) bool { return s.Token != nil }) {
		e.showLoadOutput(m.LoadOutput())
	}
	if out == "json" {
		return writeJSON(e.stdout, res)
	}
	return e.printList(res)
}

func (e *env) listToken(m *hsm.Module, s hsm.Slot, ks *keySetup, now time.Time) (*listToken, error) {
	t := s.Token
	lt := &listToken{Label: t.Label, Serial: t.Serial, Manufacturer: t.Manufacturer, Model: t.Model,
		Flags: t.Flags.Names(), Keys: []listKey{}, Certificates: []listCert{}}
	if !t.Flags.Initialized() {
		lt.Note = noteUninitialised
		return lt, nil
	}
	tok, err := m.OpenSlot(s, hsm.TokenOptions{Logger: e.log})
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	if ks.cfg.PIN != nil && t.Flags.LoginRequired() {
		opts := ks.cfg.Login
		opts.Prompt = nil
		if err := tok.Login(ks.cfg.PIN, opts); err != nil {
			return nil, fmt.Errorf("token %q: %w", t.Label, err)
		}
		lt.LoggedIn = true
	} else if t.Flags.LoginRequired() {
		lt.Note = "not logged in: private keys show after login (set MP_HSM_PIN or --pin-file)"
	}
	certs, err := tok.Certificates()
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		org, _ := orgid.FromCertificate(c.Cert)
		lc := listCert{
			ID: fmt.Sprintf("%x", c.ID), Label: c.Label, OrgNumber: org,
			Subject: c.Cert.Subject.String(), CommonName: c.Cert.Subject.CommonName, Issuer: c.Cert.Issuer.CommonName,
			NotAfter: c.Cert.NotAfter.UTC(), DaysLeft: int(math.Floor(c.Cert.NotAfter.Sub(now).Hours() / 24)),
			KeyUsage: inspect.KeyUsageNames(c.Cert.KeyUsage),
		}
		if env, err := grant.EnvironmentForCertificate(c.Cert); err == nil {
			lc.Environment = env.Name
		}
		lt.Certificates = append(lt.Certificates, lc)
	}
	keys, err := tok.Keys()
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		lk := listKey{ID: k.IDHex(), Label: k.Label, Type: k.Type.String(), Bits: k.Bits,
			CanSign: k.CanSign, AlwaysAuthenticate: k.AlwaysAuthenticate, Authentication: k.Authentication()}
		if k.Certificate != nil {
			lk.Certificate = k.Certificate.Cert.Subject.CommonName
		}
		lt.Keys = append(lt.Keys, lk)
	}
	// The module's object order is arbitrary; sort for stable output.
	slices.SortStableFunc(lt.Keys, func(a, b listKey) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Label, b.Label)) })
	slices.SortStableFunc(lt.Certificates, func(a, b listCert) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Label, b.Label)) })
	return lt, nil
}

const noteUninitialised = "token not initialised"

// printList prints tables, every value from the card escaped (a label with
// a newline could forge a row).
func (e *env) printList(res listOutput) error {
	fmt.Fprintf(e.stdout, "Module %s\n", textsafe.Escape(res.Module))
	for _, s := range res.Slots {
		if s.Token == nil {
			what := "(no token)"
			if s.Problem != "" {
				what = "(token unreadable: " + textsafe.Escape(s.Problem) + ")"
			}
			fmt.Fprintf(e.stdout, "\nSlot %d  %s  %s\n", s.ID, textsafe.Escape(s.Description), what)
			continue
		}
		t := s.Token
		if t.Note == noteUninitialised {
			fmt.Fprintf(e.stdout, "\nSlot %d  %s  (%s)\n", s.ID, textsafe.Escape(s.Description), noteUninitialised)
			continue
		}
		fmt.Fprintf(e.stdout, "\nSlot %d  token \"%s\"  serial %s  %s %s\n", s.ID, textsafe.Escape(t.Label), textsafe.Escape(t.Serial), textsafe.Escape(t.Manufacturer), textsafe.Escape(t.Model))
		fmt.Fprintf(e.stdout, "  flags: %s\n", strings.Join(t.Flags, ", "))
		if t.Note != "" {
			fmt.Fprintf(e.stdout, "  note: %s\n", t.Note)
		}
		if len(t.Keys) > 0 {
			w, yesNo := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0), map[bool]string{true: "yes", false: "no"}
			fmt.Fprintf(w, "\n  KEY ID\tLABEL\tTYPE\tSIGN\tPIN EACH USE\tCERTIFICATE\n")
			for _, k := range t.Keys {
				typ := k.Type
				if k.Bits > 0 {
					typ = fmt.Sprintf("%s %d", k.Type, k.Bits)
				}
				cert := dash(textsafe.Escape(k.Certificate))
				if k.Authentication {
					cert += " [authentication]"
				}
				fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", k.ID, dash(textsafe.Escape(k.Label)), typ, yesNo[k.CanSign], yesNo[k.AlwaysAuthenticate], cert)
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if len(t.Certificates) > 0 {
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "\n  CERT ID\tSUBJECT\tORG NR\tISSUER\tENV\tVALID UNTIL\tDAYS LEFT\n")
			for _, c := range t.Certificates {
				fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\n", c.ID, dash(textsafe.Escape(c.CommonName)), dash(c.OrgNumber), textsafe.Escape(c.Issuer), dash(c.Environment), c.NotAfter.Format("2006-01-02"), c.DaysLeft)
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func listCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "show slots, tokens, keys and certificates",
		Description: "Lists the slots of the module with their tokens (label, serial, manufacturer, PIN flags),\n" +
			"the private keys (id, label, type, size, always-authenticate) and the certificates (subject,\n" +
			"org number, issuer, environment, valid until, days left); --slot, --token-label,\n" +
			"--token-serial or --key narrow it to one token. It logs in only when a PIN is given\n" +
			"(MP_HSM_PIN, --pin-file, or the --key URI's pin-source); without one it shows what the token\n" +
			"shows without login, which on most tokens leaves out the private keys, and says so.",
		Flags:  slices.Concat(keyFlags(), []cli.Flag{outputFlag("`FORMAT`: table or json", "table")}),
		Action: func(c *cli.Context) error { return e.list(c) },
	}
}

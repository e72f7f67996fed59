package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/signer/p11"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// servePlan is serve's checked configuration (checkServe).
type servePlan struct {
	specs    []string          // the --listen addresses (none with socket activation alone)
	listen   socket.Options    // how they are opened
	auditLog string            // --audit-log, "" for none
	cfg      daemon.Config     // the daemon's configuration, without Audit
	explain  func(error) error // adds to an OpenSigner error what the flags can do
}

// checkServe is serve's one validation, at start and at each SIGHUP: list
// flags, listeners (activated: systemd's), socket access, the daemon config.
func (e *env) checkServe(c *cli.Context, activated []net.Listener) (*servePlan, error) {
	// A list flag given empty ("--allowed-scopes ,") would read as no list,
	// which allows everything.
	for _, f := range c.Command.Flags {
		sf, ok := f.(*altsrc.StringSliceFlag)
		if !ok || !c.IsSet(sf.Name) || slices.ContainsFunc(c.StringSlice(sf.Name), func(v string) bool { return strings.Trim(v, ", \t\r\n") != "" }) {
			continue
		}
		name := "--" + sf.Name
		if len(sf.EnvVars) > 0 {
			name += " (or " + sf.EnvVars[0] + ")"
		}
		return nil, usagef("%s is given but holds no entry; leave it out for its default, or name at least one value", name)
	}
	p := &servePlan{specs: c.StringSlice("listen"), auditLog: c.String("audit-log")}
	if len(p.specs) == 0 && len(activated) == 0 {
		def := socket.DefaultPath()
		if def == "" {
			return nil, usagef("XDG_RUNTIME_DIR is not set: give --listen unix:PATH")
		}
		p.specs = []string{"unix:" + def}
	}
	tcp := slices.ContainsFunc(activated, func(ln net.Listener) bool { _, ok := ln.Addr().(*net.TCPAddr); return ok })
	for _, s := range p.specs {
		tcp = tcp || strings.HasPrefix(s, "tcp:")
		if !strings.HasPrefix(s, "tcp:") && !strings.HasPrefix(s, "unix:") {
			return nil, usagef("--listen %q: want unix:PATH or tcp:HOST:PORT", s)
		}
	}
	if tcp && c.String("client-secret-file") == "" && !slices.ContainsFunc(e.clients(), func(cs clientSection) bool { return cs.SecretFile != "" }) {
		return nil, usagef("a TCP listener needs --client-secret-file (or a [[client]] with a secret-file): callers on TCP must authenticate with a client id and its secret")
	}
	var mode os.FileMode
	if v := strings.TrimSpace(c.String("socket-mode")); v != "" {
		n, err := strconv.ParseUint(v, 8, 32)
		if err != nil || n == 0 || n&^0o666 != 0 {
			return nil, usagef("--socket-mode %q: want an octal mode of read and write bits, such as 0600, 0660 or 0666", v)
		}
		mode = os.FileMode(n)
	}
	if mode&0o006 != 0 && len(e.clients()) == 0 {
		return nil, usagef("--socket-mode %#o lets every local user connect, and without [[client]] tables in --config nothing else decides who gets tokens: use --socket-group, or add [[client]] tables", mode)
	}
	p.listen = socket.Options{SocketGroup: c.String("socket-group"), SocketMode: mode, AllowRemote: c.Bool("allow-remote")}
	var err error
	if p.cfg, p.explain, err = e.daemonConfig(c); err != nil {
		return nil, err
	}
	return p, nil
}

// reload is SIGHUP: the audit log reopened and checkServe's new plan applied,
// or refused and logged; a change that needs a restart is logged.
func (e *env) reload(c *cli.Context, started *servePlan, activated []net.Listener, srv *daemon.Server, audit *daemon.AuditLog) {
	if audit != nil {
		if err := audit.Reopen(); err != nil {
			e.log.Error("SIGHUP: cannot reopen the audit log; writing on to the file open", "path", audit.Path(), "error", err)
		}
	}
	err := func() error {
		re, nc, err := e.reloadContext(c)
		if err != nil {
			return err
		}
		p, err := re.checkServe(nc, activated)
		if err != nil {
			return err
		}
		if p.auditLog != started.auditLog {
			e.log.Warn("SIGHUP: audit-log changed; the new path applies after a restart", "audit_log", started.auditLog)
		}
		if !slices.Equal(p.specs, started.specs) || p.listen != started.listen {
			e.log.Warn("SIGHUP: listen, socket-mode, socket-group or allow-remote changed; the listeners change after a restart")
		}
		cfg := p.cfg
		cfg.Audit = audit
		cfg.Logger = e.log
		return srv.Reload(cfg)
	}()
	if err != nil {
		e.log.Error("reload refused; the running configuration is kept", "config", c.String("config"), "error", err)
	}
}

// daemonClients builds the daemon's clients from the [[client]] tables.
func (e *env) daemonClients(c *cli.Context) ([]daemon.Client, error) {
	if len(e.clients()) == 0 {
		return nil, nil
	}
	path := e.serveFile.path
	for _, name := range []string{"client-id", "client-secret-file"} {
		if c.IsSet(name) {
			return nil, usagef("config %s has [[client]] tables, and --%s is given too (flag, variable or file): give each client's client-id and secret-file in its table", path, name)
		}
	}
	out := make([]daemon.Client, 0, len(e.serveFile.clients))
	for _, cs := range e.serveFile.clients {
		where := fmt.Sprintf("config %s: client %q", path, cs.Name)
		secret, err := e.readSecretString(where+": secret-file", cs.SecretFile, safefile.MaxSecret)
		if err != nil {
			return nil, err
		}
		dc := daemon.Client{Name: cs.Name, ClientID: strings.TrimSpace(cs.ClientID), Scopes: cs.Scopes, AuthorizationTypes: cs.AuthzTypes,
			Users: cs.Users, Groups: cs.Groups, KeyID: cs.KID, Secret: secret}
		if sel := (hsm.KeySelector{Label: cs.KeyLabel}); cs.KeyID != "" || sel.Label != "" {
			if cs.KeyID != "" {
				if sel.ID, err = parseKeyID(where+": key-id", cs.KeyID); err != nil {
					return nil, err
				}
			}
			if c.String("p12") != "" {
				return nil, usagef("%s: key-id and key-label choose another key on the token; with --p12 there is none", where)
			}
			if dc.OpenKey, err = e.clientKeyOpener(c, sel); err != nil {
				return nil, err
			}
		}
		out = append(out, dc)
	}
	if err := daemon.CheckClients(out); err != nil {
		return nil, usagef("config %s: %v", path, err)
	}
	return out, nil
}

// tokenOpener returns the daemon's OpenSigner for the chosen token key and
// the function that explains its errors with the flags.
func (e *env) tokenOpener(c *cli.Context) (func(context.Context) (signer.Signer, error), func(error) error, error) {
	ks, err := e.resolveKey(c)
	if err != nil {
		return nil, nil, err
	}
	sc := ks.cfg
	sc.ModuleOptions.HoldLoadOutput = false // a daemon logs: what modules write goes with it
	if sc.PIN == nil && sc.Login.Prompt != nil {
		sc.Login.Prompt = e.rememberedPrompt(sc.Login.Prompt)
	}
	var opened atomic.Bool
	open := func(context.Context) (signer.Signer, error) {
		s, err := p11.Open(sc)
		if err == nil && !opened.Load() {
			e.warnAlwaysAuthenticate(s)
		}
		if !opened.Swap(true) && moduleHasNoToken(err) {
			e.log.Warn("the module has no token in any slot; still waiting for one. If the token is behind another module, choose it with --module PATH (MP_HSM_MODULE) or module-path in --key",
				"module", sc.Module, "module_from", ks.moduleSource)
		}
		return s, err
	}
	return open, ks.explain, nil
}

// moduleHasNoToken reports a selection that failed because no slot holds an
// initialised token: more often a wrong module than a card not inserted.
func moduleHasNoToken(err error) bool {
	var se *hsm.SelectionError
	if !errors.As(err, &se) || se.Kind != tokenerr.ErrNoToken {
		return false
	}
	for _, s := range se.Tokens {
		if s.Token != nil && s.Token.Flags.Initialized() {
			return false
		}
	}
	return true
}

// clientKeyOpener returns a client's OpenKey: the key id and label choose,
// found through the daemon signer's session (no second login).
func (e *env) clientKeyOpener(c *cli.Context, sel hsm.KeySelector) (func(context.Context, signer.Signer) (signer.Signer, error), error) {
	var extra []*x509.Certificate
	if f := c.String("chain-file"); f != "" {
		var err error
		if extra, err = readCertFile("--chain-file", f); err != nil {
			return nil, err
		}
	}
	return func(_ context.Context, primary signer.Signer) (signer.Signer, error) {
		ts, ok := primary.(*p11.TokenSigner)
		if !ok {
			return nil, fmt.Errorf("key %s: the daemon's key is not on a token", sel)
		}
		key, err := ts.Key().Token().FindKey(sel)
		if err != nil {
			return nil, err
		}
		return p11.New(key, p11.Options{ExtraChain: extra})
	}, nil
}

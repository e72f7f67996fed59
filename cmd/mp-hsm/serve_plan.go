package main

import (
	"net"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/daemon/socket"
)

// servePlan is serve's checked configuration, made by checkServe at start
// and at each SIGHUP alike.
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
	if err := emptyListFlag(c); err != nil {
		return nil, err
	}
	p := &servePlan{specs: c.StringSlice("listen"), auditLog: c.String("audit-log")}
	if len(p.specs) == 0 && len(activated) == 0 {
		def := socket.DefaultPath()
		if def == "" {
			return nil, usagef("XDG_RUNTIME_DIR is not set: give --listen unix:PATH")
		}
		p.specs = []string{"unix:" + def}
	}
	tcp := false
	for _, s := range p.specs {
		if strings.HasPrefix(s, "tcp:") {
			tcp = true
		} else if !strings.HasPrefix(s, "unix:") {
			return nil, usagef("--listen %q: want unix:PATH or tcp:HOST:PORT", s)
		}
	}
	for _, ln := range activated {
		if _, ok := ln.Addr().(*net.TCPAddr); ok {
			tcp = true
		}
	}
	if tcp && c.String("client-secret-file") == "" && !e.clientWithSecret() {
		return nil, usagef("a TCP listener needs --client-secret-file (or a [[client]] with a secret-file): callers on TCP must authenticate with a client id and its secret")
	}
	mode, err := socketMode(c)
	if err != nil {
		return nil, err
	}
	if mode&0o006 != 0 && !e.hasClients() {
		return nil, usagef("--socket-mode %#o lets every local user connect, and without [[client]] tables in --config nothing else decides who gets tokens: use --socket-group, or add [[client]] tables", mode)
	}
	p.listen = socket.Options{SocketGroup: c.String("socket-group"), SocketMode: mode, AllowRemote: c.Bool("allow-remote")}
	if p.cfg, p.explain, err = e.daemonConfig(c); err != nil {
		return nil, err
	}
	return p, nil
}

// reload is SIGHUP: the audit log is reopened, and what checkServe makes
// afresh is applied by Server.Reload, or refused and logged, keeping the
// running configuration. What needs a restart is logged when it changed.
func (e *env) reload(c *cli.Context, started *servePlan, activated []net.Listener, srv *daemon.Server, audit *daemon.AuditLog) {
	if audit != nil {
		if err := audit.Reopen(); err != nil {
			e.log.Error("SIGHUP: cannot reopen the audit log; writing on to the file open", "path", audit.Path(), "error", err)
		}
	}
	err := e.reloadContext(c, func(re *env, nc *cli.Context) error {
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
	})
	if err != nil {
		e.log.Error("reload refused; the running configuration is kept", "config", c.String("config"), "error", err)
	}
}

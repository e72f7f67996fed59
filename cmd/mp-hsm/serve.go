package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/signer"
)

// drainTimeout bounds shutdown: exit within 10 s of SIGTERM.
const drainTimeout = 9 * time.Second

func serveCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the token daemon: hold the card or HSM and serve tokens to local programs",
		UsageText: "mp-hsm serve --slot 0 --client-id ID [--listen unix:PATH] [--listen tcp:127.0.0.1:8400 --client-secret-file FILE]\n" +
			"curl --unix-socket $XDG_RUNTIME_DIR/mp-hsm.sock -d grant_type=client_credentials -d scope=SCOPE http://mp-hsm/token",
		Description: "Logs in once and serves Maskinporten tokens, cached and refreshed before they expire, to\n" +
			"every local program: POST /token takes an OAuth2 client-credentials form (grant_type=\n" +
			"client_credentials, scope, and optional resource, consumer_org, pid, system_user_org,\n" +
			"altinn=true, and authorization_details for a client whose authorization-types list its types)\n" +
			"and answers in Maskinporten's token-response shape, so any OAuth2 client library\n" +
			"can use it as its token URL. GET /healthz, /readyz and /metrics (Prometheus) too.\n\n" +
			"The default listener is unix:$XDG_RUNTIME_DIR/mp-hsm.sock (/run/mp-hsm/mp-hsm.sock as root),\n" +
			"mode 0600 (0660 with --socket-group). TCP is loopback only unless --allow-remote, and callers\n" +
			"must authenticate with HTTP Basic: the client id and the secret in --client-secret-file.\n" +
			"Sockets passed by systemd (socket activation) are used when no --listen is given.\n\n" +
			"A removed card or a device error makes the daemon not ready; it reconnects by itself. A PIN\n" +
			"the token refuses is never retried: at start serve exits 3, or with --pin-refused wait stays up,\n" +
			"not ready, until SIGHUP or a restart. SIGHUP re-reads the PIN, secret and chain files and logs\n" +
			"in again, keeping cached tokens if the key is the same; SIGTERM drains and exits.\n\n" +
			"Prefer --pin-file to MP_HSM_PIN: an environment variable stays readable in /proc/PID/environ\n" +
			"by the same user and root for the life of the daemon.\n\n" +
			"Callers are bounded each (a caller is a uid on the unix socket, an address on TCP): at most\n" +
			"--max-concurrent-per-caller of the --max-concurrent requests to Maskinporten, and at most\n" +
			"--max-keys-per-caller requests and --max-resources-per-caller resources in the cache.\n" +
			"Failed TCP authentication is logged (once a minute per address) and, after 5 failures,\n" +
			"answered ever more slowly (up to 1 s) to that address.\n\n" +
			"--config FILE (TOML) sets any option below by its long name (a flag or MP_HSM_* variable\n" +
			"wins over the file) and may hold [[client]] tables, one per Maskinporten client:\n" +
			"  [[client]]\n" +
			"  name        = \"ledger\"                 # what callers send as client_id\n" +
			"  client-id   = \"0b7f...\"                # the Maskinporten client (the grant's iss); default: name\n" +
			"  scopes      = [\"altinn:instances.*\"]   # what callers may ask for; default: --allowed-scopes\n" +
			"  users       = [\"ledger\", \"1001\"]       # unix socket callers admitted, by name or uid\n" +
			"  groups      = [\"mp-users\"]             # ... or by group (primary or supplementary)\n" +
			"  secret-file = \"/etc/mp-hsm/ledger.secret\"  # TCP callers: HTTP Basic name + this secret\n" +
			"  kid         = \"\"   # sent instead of x5c; key-id, key-label: another key on the same token\n" +
			"A caller names its client as client_id (form or HTTP Basic user); naming none, it gets the\n" +
			"one client it is admitted to, if exactly one. Anything else is refused before anything is\n" +
			"signed. Without [[client]] tables, --client-id is the one client, for every caller on the\n" +
			"socket. --audit-log PATH writes one JSON line per answered token request (who, which client,\n" +
			"what, outcome; never a token or secret); no token is sent without its line (--audit-failure).\n" +
			"SIGHUP reopens the audit log and reads the file (flags and variables as at start) again; what\n" +
			"start would refuse is refused and logged, and the running configuration kept. The file must be\n" +
			"one only its owner and root can change; a key set twice or an empty list is refused. See\n" +
			"docs/daemon.md.",
		Flags:  withConfigFile(slices.Concat(keyFlags(), mpFlags(), serveFlags())),
		Before: func(c *cli.Context) error { return e.applyConfigFile(c) },
		Action: func(c *cli.Context) error { return e.serve(c) },
	}
}

func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Category: catServ, Name: "listen", Usage: "`ADDR` to listen on: unix:PATH or tcp:HOST:PORT; repeatable (default: unix:$XDG_RUNTIME_DIR/mp-hsm.sock)", EnvVars: []string{"MP_HSM_LISTEN"}},
		&cli.StringFlag{Category: catServ, Name: "socket-group", Usage: "`GROUP` (name or id) that may use the unix socket (mode 0660 instead of 0600)", EnvVars: []string{"MP_HSM_SOCKET_GROUP"}},
		&cli.BoolFlag{Category: catServ, Name: "allow-remote", Usage: "allow TCP listeners on addresses that are not loopback", EnvVars: []string{"MP_HSM_ALLOW_REMOTE"}},
		&cli.StringSliceFlag{Category: catServ, Name: "allowed-hosts", Usage: "host `NAME`s TCP callers may send in the Host header besides localhost, loopback addresses and the listen address (repeatable, or separated by spaces or commas); others get 421, against DNS rebinding", EnvVars: []string{"MP_HSM_ALLOWED_HOSTS"}},
		&cli.StringFlag{Category: catServ, Name: "audit-failure", Value: "refuse", Usage: "when an audit line cannot be written (a full disk): `refuse` the token (503), or serve it all the same; counted and logged either way", EnvVars: []string{"MP_HSM_AUDIT_FAILURE"}},
		&cli.StringFlag{Category: catServ, Name: "pin-refused", Value: "exit", Usage: "when the token refuses the PIN at start: `exit` with status 3, or wait: stay up, not ready (/readyz says why), never presenting the PIN again until SIGHUP or a restart; for supervisors that restart what exits (Kubernetes), where each restart would spend a PIN try", EnvVars: []string{"MP_HSM_PIN_REFUSED"}},
		&cli.StringFlag{Category: catServ, Name: "client-secret-file", Usage: "`PATH` of the secret TCP callers must send (HTTP Basic, with the client id)", EnvVars: []string{"MP_HSM_CLIENT_SECRET_FILE"}},
		&cli.StringSliceFlag{Category: catServ, Name: "allowed-scopes", Usage: "`SCOPE`s callers may ask for (repeatable, or separated by spaces or commas; 'prefix*' allowed); default: any", EnvVars: []string{"MP_HSM_ALLOWED_SCOPES"}},
		&cli.StringSliceFlag{Category: catServ, Name: "allowed-resources", Usage: "resource `URL`s (token audiences) callers may ask for (repeatable, or separated by spaces or commas; 'prefix*' allowed); others get 400 invalid_target; default: any, within --max-resources-per-caller", EnvVars: []string{"MP_HSM_ALLOWED_RESOURCES"}},
		&cli.IntFlag{Category: catServ, Name: "max-resources-per-caller", Value: 16, Usage: "at most `N` distinct resources cached for one caller (a uid on the unix socket, an address on TCP); more get 400 invalid_target; not applied when --allowed-resources lists exact URLs only; -1: no bound", EnvVars: []string{"MP_HSM_MAX_RESOURCES_PER_CALLER"}},
		&cli.IntFlag{Category: catServ, Name: "max-keys-per-caller", Usage: "at most `N` distinct requests cached for one caller; more get 503; -1: no bound but --max-keys", DefaultText: "half of --max-keys", EnvVars: []string{"MP_HSM_MAX_KEYS_PER_CALLER"}},
		&cli.IntFlag{Category: catServ, Name: "max-concurrent", Value: 4, Usage: "at most `N` requests to Maskinporten at once", EnvVars: []string{"MP_HSM_MAX_CONCURRENT"}},
		&cli.IntFlag{Category: catServ, Name: "max-concurrent-per-caller", Usage: "at most `N` of the --max-concurrent requests for one caller (a uid on the unix socket, an address on TCP), so that one caller's cold requests cannot starve the others'", DefaultText: "half of --max-concurrent, at least 1", EnvVars: []string{"MP_HSM_MAX_CONCURRENT_PER_CALLER"}},
		&cli.IntFlag{Category: catServ, Name: "max-keys", Value: 20000, Usage: "at most `N` distinct requests cached", EnvVars: []string{"MP_HSM_MAX_KEYS"}},
		&cli.DurationFlag{Category: catServ, Name: "refresh-margin", Value: 30 * time.Second, Usage: "refresh used tokens `DURATION` before they expire (at most half of their lifetime)", EnvVars: []string{"MP_HSM_REFRESH_MARGIN"}},
		&cli.DurationFlag{Category: catServ, Name: "refresh-jitter", Value: 10 * time.Second, Usage: "refresh up to `DURATION` earlier, at random, to spread refreshes", EnvVars: []string{"MP_HSM_REFRESH_JITTER"}},
		&cli.StringFlag{Category: catServ, Name: "config", Usage: "read serve options (by their long names) and [[client]] tables from the TOML `FILE`; flags and MP_HSM_* variables win over it; re-read on SIGHUP", EnvVars: []string{"MP_HSM_CONFIG"}},
		&cli.StringFlag{Category: catServ, Name: "socket-mode", Usage: "`MODE` of the unix socket, such as 0666 when the [[client]] tables' users and groups decide who is served", DefaultText: "0600, 0660 with --socket-group", EnvVars: []string{"MP_HSM_SOCKET_MODE"}},
		&cli.StringFlag{Category: catServ, Name: "audit-log", Usage: "append one JSON line per answered token request to `PATH` (mode 0600, reopened on SIGHUP); - for standard output", EnvVars: []string{"MP_HSM_AUDIT_LOG"}},
	}
}

func (e *env) serve(c *cli.Context) error {
	if !c.IsSet("log-level") && !c.Bool("quiet") { // a daemon logs each Maskinporten call
		e.log = newLogger(e.stderr, c.String("log-format"), slog.LevelInfo)
	}
	// SIGHUP reloads; registered first, so that an early one cannot kill us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	activated, err := socket.Activated()
	if err != nil {
		return err
	}
	plan, err := e.checkServe(c, activated)
	if err != nil {
		return err
	}
	var audit *daemon.AuditLog
	if plan.auditLog != "" {
		if audit, err = daemon.OpenAuditLog(plan.auditLog); err != nil {
			return usageErr(err)
		}
		defer audit.Close()
	}
	listeners := activated
	defer func() { // Shutdown closes them too: a second Close is harmless
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	for _, s := range plan.specs {
		ln, err := socket.Listen(s, plan.listen)
		if err != nil {
			return err
		}
		listeners = append(listeners, ln)
	}
	cfg := plan.cfg
	cfg.Audit = audit
	srv, err := daemon.New(cfg)
	if err != nil {
		return plan.explain(err)
	}
	if ok, reason := srv.Ready(); !ok {
		e.log.Warn("not ready yet", "reason", reason)
	}

	serveErr := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	sdNotify("READY=1")

	shutdown := func() error {
		sdNotify("STOPPING=1")
		e.log.Info("shutting down: draining requests in flight")
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		return srv.Shutdown(ctx)
	}
	for {
		select {
		case <-c.Context.Done():
			if err := shutdown(); err != nil {
				e.log.Warn("shutdown did not finish in time", "error", err)
			}
			return nil
		case <-hup:
			e.log.Info("SIGHUP: reloading")
			e.reload(c, plan, activated, srv, audit)
		case err := <-serveErr:
			if errors.Is(err, http.ErrServerClosed) {
				continue
			}
			shutdown()
			if errors.Is(err, daemon.ErrConfig) {
				return err
			}
			return fmt.Errorf("serve: %w", err)
		}
	}
}

// daemonConfig builds the daemon's configuration from the flags (the files
// read afresh), and the function that explains an OpenSigner error.
func (e *env) daemonConfig(c *cli.Context) (daemon.Config, func(error) error, error) {
	if err := preflight(c); err != nil {
		return daemon.Config{}, nil, err
	}
	open := func(context.Context) (signer.Signer, error) { return e.openP12(c) }
	explain := func(err error) error { return err }
	if c.String("p12") == "" {
		var err error
		if open, explain, err = e.tokenOpener(c); err != nil {
			return daemon.Config{}, nil, err
		}
	}
	clients, err := e.daemonClients(c)
	if err != nil {
		return daemon.Config{}, nil, err
	}
	clientID := strings.TrimSpace(c.String("client-id"))
	if clientID == "" && len(clients) == 0 {
		return daemon.Config{}, nil, usagef("missing --client-id (or MP_HSM_CLIENT_ID, or [[client]] tables in --config): the Maskinporten client the grants are for")
	}
	var envr grant.Environment
	if c.String("env") != "" || c.String("well-known") != "" || c.String("issuer") != "" || c.String("token-endpoint") != "" {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		envr, _, err = e.resolveEnvironment(ctx, c, nil)
		cancel()
		if err != nil {
			return daemon.Config{}, nil, err
		}
	} else {
		// Chosen by the daemon from the certificate's issuing CA.
		envr.AltinnExchange = c.String("altinn-exchange")
	}
	auditServe, err := flagChoice(c, "audit-failure", "refuse", "serve", "refuse (no token without its audit line; the default) or serve")
	if err != nil {
		return daemon.Config{}, nil, err
	}
	waitOnPIN, err := flagChoice(c, "pin-refused", "exit", "wait",
		"exit (status 3 when the token refuses the PIN at start; the default) or wait (stay up, not ready, the PIN not presented again)")
	if err != nil {
		return daemon.Config{}, nil, err
	}
	secret, err := e.readSecretString("--client-secret-file", c.String("client-secret-file"), safefile.MaxSecret)
	if err != nil {
		return daemon.Config{}, nil, err
	}
	return daemon.Config{
		OpenSigner: open,
		Grant: grant.Config{
			ClientID:      clientID,
			Algorithm:     c.String("alg"),
			KeyID:         c.String("kid"),
			Environment:   envr,
			AllowInsecure: c.Bool("allow-insecure"),
		},
		ClientSecret:           secret,
		Clients:                clients,
		AuditServeOnFailure:    auditServe,
		WaitOnPINRefused:       waitOnPIN,
		AllowedHosts:           c.StringSlice("allowed-hosts"),
		AllowedScopes:          c.StringSlice("allowed-scopes"),
		AllowedResources:       c.StringSlice("allowed-resources"),
		MaxResourcesPerCaller:  c.Int("max-resources-per-caller"),
		MaxKeysPerCaller:       c.Int("max-keys-per-caller"),
		AllowRemote:            c.Bool("allow-remote"),
		MaxConcurrent:          c.Int("max-concurrent"),
		MaxConcurrentPerCaller: c.Int("max-concurrent-per-caller"),
		MaxKeys:                c.Int("max-keys"),
		RefreshMargin:          c.Duration("refresh-margin"),
		RefreshJitter:          c.Duration("refresh-jitter"),
		ExchangeTimeout:        c.Duration("timeout"),
		Logger:                 e.log,
	}, explain, nil
}

// rememberedPrompt asks a terminal for the PIN once and keeps it for the
// logins after a reconnect: a daemon cannot ask again.
func (e *env) rememberedPrompt(prompt func() ([]byte, error)) func() ([]byte, error) {
	if !isTerminal(e.stdin) {
		return prompt
	}
	var mu sync.Mutex
	var kept []byte
	return func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if kept == nil {
			pin, err := prompt()
			if err != nil {
				return nil, err
			}
			kept = append([]byte(nil), pin...)
			clear(pin)
		}
		return append([]byte(nil), kept...), nil
	}
}

// sdNotify tells systemd the daemon's state (sd_notify(3)), if it listens; Go
// reads a leading @ as an abstract socket.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}

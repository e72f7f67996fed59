// Command mp-hsm gets Maskinporten access tokens with a key that never leaves
// a smart card or HSM: it signs the JWT grant through PKCS#11, sends the
// certificate chain from the card as x5c, and prints the token.
//
//	mp-hsm token --slot 0 --scope altinn:serviceowner
//
// See mp-hsm --help, README.md, and docs/ for the rest.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/mp-hsm/mp-hsm/daemon"
	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/hsm"
	"github.com/mp-hsm/mp-hsm/internal/safefile"
	"github.com/mp-hsm/mp-hsm/pkcs11uri"
	"github.com/mp-hsm/mp-hsm/signer"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// Exit codes, as the command-line contract fixes them.
const (
	exitOK          = 0
	exitInternal    = 1
	exitUsage       = 2
	exitToken       = 3 // token, key or PIN problem
	exitRefused     = 4 // Maskinporten refused the grant (4xx)
	exitUnavailable = 5 // Maskinporten unreachable or failing, after retries
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// env is what a command needs from the process (tests give their own; a reload, a copy).
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	getenv func(string) string

	serveFile *serveFile // serve's --config file, read by the command's Before
}

// buildVersion is set by the Makefile (-ldflags "-X main.buildVersion=...").
var buildVersion string

// version is the build's version (the Makefile's, Go's, or "devel"), module and Go.
func version() string {
	v, mod := buildVersion, "github.com/mp-hsm/mp-hsm"
	if bi, ok := debug.ReadBuildInfo(); ok {
		mod = bi.Main.Path
		if v == "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return cmp.Or(v, "devel") + " (" + mod + ", " + runtime.Version() + ")"
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, log: newLogger(stderr, "text", slog.LevelWarn)}
	// An RFC 7512 pin-value is refused first, not echoed: every user can read argv.
	if i := 1 + slices.IndexFunc(args[min(1, len(args)):], func(a string) bool { return strings.Contains(strings.ToLower(a), "pin-value") }); i > 0 {
		fmt.Fprintf(stderr, "mp-hsm: argument %d%s holds a pin-value: a PIN on the command line is visible to every user of this machine (ps, shell history); put it in a file given by --pin-file (or MP_HSM_PIN)\n",
			i, flagOf(args, i))
		return exitUsage
	}
	app := newApp(e)
	ctx, stop, stoppedBy := interruptContext(stderr)
	defer stop()
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	if sig := stoppedBy(); sig != 0 {
		// Stopped by the user: the signal's code, not the failure's (a cancelled
		// metadata request would read "unreachable", exit 5).
		fmt.Fprintf(stderr, "mp-hsm: stopped by %v (%v)\n", sig, err)
		return 128 + int(sig)
	}
	code := exitCode(err)
	msg := err.Error()
	if strings.HasPrefix(msg, "flag provided but not defined: -pin") {
		msg += "\nthe PIN is never taken from the command line (every user can read it with ps): give --pin-file FILE, or MP_HSM_PIN"
	}
	if code == exitUsage && !strings.Contains(msg, "--help") {
		msg += "\n(see " + helpCommand(app, args) + " --help)"
	}
	fmt.Fprintf(stderr, "mp-hsm: %s\n", msg)
	if se := (*hsm.SelectionError)(nil); errors.As(err, &se) {
		e.showLoadOutput(se.ModuleOutput)
	}
	return code
}

// helpCommand is the (sub)command whose --help a usage error points to.
func helpCommand(app *cli.App, args []string) string {
	path := []string{"mp-hsm"}
	cmds := app.Commands
	for _, a := range args[min(1, len(args)):] {
		i := slices.IndexFunc(cmds, func(c *cli.Command) bool { return c.HasName(a) })
		if i < 0 {
			break
		}
		path, cmds = append(path, cmds[i].Name), cmds[i].Subcommands
	}
	return strings.Join(path, " ")
}

// showLoadOutput shows what modules wrote while loading (HoldLoadOutput).
func (e *env) showLoadOutput(out string) {
	if out == "" {
		return
	}
	fmt.Fprintf(e.stderr, "mp-hsm: while the module loaded, it (or a module p11-kit's proxy loaded) wrote:\n%s\n", out)
}

func newApp(e *env) *cli.App {
	app := &cli.App{
		Name:    "mp-hsm",
		Usage:   "Maskinporten tokens signed by a key on a smart card or HSM (PKCS#11)",
		Version: version(),
		Description: "mp-hsm signs the Maskinporten JWT grant with a key that never leaves the card or HSM,\n" +
			"sends the certificate chain read from the token as x5c (or a registered kid), and prints\n" +
			"the access token. Every flag can also be set by the MP_HSM_* variable shown beside it.\n\n" +
			"Exit codes: 0 ok, 1 internal error, 2 bad usage or input (or a token asked of a build\n" +
			"without cgo), 3 token, key or PIN problem,\n" +
			"4 Maskinporten refused the grant, 5 Maskinporten unreachable or failing after retries.",
		Reader:               e.stdin,
		Writer:               e.stdout,
		ErrWriter:            e.stderr,
		EnableBashCompletion: true,
		Suggest:              true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "`LEVEL` of diagnostics on stderr: debug, info, warn or error", EnvVars: []string{"MP_HSM_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT` of diagnostics: text or json", EnvVars: []string{"MP_HSM_LOG_FORMAT"}},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing on stderr but errors", EnvVars: []string{"MP_HSM_QUIET"}},
		},
		Before: func(c *cli.Context) error {
			var level slog.Level
			switch lv := strings.ToLower(c.String("log-level")); lv {
			case "debug", "info", "warn", "error":
				_ = level.UnmarshalText([]byte(lv))
			case "warning", "":
				level = slog.LevelWarn
			default:
				return usagef("--log-level %q: use debug, info, warn or error", c.String("log-level"))
			}
			if c.Bool("quiet") {
				level = slog.LevelError
			}
			if f := c.String("log-format"); f != "text" && f != "" && f != "json" {
				return usagef("--log-format %q: use text or json", f)
			}
			e.log = newLogger(e.stderr, c.String("log-format"), level)
			return nil
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageErr(err)
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
		Commands: []*cli.Command{
			tokenCommand(e),
			grantCommand(e),
			listCommand(e),
			jwkCommand(e),
			keyCommand(e),
			adminCommand(e),
			inspectCommand(e),
			doctorCommand(e),
			emulateCommand(e),
			serveCommand(e),
			completionCommand(e),
			manPagesCommand(e),
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(e.stderr, "mp-hsm: no command %q (see mp-hsm --help)\n", name)
			cli.OsExiter(exitUsage)
		},
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError
	}
	return app
}

// newLogger logs to w at level, as JSON for format "json", else as text.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// codedError carries an explicit exit code.
type codedError struct {
	code int
	err  error
}

func (c *codedError) Error() string { return c.err.Error() }
func (c *codedError) Unwrap() error { return c.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code, err}
}

// usageErr marks err as bad usage or bad input (exit code 2).
func usageErr(err error) error { return withCode(exitUsage, err) }

func usagef(format string, args ...any) error { return usageErr(fmt.Errorf(format, args...)) }

// flagOf names the flag that argument i belongs to, as " (--key)", or "".
func flagOf(args []string, i int) string {
	a := args[i]
	if strings.HasPrefix(a, "-") {
		if name, _, ok := strings.Cut(a, "="); ok {
			return " (" + name + ")"
		}
	}
	if i > 1 && strings.HasPrefix(args[i-1], "-") && !strings.Contains(args[i-1], "=") {
		return " (" + args[i-1] + ")"
	}
	return ""
}

// interruptContext is cancelled by the first SIGINT or SIGTERM; a second
// ends the process at once (a module busy in C cannot keep it alive). It
// also returns the stop function and the signal that cancelled it, if any.
func interruptContext(stderr io.Writer) (context.Context, func(), func() syscall.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var first atomic.Int32 // the signal that cancelled ctx, 0 before
	go func() {
		for sig := range sigs {
			s, _ := sig.(syscall.Signal)
			if first.CompareAndSwap(0, int32(s)) {
				cancel()
				continue
			}
			fmt.Fprintf(stderr, "mp-hsm: second %v: exiting at once\n", sig)
			os.Exit(128 + int(s))
		}
	}()
	return ctx, func() {
			signal.Stop(sigs) // no sends after it returns
			close(sigs)
			cancel()
		}, func() syscall.Signal {
			return syscall.Signal(first.Load())
		}
}

// exitCode maps an error to the contract's exit codes.
func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce) && ce.code != exitUsage:
		return ce.code
	case errors.Is(err, grant.ErrCertificateExpired):
		return exitToken
	case ce != nil, // a usage error
		// A socket or port in use, like a bad daemon config, is the configuration's to fix.
		errors.Is(err, daemon.ErrConfig), errors.Is(err, socket.ErrConfig), errors.Is(err, syscall.EADDRINUSE),
		errors.Is(err, pkcs11uri.ErrInvalid),
		errors.Is(err, safefile.ErrUnsafe),
		errors.Is(err, grant.ErrInvalidRequest),
		errors.Is(err, grant.ErrInvalidConfig) && !errors.Is(err, grant.ErrEnvironmentMismatch):
		return exitUsage
	case errors.Is(err, grant.ErrRefused):
		return exitRefused
	case errors.Is(err, grant.ErrUnavailable), errors.Is(err, grant.ErrBadResponse),
		errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	case tokenerr.Kind(err) != nil, errors.As(err, new(*safefile.Error)), // a PIN file's: other files' errors are usage errors
		errors.Is(err, signer.ErrKeyTooSmall), errors.Is(err, signer.ErrCertificateMismatch),
		errors.Is(err, signer.ErrUnsupportedKey), errors.Is(err, grant.ErrEnvironmentMismatch), errors.Is(err, errNoPIN):
		return exitToken // a module, token, key, PIN or certificate error
	}
	return exitInternal
}

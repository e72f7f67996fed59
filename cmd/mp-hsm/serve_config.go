package main

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// withConfigFile makes the flags settable from the --config file (altsrc).
func withConfigFile(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(flags))
	for i, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			out[i] = altsrc.NewStringFlag(f)
		case *cli.StringSliceFlag:
			out[i] = altsrc.NewStringSliceFlag(f)
		case *cli.BoolFlag:
			out[i] = altsrc.NewBoolFlag(f)
		case *cli.IntFlag:
			out[i] = altsrc.NewIntFlag(f)
		case *cli.DurationFlag:
			out[i] = altsrc.NewDurationFlag(f)
		default:
			out[i] = f
		}
	}
	return out
}

// applyConfigFile is serve's Before: --config fills the flags not set, and
// its clients are kept for the action.
func (e *env) applyConfigFile(c *cli.Context) error {
	e.serveFile = nil
	path := c.String("config")
	if path == "" {
		return nil
	}
	sf, err := readServeFile(path, c.Command.Flags)
	if err != nil {
		return err
	}
	src := altsrc.NewMapInputSource(path, sf.values)
	if err := altsrc.ApplyInputSourceValues(c, src, c.Command.Flags); err != nil {
		return usagef("config %s: %v", path, err)
	}
	e.serveFile = sf
	return nil
}

// reloadContext parses the command line, environment and --config afresh
// (SIGHUP) and calls use with what they make; without e.args (tests) it
// calls use with e and c.
func (e *env) reloadContext(c *cli.Context, use func(*env, *cli.Context) error) error {
	if e.args == nil {
		return use(e, c)
	}
	re := *e
	var useErr error
	used := false
	re.reparsed = func(nc *cli.Context) error {
		used = true
		useErr = use(&re, nc)
		return nil
	}
	if err := newApp(&re).RunContext(c.Context, e.args); err != nil {
		return err
	}
	if !used {
		return errors.New("the command line did not run serve again")
	}
	return useErr
}

// configFlags are the serve flags about the config file.
func configFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Category: catServ, Name: "config", Usage: "read serve options (by their long names) and [[client]] tables from the TOML `FILE`; flags and MP_HSM_* variables win over it; re-read on SIGHUP", EnvVars: []string{"MP_HSM_CONFIG"}},
		&cli.StringFlag{Category: catServ, Name: "socket-mode", Usage: "`MODE` of the unix socket, such as 0666 when the [[client]] tables' users and groups decide who is served", DefaultText: "0600, 0660 with --socket-group", EnvVars: []string{"MP_HSM_SOCKET_MODE"}},
		&cli.StringFlag{Category: catServ, Name: "audit-log", Usage: "append one JSON line per answered token request to `PATH` (mode 0600, reopened on SIGHUP); - for standard output", EnvVars: []string{"MP_HSM_AUDIT_LOG"}},
	}
}

// socketMode parses --socket-mode: an octal mode; 0 when not given.
func socketMode(c *cli.Context) (os.FileMode, error) {
	v := strings.TrimSpace(c.String("socket-mode"))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n == 0 || n&^0o666 != 0 {
		return 0, usagef("--socket-mode %q: want an octal mode of read and write bits, such as 0600, 0660 or 0666", v)
	}
	return os.FileMode(n), nil
}

// unwrapFlag returns the cli flag an altsrc flag wraps.
func unwrapFlag(f cli.Flag) cli.Flag {
	switch f := f.(type) {
	case *altsrc.StringSliceFlag:
		return f.StringSliceFlag
	case *altsrc.StringFlag:
		return f.StringFlag
	}
	return f
}

// hasClients reports whether the config file has [[client]] tables.
func (e *env) hasClients() bool { return e.serveFile != nil && len(e.serveFile.clients) > 0 }

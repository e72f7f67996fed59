package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// A serve --config file holds serve flags by long name (through altsrc, so
// flags and variables win) and [[client]] tables; it is checked here first
// so that a mistake is named by file, client and field.

// clientSection is one [[client]] table.
type clientSection struct {
	Name       string
	ClientID   string
	Scopes     []string
	Users      []string
	Groups     []string
	SecretFile string
	KID        string
	KeyID      string
	KeyLabel   string
	// authorization-types: the authorization_details types callers may send
	AuthzTypes []string
}

// serveFile is a parsed --config file.
type serveFile struct {
	path    string
	values  map[any]any // flag values for altsrc, by long name
	clients []clientSection
}

// readServeFile reads a --config file and checks it against flags.
func readServeFile(path string, flags []cli.Flag) (*serveFile, error) {
	bad := func(format string, args ...any) (*serveFile, error) {
		return nil, usagef("config %s: %s", path, fmt.Sprintf(format, args...))
	}
	data, fi, err := safefile.ReadPrivate(path, safefile.MaxConfig)
	if err != nil {
		return nil, usageErr(fmt.Errorf("config %w", err))
	}
	var raw map[string]any
	if _, err := decodeTOML(data, &raw); err != nil {
		return bad("%v", err)
	}
	if holdsPINValue(raw) && safefile.ReadableByOthers(fi) {
		return bad("holds a pin-value, and group or others can read the file (mode %04o): make it readable by its owner only (chmod 600 %s), or better give the PIN with pin-file", fi.Mode().Perm(), path)
	}
	byName := map[string]cli.Flag{}
	for _, f := range flags {
		byName[f.Names()[0]] = f
	}
	sf := &serveFile{path: path, values: map[any]any{}}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		v := raw[k]
		if k == "client" {
			tables, ok := v.([]map[string]any)
			if !ok {
				return bad("client: want [[client]] tables")
			}
			for i, t := range tables {
				cs, err := clientTable(t, i)
				if err != nil {
					return bad("%v", err)
				}
				sf.clients = append(sf.clients, cs)
			}
			continue
		}
		f, ok := byName[k]
		if !ok || k == "config" {
			return bad("%q is not a serve option (see mp-hsm serve --help; clients are [[client]] tables)", k)
		}
		val, err := flagValue(f, v)
		if err != nil {
			return bad("%s: %v", k, err)
		}
		sf.values[k] = val
	}
	return sf, nil
}

// decodeTOML decodes data into v, the one TOML decoder of serve and
// emulate: a syntax error names its line, and a key set twice is refused
// (repeatedKey).
func decodeTOML(data []byte, v any) (toml.MetaData, error) {
	md, err := toml.Decode(string(data), v)
	if pe := (toml.ParseError{}); errors.As(err, &pe) {
		return md, fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
	}
	if err != nil {
		return md, err
	}
	return md, repeatedKey(md)
}

// repeatedKey refuses a key set twice in one table, which the TOML library
// allows for lists (the last would win), and inline arrays of tables, whose
// elements' keys it cannot tell apart.
func repeatedKey(md toml.MetaData) error {
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		name := k.String()
		if md.Type(k...) == "ArrayHash" { // [[name]]: a new element
			for s := range seen {
				if strings.HasPrefix(s, name+".") {
					delete(seen, s)
				}
			}
			continue
		}
		for i := 1; i < len(k); i++ {
			if md.Type(k[:i]...) == "Array" {
				return fmt.Errorf("%s: an inline array of tables; write [[%s]] tables", k[:i], k[:i])
			}
		}
		if seen[name] {
			return fmt.Errorf("%s is set twice; set it once", name)
		}
		seen[name] = true
	}
	return nil
}

// holdsPINValue reports an RFC 7512 pin-value at any depth of v.
func holdsPINValue(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(strings.ToLower(v), "pin-value")
	case []any:
		return slices.ContainsFunc(v, holdsPINValue)
	case []map[string]any:
		return slices.ContainsFunc(v, func(t map[string]any) bool { return holdsPINValue(t) })
	case map[string]any:
		return slices.ContainsFunc(slices.Collect(maps.Values(v)), holdsPINValue)
	}
	return false
}

// flagValue checks a file value for flag f, typed as altsrc wants it.
func flagValue(f cli.Flag, v any) (any, error) {
	switch f.(type) {
	case *altsrc.StringFlag:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("want a string, not %s", tomlType(v))
	case *altsrc.StringSliceFlag:
		switch v := v.(type) {
		case string:
			return []any{v}, nil
		case []any:
			if len(v) == 0 {
				return nil, errors.New("[] holds no entry; leave it out for its default, or name at least one value")
			}
			for _, e := range v {
				if _, ok := e.(string); !ok {
					return nil, fmt.Errorf("want strings, not %s", tomlType(e))
				}
			}
			return v, nil
		}
		return nil, fmt.Errorf("want a list of strings, not %s", tomlType(v))
	case *altsrc.BoolFlag:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("want true or false, not %s", tomlType(v))
	case *altsrc.IntFlag:
		if n, ok := v.(int64); ok && int64(int(n)) == n {
			return int(n), nil
		}
		return nil, fmt.Errorf("want an integer, not %s", tomlType(v))
	case *altsrc.DurationFlag:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a duration such as \"30s\", not %s", tomlType(v))
		}
		if _, err := time.ParseDuration(s); err != nil {
			return nil, fmt.Errorf("want a duration such as \"30s\": %v", err)
		}
		return s, nil
	}
	return nil, errors.New("cannot be set in the file")
}

// clientTable checks the i-th [[client]] table.
func clientTable(t map[string]any, i int) (clientSection, error) {
	var cs clientSection
	name, _ := t["name"].(string)
	where := fmt.Sprintf("client %d", i+1)
	if name != "" {
		where = fmt.Sprintf("client %q", name)
	}
	strs := map[string]*string{"name": &cs.Name, "client-id": &cs.ClientID, "secret-file": &cs.SecretFile,
		"kid": &cs.KID, "key-id": &cs.KeyID, "key-label": &cs.KeyLabel}
	lists := map[string]*[]string{"scopes": &cs.Scopes, "users": &cs.Users, "groups": &cs.Groups, "authorization-types": &cs.AuthzTypes}
	for _, k := range slices.Sorted(maps.Keys(t)) {
		v := t[k]
		if dst, ok := strs[k]; ok {
			if *dst, ok = v.(string); !ok {
				return cs, fmt.Errorf("%s: %s: want a string, not %s", where, k, tomlType(v))
			}
			continue
		}
		dst, ok := lists[k]
		if !ok {
			return cs, fmt.Errorf("%s: unknown field %q (want name, client-id, scopes, users, groups, secret-file, kid, key-id, key-label, authorization-types)", where, k)
		}
		vs, ok := v.([]any)
		if !ok {
			return cs, fmt.Errorf("%s: %s: want a list, such as [\"a\", \"b\"], not %s", where, k, tomlType(v))
		}
		*dst = []string{} // given: an empty list is refused, never read as "not given"
		ids := k == "users" || k == "groups"
		for _, e := range vs {
			switch e := e.(type) {
			case string:
				*dst = append(*dst, e)
			case int64:
				if !ids || e < 0 {
					return cs, fmt.Errorf("%s: %s: %d is not a name or id", where, k, e)
				}
				*dst = append(*dst, strconv.FormatInt(e, 10))
			default:
				return cs, fmt.Errorf("%s: %s: want strings, not %s", where, k, tomlType(e))
			}
		}
	}
	if cs.Name == "" {
		return cs, fmt.Errorf("%s: name is missing", where)
	}
	return cs, nil
}

// tomlType names the TOML type of v for an error.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any, []map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

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

// emptyListFlag refuses a serve list flag given with no entry:
// "--allowed-scopes ," would otherwise read as no list, which allows
// everything.
func emptyListFlag(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		sf, ok := f.(*altsrc.StringSliceFlag)
		if !ok || !c.IsSet(sf.Name) {
			continue
		}
		if slices.ContainsFunc(c.StringSlice(sf.Name), func(v string) bool { return strings.Trim(v, ", \t\r\n") != "" }) {
			continue
		}
		name := "--" + sf.Name
		if len(sf.EnvVars) > 0 {
			name += " (or " + sf.EnvVars[0] + ")"
		}
		return usagef("%s is given but holds no entry; leave it out for its default, or name at least one value", name)
	}
	return nil
}

// hasClients reports whether the config file has [[client]] tables.
func (e *env) hasClients() bool { return e.serveFile != nil && len(e.serveFile.clients) > 0 }

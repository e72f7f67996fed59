package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// A serve --config file holds serve flags by long name, applied through
// altsrc (so flags and variables win), and [[client]] tables.

// clientSection is one [[client]] table.
type clientSection struct {
	Name       string `toml:"name"`
	ClientID   string `toml:"client-id"`
	Scopes     names  `toml:"scopes"`
	Users      ids    `toml:"users"`
	Groups     ids    `toml:"groups"`
	SecretFile string `toml:"secret-file"`
	KID        string `toml:"kid"`
	KeyID      string `toml:"key-id"`
	KeyLabel   string `toml:"key-label"`
	AuthzTypes names  `toml:"authorization-types"` // the authorization_details types callers may send
}

const clientFields = "name, client-id, scopes, users, groups, secret-file, kid, key-id, key-label, authorization-types"

// names is a [[client]] list of strings, ids takes numbers too; never nil
// when given, so that an empty list is refused, not read as "not given".
type (
	names []string
	ids   []string
)

func (l *names) UnmarshalTOML(v any) error { return decodeList((*[]string)(l), v, false) }
func (l *ids) UnmarshalTOML(v any) error   { return decodeList((*[]string)(l), v, true) }

func decodeList(dst *[]string, v any, numbers bool) error {
	vs, ok := v.([]any)
	if !ok {
		return fmt.Errorf("want a list, such as [\"a\", \"b\"], not %s", tomlType(v))
	}
	*dst = []string{}
	for _, e := range vs {
		s, isStr := e.(string)
		n, isInt := e.(int64)
		switch {
		case isInt && numbers && n >= 0:
			s = strconv.FormatInt(n, 10)
		case isInt && numbers:
			return fmt.Errorf("%d is not a name or id", n)
		case !isStr:
			return fmt.Errorf("want strings, not %s", tomlType(e))
		}
		*dst = append(*dst, s)
	}
	return nil
}

// serveFile is a parsed --config file.
type serveFile struct {
	path    string
	values  map[any]any // flag values by long name
	clients []clientSection
	applied map[string]bool // the flags the file set (no flag or variable did)
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
	sf := &serveFile{path: path, values: map[any]any{}, applied: map[string]bool{}}
	if v, ok := raw["client"]; ok {
		tables, ok := v.([]map[string]any)
		if !ok {
			return bad("client: want [[client]] tables")
		}
		if sf.clients, err = clientTables(data, tables); err != nil {
			return bad("%v", err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		i := slices.IndexFunc(flags, func(f cli.Flag) bool { return f.Names()[0] == k })
		switch {
		case k == "client":
		case i < 0 || k == "config":
			return bad("%q is not a serve option (see mp-hsm serve --help; clients are [[client]] tables)", k)
		default:
			if sf.values[k], err = flagValue(flags[i], raw[k]); err != nil {
				return bad("%s: %v", k, err)
			}
		}
	}
	return sf, nil
}

// clientTables decodes the [[client]] tables of data (raw: the same tables
// undecoded, for their names); an error names the client and the field.
func clientTables(data []byte, raw []map[string]any) ([]clientSection, error) {
	var file struct {
		Client []toml.Primitive `toml:"client"`
	}
	md, err := decodeTOML(data, &file)
	if err != nil {
		return nil, err
	}
	where := func(i int) string {
		if name, _ := raw[i]["name"].(string); name != "" {
			return fmt.Sprintf("client %q", name)
		}
		return fmt.Sprintf("client %d", i+1)
	}
	out := make([]clientSection, len(file.Client))
	for i, p := range file.Client {
		if err := md.PrimitiveDecode(p, &out[i]); err != nil {
			if pe := (toml.ParseError{}); errors.As(err, &pe) {
				err = fmt.Errorf("%s: %s", strings.TrimPrefix(pe.LastKey, "client."), pe.Message)
			}
			return nil, fmt.Errorf("%s: %w", where(i), err)
		}
	}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && k[0] == "client" {
			i := slices.IndexFunc(raw, func(t map[string]any) bool { _, ok := t[k[1]]; return ok })
			return nil, fmt.Errorf("%s: unknown field %q (want %s)", where(max(i, 0)), k[1], clientFields)
		}
	}
	for i, cs := range out {
		if cs.Name == "" {
			return nil, fmt.Errorf("%s: name is missing", where(i))
		}
	}
	return out, nil
}

// decodeTOML is serve's and emulate's one TOML decoder: errors name the line,
// and a key set twice is refused (repeatedKey).
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

// flagValue checks a file value for flag f.
func flagValue(f cli.Flag, v any) (any, error) {
	var want string
	switch f.(type) {
	case *altsrc.StringFlag:
		if _, ok := v.(string); ok {
			return v, nil
		}
		want = "a string"
	case *altsrc.StringSliceFlag:
		if s, ok := v.(string); ok {
			v = []any{s}
		}
		var l []string
		if err := decodeList(&l, v, false); err != nil {
			return nil, err
		}
		if len(l) == 0 {
			return nil, errors.New("[] holds no entry; leave it out for its default, or name at least one value")
		}
		out := make([]any, len(l)) // as altsrc's map source wants a list
		for i, x := range l {
			out[i] = x
		}
		return out, nil
	case *altsrc.BoolFlag:
		if _, ok := v.(bool); ok {
			return v, nil
		}
		want = "true or false"
	case *altsrc.IntFlag:
		if n, ok := v.(int64); ok && int64(int(n)) == n {
			return int(n), nil
		}
		want = "an integer"
	case *altsrc.DurationFlag:
		want = "a duration such as \"30s\""
		if s, ok := v.(string); ok {
			if _, err := time.ParseDuration(s); err != nil {
				return nil, fmt.Errorf("want %s: %v", want, err)
			}
			return s, nil
		}
	default:
		return nil, errors.New("cannot be set in the file")
	}
	return nil, fmt.Errorf("want %s, not %s", want, tomlType(v))
}

// tomlType names the TOML type of v for an error.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case []any:
		return "a list"
	case map[string]any, []map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v) // float64, bool, time.Time
}

// withConfigFile makes the flags settable from the --config file (altsrc).
func withConfigFile(flags []cli.Flag) []cli.Flag {
	out := slices.Clone(flags)
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
		}
	}
	return out
}

// applyConfigFile is serve's Before: --config fills the flags no flag or
// variable (even empty) set, and its clients are kept.
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
	for k := range sf.values {
		sf.applied[k.(string)] = !c.IsSet(k.(string))
	}
	if err := altsrc.ApplyInputSourceValues(c, altsrc.NewMapInputSource(path, sf.values), c.Command.Flags); err != nil {
		return usagef("config %s: %v", path, err)
	}
	e.serveFile = sf
	return nil
}

// reloadContext is what a SIGHUP serves from: c's command line and
// environment, and the --config file read again (in the env returned).
func (e *env) reloadContext(c *cli.Context) (*env, *cli.Context, error) {
	set := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	for _, f := range c.Command.Flags {
		if err := f.Apply(set); err != nil { // defaults and variables
			return nil, nil, err
		}
		name := f.Names()[0]
		if !c.IsSet(name) || e.serveFile != nil && e.serveFile.applied[name] {
			continue
		}
		vals := c.StringSlice(name)
		if _, ok := f.(*altsrc.StringSliceFlag); !ok {
			vals = []string{fmt.Sprint(c.Value(name))}
		}
		for _, v := range vals {
			if err := set.Set(name, v); err != nil {
				return nil, nil, err
			}
		}
	}
	nc := cli.NewContext(c.App, set, c.Lineage()[1])
	nc.Command = c.Command
	re := *e
	return &re, nc, re.applyConfigFile(nc)
}

// clients are the config file's [[client]] tables.
func (e *env) clients() []clientSection {
	if e.serveFile == nil {
		return nil
	}
	return e.serveFile.clients
}

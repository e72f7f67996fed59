package daemon

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/mp-hsm/mp-hsm/daemon/socket"
	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Client is one Maskinporten client the daemon serves (Config.Clients), and who may ask for its tokens.
type Client struct {
	// Name is what callers send as client_id (form or HTTP Basic) to choose
	// this client. Required, unique, printable ASCII without spaces.
	Name string

	ClientID string // the Maskinporten client id, the grant's iss; if empty, Name

	// Scopes, if not nil, are the only scopes callers may ask for, written as
	// Config.AllowedScopes (which applies if nil); an empty list is ErrConfig.
	Scopes []string

	// AuthorizationTypes are the RFC 9396 authorization_details types callers may
	// send, such as "urn:altinn:consent"; if nil, none; an empty list is ErrConfig.
	AuthorizationTypes []string

	// Users and Groups admit callers on a unix socket: by name or id, a
	// group primary or supplementary (as when the caller connected). Names
	// are looked up by New and Reload. An empty list is refused.
	Users, Groups []string

	// Secret admits callers on TCP that send Name and this secret (HTTP
	// Basic or the form); at least MinSecretLength bytes. If empty, none.
	Secret string

	KeyID string // the kid sent instead of x5c; if empty, Config.Grant.KeyID (none with OpenKey)

	// OpenKey, if set, gives this client a key of its own from the daemon's
	// signer, such as another key on the same token (one login). It is
	// called each time OpenSigner is; an io.Closer it returns is closed.
	OpenKey func(ctx context.Context, primary signer.Signer) (signer.Signer, error)
}

// MinSecretLength is the fewest bytes a client secret may have: the delay after
// failed attempts bounds how fast a secret can be guessed, not whether.
const MinSecretLength = 16

type client struct { // a Client resolved for requests
	Client
	policy     *listPolicy
	authzTypes map[string]bool
	uids, gids map[uint32]bool
	anyUnix    bool // the client of the flat fields: every unix socket caller
	idHash     [32]byte
	secretHash [32]byte
	m          *clientMetrics
}

// admitsPeer reports whether p, a unix socket peer (nil if unknown), may use c.
func (c *client) admitsPeer(p *socket.Peer) bool {
	return c.anyUnix || p != nil && (c.uids[p.UID] || c.gids[p.GID] || slices.ContainsFunc(p.Groups, func(g uint32) bool { return c.gids[g] }))
}

// CheckClients checks clients as New and Reload do, without opening anything;
// the error matches ErrConfig and names the client and field.
func CheckClients(clients []Client) error {
	if len(clients) == 0 {
		return nil
	}
	_, err := resolveClients(Config{Clients: clients})
	return err
}

// resolveClients is the one model of who may have what, for New and Reload alike:
// cfg's Clients, or the flat fields as one client every unix socket caller may
// use. An empty list never means "anything".
func resolveClients(cfg Config) ([]*client, error) {
	if len(cfg.Clients) == 0 {
		flat := Client{Name: cmp.Or(cfg.ClientID, cfg.Grant.ClientID), ClientID: cfg.Grant.ClientID, Secret: cfg.ClientSecret, KeyID: cfg.Grant.KeyID}
		if len(cfg.AllowedScopes) > 0 {
			flat.Scopes = cfg.AllowedScopes
		}
		c, err := resolveClient(cfg, flat, "the client (ClientID, Grant.ClientID)", true)
		return []*client{c}, err
	}
	if cfg.ClientSecret != "" || (cfg.ClientID != "" && cfg.ClientID != cfg.Grant.ClientID) {
		return nil, configErr("ClientID and ClientSecret are for a daemon without Clients; give each client its Secret")
	}
	out := make([]*client, 0, len(cfg.Clients))
	for i, cl := range cfg.Clients {
		where := fmt.Sprintf("client %d", i+1)
		if cl.Name != "" {
			where = fmt.Sprintf("client %q", cl.Name)
		}
		if slices.ContainsFunc(out, func(o *client) bool { return o.Name == cl.Name }) {
			return nil, configErr("%s: the name is used by another client", where)
		}
		c, err := resolveClient(cfg, cl, where, false)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// resolveClient checks one client, named where in errors, and resolves it.
func resolveClient(cfg Config, cl Client, where string, anyUnix bool) (*client, error) {
	if !validClientName(cl.Name) {
		return nil, configErr("%s: name must be printable ASCII without spaces, quotes, backslashes, ':' or '%%', and not empty", where)
	}
	if cl.ClientID = cmp.Or(cl.ClientID, cl.Name); !validClientName(cl.ClientID) {
		return nil, configErr("%s: client-id %q is not a valid Maskinporten client id", where, cl.ClientID)
	}
	if err := cmp.Or(checkList(where+": scopes", cl.Scopes, cl.Scopes != nil, validScopeEntry, "a scope, 'prefix*' or '*'"),
		checkList(where+": authorization-types", cl.AuthorizationTypes, cl.AuthorizationTypes != nil, grant.ValidScope,
			"an authorization_details type such as urn:altinn:consent")); err != nil {
		return nil, err
	}
	secretWhat := where + ": the secret (secret-file)"
	if anyUnix {
		secretWhat = "the client secret (ClientSecret, --client-secret-file)"
	}
	if n := len(cl.Secret); n > 0 && n < MinSecretLength {
		return nil, configErr("%s is %d bytes; a client secret must have at least %d, "+
			"such as 32 random bytes in base64 (head -c 32 /dev/urandom | base64)", secretWhat, n, MinSecretLength)
	}
	lists := map[string][]string{"users": cl.Users, "groups": cl.Groups}
	for field, list := range lists {
		if list != nil && len(list) == 0 {
			return nil, configErr("%s: %s is given but holds no entry; leave it out, or name who is admitted", where, field)
		}
	}
	switch {
	case anyUnix && (cl.Users != nil || cl.Groups != nil):
		return nil, configErr("%s admits every caller on a unix socket; users and groups are for Clients", where)
	case !anyUnix && len(cl.Users) == 0 && len(cl.Groups) == 0 && cl.Secret == "":
		return nil, configErr("%s admits nobody: give users or groups (unix socket callers), or a secret (TCP callers)", where)
	}
	if cl.KeyID == "" && cl.OpenKey == nil {
		cl.KeyID = cfg.Grant.KeyID
	}
	c := &client{Client: cl, anyUnix: anyUnix, uids: map[uint32]bool{}, gids: map[uint32]bool{}, authzTypes: map[string]bool{},
		idHash: sha256.Sum256([]byte(cl.Name)), secretHash: sha256.Sum256([]byte(cl.Secret)), policy: newListPolicy(cfg.AllowedScopes)}
	for _, a := range cl.AuthorizationTypes {
		for _, typ := range splitList(a) {
			c.authzTypes[typ] = true
		}
	}
	if cl.Scopes != nil {
		c.policy = newListPolicy(cl.Scopes)
	}
	into := map[string]map[uint32]bool{"users": c.uids, "groups": c.gids}
	for field, list := range lists {
		for _, v := range list {
			id, err := socket.LookupID(strings.TrimSpace(v), field == "users")
			if err != nil {
				return nil, configErr("%s: %s: %v", where, field, err)
			}
			into[field][id] = true
		}
	}
	return c, nil
}

// validClientName: printable ASCII, no space, quote, backslash, ':' (HTTP Basic's separator) or '%'.
func validClientName(v string) bool {
	return v != "" && len(v) <= 200 && !strings.ContainsFunc(v, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"\:%`, r)
	})
}

// splitList splits an element of a list option at spaces and commas.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// checkList checks a list option's entries with valid; one given but empty once
// split ([], ",") is refused, not read as "allow everything".
func checkList(field string, list []string, given bool, valid func(string) bool, want string) error {
	if !given {
		return nil
	}
	n := 0
	for _, a := range list {
		for _, v := range splitList(a) {
			n++
			if !valid(v) {
				return configErr("%s: %q is not %s", field, v, want)
			}
		}
	}
	if n == 0 {
		return configErr("%s is given but holds no entry (only spaces or commas); leave it out for its default, or name the values to allow", field)
	}
	return nil
}

// validScopeEntry: a scope, a scope prefix followed by '*', or '*'.
func validScopeEntry(v string) bool { return v == "*" || grant.ValidScope(strings.TrimSuffix(v, "*")) }

// validResourceEntry: an absolute URI, 'URI-prefix*' or '*'.
func validResourceEntry(v string) bool {
	u, err := url.Parse(strings.TrimSuffix(v, "*"))
	return v == "*" || grant.ValidScope(strings.TrimSuffix(v, "*")) && err == nil && u.Scheme != ""
}

// validHostEntry: a DNS name, no port or wildcard.
func validHostEntry(v string) bool {
	return v != "" && len(v) <= 253 && !strings.ContainsFunc(v, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '.')
	})
}

// listPolicy decides which scopes or resources callers may ask for: an entry
// ending in '*' allows its prefix, "*" or no entry any.
type listPolicy struct {
	exact    map[string]bool
	prefixes []string
	any      bool
}

func newListPolicy(allowed []string) *listPolicy {
	p := &listPolicy{exact: map[string]bool{}, any: true}
	for _, a := range allowed {
		for _, s := range splitList(a) {
			switch {
			case s == "*":
				return &listPolicy{any: true}
			case strings.HasSuffix(s, "*"):
				p.prefixes = append(p.prefixes, strings.TrimSuffix(s, "*"))
			default:
				p.exact[s] = true
			}
			p.any = false
		}
	}
	return p
}

func (p *listPolicy) allows(v string) bool {
	return p.any || p.exact[v] || slices.ContainsFunc(p.prefixes, func(pre string) bool { return strings.HasPrefix(v, pre) })
}

package daemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/url"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/mp-hsm/mp-hsm/grant"
	"github.com/mp-hsm/mp-hsm/signer"
)

// Client is one Maskinporten client the daemon serves (Config.Clients),
// and who may ask for its tokens.
type Client struct {
	// Name is what callers send as client_id, in the form or as the HTTP
	// Basic user, to choose this client. Required and unique; printable
	// ASCII without spaces.
	Name string

	// ClientID is the Maskinporten client id, the grant's iss. If empty,
	// Name.
	ClientID string

	// Scopes, if not nil, are the only scopes callers may ask for with
	// this client, written as Config.AllowedScopes. If nil,
	// Config.AllowedScopes applies. A list that is not nil but holds no
	// scope is refused (ErrConfig), never read as "any scope".
	Scopes []string

	// AuthorizationTypes are the RFC 9396 authorization_details types
	// callers may send for this client (form parameter
	// authorization_details), such as "urn:altinn:consent". Exact types
	// only. If empty, none: a request with authorization_details is
	// refused.
	AuthorizationTypes []string

	// Users and Groups admit callers on a unix socket: a user by name or
	// uid; a group by name or gid, the caller's primary group or one of
	// its supplementary groups (read from /proc when it connects). Names
	// are looked up when the configuration is applied (New, Reload). A
	// list that is not nil but empty is refused (ErrConfig).
	Users, Groups []string

	// Secret admits callers on TCP that send Name and this secret (HTTP
	// Basic, or client_id and client_secret in the form). If empty, no
	// caller on TCP may use this client.
	Secret string

	// KeyID is the kid sent in this client's grants instead of x5c. If
	// empty: Config.Grant.KeyID when the client signs with the daemon's
	// key, none when it has its own (OpenKey).
	KeyID string

	// OpenKey, if set, gives this client a key of its own, derived from
	// the daemon's signer (the one OpenSigner opened), such as another key
	// on the same token found through that signer's logged-in session: the
	// token is logged in once, by OpenSigner. It is called each time
	// OpenSigner's signer is (start, reconnect, reload). A signer it
	// returns that implements io.Closer is closed before the daemon's.
	OpenKey func(ctx context.Context, primary signer.Signer) (signer.Signer, error)
}

// client is a Client as requests use it: its policy and its admitted
// users and groups resolved.
type client struct {
	Client
	policy     *listPolicy
	authzTypes map[string]bool // AuthorizationTypes; empty allows none
	uids, gids map[uint32]bool
	anyUnix    bool // the implicit client of a Config without Clients
	idHash     [32]byte
	secretHash [32]byte
	m          *clientMetrics
}

// admitsPeer reports whether p, a unix socket peer, may use c.
func (c *client) admitsPeer(p *peer) bool {
	if c.anyUnix {
		return true
	}
	if p == nil {
		return false
	}
	if c.uids[p.uid] || c.gids[p.gid] {
		return true
	}
	for _, g := range p.groups {
		if c.gids[g] {
			return true
		}
	}
	return false
}

// CheckClients checks clients as New and Reload do (names, scopes, users
// and groups looked up, someone admitted), without opening anything, so
// that a configuration file can be refused with its name. The error
// matches ErrConfig and names the client and field.
func CheckClients(clients []Client) error {
	if len(clients) == 0 {
		return nil
	}
	_, err := resolveClients(Config{Clients: clients})
	return err
}

// resolveClients checks cfg's clients and resolves them: the one model of
// who may have what, for New and Reload alike. Without Clients, the flat
// fields (ClientID, ClientSecret, Grant.ClientID, Grant.KeyID,
// AllowedScopes) are the one implicit client, checked by the same rules,
// that every caller on a unix socket may use, as before clients existed
// (Serve and Reload refuse it on a socket every local user can reach).
//
// A list that is given (not nil) but holds no entry (Scopes, Users,
// Groups) is refused: an empty list never means "anything".
func resolveClients(cfg Config) ([]*client, error) {
	if len(cfg.Clients) == 0 {
		var scopes []string
		if len(cfg.AllowedScopes) > 0 {
			scopes = cfg.AllowedScopes
		}
		c, err := resolveClient(cfg, Client{Name: cfg.ClientID, ClientID: cfg.Grant.ClientID, Secret: cfg.ClientSecret,
			Scopes: scopes, KeyID: cfg.Grant.KeyID}, "the client (ClientID, Grant.ClientID)", true)
		if err != nil {
			return nil, err
		}
		return []*client{c}, nil
	}
	if cfg.ClientSecret != "" || (cfg.ClientID != "" && cfg.ClientID != cfg.Grant.ClientID) {
		return nil, fmt.Errorf("%w: ClientID and ClientSecret are for a daemon without Clients; give each client its Secret", ErrConfig)
	}
	out := make([]*client, 0, len(cfg.Clients))
	for i, cl := range cfg.Clients {
		where := fmt.Sprintf("client %d", i+1)
		if cl.Name != "" {
			where = fmt.Sprintf("client %q", cl.Name)
		}
		if slices.ContainsFunc(out, func(o *client) bool { return o.Name == cl.Name }) {
			return nil, fmt.Errorf("%w: %s: the name is used by another client", ErrConfig, where)
		}
		c, err := resolveClient(cfg, cl, where, false)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// resolveClient checks one client, named where in errors, and resolves
// it; anyUnix is the implicit client, which admits every unix socket
// caller instead of its Users and Groups.
func resolveClient(cfg Config, cl Client, where string, anyUnix bool) (*client, error) {
	bad := func(format string, args ...any) (*client, error) {
		return nil, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if cl.Name == "" || !validClientName(cl.Name) {
		return bad("%s: name must be printable ASCII without spaces, quotes, backslashes, ':' or '%%', and not empty", where)
	}
	if cl.ClientID == "" {
		cl.ClientID = cl.Name
	}
	if strings.TrimSpace(cl.ClientID) != cl.ClientID || !validClientName(cl.ClientID) {
		return bad("%s: client-id %q is not a valid Maskinporten client id", where, cl.ClientID)
	}
	if err := checkList(where+": scopes", cl.Scopes, cl.Scopes != nil, validScopeEntry, "a scope, 'prefix*' or '*'"); err != nil {
		return nil, err
	}
	if err := checkList(where+": authorization-types", cl.AuthorizationTypes, cl.AuthorizationTypes != nil, grant.ValidScope, "an authorization_details type such as urn:altinn:consent"); err != nil {
		return nil, err
	}
	secretWhat := where + ": the secret (secret-file)"
	if anyUnix {
		secretWhat = "the client secret (ClientSecret, --client-secret-file)"
	}
	if err := checkSecret(secretWhat, cl.Secret); err != nil {
		return nil, err
	}
	for _, l := range []struct {
		field string
		list  []string
	}{{"users", cl.Users}, {"groups", cl.Groups}} {
		if l.list != nil && len(l.list) == 0 {
			return bad("%s: %s is given but holds no entry; leave it out, or name who is admitted", where, l.field)
		}
	}
	if anyUnix && (cl.Users != nil || cl.Groups != nil) {
		return bad("%s admits every caller on a unix socket; users and groups are for Clients", where)
	}
	if !anyUnix && len(cl.Users) == 0 && len(cl.Groups) == 0 && cl.Secret == "" {
		return bad("%s admits nobody: give users or groups (unix socket callers), or a secret (TCP callers)", where)
	}
	if cl.KeyID == "" && cl.OpenKey == nil {
		cl.KeyID = cfg.Grant.KeyID
	}
	c := &client{Client: cl, anyUnix: anyUnix, uids: map[uint32]bool{}, gids: map[uint32]bool{}, authzTypes: map[string]bool{}}
	for _, a := range cl.AuthorizationTypes {
		for _, typ := range splitList(a) {
			c.authzTypes[typ] = true
		}
	}
	c.policy = newListPolicy(cfg.AllowedScopes)
	if cl.Scopes != nil {
		c.policy = newListPolicy(cl.Scopes)
	}
	for _, u := range cl.Users {
		id, err := lookupID(u, true)
		if err != nil {
			return bad("%s: users: %v", where, err)
		}
		c.uids[id] = true
	}
	for _, g := range cl.Groups {
		id, err := lookupID(g, false)
		if err != nil {
			return bad("%s: groups: %v", where, err)
		}
		c.gids[id] = true
	}
	c.hash()
	return c, nil
}

func (c *client) hash() {
	c.idHash = sha256.Sum256([]byte(c.Name))
	c.secretHash = sha256.Sum256([]byte(c.Secret))
}

// validClientName reports whether v may name a client: printable ASCII,
// no space, quote, backslash, ':' (the HTTP Basic separator) or '%'.
func validClientName(v string) bool {
	if v == "" || len(v) > 200 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"\:%`, c) >= 0 {
			return false
		}
	}
	return true
}

// lookupID resolves a user (or group) given by name or numeric id.
func lookupID(v string, isUser bool) (uint32, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return uint32(n), nil
	}
	var id string
	if isUser {
		u, err := user.Lookup(v)
		if err != nil {
			return 0, fmt.Errorf("no user %q on this system", v)
		}
		id = u.Uid
	} else {
		g, err := user.LookupGroup(v)
		if err != nil {
			return 0, fmt.Errorf("no group %q on this system", v)
		}
		id = g.Gid
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q has the id %q, not a number", v, id)
	}
	return uint32(n), nil
}

// Reasons for refusing a caller before its request is looked at, as the
// metrics and the audit trail name them.
const (
	reasonUnknownClient = "unknown_client"   // no client of that name
	reasonNotAdmitted   = "not_admitted"     // the client's users and groups do not admit the peer
	reasonNoClient      = "no_client"        // the peer is admitted to no client
	reasonAmbiguous     = "ambiguous_client" // admitted to several; none named
	reasonCredentials   = "bad_credentials"  // TCP without a client's name and secret
)

// admissionError refuses a caller: an OAuth 2 error and its reason.
type admissionError struct {
	oauthError
	reason string
	client *client // the client named, when it exists
}

func refuse(reason string, status int, code, description string) *admissionError {
	return &admissionError{oauthError: oauthError{status: status, code: code, description: description}, reason: reason}
}

// chooseClient returns the client a caller on a unix socket asks for and
// may use: the one it names as client_id (in the form or as the HTTP Basic
// user), or, naming none, the only one its peer credentials admit it to.
// Anything else is refused, saying why. A caller on TCP is chosen by its
// credentials (see admit).
func chooseClient(r *http.Request, creds *credentials, st *settings) (*client, *admissionError) {
	if len(st.clients) == 1 && st.clients[0].anyUnix {
		return st.clients[0], nil // no Clients: every caller, whatever it names, as before
	}
	p := peerOfRequest(r)
	who := "this unix socket peer (its uid is unknown)"
	if p != nil {
		who = "uid " + strconv.FormatUint(uint64(p.uid), 10) + " (gid " + strconv.FormatUint(uint64(p.gid), 10) + ")"
	}
	c, name := namedClient(creds, st)
	if name != "" {
		if c == nil {
			return nil, refuse(reasonUnknownClient, http.StatusUnauthorized, errInvalidClient,
				"this daemon has no client '"+excerpt(name)+"'; send the name of one of its clients as client_id")
		}
		if !c.admitsPeer(p) {
			ae := refuse(reasonNotAdmitted, http.StatusUnauthorized, errInvalidClient,
				who+" is not admitted to the client '"+c.Name+"': neither its users nor its groups name it; ask the daemon's operator"+newLoginHint)
			ae.client = c
			return nil, ae
		}
		return c, nil
	}
	var found *client
	var names []string
	for _, c := range st.clients {
		if c.admitsPeer(p) {
			found = c
			names = append(names, c.Name)
		}
	}
	switch len(names) {
	case 0:
		return nil, refuse(reasonNoClient, http.StatusUnauthorized, errInvalidClient,
			who+" is admitted to no client of this daemon; ask its operator to add it to a client's users or groups"+newLoginHint)
	case 1:
		return found, nil
	}
	return nil, refuse(reasonAmbiguous, http.StatusBadRequest, errInvalidRequest,
		who+" is admitted to several clients ("+strings.Join(names, ", ")+"); name one as client_id (in the form or as the HTTP Basic user)")
}

// newLoginHint ends a refusal of a unix socket peer: the groups it is
// judged by are those its process started with.
const newLoginHint = " (a group added with usermod counts only for processes started after the user's next login: `id` shows the groups a shell has)"

// namedClient returns the client a request names as its client id (the
// HTTP Basic user, form-decoded as RFC 6749 section 2.3.1 says or raw, or
// the form's client_id), or nil, and the name as sent ("" if none).
func namedClient(c *credentials, st *settings) (*client, string) {
	ids := c.ids.list()
	for _, id := range ids {
		if cl := st.byName[id]; cl != nil {
			return cl, id
		}
	}
	if len(ids) > 0 {
		return nil, ids[0]
	}
	return nil, ""
}

func (e *admissionError) Unwrap() error { return &e.oauthError }

// admit returns the client r may use: on a unix socket the one it names,
// or the only one, that its peer credentials admit it to (chooseClient);
// on TCP the one whose name and secret it sends, every client's compared
// in constant time.
func (s *Server) admit(r *http.Request, creds *credentials, form url.Values, st *settings) (*client, error) {
	if onUnixSocket(r) {
		c, ae := chooseClient(r, creds, st)
		if ae != nil {
			return nil, ae
		}
		return c, nil
	}
	found := tcpClient(creds, st.clients)
	if found == nil {
		s.authFailed(r, form)
		msg := "client authentication failed: callers on TCP must send a client's name and secret (HTTP Basic)"
		if creds.method != authNone {
			msg = "client authentication failed: the client id or secret is wrong"
		}
		return nil, refuse(reasonCredentials, http.StatusUnauthorized, errInvalidClient, msg)
	}
	return found, nil
}

package emulator

import (
	"crypto"
	"crypto/x509"
	"time"
)

// Config describes the Maskinporten the emulator plays. The zero value is a
// working emulator with no clients.
type Config struct {
	Roots            []*x509.Certificate // trusted roots of x5c chains; with none, x5c grants get MP-120
	Clients          []Client            // the registered clients; AddClient adds more
	TokenLifetime    time.Duration       // the access tokens' expires_in; if zero, 120 s
	MaxGrantLifetime time.Duration       // the largest exp - iat of a grant; if zero, 120 s
	// ClockSkew is how far iat may be ahead and exp behind the server's
	// clock; if zero, 10 s as Maskinporten allows.
	ClockSkew time.Duration
	Now       func() time.Time // the server's clock; if nil, time.Now
	// Issuer is the only accepted grant audience, the iss of issued tokens
	// and the base of error_uri; if empty, URL + "/".
	Issuer string
	// Key signs the access tokens (RS256; kid is its RFC 7638 thumbprint);
	// if nil, a fresh 2048-bit RSA key.
	Key crypto.Signer
	// AdminClient is the ID of the organisation's self-service client, whose tokens read
	// (idporten:dcr.read) and change (idporten:dcr.write) the keys of the organisation's
	// clients (Server.AdminAPIURL). If empty, that API is not served.
	AdminClient string
	// Consents are the Altinn 3 consents grants may name; an unknown id, another from or
	// organisation, or one past ValidTo gets 400 invalid_authorization_details.
	Consents []Consent
	// Logf, if not nil, is told of each answer of the token and exchange
	// endpoints, never of a grant or a token.
	Logf func(format string, args ...any)
}

// Client is a client registered in the emulator, as in Samarbeidsportalen.
type Client struct {
	ID string // the client_id, which grants carry as iss
	// OrgNumber is the 9-digit organisation number owning the client, which
	// an x5c grant's leaf certificate must carry (else MP-122).
	OrgNumber string
	Scopes    []string // the scopes the client may ask for
	// Keys are the public keys of kid grants by kid; only RSA keys verify,
	// and an *x509.Certificate stands for its key.
	Keys           map[string]crypto.PublicKey
	DelegatedBy    []string // the organisations consumer_org may name (else 403 MP-251)
	SystemUserOrgs []string // the organisations a urn:altinn:systemuser element may name (else MP-303)
}

// Stats counts what the server has seen. Server.Stats returns a copy.
type Stats struct {
	TokenRequests int // requests to /token, faults included
	Issued        int // access tokens issued
	// Rejected counts refused token requests by MP code, else by OAuth
	// error; FailNext and DropNext are not counted.
	Rejected        map[string]int
	Injected        int // token requests answered by FailNext or DropNext
	AltinnExchanges int // Altinn tokens issued
	AltinnRejected  int // refused exchanges (401)
	AdminRequests   int // requests to the self-service API
	// JTIs counts the jti values used up: those of grants that passed
	// signature, audience and time, even if then refused.
	JTIs int
}

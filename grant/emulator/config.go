package emulator

import (
	"crypto"
	"crypto/x509"
	"time"
)

// Config describes the Maskinporten the emulator plays. The zero value is a
// working emulator with no clients.
type Config struct {
	// Roots are the trusted roots for x5c chains (the intermediates come in
	// x5c). With no roots, every x5c grant is refused (MP-120).
	Roots []*x509.Certificate
	// Clients are the registered clients; AddClient adds more.
	Clients []Client
	// TokenLifetime is the access tokens' expires_in. If zero, 120 seconds.
	TokenLifetime time.Duration
	// MaxGrantLifetime is the largest exp - iat of a grant. If zero, 120
	// seconds, as Maskinporten documents.
	MaxGrantLifetime time.Duration
	// ClockSkew is how far iat may be ahead and exp behind the server's
	// clock, as Maskinporten allows with 10 seconds. If zero, 10 seconds.
	ClockSkew time.Duration
	// Now is the server's clock. If nil, time.Now.
	Now func() time.Time
	// Issuer is the only accepted grant audience, the iss of issued tokens
	// and the base of error_uri. If empty, the server's URL with a trailing
	// slash, known once the server has started.
	Issuer string
	// Key signs the access tokens (RS256, an RSA key; its kid is the RFC
	// 7638 thumbprint). If nil, a fresh 2048-bit RSA key.
	Key crypto.Signer
	// AdminClient is the ID of the organisation's self-service client (one
	// of Clients): its tokens with idporten:dcr.read read, and with
	// idporten:dcr.write change, the keys of its organisation's clients
	// (Server.AdminAPIURL). If empty, that API is not served.
	AdminClient string
	// Consents are the Altinn 3 consents grants may name in
	// authorization_details; an unknown id, another from, another
	// organisation or a consent past ValidTo gets 400
	// invalid_authorization_details (Maskinporten documents no MP code).
	Consents []Consent
	// Logf, if not nil, is told of each answer of the token and exchange
	// endpoints, never of a grant or a token.
	Logf func(format string, args ...any)
}

// Client is a client registered in the emulator, as a Maskinporten
// integration is registered in Samarbeidsportalen.
type Client struct {
	// ID is the client_id, which grants carry as iss.
	ID string
	// OrgNumber is the 9-digit organisation number owning the client; an
	// x5c grant's leaf certificate must carry it (orgid.FromCertificate),
	// else MP-122.
	OrgNumber string
	// Scopes are the scopes the client may ask for.
	Scopes []string
	// Keys are the public keys registered on the client by kid, for kid
	// grants; only RSA keys verify, and an *x509.Certificate stands for its key.
	Keys map[string]crypto.PublicKey
	// DelegatedBy are the organisations that delegated to the client's
	// organisation in Altinn: consumer_org may name only these (else 403 MP-251).
	DelegatedBy []string
	// SystemUserOrgs are the organisations with a system user for this
	// client's system: a urn:altinn:systemuser element may name only these
	// (else MP-303).
	SystemUserOrgs []string
}

// Stats counts what the server has seen. Server.Stats returns a copy.
type Stats struct {
	TokenRequests int // requests to /token, faults included
	Issued        int // access tokens issued
	// Rejected counts refused token requests by MP code ("MP-124"), or by
	// OAuth error where there is none; FailNext and DropNext are not counted.
	Rejected        map[string]int
	Injected        int // token requests answered by FailNext or DropNext
	AltinnExchanges int // Altinn tokens issued
	AltinnRejected  int // refused exchanges (401)
	AdminRequests   int // requests to the self-service API
	// JTIs counts the jti values used up: those of grants that passed
	// authentication (signature, audience, time), even if then refused.
	JTIs int
}

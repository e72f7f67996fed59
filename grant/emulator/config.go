package emulator

import (
	"crypto"
	"crypto/x509"
	"time"
)

// Config describes the Maskinporten the emulator plays. The zero value is a
// working emulator with no clients.
type Config struct {
	// Roots are the trusted roots for x5c chains; the intermediates come in
	// the x5c header. With no roots, every x5c grant is refused (MP-120).
	Roots []*x509.Certificate

	// Clients are the registered clients. More can be added while the
	// server runs with AddClient.
	Clients []Client

	// TokenLifetime is the lifetime of issued access tokens, answered as
	// expires_in. If zero, 120 seconds.
	TokenLifetime time.Duration

	// MaxGrantLifetime is the largest exp - iat a grant may have. If zero,
	// 120 seconds, as Maskinporten documents.
	MaxGrantLifetime time.Duration

	// ClockSkew is how far the clocks of client and server may differ: a
	// grant may be issued at most ClockSkew in the future, and is taken as
	// expired only when exp is more than ClockSkew in the past. (This is how
	// Maskinporten checks, with 10 seconds.) If zero, 10 seconds.
	ClockSkew time.Duration

	// Now is the server's clock. If nil, time.Now.
	Now func() time.Time

	// Issuer is the issuer identifier: the only accepted grant audience, the
	// iss of issued tokens, and the base of error_uri. If empty, the
	// server's URL with a trailing slash, known once the server has started.
	Issuer string

	// Key signs the access tokens (RS256); it must be an RSA key. Its kid is
	// the RFC 7638 thumbprint of the public key. If nil, a fresh 2048-bit
	// RSA key.
	Key crypto.Signer

	// AdminClient is the ID of the organisation's self-service client
	// (one of Clients): an access token issued to it with scope
	// idporten:dcr.read reads, and with idporten:dcr.write changes, the
	// keys of the clients of its organisation through the self-service
	// API (see Server.AdminAPIURL). If empty, that API is not served.
	AdminClient string

	// Consents are the consents given in Altinn 3 that grants may name in
	// authorization_details of type urn:altinn:consent to get a consent
	// token. A grant naming an unknown id, another from, a consent given
	// to another organisation or one past its ValidTo is refused with 400
	// invalid_authorization_details (Maskinporten documents no MP code
	// for these).
	Consents []Consent

	// Logf, if not nil, is told of each answer of the token and exchange
	// endpoints. It is never given a grant or a token.
	Logf func(format string, args ...any)
}

// Client is a client registered in the emulator, as a Maskinporten
// integration is registered in Samarbeidsportalen.
type Client struct {
	// ID is the client_id, which grants carry as iss.
	ID string

	// OrgNumber is the 9-digit organisation number owning the client. For
	// x5c grants it must equal the organisation number in the leaf
	// certificate (organizationIdentifier NTRNO-<orgnr>, OID 2.5.4.97, or a
	// subject serialNumber of 9 digits), else MP-122.
	OrgNumber string

	// Scopes are the scopes the client may ask for.
	Scopes []string

	// Keys are the public keys registered on the client, by kid, for
	// grants that carry kid instead of x5c. Only RSA keys can verify the
	// accepted algorithms; an *x509.Certificate stands for its key.
	Keys map[string]crypto.PublicKey

	// DelegatedBy are the organisation numbers that delegated to this
	// client's organisation in Altinn: consumer_org may name only these
	// (else 403 MP-251).
	DelegatedBy []string

	// SystemUserOrgs are the organisation numbers that have a system user
	// for this client's system in Altinn: authorization_details of type
	// urn:altinn:systemuser may name only these (else MP-303).
	SystemUserOrgs []string
}

// Stats counts what the server has seen. Server.Stats returns a copy.
type Stats struct {
	// TokenRequests counts every request to /token, faults included.
	TokenRequests int
	// Issued counts the access tokens issued.
	Issued int
	// Rejected counts refused token requests by MP code ("MP-124"), or by
	// OAuth error ("invalid_request") where Maskinporten has no code.
	// Answers from FailNext and DropNext are not counted here.
	Rejected map[string]int
	// Injected counts the token requests answered by FailNext or DropNext.
	Injected int
	// AltinnExchanges counts the Altinn tokens issued.
	AltinnExchanges int
	// AltinnRejected counts the refused exchanges (401).
	AltinnRejected int
	// AdminRequests counts every request to the self-service API.
	AdminRequests int
	// JTIs counts the jti values used up: those of grants that passed
	// authentication (signature, audience, time), even if then refused for
	// what they asked.
	JTIs int
}

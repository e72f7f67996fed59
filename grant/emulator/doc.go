// Package emulator is a local Maskinporten, as strict as the real one, for
// tests, demos and integration tests of clients that get access tokens with
// JWT grants (RFC 7523). It is shaped like net/http/httptest: NewServer
// starts one on 127.0.0.1, NewTest ties one to a test, and Server.URL says
// where it listens.
//
// # Endpoints
//
//	GET  /.well-known/oauth-authorization-server   metadata (RFC 8414)
//	GET  /jwks                                      the token-signing key
//	POST /token                                     JWT grant -> access token
//	GET  /authentication/api/v1/exchange/maskinporten   Altinn token exchange
//	GET, POST, DELETE /api/v1/clients/{id}/jwks     self-service key API (Config.AdminClient)
//
// /token enforces every rule Maskinporten documents for a grant (the form,
// alg RS256/384/512, one of kid or x5c chaining to Config.Roots with the
// client's organisation number, the signature, aud exactly the issuer, iat,
// exp and Config.MaxGrantLifetime, a fresh jti, only the documented claims,
// consumer_org delegations, system users, Config.Consents and registered
// scopes), answering with the error, HTTP status and MP code the real
// service uses. As there, the MP code is only the last path element of
// error_uri, absent for errors without a code:
//
//	{"error":"invalid_grant",
//	 "error_description":"Invalid assertion. Client authentication failed. Expired key. ... (trace_id: 5f1c…)",
//	 "error_uri":"<issuer>errors/MP-121"}
//
// Issued tokens are RS256 JWTs by Config.Key (Server.PublicKey, /jwks) with
// the claims of Maskinporten's tokens: iss, client_id, client_amr, token_type,
// scope, consumer, iat, exp, jti; aud for a resource; supplier and
// delegation_source for a consumer_org; pid; and authorization_details for a
// system user or a consent.
//
// With Config.AdminClient set, the server also plays Digdir's self-service
// API for a client's keys under Server.AdminAPIURL, for bearer tokens it
// issued to AdminClient with idporten:dcr.read (GET) or idporten:dcr.write
// (POST replaces the set with 1 to MaxClientKeys public keys, DELETE
// empties it); kid grants are checked against that set at once.
//
// FailNext, DropNext, SetLatency and SetDateOffset make the server misbehave
// in the ways a client must survive. The server never logs a grant or a token.
package emulator

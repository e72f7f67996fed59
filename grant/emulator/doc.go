// Package emulator is a local Maskinporten, as strict as the real one, for
// tests and demos of clients of the JWT grant (RFC 7523). It is shaped like
// net/http/httptest: NewServer starts one on 127.0.0.1, NewTest ties one to
// a test, Server.URL says where it listens.
//
//	GET  /.well-known/oauth-authorization-server   metadata (RFC 8414)
//	GET  /jwks                                      the token-signing key
//	POST /token                                     JWT grant -> access token
//	GET  /authentication/api/v1/exchange/maskinporten   Altinn token exchange
//	GET, POST, DELETE /api/v1/clients/{id}/jwks     self-service key API (Config.AdminClient)
//
// /token enforces every rule Maskinporten documents for a grant and answers
// with the real service's error, HTTP status and MP code; as there, the MP
// code is only the last path element of error_uri:
//
//	{"error":"invalid_grant","error_uri":"<issuer>errors/MP-121",
//	 "error_description":"Invalid assertion. Client authentication failed. Expired key. ... (trace_id: 5f1c…)"}
//
// Issued tokens are RS256 JWTs by Config.Key (Server.PublicKey, /jwks) with
// the claims of Maskinporten's tokens. FailNext, DropNext, SetLatency and
// SetDateOffset make the server misbehave in the ways a client must survive.
// The server never logs a grant or a token.
package emulator

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
// # What /token enforces
//
// Every rule Maskinporten documents for a grant, answered with the error,
// HTTP status and MP code the real service uses: POST with
// application/x-www-form-urlencoded, grant_type
// urn:ietf:params:oauth:grant-type:jwt-bearer and an assertion; alg RS256,
// RS384 or RS512; exactly one of kid (a key registered on the client) or
// x5c (a JSON array of standard-base64 DER certificates whose chain leads to
// one of Config.Roots, and whose leaf carries the client's organisation
// number); a valid signature; aud exactly the issuer with its trailing slash,
// as one string; iss a registered client; iat not ahead of the server clock,
// exp - iat at most Config.MaxGrantLifetime, exp not past; a jti never seen
// before; no claims but aud, iss, iat, exp, jti, scope, resource,
// consumer_org, iss_onbehalfof, pid and authorization_details; resource as
// an array; consumer_org only from an organisation that delegated to the
// client, never with iss_onbehalfof; authorization_details as an array of
// at most one system user (urn:altinn:systemuser, for Client.SystemUserOrgs)
// and at most one consent (urn:altinn:consent: a Config.Consents entry
// with the same id and from, given to the client's organisation or to the
// consumer_org, and not past its ValidTo); and only scopes registered on
// the client.
//
// # Errors
//
// An error answer is Maskinporten's JSON body
//
//	{"error":"invalid_grant",
//	 "error_description":"Invalid assertion. Client authentication failed. Expired key. ... (trace_id: 5f1c…)",
//	 "error_uri":"<issuer>errors/MP-121"}
//
// As in the real service, the MP code is the last path element of error_uri,
// which is absent for the errors Maskinporten has no code for (an unknown
// kid, "Issue time is after now").
//
// # Access tokens
//
// Issued tokens are JWTs signed with RS256 by Config.Key, verifiable with
// Server.PublicKey or the JWK set, carrying the claims of Maskinporten's
// tokens: iss, client_id, client_amr ("virksomhetssertifikat" for x5c
// grants, "private_key_jwt" for kid grants), token_type, scope, consumer
// ({"authority":"iso6523-actorid-upis","ID":"0192:<orgnr>"}), iat, exp, jti;
// aud when the grant asked for a resource; supplier and delegation_source
// when it named a consumer_org; pid; and authorization_details with
// systemuser_id and system_id for a system user, and with to, consented,
// validTo and consentRights for a consent.
//
// # The self-service key API
//
// With Config.AdminClient set, the server also plays Digdir's self-service
// API for a client's registered keys, under Server.AdminAPIURL. Each call
// needs a bearer access token this server issued to AdminClient, with scope
// idporten:dcr.read (GET) or idporten:dcr.write (POST, DELETE), for a
// client of AdminClient's organisation. GET answers {"keys", "created",
// "last_updated"}; POST replaces the whole set with 1 to MaxClientKeys
// public RSA (2048 bits or more) or EC P-256 keys, each with its own kid
// and use "sig" and no private members; DELETE removes every key. The set
// is at once what kid grants of that client are checked against. Refusals
// are {"error", "error_description"} with 400, 401, 403 or 404.
//
// # Faults
//
// FailNext, DropNext, SetLatency and SetDateOffset make the server misbehave
// in the ways a client must survive: 5xx answers, connections cut
// mid-answer, slowness, and a lying Date header.
//
// The server never logs a grant or a token.
package emulator

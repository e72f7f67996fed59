// Gets tokens from mp-hsm serve with unmodified Node OAuth 2 libraries and
// uses them on a resource server: the interop test of the daemon
// (daemon/interop_test.go) runs it after `npm ci` of this directory's lock.
//
// For each library (openid-client, which finds the token endpoint by
// discovery(); simple-oauth2) and each client authentication method
// (client_secret_basic, client_secret_post), in one process. Everything
// comes from the environment (never argv): ISSUER (the daemon's URL),
// CLIENT_ID, CLIENT_SECRET, SCOPE, RESOURCE_URL (under which the resource
// node-LIBRARY-METHOD is asked for) and NODE_PATH (the node_modules).
//
// Prints one JSON line per library and method: the library's version, the
// token's type and lifetime, what discovery found, and the resource
// server's status and answer, or the error. Exits 77 on a Node older than
// 20.
import { createRequire } from 'node:module';
import path from 'node:path';

// openid-client 6 needs Node 20 or later (fetch and WebCrypto as globals).
if (Number(process.versions.node.split('.')[0]) < 20) {
  console.error(`Node ${process.versions.node} is too old: openid-client needs Node 20 or later`);
  process.exit(77);
}

const { ISSUER, CLIENT_ID, CLIENT_SECRET, SCOPE, RESOURCE_URL, NODE_PATH } = process.env;
// The modules are installed outside this directory; resolve them there.
const require = createRequire(path.join(NODE_PATH, 'x.js'));
const versionOf = (name) => require(`${name}/package.json`).version;

async function openidClient(method, resource) {
  const client = await import(require.resolve('openid-client'));
  const auth = method === 'client_secret_basic'
    ? client.ClientSecretBasic(CLIENT_SECRET) // form-encodes the credentials
    : client.ClientSecretPost(CLIENT_SECRET);
  // The daemon listens on plain HTTP on loopback.
  const config = await client.discovery(new URL(ISSUER), CLIENT_ID, undefined, auth,
    { execute: [client.allowInsecureRequests], timeout: 30 });
  const meta = config.serverMetadata();
  const token = await client.clientCredentialsGrant(config, { scope: SCOPE });
  const resp = await client.fetchProtectedResource(config, token.access_token, new URL(resource), 'GET');
  return {
    discovered: { issuer: meta.issuer, token_endpoint: meta.token_endpoint },
    token_type: token.token_type,
    expires_in: token.expires_in,
    resource_status: resp.status,
    resource_answer: await resp.text(),
  };
}

async function simpleOAuth2(method, resource) {
  const { ClientCredentials } = require('simple-oauth2');
  const client = new ClientCredentials({
    client: { id: CLIENT_ID, secret: CLIENT_SECRET },
    auth: { tokenHost: ISSUER, tokenPath: '/token' },
    // header: HTTP Basic, form-encoded (the library's default, "strict").
    options: { authorizationMethod: method === 'client_secret_basic' ? 'header' : 'body' },
  });
  const token = await client.getToken({ scope: SCOPE });
  const resp = await fetch(resource, { headers: { authorization: `Bearer ${token.token.access_token}` } });
  return {
    token_type: token.token.token_type,
    expires_in: token.token.expires_in,
    resource_status: resp.status,
    resource_answer: await resp.text(),
  };
}

const libraries = [['openid-client', openidClient], ['simple-oauth2', simpleOAuth2]];
for (const [library, run] of libraries) {
  for (const method of ['client_secret_basic', 'client_secret_post']) {
    const out = { library, version: versionOf(library), method };
    try {
      Object.assign(out, await run(method, `${RESOURCE_URL}/node-${library}-${method}`));
    } catch (e) {
      // The library's error and its cause (an OAuth 2 error answer); no
      // library puts the secret in them.
      out.error = `${e?.stack ?? e}${e?.cause ? ` cause: ${JSON.stringify(e.cause)}` : ''}`;
    }
    console.log(JSON.stringify(out));
  }
}

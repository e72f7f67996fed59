"""Gets tokens from mp-hsm serve with unmodified Python OAuth 2 libraries
and uses them on a resource server: the interop test of the daemon
(daemon/interop_test.go) runs it with Debian's /usr/bin/python3.

For each library (authlib, requests-oauthlib) and each client
authentication method (client_secret_basic, client_secret_post), one
process for all, so the libraries are imported once. Everything comes from
the environment (never argv, which other users can read): TOKEN_URL,
CLIENT_ID, CLIENT_SECRET, SCOPE, and RESOURCE_URL, under which the
resource python-LIBRARY-METHOD is asked for.

Prints one JSON line per library and method: the library's version, the
token's type and lifetime and the resource server's status and answer, or
the error. Exits 77 when a library is not installed.
"""
import json
import os
import sys

env = os.environ
token_url, client_id, secret = env["TOKEN_URL"], env["CLIENT_ID"], env["CLIENT_SECRET"]
scope, resource = env["SCOPE"], env["RESOURCE_URL"]

try:
    import authlib
    import requests_oauthlib
    from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session as OAuthlibSession
except ImportError as e:
    print("missing Python module: %s (apt-get install python3-authlib python3-requests-oauthlib)" % e.name,
          file=sys.stderr)
    sys.exit(77)


def with_authlib(method):
    session = AuthlibSession(client_id, secret, scope=scope, token_endpoint_auth_method=method)
    token = session.fetch_token(token_url, grant_type="client_credentials")
    return session, token


def with_requests_oauthlib(method):
    # The library's backend-application flow; the scope goes in the body
    # (fetch_token's keyword arguments).
    session = OAuthlibSession(client=BackendApplicationClient(client_id=client_id))
    if method == "client_secret_basic":
        # The library's default: HTTP Basic, credentials not form-encoded.
        token = session.fetch_token(token_url, client_id=client_id, client_secret=secret, scope=scope)
    else:
        token = session.fetch_token(token_url, client_id=client_id, client_secret=secret, scope=scope,
                                    include_client_id=True)
    return session, token


libraries = [
    ("authlib", authlib.__version__, with_authlib),
    ("requests-oauthlib", requests_oauthlib.__version__, with_requests_oauthlib),
]
for library, version, get in libraries:
    for method in ("client_secret_basic", "client_secret_post"):
        out = {"library": library, "version": version, "method": method}
        try:
            session, token = get(method)
            # The session sends the token as a bearer itself.
            resp = session.get("%s/python-%s-%s" % (resource, library, method), timeout=30)
            out.update(token_type=token.get("token_type"), expires_in=token.get("expires_in"),
                       resource_status=resp.status_code, resource_answer=resp.text)
        except Exception as e:  # the library's error, which never holds the secret
            out["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(out), flush=True)

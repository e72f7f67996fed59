#!/usr/bin/env python3
"""Get a Maskinporten access token from `mp-hsm serve`, with the standard
library only.

Over the unix socket (no secret: the socket's mode and group decide who may
connect):

    python3 mp_hsm_token.py --socket "$XDG_RUNTIME_DIR/mp-hsm.sock" --scope altinn:serviceowner

Over loopback TCP, with the daemon's client id and the secret from its
--client-secret-file (HTTP Basic):

    MP_HSM_CLIENT_SECRET=... python3 mp_hsm_token.py --url http://127.0.0.1:8400/token \
        --client-id my-client --scope altinn:serviceowner

With requests-oauthlib, over TCP, the daemon is an ordinary token URL
(oauthlib refuses plain HTTP unless OAUTHLIB_INSECURE_TRANSPORT is set; the
daemon's TCP listener is loopback HTTP):

    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session
    session = OAuth2Session(client=BackendApplicationClient(client_id="my-client"))
    token = session.fetch_token("http://127.0.0.1:8400/token", client_id="my-client",
                                client_secret=secret, scope=["altinn:serviceowner"])

The daemon caches tokens and refreshes them before they expire, so asking it
before every call is cheap; `expires_in` is what is left of the token.
"""

import argparse
import base64
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket."""

    def __init__(self, path, timeout=30):
        super().__init__("mp-hsm", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class TokenError(Exception):
    """An OAuth 2 error answer from the daemon."""

    def __init__(self, status, error, description):
        super().__init__(f"{status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


def get_token(scopes, socket_path=None, url=None, client_id=None, client_secret=None, **params):
    """Return the daemon's token answer: access_token, token_type, expires_in, scope.

    params are optional request parameters: resource (a list), consumer_org,
    pid, system_user_org, altinn ("true").
    """
    form = [("grant_type", "client_credentials"), ("scope", " ".join(scopes))]
    for name, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            form.append((name, v))
    body = urllib.parse.urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if socket_path:
        conn, path = UnixHTTPConnection(socket_path), "/token"
    else:
        u = urllib.parse.urlsplit(url)
        conn, path = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30), u.path or "/token"
        # RFC 6749 section 2.3.1: id and secret are form-encoded, then Basic.
        cred = urllib.parse.quote(client_id, safe="") + ":" + urllib.parse.quote(client_secret, safe="")
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    if resp.status != 200:
        raise TokenError(resp.status, answer.get("error"), answer.get("error_description"))
    return answer


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--socket", help="the daemon's unix socket")
    p.add_argument("--url", default="http://127.0.0.1:8400/token", help="the daemon's token URL over TCP")
    p.add_argument("--client-id", default=os.environ.get("MP_HSM_CLIENT_ID", ""))
    p.add_argument("--scope", action="append", required=True)
    p.add_argument("--consumer-org")
    args = p.parse_args()
    params = {"consumer_org": args.consumer_org} if args.consumer_org else {}
    try:
        tok = get_token(args.scope, socket_path=args.socket, url=args.url, client_id=args.client_id,
                        client_secret=os.environ.get("MP_HSM_CLIENT_SECRET", ""), **params)
    except TokenError as e:
        print(f"mp-hsm: {e}", file=sys.stderr)
        if e.status == 503:
            print("the daemon is not ready or Maskinporten is unavailable; try again later", file=sys.stderr)
        sys.exit(1)
    expires = time.strftime("%H:%M:%S", time.localtime(time.time() + tok["expires_in"]))
    print(f"got a {tok['token_type']} token for {tok['scope']!r}, valid until {expires}", file=sys.stderr)
    print(tok["access_token"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A GitHub-style OAuth2 provider for the demo and the e2e tests (Python standard library only).

It stands for "the upstream API an MCP server calls" (GitHub, or with a few
switches Google or Notion): the filter runs the authorization-code flow
against it and keeps its tokens; the demo MCP server's `whoami` calls its
`/user` API with the token the filter injected.

    python3 envoy-demo/fake_github.py [--port 9500] [--expires-in 60] [--test-api]

Binds 127.0.0.1 only. Endpoints, as GitHub documents them:

  GET  /login/oauth/authorize      the "Authorize <app>" page: a login field (default octocat)
                                   and Authorize / Cancel; Authorize 302s to redirect_uri?code&state,
                                   Cancel to redirect_uri?error=access_denied&state. PKCE S256 checked
                                   when a code_challenge was sent.
  POST /login/oauth/access_token   authorization_code and refresh_token grants. Answers
                                   application/x-www-form-urlencoded unless Accept: application/json;
                                   errors come as HTTP 200 with error=... (bad_verification_code,
                                   bad_refresh_token, incorrect_client_credentials, redirect_uri_mismatch);
                                   scope comma-separated; token_type "bearer" (lower case).
                                   Expiring ghu_ access tokens with single-use ghr_ refresh tokens,
                                   rotated on every refresh, or (expires_in 0) classic gho_ tokens
                                   that never expire and come without a refresh token.
  GET  /user                       Authorization: Bearer|token <t> -> {"login", "id", ...};
                                   401 {"message": "Bad credentials"} when unknown or expired.

Several OAuth apps can live side by side, each with its own client_id and
behaviour (settings below). The default app is gh-client / gh-secret
(--client-id, --client-secret, --expires-in, --login).

With --test-api (tests and the demo's own checks only; it shows tokens):

  GET  /_test/state?client_id=ID   counters, every token issued (with issue and expiry times),
                                   every token-endpoint request, every authorize request's parameters
  POST /_test/apps                 {"client_id": ..., <settings>}: create or change an app
  POST /_test/revoke               {"client_id": ..., "login": ...}: forget that user's tokens
                                   (a later refresh gets bad_refresh_token, /user gets 401)

App settings (JSON):
  client_secret       string
  expires_in          access-token lifetime in seconds; 0 = classic non-expiring token, no refresh token
  refresh_expires_in  refresh-token lifetime (default 15897600, GitHub's six months)
  rotate_refresh      true (GitHub): a refresh answer has a new refresh token and the old one is spent;
                      false (Google): no refresh_token in refresh answers, the first one stays valid
  form_always         true: answer form-encoded whatever Accept says
  client_auth         "any" (GitHub: Basic or body), "basic" (Notion: Basic only; credentials in the
                      body get 401 invalid_client), "body" (credentials in the body only)
  outage              null, "503" (answer 503), "reset" (close the connection unanswered),
                      "hang" (answer nothing for hang_seconds, then 503): the token endpoint only
  hang_seconds        default 10
  refresh_delay_ms    wait this long before answering a refresh (to make refreshes overlap)
  refuse_codes        true: every code exchange gets error=bad_verification_code
  login               what the authorize page's login field holds at first (default octocat)
  redirect_uris       if set, redirect_uri must be one of these (else an error page, as GitHub does)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse as up
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 9500
ERROR_URI = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"

DEFAULT_SETTINGS = {
    "client_secret": "gh-secret",
    "expires_in": 28800,
    "refresh_expires_in": 15897600,
    "rotate_refresh": True,
    "form_always": False,
    "client_auth": "any",
    "outage": None,
    "hang_seconds": 10,
    "refresh_delay_ms": 0,
    "refuse_codes": False,
    "login": "octocat",
    "redirect_uris": None,
}


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class App:
    """One OAuth app: its settings, tokens and counters."""

    def __init__(self, client_id: str, settings: dict) -> None:
        self.client_id = client_id
        self.settings = {**DEFAULT_SETTINGS, **settings}
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # access token -> {login, exp (0: never), scope}
        self.refresh: dict[str, dict] = {}  # live refresh token -> {login, exp, scope}
        self.spent: set[str] = set()  # refresh tokens used up by rotation
        self.counters = {"token_requests": 0, "code_exchanges": 0, "refreshes": 0, "refresh_reuse": 0,
                         "api_calls": 0, "authorize_pages": 0, "outage_answers": 0}
        self.issued: list[dict] = []
        self.token_log: list[dict] = []
        self.authorize_log: list[dict] = []
        self.api_log: list[dict] = []

    def issue(self, login: str, scope: str, with_refresh: bool = True) -> dict:
        scope = ",".join(s for s in scope.replace(",", " ").split() if s)
        now = time.time()
        expires_in = int(self.settings["expires_in"])
        if expires_in <= 0:  # classic OAuth App token
            token = "gho_" + secrets.token_hex(18)
            self.tokens[token] = {"login": login, "exp": 0, "scope": scope}
            self.issued.append({"access_token": token, "refresh_token": None, "login": login, "at": now,
                                "expires_at": None})
            return {"access_token": token, "token_type": "bearer", "scope": scope}
        token = "ghu_" + secrets.token_hex(18)
        self.tokens[token] = {"login": login, "exp": now + expires_in, "scope": scope}
        answer = {"access_token": token, "expires_in": expires_in, "token_type": "bearer", "scope": scope}
        rt = None
        if with_refresh:
            rt = "ghr_" + secrets.token_hex(38)
            rt_expires = int(self.settings["refresh_expires_in"])
            self.refresh[rt] = {"login": login, "exp": now + rt_expires, "scope": scope}
            answer.update({"refresh_token": rt, "refresh_token_expires_in": rt_expires})
        self.issued.append({"access_token": token, "refresh_token": rt, "login": login, "at": now,
                            "expires_at": now + expires_in})
        return answer

    def revoke(self, login: str) -> int:
        gone = [t for t, v in self.tokens.items() if v["login"] == login]
        gone += [r for r, v in self.refresh.items() if v["login"] == login]
        for t in gone:
            self.tokens.pop(t, None)
            self.refresh.pop(t, None)
        return len(gone)

    def state(self) -> dict:
        return {"client_id": self.client_id, "settings": {k: v for k, v in self.settings.items()
                                                          if k != "client_secret"},
                **self.counters, "live_tokens": len(self.tokens), "live_refresh": len(self.refresh),
                "issued": self.issued, "token_log": self.token_log, "authorize_log": self.authorize_log,
                "api_log": self.api_log}


class Provider:
    def __init__(self, default_client_id: str, default_settings: dict, test_api: bool) -> None:
        self.lock = threading.Lock()
        self.apps: dict[str, App] = {default_client_id: App(default_client_id, default_settings)}
        self.test_api = test_api

    def app(self, client_id: str | None) -> App | None:
        return self.apps.get(client_id or "")

    def app_of_token(self, token: str) -> tuple[App, dict] | None:
        for app in self.apps.values():
            if token in app.tokens:
                return app, app.tokens[token]
        return None


PROVIDER: Provider


def page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:30em;margin:3em auto}}label,input,button{{display:block;margin:.4em 0}}</style>
</head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-github"

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write("fake-github %s\n" % (fmt % args))

    # --- answers ---------------------------------------------------------

    def send(self, status: int, body: str | bytes, ctype: str, extra: tuple = ()) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, value, extra: tuple = ()) -> None:
        self.send(status, json.dumps(value), "application/json; charset=utf-8", extra)

    def oauth_reply(self, app: App, fields: dict, status: int = 200, entry: dict | None = None) -> None:
        """GitHub's content negotiation: JSON only when asked for (and not switched off)."""
        accept = self.headers.get("Accept", "")
        as_json = "application/json" in accept and not app.settings["form_always"]
        if entry is not None:
            entry["answered"] = "json" if as_json else "form"
        if as_json:
            self.send_json(status, fields)
        else:
            self.send(status, up.urlencode({k: v for k, v in fields.items() if v is not None}),
                      "application/x-www-form-urlencoded; charset=utf-8")

    def read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # --- routes ----------------------------------------------------------

    def do_GET(self) -> None:
        u = up.urlsplit(self.path)
        q = dict(up.parse_qsl(u.query, keep_blank_values=True))
        if u.path == "/login/oauth/authorize":
            return self.authorize_page(q)
        if u.path in ("/user", "/api/v3/user"):
            return self.user_api()
        if u.path == "/_test/state" and PROVIDER.test_api:
            with PROVIDER.lock:
                app = PROVIDER.app(q.get("client_id"))
                if app is None:
                    return self.send_json(200, {"apps": {k: a.state() for k, a in PROVIDER.apps.items()}})
                return self.send_json(200, app.state())
        if u.path == "/healthz":
            return self.send(200, "ok\n", "text/plain")
        self.send_json(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def do_POST(self) -> None:
        u = up.urlsplit(self.path)
        if u.path == "/login/oauth/authorize":
            return self.authorize_decision()
        if u.path == "/login/oauth/access_token":
            return self.token_endpoint(u)
        if u.path in ("/_test/apps", "/_test/revoke") and PROVIDER.test_api:
            try:
                body = json.loads(self.read_body() or b"{}")
            except ValueError:
                return self.send_json(400, {"message": "not JSON"})
            return self.test_apps(body) if u.path == "/_test/apps" else self.test_revoke(body)
        self.send_json(404, {"message": "Not Found"})

    # --- authorization ---------------------------------------------------

    def authorize_page(self, q: dict) -> None:
        with PROVIDER.lock:
            app = PROVIDER.app(q.get("client_id"))
            if app is not None:
                app.counters["authorize_pages"] += 1
                app.authorize_log.append({"at": time.time(), "params": q})
        if app is None:
            return self.send(404, page("Not found", "<p>No application has this client_id.</p>"), "text/html")
        redirect_uri = q.get("redirect_uri", "")
        allowed = app.settings["redirect_uris"]
        if not redirect_uri or (allowed and redirect_uri not in allowed):
            return self.send(400, page("Redirect URI mismatch", "<p>The redirect_uri is not associated with "
                                       "this application.</p>"), "text/html")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in q.items())
        scope = q.get("scope", "")
        self.send(200, page(f"Authorize {app.client_id}", f"""
<p><code>{html.escape(app.client_id)}</code> wants to access your account
{f'(scopes: <code>{html.escape(scope)}</code>)' if scope else ''} and will come back to
<code>{html.escape(redirect_uri)}</code>.</p>
<form method="post" action="/login/oauth/authorize">
{hidden}
<label for="login">Signed in as</label>
<input type="text" id="login" name="login" value="{html.escape(app.settings['login'])}" required>
<button type="submit" name="authorize" value="1">Authorize</button>
<button type="submit" name="authorize" value="0">Cancel</button>
</form>"""), "text/html; charset=utf-8")

    def authorize_decision(self) -> None:
        form = dict(up.parse_qsl(self.read_body().decode(errors="replace"), keep_blank_values=True))
        with PROVIDER.lock:
            app = PROVIDER.app(form.get("client_id"))
            if app is None or not form.get("redirect_uri"):
                return self.send(400, page("Bad request", "<p>Unknown application.</p>"), "text/html")
            allowed = app.settings["redirect_uris"]
            if allowed and form["redirect_uri"] not in allowed:
                return self.send(400, page("Redirect URI mismatch", "<p>Not this application's.</p>"), "text/html")
            state = {"state": form["state"]} if "state" in form else {}
            if form.get("authorize") != "1":
                params = {"error": "access_denied", "error_description": "The user has denied your application access.",
                          "error_uri": ERROR_URI + "#access-denied", **state}
            else:
                code = secrets.token_hex(10)
                app.codes[code] = {"login": form.get("login") or app.settings["login"], "scope": form.get("scope", ""),
                                   "redirect_uri": form["redirect_uri"], "challenge": form.get("code_challenge"),
                                   "method": form.get("code_challenge_method"), "exp": time.time() + 600}
                params = {"code": code, **state}
        target = form["redirect_uri"]
        location = target + ("&" if "?" in target else "?") + up.urlencode(params)
        self.send(302, "", "text/html", (("Location", location),))

    # --- token endpoint --------------------------------------------------

    def token_endpoint(self, u) -> None:
        raw = self.read_body().decode(errors="replace")
        ctype = self.headers.get("Content-Type", "")
        try:
            fields = json.loads(raw) if "json" in ctype and raw else dict(up.parse_qsl(raw, keep_blank_values=True))
        except ValueError:
            fields = {}
        fields.update(dict(up.parse_qsl(u.query)))  # GitHub also takes query parameters
        basic = None
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                cid, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
                basic = (up.unquote_plus(cid), up.unquote_plus(secret))
            except ValueError:
                basic = ("", "")
        body_creds = (fields.get("client_id"), fields.get("client_secret")) if "client_secret" in fields else None
        client_id = basic[0] if basic else fields.get("client_id")
        with PROVIDER.lock:
            app = PROVIDER.app(client_id)
            entry = {"at": time.time(), "grant_type": fields.get("grant_type"),
                     "auth": "basic" if basic else ("body" if body_creds else "none"),
                     "accept": self.headers.get("Accept"), "content_type": ctype,
                     "code_verifier": bool(fields.get("code_verifier")), "redirect_uri": fields.get("redirect_uri"),
                     "refresh_token_sha256": fingerprint(fields["refresh_token"]) if fields.get("refresh_token") else None}
            if app is not None:
                app.counters["token_requests"] += 1
                app.token_log.append(entry)
                outage = app.settings["outage"]
                if outage:
                    app.counters["outage_answers"] += 1
                    entry["outcome"] = f"outage:{outage}"
        if app is None:
            # GitHub answers an unknown client like wrong credentials.
            return self.send_json(200, {"error": "incorrect_client_credentials",
                                        "error_description": "The client_id and/or client_secret passed are incorrect."})
        if outage == "reset":
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if outage == "hang":
            time.sleep(float(app.settings["hang_seconds"]))
            return self.send(503, "Service Unavailable", "text/plain")
        if outage:
            return self.send(503, page("Unicorn!", "<p>No server is currently available to service your request.</p>"),
                             "text/html; charset=utf-8")
        if fields.get("grant_type") == "refresh_token" and app.settings["refresh_delay_ms"]:
            time.sleep(app.settings["refresh_delay_ms"] / 1000)
        with PROVIDER.lock:
            result = self.grant(app, fields, basic, body_creds)
            entry["outcome"] = result[1].get("error", "ok")
        status, answer = result
        if status == 401:
            entry["answered"] = "json"
            return self.send_json(401, answer)
        self.oauth_reply(app, answer, entry=entry)

    def grant(self, app: App, fields: dict, basic, body_creds) -> tuple[int, dict]:
        mode = app.settings["client_auth"]
        if mode == "basic" and not basic:
            return 401, {"error": "invalid_client", "error_description": "client credentials must use HTTP Basic"}
        if mode == "body" and basic:
            return 401, {"error": "invalid_client", "error_description": "client credentials must be in the body"}
        creds = basic or body_creds
        if not creds or creds[0] != app.client_id or creds[1] != app.settings["client_secret"]:
            if mode != "any":
                return 401, {"error": "invalid_client", "error_description": "bad client credentials"}
            return 200, {"error": "incorrect_client_credentials",
                         "error_description": "The client_id and/or client_secret passed are incorrect.",
                         "error_uri": ERROR_URI + "#incorrect-client-credentials"}
        if fields.get("grant_type") == "refresh_token":
            app.counters["refreshes"] += 1
            rt = fields.get("refresh_token", "")
            if rt in app.spent:
                app.counters["refresh_reuse"] += 1
            record = app.refresh.get(rt)
            if not record or record["exp"] < time.time():
                return 200, {"error": "bad_refresh_token",
                             "error_description": "The refresh token passed is incorrect or expired.",
                             "error_uri": ERROR_URI + "#bad-refresh-token"}
            if app.settings["rotate_refresh"]:
                del app.refresh[rt]  # single use: spent now, a new one comes with the answer
                app.spent.add(rt)
                return 200, app.issue(record["login"], record["scope"])
            return 200, app.issue(record["login"], record["scope"], with_refresh=False)
        app.counters["code_exchanges"] += 1
        code = app.codes.pop(fields.get("code", ""), None)
        if app.settings["refuse_codes"] or not code or code["exp"] < time.time():
            return 200, {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired.",
                         "error_uri": ERROR_URI + "#bad-verification-code"}
        if fields.get("redirect_uri") and fields["redirect_uri"] != code["redirect_uri"]:
            return 200, {"error": "redirect_uri_mismatch",
                         "error_description": "The redirect_uri MUST match the registered callback URL for this application."}
        if code["challenge"]:
            verifier = fields.get("code_verifier", "")
            calc = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if code["method"] != "S256" or calc != code["challenge"]:
                return 200, {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}
        return 200, app.issue(code["login"], code["scope"])

    # --- API ---------------------------------------------------------------

    def user_api(self) -> None:
        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() in ("bearer", "token") else ""
        now = time.time()
        with PROVIDER.lock:
            found = PROVIDER.app_of_token(token) if token else None
            ok = found is not None and (found[1]["exp"] == 0 or found[1]["exp"] > now)
            if found:
                found[0].counters["api_calls"] += 1
                found[0].api_log.append({"at": now, "token_sha256": fingerprint(token), "ok": ok})
        if not ok:
            return self.send_json(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                                        "status": "401"})
        _, record = found
        self.send_json(200, {"login": record["login"], "id": int(fingerprint(record["login"])[:6], 16),
                             "type": "User", "name": record["login"].title()},
                       (("X-OAuth-Scopes", record["scope"].replace(",", ", ")), ("X-RateLimit-Remaining", "4999")))

    # --- test API ----------------------------------------------------------

    def test_apps(self, body: dict) -> None:
        client_id = body.pop("client_id", None)
        if not client_id:
            return self.send_json(400, {"message": "client_id is required"})
        unknown = set(body) - set(DEFAULT_SETTINGS)
        if unknown:
            return self.send_json(400, {"message": f"unknown settings: {sorted(unknown)}"})
        with PROVIDER.lock:
            app = PROVIDER.apps.get(client_id)
            if app is None:
                app = PROVIDER.apps[client_id] = App(client_id, body)
            else:
                app.settings.update(body)
            return self.send_json(200, app.state())

    def test_revoke(self, body: dict) -> None:
        with PROVIDER.lock:
            app = PROVIDER.app(body.get("client_id"))
            if app is None:
                return self.send_json(404, {"message": "no such app"})
            return self.send_json(200, {"revoked": app.revoke(body.get("login", ""))})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    global PROVIDER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("GH_PORT", DEFAULT_PORT)))
    parser.add_argument("--client-id", default=os.environ.get("GH_CLIENT_ID", "gh-client"))
    parser.add_argument("--client-secret", default=os.environ.get("GH_CLIENT_SECRET", "gh-secret"))
    parser.add_argument("--expires-in", type=int, default=int(os.environ.get("GH_EXPIRES_IN", "28800")),
                        help="access-token lifetime in seconds (0: classic tokens that never expire)")
    parser.add_argument("--login", default=os.environ.get("GH_LOGIN", "octocat"))
    parser.add_argument("--test-api", action="store_true", default=os.environ.get("GH_TEST_API") == "1",
                        help="serve /_test/* (shows tokens: tests only)")
    args = parser.parse_args()
    PROVIDER = Provider(args.client_id, {"client_secret": args.client_secret, "expires_in": args.expires_in,
                                         "login": args.login}, args.test_api)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"fake GitHub on http://127.0.0.1:{args.port}: app {args.client_id}, tokens expire after "
          f"{args.expires_in or 'never'} s{', test API on' if args.test_api else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

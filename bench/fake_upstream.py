"""A minimal upstream OAuth2 provider for the benchmark (standard library only).

Just enough for one upstream consent per route: GET /login/oauth/authorize
approves at once (302 back to redirect_uri with a code and the state), and
POST /login/oauth/access_token exchanges that code for a long-lived,
GitHub-style token (JSON, since the filter asks for it). Runs in a thread of
the benchmark process; it is idle while the load runs.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_ID = "bench-upstream-client"
CLIENT_SECRET = "bench-upstream-secret"
TOKEN_LIFETIME_S = 8 * 3600  # GitHub's expiring user tokens live 8 hours


class FakeUpstream:
    def __init__(self, port: int) -> None:
        self.port = port
        self.codes: set[str] = set()
        self.issued: list[str] = []
        self.token_requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path != "/login/oauth/authorize" or "redirect_uri" not in q:
                    return self._send(404, b"not found", "text/plain")
                code = secrets.token_hex(10)
                owner.codes.add(code)
                params = {"code": code, **({"state": q["state"]} if "state" in q else {})}
                sep = "&" if "?" in q["redirect_uri"] else "?"
                self._send(302, b"", "text/plain", (("Location", q["redirect_uri"] + sep +
                                                     urllib.parse.urlencode(params)),))

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                owner.token_requests += 1
                if self.path.split("?")[0] != "/login/oauth/access_token":
                    return self._send(404, b"not found", "text/plain")
                if form.get("grant_type") != "authorization_code" or form.get("code") not in owner.codes:
                    body = {"error": "bad_verification_code"}
                else:
                    owner.codes.discard(form["code"])
                    token = "ghu_" + secrets.token_hex(18)
                    owner.issued.append(token)
                    body = {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_LIFETIME_S,
                            "refresh_token": "ghr_" + secrets.token_hex(38), "scope": "read:user"}
                self._send(200, json.dumps(body).encode(), "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-upstream", daemon=True)

    def start(self) -> FakeUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def oauth2_config(self, cluster: str) -> dict:
        """The route's upstream_oauth2 block pointing here, through `cluster`."""
        base = f"http://127.0.0.1:{self.port}"
        return {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["read:user"],
            "endpoint": {
                "auth_url": f"{base}/login/oauth/authorize",
                "token_url": f"{base}/login/oauth/access_token",
                "cluster": cluster,
            },
        }

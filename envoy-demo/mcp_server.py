#!/usr/bin/env python3
"""Demo MCP server for mcp-oauth-filter: FastMCP (PyPI `mcp` 1.x) over streamable HTTP.

It stands for "an MCP server behind the filter": Envoy forwards /mcp here, and
the filter decides what may reach it. Its tools:

  whoami        calls the upstream provider's user API (--upstream-user-url, e.g.
                GitHub's /user or an OpenID provider's userinfo) with the bearer
                token the filter injected, and returns who that token belongs to
                ({"login": ..., "sub": ..., "user_api": ...}); a tool error when no
                token arrived or the API refused it
  echo          returns its text
  admin_reset   a privileged-sounding tool for policy demos; it changes nothing

Besides the MCP endpoint it serves:

  GET /healthz           readiness probe for the demo stack and the e2e harness
  GET /_debug/headers    the request headers as received, as JSON (what reached us)
  GET /_debug/requests   every request received so far: arrival time, method, path,
                         host, the x-test-id header, the names of all headers, the
                         JSON-RPC messages of a POST body (method and tool name
                         only), and of an Authorization header only a SHA-256
                         fingerprint of its credentials; the e2e tests use it to
                         prove a request never got past the filter, that the
                         client's token never reached this server, and which
                         upstream token did
  POST /_debug/refuse    {"sha256": <fingerprint>, "status": 401, "www_authenticate": "..."}:
                         answer every later request carrying that credential with
                         that status, as a server does whose upstream API stopped
                         accepting the token (tests of the filter's reaction)

Binds 127.0.0.1 only. Port from --port or MCP_SERVER_PORT (default 9100);
--json-response answers POSTs with one JSON body instead of an event stream.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import threading
import time

import httpx
import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

DEFAULT_PORT = 9100
UPSTREAM_TIMEOUT_S = 5.0
# The upstream user API whoami calls (set from --upstream-user-url in main()).
UPSTREAM_USER_URL = os.environ.get("MCP_UPSTREAM_USER_URL") or None

# Envoy is the front door: requests arrive with whatever Host the client used
# (127.0.0.1:<listener port>, or test hosts such as other.example), so the SDK's
# DNS-rebinding check (Host/Origin allow-lists, on by default for 127.0.0.1)
# would reject proxied requests. This server only listens on loopback.
mcp = FastMCP(
    name="mcp-oauth-filter demo",
    instructions="Demo MCP server behind the mcp-oauth-filter Envoy filter.",
    host="127.0.0.1",
    streamable_http_path="/mcp",
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)

_seen_lock = threading.Lock()
_seen: collections.deque[dict] = collections.deque(maxlen=5000)
# Credential fingerprint -> (status, WWW-Authenticate) to answer with (POST /_debug/refuse).
_refused: dict[str, tuple[int, str | None]] = {}


def _bearer_token(request: Request | None) -> str | None:
    if request is None:
        return None
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@mcp.tool()
async def whoami(ctx: Context) -> dict[str, str | None]:
    """Tell who the caller is at the upstream provider, by asking its user API with the token received."""
    request = ctx.request_context.request
    token = _bearer_token(request if isinstance(request, Request) else None)
    if token is None:
        raise ToolError("no upstream token received: the gateway sent no Authorization header, "
                        "so this server can't tell who you are")
    if not UPSTREAM_USER_URL:
        raise ToolError("an upstream token was received, but this server has no upstream user API "
                        "to ask (start it with --upstream-user-url)")
    # Never echo the token itself.
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=UPSTREAM_TIMEOUT_S) as http:
            r = await http.get(UPSTREAM_USER_URL, headers={"Authorization": f"Bearer {token}",
                                                            "Accept": "application/json"})
    except httpx.HTTPError as e:
        raise ToolError(f"the upstream user API {UPSTREAM_USER_URL} did not answer: {e!r}") from e
    if r.status_code != 200:
        raise ToolError(f"the upstream user API {UPSTREAM_USER_URL} refused the token: HTTP {r.status_code} "
                        f"{r.text[:200]}")
    try:
        user = r.json()
    except ValueError as e:
        raise ToolError(f"the upstream user API {UPSTREAM_USER_URL} answered no JSON") from e
    # GitHub: login; OpenID userinfo: preferred_username, sub.
    login = user.get("login") or user.get("preferred_username") or user.get("sub")
    sub = user.get("sub") if "sub" in user else (str(user["id"]) if "id" in user else None)
    return {"login": login, "sub": sub, "user_api": UPSTREAM_USER_URL}


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
def admin_reset() -> str:
    """A privileged-sounding tool for policy demos; it changes nothing."""
    return "reset done (demo: nothing was changed)"


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


@mcp.custom_route("/_debug/headers", methods=["GET"])
async def debug_headers(request: Request) -> JSONResponse:
    # Header names arrive lower-cased (ASGI); repeated headers are joined with ", ".
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return JSONResponse({"method": request.method, "path": request.url.path, "headers": headers})


@mcp.custom_route("/_debug/requests", methods=["GET"])
async def debug_requests(_request: Request) -> JSONResponse:
    with _seen_lock:
        return JSONResponse({"requests": list(_seen)})


@mcp.custom_route("/_debug/refuse", methods=["POST"])
async def debug_refuse(request: Request) -> JSONResponse:
    body = await request.json()
    with _seen_lock:
        _refused[body["sha256"]] = (int(body.get("status", 401)), body.get("www_authenticate"))
    return JSONResponse({"refusing": len(_refused)})


def fingerprint(credentials: str) -> str:
    """SHA-256 (hex) of an Authorization header's credentials (what follows the
    scheme), so the log can show which token arrived without holding it."""
    return hashlib.sha256(credentials.encode("latin-1")).hexdigest()


def rpc_summary(body: bytes) -> list[dict[str, str | None]] | None:
    """The JSON-RPC messages of a POST body: method and tool name of each (no arguments)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    out = []
    for message in value if isinstance(value, list) else [value]:
        if isinstance(message, dict):
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            name = params.get("name")
            out.append({"method": message.get("method") if isinstance(message.get("method"), str) else None,
                        "name": name if isinstance(name, str) else None})
    return out


class RecordRequests:
    """ASGI middleware remembering every HTTP request that reached the server
    (and answering those whose credential POST /_debug/refuse named)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        credentials = authorization.partition(" ")[2].strip() if authorization else None
        entry = {
            "time": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "host": headers.get("host"),
            "x-test-id": headers.get("x-test-id"),
            "authorization": "present" if authorization is not None else None,
            "authorization_scheme": authorization.partition(" ")[0] if authorization else None,
            "authorization_sha256": fingerprint(credentials) if credentials else None,
            "headers": sorted(headers),
            "rpc": None,
        }
        if scope["method"] == "POST" and not scope["path"].startswith("/_debug/"):
            # Read the body to record its messages, then hand it on unchanged.
            chunks, more = [], True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            entry["rpc"] = rpc_summary(body)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            inner_receive = replay
        else:
            inner_receive = receive
        with _seen_lock:
            _seen.append(entry)
            refusal = _refused.get(entry["authorization_sha256"] or "")
        if refusal is not None:
            status, challenge = refusal
            extra = [(b"www-authenticate", challenge.encode())] if challenge else []
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), *extra]})
            await send({"type": "http.response.body", "body": b'{"error":"the upstream token was refused"}'})
            return
        await self.app(scope, inner_receive, send)


def main() -> None:
    global UPSTREAM_USER_URL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MCP_SERVER_PORT", DEFAULT_PORT)))
    parser.add_argument("--log-level", default=os.environ.get("MCP_SERVER_LOG_LEVEL", "info"))
    parser.add_argument("--upstream-user-url", default=UPSTREAM_USER_URL,
                        help="the upstream provider's user API whoami calls with the token it receives, "
                             "e.g. http://127.0.0.1:9500/user (GitHub style) or <issuer>/me (OpenID userinfo)")
    parser.add_argument("--json-response", action="store_true",
                        help="answer POSTs with a JSON body instead of an event stream")
    args = parser.parse_args()

    UPSTREAM_USER_URL = args.upstream_user_url
    mcp.settings.json_response = args.json_response
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = RecordRequests(mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()

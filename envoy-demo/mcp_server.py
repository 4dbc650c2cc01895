#!/usr/bin/env python3
"""Demo MCP server for mcp-oauth-filter: FastMCP (PyPI `mcp` 1.x) over streamable HTTP.

It stands for "an MCP server behind the filter": Envoy forwards /mcp here, and
the filter decides what may reach it. Besides the MCP endpoint it serves:

  GET /healthz           readiness probe for the demo stack and the e2e harness
  GET /_debug/headers    the request headers as received, as JSON (what reached us)
  GET /_debug/requests   every request received so far: method, path, host, the
                         x-test-id header, the names of all headers, and of an
                         Authorization header only a SHA-256 fingerprint of its
                         credentials; the e2e tests use it to prove a request
                         never got past the filter, and that the client's token
                         never reached this server

Binds 127.0.0.1 only. Port from --port or MCP_SERVER_PORT (default 9100).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import os
import threading

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

DEFAULT_PORT = 9100

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
_seen: collections.deque[dict[str, str | None]] = collections.deque(maxlen=2000)


def _bearer_token(request: Request | None) -> str | None:
    if request is None:
        return None
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@mcp.tool()
def whoami(ctx: Context) -> str:
    """Tell who the caller is, as far as this server can know."""
    request = ctx.request_context.request
    token = _bearer_token(request if isinstance(request, Request) else None)
    if token is None:
        return "no upstream token received: this server does not know who you are"
    # Never echo the token itself. Looking the user up at the upstream API with
    # this token comes with the upstream OAuth support.
    return f"an upstream bearer token was received ({len(token)} characters); user lookup is not implemented yet"


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


def fingerprint(credentials: str) -> str:
    """SHA-256 (hex) of an Authorization header's credentials (what follows the
    scheme), so the log can show which token arrived without holding it."""
    return hashlib.sha256(credentials.encode("latin-1")).hexdigest()


class RecordRequests:
    """ASGI middleware remembering every HTTP request that reached the server."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            authorization = headers.get("authorization")
            credentials = authorization.partition(" ")[2].strip() if authorization else None
            with _seen_lock:
                _seen.append(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "host": headers.get("host"),
                        "x-test-id": headers.get("x-test-id"),
                        "authorization": "present" if authorization is not None else None,
                        "authorization_scheme": authorization.partition(" ")[0] if authorization else None,
                        "authorization_sha256": fingerprint(credentials) if credentials else None,
                        "headers": sorted(headers),
                    }
                )
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MCP_SERVER_PORT", DEFAULT_PORT)))
    parser.add_argument("--log-level", default=os.environ.get("MCP_SERVER_LOG_LEVEL", "info"))
    args = parser.parse_args()

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = RecordRequests(mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()

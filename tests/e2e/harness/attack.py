"""Shared pieces of the attack suite (tests/e2e/test_attack_*.py): JSON-RPC
bodies, signing in once per module, raw MCP requests with any Host or
:authority, the checks on the MCP server's own request log (read from its
port, never through Envoy), forged access tokens signed with the harness's
key, and the attack suite's dedicated Envoys.

Every attack request carries a fresh x-test-id, so "did it reach the MCP
server?" is a question about that id in the server's log.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from . import leakwatch
from .envoy import Envoy, oauth_plugin_config, start_envoy
from .http import PROTOCOL_VERSION
from .idp import Idp
from .mcp_server import McpServer
from .oauth import Client, OAuthKit, describe, jwt_parts
from .rawhttp import RawResponse, http1, http2
from .upstream import GitHubPages, UpstreamStack

MARK = leakwatch.INJECTION_MARK
ADMIN_TOOL = "admin_reset"


# --- JSON-RPC -------------------------------------------------------------------


def rpc_call(name: str, mid: int | str = 7, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


def rpc(method: str, mid: int | str | None = 7, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if mid is not None:
        msg["id"] = mid
    if params is not None:
        msg["params"] = params
    return msg


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


ADMIN_BODY = dumps(rpc_call(ADMIN_TOOL))


def new_test_id() -> str:
    return uuid.uuid4().hex


# --- signing in -------------------------------------------------------------------


@dataclass
class SignedIn:
    """A user signed in through a client: the token response and what the TE says."""

    kit: OAuthKit
    client: Client
    tokens: dict[str, Any]

    @property
    def te(self) -> str:
        return self.tokens["access_token"]

    @property
    def refresh_token(self) -> str:
        return self.tokens["refresh_token"]

    @property
    def claims(self) -> dict[str, Any]:
        return jwt_parts(self.te)[1]

    @property
    def header(self) -> dict[str, Any]:
        return jwt_parts(self.te)[0]

    @property
    def gid(self) -> str:
        return self.claims["gid"]


def sign_in(kit: OAuthKit, *, client: Client | None = None, login: str | None = None) -> SignedIn:
    """Register a public client (unless given one), authorize, exchange."""
    client, tokens = kit.get_te(client=client, login=login)
    return SignedIn(kit=kit, client=client, tokens=tokens)


# --- the MCP endpoint, raw ---------------------------------------------------------


def mcp_headers(te: str | None, test_id: str, *, host: str | bytes | None = None,
                extra: list[tuple[str | bytes, str | bytes]] | None = None,
                scheme: str = "Bearer") -> list[tuple[str | bytes, str | bytes]]:
    """An MCP POST's headers; `host` adds a Host header (HTTP/1.1)."""
    h: list[tuple[str | bytes, str | bytes]] = []
    if host is not None:
        h.append(("Host", host))
    h += [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
          ("MCP-Protocol-Version", PROTOCOL_VERSION), ("x-test-id", test_id)]
    if te is not None:
        h.append(("Authorization", f"{scheme} {te}"))
    return h + list(extra or [])


def post_h1(envoy: Envoy, authority: str | bytes | None, te: str | None, test_id: str, body: bytes = ADMIN_BODY, *,
            target: str | bytes = "/mcp", method: str = "POST", extra: list | None = None,
            **kwargs: Any) -> RawResponse:
    return http1(envoy.listen_port, method, target, mcp_headers(te, test_id, host=authority, extra=extra), body,
                 **kwargs)


def post_h2(envoy: Envoy, authority: str | bytes | None, te: str | None, test_id: str, body: bytes = ADMIN_BODY, *,
            path: str | bytes = "/mcp", method: str = "POST", extra: list | None = None,
            **kwargs: Any) -> RawResponse:
    headers = [(n.lower() if isinstance(n, str) else n.lower(), v)
               for n, v in mcp_headers(te, test_id, extra=extra)]
    return http2(envoy.listen_port, method, path, authority, headers, body, **kwargs)


def route_authority(envoy: Envoy) -> str:
    """The authority of the first route of oauth_plugin_config: 127.0.0.1:<port>."""
    return f"127.0.0.1:{envoy.listen_port}"


# --- what reached the MCP server ----------------------------------------------------


def assert_not_forwarded(server: McpServer, test_id: str, what: Any = "") -> None:
    seen = server.saw_test_id(test_id)
    assert not seen, f"the request reached the MCP server ({what}):\n{json.dumps(seen, indent=1)[:2000]}"


def assert_forwarded_without_credentials(server: McpServer, test_id: str, *tokens: str) -> list[dict[str, Any]]:
    """It arrived, with no Authorization header at all (route without upstream_oauth2)."""
    seen = server.saw_test_id(test_id)
    assert seen, f"the request never reached the MCP server (test id {test_id})"
    for req in seen:
        assert req["authorization"] is None, f"the MCP server got an Authorization header: {req}"
    for token in tokens:
        assert not server.requests_with_token(token), "a filter token reached the MCP server"
    return seen


def assert_error_json(r: RawResponse | Any, status: int, errors: tuple[str, ...] | str) -> dict[str, Any]:
    """An RFC 6749 5.2 / RFC 7591 3.2.2 JSON error answer."""
    errors = (errors,) if isinstance(errors, str) else errors
    text = str(r) if isinstance(r, RawResponse) else describe(r)
    code = r.status if isinstance(r, RawResponse) else r.status_code
    assert code == status, f"expected {status}:\n{text}"
    body = r.json()
    assert isinstance(body, dict) and body.get("error") in errors, f"expected error in {errors}:\n{text}"
    return body


# --- forged tokens -------------------------------------------------------------------


def b64url(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")))


def signing_key(envoy: Envoy) -> tuple[str, bytes]:
    """(kid, key bytes) of the key the filter signs TEs with: the harness wrote it into the plugin config."""
    assert isinstance(envoy.plugin, dict), "the Envoy's plugin configuration is not a dict"
    key = envoy.plugin["keys"]["token_signing"][0]
    return key["id"], base64.b64decode(key["secret"])


def forge(envoy: Envoy, claims: dict[str, Any], *, key: bytes | None = None, kid: str | None = None,
          alg: str = "HS256", typ: str | None = "at+jwt", extra_header: dict[str, Any] | None = None) -> str:
    """A JWT with these claims, signed (HS*) with the filter's own key unless
    `key` is given. Noted as a filter token: it must never reach an MCP server."""
    own_kid, own_key = signing_key(envoy)
    headers: dict[str, Any] = {"kid": kid if kid is not None else own_kid}
    if typ is not None:
        headers["typ"] = typ
    headers.update(extra_header or {})
    token = jwt.encode(claims, key if key is not None else own_key, algorithm=alg, headers=headers)
    leakwatch.note_filter_token(token, "a forged token")
    return token


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    token = f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"
    leakwatch.note_filter_token(token, "a forged token")
    return token


def claims_like(signed: SignedIn, **changes: Any) -> dict[str, Any]:
    """The real TE's claims with some changed (None removes one)."""
    claims = dict(signed.claims)
    for k, v in changes.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def now() -> int:
    return int(time.time())


# --- dedicated Envoys ------------------------------------------------------------------


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def attack_plugin(listen_port: int, idp_port: int, *, authorization_server: dict[str, Any] | None = None,
                  top: dict[str, Any] | None = None, first_route: dict[str, Any] | None = None,
                  more_routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """oauth_plugin_config (routes 127.0.0.1:<port> and localhost:<port>) with
    the attack suite's changes: `authorization_server` merged over it, `top`
    merged at the top level, `first_route` merged into routes[0], more routes
    appended. Registration quotas stay out of the way unless changed."""
    quota = {"registration": {"dynamic": {"max_per_window": 100_000, "max_per_source_per_window": 100_000}}}
    config = oauth_plugin_config(listen_port, idp_port, _merge(quota, authorization_server or {}))
    if first_route:
        config["routes"][0] = _merge(config["routes"][0], first_route)
    config["routes"] += copy.deepcopy(more_routes or [])
    return _merge(config, top or {})


def start_attack_envoy(workdir: Path, name: str, *, mcp_server: McpServer, plugin: dict[str, Any],
                       listen_port: int, idp: Idp | None = None, upstream_port: int | None = None) -> Envoy:
    return start_envoy(workdir / name, name=name, mcp_port=mcp_server.port, plugin=plugin, listen_port=listen_port,
                       idp_port=idp.port if idp else None, upstream_port=upstream_port)


class ProviderKit(OAuthKit):
    """OAuthKit whose browser also gets through the fake GitHub's authorize
    page (for a dedicated Envoy with a route whose upstream_oauth2 is an app
    of the upstream stack's fake GitHub)."""

    def __init__(self, envoy: Envoy, idp: Idp, mcp_server: McpServer, stack: UpstreamStack) -> None:
        super().__init__(envoy, idp, mcp_server)
        self.stack = stack
        self.upstream_login = f"octo-attack-{secrets.token_hex(4)}"
        self.upstream_decision = "approve"
        self.upstream_pages: list[tuple[str, str]] = []
        self.provider_pages = [GitHubPages(self, stack.gh.port)]

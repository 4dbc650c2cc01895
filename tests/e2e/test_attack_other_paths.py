"""Attack class 3: other paths of a route's host.

What the filter must do on a route's host: serve its own endpoints
(/.well-known/oauth-protected-resource[/mcp], /.well-known/oauth-
authorization-server, /.well-known/openid-configuration, /.oauth/*) and the
MCP endpoint (/mcp), and refuse every other path with 404, with or without
a valid token (`forward_other_paths: true` on a route forwards them, a valid
token required, the client's token removed and the upstream token NOT
injected). Spellings that are not the MCP endpoint's own (case, dot
segments, doubled slashes, percent-encoding) are other paths too (or
refused with 400): none may reach the MCP server. The upstream token (TI)
is only ever injected on the MCP endpoint, so no other path can make the
MCP server (whose /_debug/headers echoes what it got) hand it to the client.

Checked against the MCP server's own request log, read from its port.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from harness.attack import (
    ADMIN_BODY, ProviderKit, SignedIn, assert_not_forwarded, attack_plugin, new_test_id, post_h1, sign_in,
    start_attack_envoy,
)
from harness.envoy import Envoy
from harness.idp import Idp
from harness.mcp_server import McpServer, fingerprint
from harness.oauth import OAuthKit
from harness.rawhttp import RawResponse, http1
from harness.upstream import UPSTREAM_CALLBACK, UpstreamKit, UpstreamStack
from harness.www_authenticate import bearer

# Paths that are not the MCP endpoint (/mcp) nor the filter's own.
PLAIN_OTHER_PATHS = [
    "/_debug/headers", "/_debug/requests", "/healthz", "/", "/mcpx", "/MCP", "/Mcp", "/mcp.json",
    "/.well-known/other", "/.well-known/oauth-protected-resourcex", "/.well-known/oauth-protected-resource/nope",
    "/.oauth/unknown", "/.oauth", "/_debug/headers?/mcp", "/_debug/headers?x=/.oauth/token",
]
# Spellings a normalising server might take for /mcp or for the filter's
# endpoints: other paths, or refused as ambiguous (400).
TRICKY_PATHS = [
    "/mcp/../_debug/headers", "/mcp/%2e%2e/_debug/headers", "/mcp/..%2f_debug/headers", "//mcp", "///mcp",
    "/%6dcp", "/%6Dcp", "/mcp%2f..", "/mcp%2F..%2F_debug%2Fheaders", "/x/../mcp", "/./mcp",
    "/.oauth/../_debug/headers", "/.well-known/../_debug/headers", "/_debug/headers;/mcp", "/mcp%00",
]


@pytest.fixture(scope="module")
def signed(envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[SignedIn]:
    kit = OAuthKit(envoy, idp, mcp_server)
    try:
        yield sign_in(kit)
    finally:
        kit.close()


def _get(envoy: Envoy, path: str, te: str | None, tid: str, method: str = "GET") -> RawResponse:
    headers = [("Host", f"127.0.0.1:{envoy.listen_port}"), ("x-test-id", tid)]
    if te:
        headers.append(("Authorization", f"Bearer {te}"))
    body = ADMIN_BODY if method == "POST" else b""
    if method == "POST":
        headers.append(("Content-Type", "application/json"))
    return http1(envoy.listen_port, method, path, headers, body)


@pytest.mark.parametrize("token", ["no-token", "valid-te"])
@pytest.mark.parametrize("path", PLAIN_OTHER_PATHS)
def test_other_path_is_404(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, path: str, token: str) -> None:
    """GET <path> on the route's host: 404 whether or not the TE is valid; not forwarded."""
    tid = new_test_id()
    r = _get(envoy, path, signed.te if token == "valid-te" else None, tid)
    assert r.status == 404, f"GET {path} ({token}): expected 404:\n{r}"
    assert_not_forwarded(mcp_server, tid, f"GET {path}")


@pytest.mark.parametrize("token", ["no-token", "valid-te"])
@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_tricky_spelling_is_refused(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, path: str,
                                    token: str) -> None:
    """POST tools/call admin_reset to <path>: 404 (another path) or 400
    (ambiguous), whether or not the TE is valid; not forwarded."""
    tid = new_test_id()
    r = _get(envoy, path, signed.te if token == "valid-te" else None, tid, method="POST")
    assert r.status in (400, 404), f"POST {path} ({token}): expected 400 or 404:\n{r}"
    assert_not_forwarded(mcp_server, tid, f"POST {path}")


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_other_methods_on_other_paths(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, method: str) -> None:
    """Other methods on another path, with a valid TE: refused (404, or 405 for
    a method the MCP transport never uses), not forwarded."""
    tid = new_test_id()
    r = _get(envoy, "/_debug/requests", signed.te, tid, method=method)
    assert r.status in (404, 405), f"{method} /_debug/requests: \n{r}"
    assert_not_forwarded(mcp_server, tid, method)


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource",
                                  "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_the_filters_own_endpoints_still_answer(envoy: Envoy, mcp_server: McpServer, path: str) -> None:
    """Control: the metadata endpoints are the filter's: 200 JSON, not forwarded."""
    tid = new_test_id()
    r = _get(envoy, path, None, tid)
    assert r.status == 200 and r.json(), f"GET {path}:\n{r}"
    assert_not_forwarded(mcp_server, tid, path)


def test_the_mcp_endpoint_still_works(envoy: Envoy, mcp_server: McpServer, signed: SignedIn) -> None:
    """Control: /mcp with the TE reaches the MCP server, without credentials."""
    tid = new_test_id()
    r = post_h1(envoy, f"127.0.0.1:{envoy.listen_port}", signed.te, tid,
                b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert r.status != 401, str(r)
    seen = mcp_server.saw_test_id(tid)
    assert len(seen) == 1 and seen[0]["authorization"] is None and seen[0]["path"] == "/mcp", seen


# --- the upstream token is only for the MCP endpoint (upstream stack, route op) -----------


@pytest.fixture(scope="module")
def op_user(upstream_stack: UpstreamStack) -> Iterator[tuple[UpstreamKit, str]]:
    """A user signed in on route `op` (its MCP endpoint is /mcp, its upstream token injected there)."""
    kit = UpstreamKit(upstream_stack, "op")
    try:
        _, tokens = kit.sign_in()
        yield kit, tokens["access_token"]
    finally:
        kit.close()


UPSTREAM_OTHER_PATHS = ["/_debug/headers", "/_debug/requests", "/", "/mcpx", "/MCP", "/mcp/../_debug/headers",
                        "//_debug/headers", "/gh/_debug/headers", "/plain/other"]


@pytest.mark.parametrize("path", UPSTREAM_OTHER_PATHS)
def test_upstream_token_is_never_injected_on_other_paths(op_user: tuple[UpstreamKit, str], path: str) -> None:
    """GET <path> with a valid TE of route op (which injects a TI on /mcp):
    refused (404, or 400 for an ambiguous spelling), nothing reaches any MCP
    server, and so no echo of the TI comes back."""
    kit, te = op_user
    tid = kit.test_id()
    r = _get(kit.envoy, path, te, tid)
    assert r.status in (400, 404), f"GET {path} with the op TE:\n{r}"
    for name, server in kit.stack.servers.items():
        assert_not_forwarded(server, tid, f"{path} -> mcp_{name}")
    for token in kit.stack.every_upstream_token():
        assert token not in r.text and token not in str(r.headers), f"GET {path}: an upstream token came back"


def test_upstream_token_is_injected_on_the_mcp_endpoint(op_user: tuple[UpstreamKit, str]) -> None:
    """Control: the same TE on /mcp: forwarded with the user's current TI, not the TE."""
    kit, te = op_user
    tid = kit.test_id()
    r = kit.post(te, kit.message("ping"), test_id=tid)
    assert r.status_code not in (401, 403, 404), r.text  # the MCP server's answer (no session: 400)
    [req] = kit.mcp_server.saw_test_id(tid)
    issued = {fingerprint(t["access_token"]) for t in kit.my_issued()}
    assert req["authorization_sha256"] in issued, f"/mcp was not sent with the user's upstream token: {req}"


# --- forward_other_paths: true (a dedicated Envoy with an upstream GitHub app) ---------------

FORWARD_APP = "app-attack-forward"


@pytest.fixture(scope="module")
def forward_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer, idp: Idp,
                  upstream_stack: UpstreamStack, listen_ports: dict[str, int]) -> Iterator[Envoy]:
    """Route http://127.0.0.1:P with forward_other_paths and an upstream
    token from the fake GitHub (app FORWARD_APP), in front of the session MCP server."""
    port = listen_ports["attack_forward"]
    gh = upstream_stack.gh
    secret = f"forward-{secrets.token_urlsafe(18)}"
    gh.configure(FORWARD_APP, client_secret=secret, redirect_uris=[f"http://127.0.0.1:{port}{UPSTREAM_CALLBACK}"],
                 expires_in=3600)
    upstream_stack.secrets.append(secret)
    plugin = attack_plugin(port, idp.port, first_route={
        "forward_other_paths": True,
        "mcp": {"server": {"path": "/mcp", "upstream_oauth2": {
            "client_id": FORWARD_APP, "client_secret": secret, "scopes": ["read:user"],
            "endpoint": {"auth_url": f"{gh.base_url}/login/oauth/authorize",
                         "token_url": f"{gh.base_url}/login/oauth/access_token", "cluster": "upstream_oauth"}}}},
    })
    proxy = start_attack_envoy(tmp_path_factory.mktemp("attack-forward"), "envoy-attack-forward",
                               mcp_server=mcp_server, plugin=plugin, listen_port=port, idp=idp, upstream_port=gh.port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def forward_user(forward_envoy: Envoy, idp: Idp, mcp_server: McpServer,
                 upstream_stack: UpstreamStack) -> Iterator[tuple[ProviderKit, SignedIn]]:
    kit = ProviderKit(forward_envoy, idp, mcp_server, upstream_stack)
    try:
        yield kit, sign_in(kit)
    finally:
        kit.close()


def _forward_tis(kit: ProviderKit) -> list[str]:
    return [t["access_token"] for t in kit.stack.gh.state(FORWARD_APP)["issued"]]


@pytest.mark.parametrize("path", ["/_debug/headers", "/", "/mcpx"])
def test_forward_other_paths_needs_a_token(forward_envoy: Envoy, mcp_server: McpServer, path: str) -> None:
    """forward_other_paths: without a token, the 401 challenge; not forwarded."""
    tid = new_test_id()
    r = _get(forward_envoy, path, None, tid)
    assert r.status == 401, f"GET {path} without a token on a forward_other_paths route:\n{r}"
    assert "resource_metadata" in bearer(r.header("www-authenticate") or "Bearer").params, str(r)
    assert_not_forwarded(mcp_server, tid, path)


def test_forward_other_paths_refuses_a_bad_token(forward_envoy: Envoy, mcp_server: McpServer,
                                                 forward_user: tuple[ProviderKit, SignedIn]) -> None:
    _, signed = forward_user
    tid = new_test_id()
    r = _get(forward_envoy, "/_debug/headers", signed.te[:-3] + "AAA", tid)
    assert r.status == 401, str(r)
    assert_not_forwarded(mcp_server, tid, "bad token")


def test_forward_other_paths_forwards_without_any_token(forward_envoy: Envoy, mcp_server: McpServer,
                                                        forward_user: tuple[ProviderKit, SignedIn]) -> None:
    """With a valid TE: forwarded, but with neither the TE nor the TI: the
    MCP server's echo of its headers holds no Authorization."""
    kit, signed = forward_user
    tid = new_test_id()
    r = _get(forward_envoy, "/_debug/headers", signed.te, tid)
    assert r.status == 200, f"a forward_other_paths route refused a valid TE:\n{r}"
    echoed = r.json()["headers"]
    assert "authorization" not in echoed, f"the MCP server got credentials on another path: {echoed}"
    [req] = mcp_server.saw_test_id(tid)
    assert req["authorization"] is None, req
    tis = _forward_tis(kit)
    assert tis, "the user has no upstream token: the route's upstream consent did not happen"
    for token in [signed.te, *tis]:
        assert token not in r.text, "a token came back in the echo"


def test_forward_other_paths_post_gets_no_upstream_token(forward_envoy: Envoy, mcp_server: McpServer,
                                                         forward_user: tuple[ProviderKit, SignedIn]) -> None:
    kit, signed = forward_user
    tid = new_test_id()
    r = _get(forward_envoy, "/mcpx", signed.te, tid, method="POST")
    assert r.status not in (401, 403), str(r)
    [req] = mcp_server.saw_test_id(tid)
    assert req["authorization"] is None and req["path"] == "/mcpx", req


def test_forward_other_paths_injects_the_upstream_token_on_the_mcp_endpoint(
        forward_envoy: Envoy, mcp_server: McpServer, forward_user: tuple[ProviderKit, SignedIn]) -> None:
    """Control: /mcp on the same route gets the TI."""
    kit, signed = forward_user
    tid = new_test_id()
    r = post_h1(forward_envoy, f"127.0.0.1:{forward_envoy.listen_port}", signed.te, tid,
                b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert r.status not in (401, 403), str(r)
    [req] = mcp_server.saw_test_id(tid)
    assert req["authorization_sha256"] in {fingerprint(t) for t in _forward_tis(kit)}, req


def test_forward_other_paths_keeps_the_filters_endpoints(forward_envoy: Envoy, mcp_server: McpServer) -> None:
    tid = new_test_id()
    r = _get(forward_envoy, "/.well-known/oauth-protected-resource/mcp", None, tid)
    assert r.status == 200 and r.json().get("resource") == f"http://127.0.0.1:{forward_envoy.listen_port}/mcp", str(r)
    assert_not_forwarded(mcp_server, tid, "PRM")


def test_forward_other_paths_is_per_route(forward_envoy: Envoy, mcp_server: McpServer) -> None:
    """The other route of the same Envoy (localhost:P) did not set it: 404."""
    tid = new_test_id()
    r = http1(forward_envoy.listen_port, "GET", "/_debug/headers",
              [("Host", f"localhost:{forward_envoy.listen_port}"), ("x-test-id", tid)])
    assert r.status == 404, str(r)
    assert_not_forwarded(mcp_server, tid, "other route")

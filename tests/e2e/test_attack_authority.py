"""Attack class 1: the request's authority (HTTP/1.1 Host, HTTP/2 :authority).

What the filter must do: pick the route by the authority, normalised once
(case-insensitive, a trailing dot on the host removed, the scheme's default
port the same as no port, IPv6 in brackets), and
  - refuse a request whose authority matches no route with 404 and a short
    body saying no MCP route serves this host (`unmatched_hosts: "deny"`, the
    default; `"passthrough"` lets it through untouched);
  - refuse an ambiguous authority with 400: a port with a leading zero, out
    of range or empty, userinfo, spaces or control characters, an empty or
    missing authority (Envoy's codec refuses some of these itself: a 400 or
    a reset stream count as refused too).
The harness's Envoy routes every host to the MCP server (virtual host
domains ["*"]), so this is the filter's own layer. Each authority is tried
over HTTP/1.1 and HTTP/2, without a token and with a valid TE, with a
tools/call of admin_reset: none of the refused ones may reach the MCP
server (its own request log, by x-test-id).

The session Envoy's routes are http://127.0.0.1:P and http://localhost:P
(conftest); a dedicated Envoy adds http://localhost (default port) and
http://[::1]:P, and another runs with unmatched_hosts "passthrough".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.attack import (
    ADMIN_BODY, SignedIn, assert_forwarded_without_credentials, assert_not_forwarded, attack_plugin, new_test_id,
    post_h1, post_h2, sign_in, start_attack_envoy,
)
from harness.envoy import Envoy
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit
from harness.procs import free_port
from harness.rawhttp import RawResponse, http1, http2
from harness.www_authenticate import bearer

# What the filter must answer, by kind of authority:
UNKNOWN = "unknown"  # 404, "no MCP route serves this host"
BAD = "bad"  # 400 (or Envoy's own 400 / a reset stream)
UNKNOWN_OR_BAD = "unknown-or-bad"  # 400 or 404
NUMERIC = "numeric"  # a numeric IPv4 spelling: refused, or treated as the route itself; never passed through
ROUTE = "route"  # the route 127.0.0.1:P itself (401 challenge without a token; forwarded with its TE)
OTHER_ROUTE = "other-route"  # the route localhost:P (its 401; our TE is for another audience: 401 too)


@dataclass(frozen=True)
class HostCase:
    name: str
    authority: Callable[[int], str | None]
    expect: str


HOSTS = [
    # Hosts no route names.
    HostCase("other.example", lambda p: "other.example", UNKNOWN),
    HostCase("other.example:P", lambda p: f"other.example:{p}", UNKNOWN),
    HostCase("127.0.0.2:P", lambda p: f"127.0.0.2:{p}", UNKNOWN),
    HostCase("[::1]:P", lambda p: f"[::1]:{p}", UNKNOWN),
    HostCase("[::ffff:127.0.0.1]:P", lambda p: f"[::ffff:127.0.0.1]:{p}", UNKNOWN),
    HostCase("127.0.0.1 without port", lambda p: "127.0.0.1", UNKNOWN),
    HostCase("127.0.0.1:80", lambda p: "127.0.0.1:80", UNKNOWN),
    HostCase("127.0.0.1:P+1", lambda p: f"127.0.0.1:{p + 1}", UNKNOWN),
    HostCase("localhost without port", lambda p: "localhost", UNKNOWN),
    HostCase("sub.localhost:P", lambda p: f"evil.localhost:{p}", UNKNOWN),
    # Numeric spellings of 127.0.0.1 (a WHATWG parser turns them into it).
    HostCase("2130706433:P", lambda p: f"2130706433:{p}", NUMERIC),
    HostCase("0x7f.0.0.1:P", lambda p: f"0x7f.0.0.1:{p}", NUMERIC),
    HostCase("127.1:P", lambda p: f"127.1:{p}", NUMERIC),
    # Not an authority at all, or two of them.
    HostCase("two hosts joined by a comma", lambda p: f"127.0.0.1:{p},other.example", UNKNOWN_OR_BAD),
    HostCase("a path in the authority", lambda p: f"127.0.0.1:{p}/x", UNKNOWN_OR_BAD),
    HostCase("IPv6 without brackets", lambda p: f"::1:{p}", UNKNOWN_OR_BAD),
    # Ambiguous forms.
    HostCase("leading-zero port", lambda p: f"127.0.0.1:0{p}", BAD),
    HostCase("port 99999", lambda p: "127.0.0.1:99999", BAD),
    HostCase("port 65536", lambda p: "127.0.0.1:65536", BAD),
    HostCase("empty port", lambda p: "127.0.0.1:", BAD),
    HostCase("signed port", lambda p: f"127.0.0.1:+{p}", BAD),
    HostCase("two ports", lambda p: f"127.0.0.1:{p}:{p}", BAD),
    HostCase("userinfo", lambda p: f"u@127.0.0.1:{p}", BAD),
    HostCase("userinfo with password", lambda p: f"u:pw@127.0.0.1:{p}", BAD),
    HostCase("userinfo naming another host", lambda p: f"other.example@127.0.0.1:{p}", BAD),
    HostCase("space before the port", lambda p: f"127.0.0.1 :{p}", BAD),
    HostCase("control character", lambda p: f"127.0.0.1:{p}\x01", BAD),
    HostCase("DEL", lambda p: f"127.0.0.1:{p}\x7f", BAD),
    HostCase("unclosed IPv6 bracket", lambda p: f"[::1:{p}", BAD),
    HostCase("empty authority", lambda p: "", BAD),
    HostCase("no authority at all", lambda p: None, BAD),
    # The routes themselves, spelled otherwise.
    HostCase("the route (control)", lambda p: f"127.0.0.1:{p}", ROUTE),
    HostCase("the route with a trailing dot on the host", lambda p: f"127.0.0.1.:{p}", ROUTE),
    HostCase("a dot after the port", lambda p: f"127.0.0.1:{p}.", BAD),
    HostCase("localhost:P (the other route)", lambda p: f"localhost:{p}", OTHER_ROUTE),
    HostCase("LOCALHOST:P", lambda p: f"LOCALHOST:{p}", OTHER_ROUTE),
    HostCase("LocalHost:P", lambda p: f"LocalHost:{p}", OTHER_ROUTE),
    HostCase("localhost.:P (trailing dot)", lambda p: f"localhost.:{p}", OTHER_ROUTE),
]


@pytest.fixture(scope="module")
def kit(envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[OAuthKit]:
    k = OAuthKit(envoy, idp, mcp_server)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def signed(kit: OAuthKit) -> SignedIn:
    return sign_in(kit)


def _send(envoy: Envoy, proto: str, authority: str | None, te: str | None, tid: str) -> RawResponse:
    if proto == "h1":
        return post_h1(envoy, authority, te, tid)
    return post_h2(envoy, authority, te, tid)


def _assert_refused_as(r: RawResponse, expect: str, what: str) -> None:
    if expect == UNKNOWN:
        assert r.status == 404, f"{what}: expected 404 (no route serves this host):\n{r}"
        assert "route" in r.text.lower(), f"{what}: the 404 should say no MCP route serves this host:\n{r}"
        assert r.header("www-authenticate") is None, f"{what}: a host no route serves gets no OAuth challenge:\n{r}"
    elif expect == BAD:
        assert r.status == 400 or r.status is None, f"{what}: expected 400 (ambiguous authority):\n{r}"
    elif expect == UNKNOWN_OR_BAD:
        assert r.status in (400, 404, None), f"{what}: expected 400 or 404:\n{r}"


@pytest.mark.parametrize("token", ["no-token", "valid-te"])
@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("case", HOSTS, ids=[c.name for c in HOSTS])
def test_authority(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, case: HostCase, proto: str,
                   token: str) -> None:
    """Each authority, over HTTP/1.1 (Host) and HTTP/2 (:authority), without
    and with the TE of route 127.0.0.1:P, POSTing tools/call admin_reset:
    refused as its kind says, and never at the MCP server unless it is the
    route itself and the TE is valid."""
    port = envoy.listen_port
    authority = case.authority(port)
    te = signed.te if token == "valid-te" else None
    tid = new_test_id()
    what = f"{proto} authority {authority!r} {token}"
    r = _send(envoy, proto, authority, te, tid)
    if case.expect in (UNKNOWN, BAD, UNKNOWN_OR_BAD):
        _assert_refused_as(r, case.expect, what)
        assert_not_forwarded(mcp_server, tid, what)
    elif case.expect == NUMERIC:
        assert r.status in (400, 401, 404, None), f"{what}: expected a refusal or the route's challenge:\n{r}"
        if te is None:
            assert_not_forwarded(mcp_server, tid, what)
        else:
            for req in mcp_server.saw_test_id(tid):
                assert req["authorization"] is None, f"{what}: forwarded with credentials: {req}"
    elif case.expect == ROUTE:
        if te is None:
            assert r.status == 401, f"{what}: the route's own host must get the challenge:\n{r}"
            assert "resource_metadata" in bearer(r.header("www-authenticate") or "Bearer").params, str(r)
            assert_not_forwarded(mcp_server, tid, what)
        else:
            assert r.status not in (401, 403, 404), f"{what}: the route's TE was refused:\n{r}"
            assert_forwarded_without_credentials(mcp_server, tid, te)
    elif case.expect == OTHER_ROUTE:
        assert r.status == 401, f"{what}: expected the localhost route's 401:\n{r}"
        challenge = bearer(r.header("www-authenticate") or "Bearer")
        assert challenge.params.get("resource_metadata", "").startswith(f"http://localhost:{port}/"), str(r)
        if te is not None:
            assert challenge.params.get("error") == "invalid_token", f"{what}: our TE is for another audience:\n{r}"
        assert_not_forwarded(mcp_server, tid, what)


@pytest.mark.parametrize("order", ["route-first", "other-first"])
def test_two_host_headers(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, order: str) -> None:
    """Two Host headers (HTTP/1.1): Envoy joins them ("a,b"); whatever comes
    of it is refused (400 or 404) and reaches nothing, TE or not."""
    hosts = [f"127.0.0.1:{envoy.listen_port}", "other.example"]
    if order == "other-first":
        hosts.reverse()
    for te in (None, signed.te):
        tid = new_test_id()
        r = post_h1(envoy, hosts[0], te, tid, extra=[("Host", hosts[1])])
        assert r.status in (400, 404), f"two Host headers ({order}, token={te is not None}):\n{r}"
        assert_not_forwarded(mcp_server, tid, f"two Host headers {order}")


def test_h2_host_header_disagreeing_with_authority(envoy: Envoy, mcp_server: McpServer, signed: SignedIn) -> None:
    """HTTP/2 :authority other.example with a `host` header naming the route:
    :authority rules (RFC 9113 8.3.1): no route, 404; never forwarded."""
    for te in (None, signed.te):
        tid = new_test_id()
        r = post_h2(envoy, "other.example", te, tid, extra=[("host", f"127.0.0.1:{envoy.listen_port}")])
        assert r.status in (400, 404), f"h2 :authority other.example + host route (token={te is not None}):\n{r}"
        assert_not_forwarded(mcp_server, tid, "h2 host header")


# --- default ports and IPv6 routes (attack_misc_envoy, harness/attack_fixtures.py) -----------

# (authority, the origin of the route that must answer, or UNKNOWN / BAD)
DEFAULT_PORT_CASES = [
    ("localhost", "http://localhost"),
    ("localhost:80", "http://localhost"),
    ("LOCALHOST:80", "http://localhost"),
    ("localhost.", "http://localhost"),
    ("localhost.:80", "http://localhost"),
    ("localhost:443", UNKNOWN),
    ("localhost:8080", UNKNOWN),
    ("localhost:080", BAD),
    ("[::1]:{P}", "http://[::1]:{P}"),
    ("[::1]", UNKNOWN),
    ("[::1]:0{P}", BAD),
]


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize(("authority", "expect"), DEFAULT_PORT_CASES, ids=[c[0] for c in DEFAULT_PORT_CASES])
def test_default_port_and_ipv6_routes(attack_misc_envoy: Envoy, mcp_server: McpServer, proto: str, authority: str,
                                      expect: str) -> None:
    """A route without a port is served for its scheme's default port and for
    no port; an IPv6 route for its bracketed form; the rest is refused."""
    port = attack_misc_envoy.listen_port
    authority = authority.replace("{P}", str(port))
    expect = expect.replace("{P}", str(port))
    tid = new_test_id()
    r = _send(attack_misc_envoy, proto, authority, None, tid)
    what = f"{proto} {authority!r}"
    if expect in (UNKNOWN, BAD):
        _assert_refused_as(r, expect, what)
    else:
        assert r.status == 401, f"{what}: the route {expect} must answer with its challenge:\n{r}"
        challenge = bearer(r.header("www-authenticate") or "Bearer")
        assert challenge.params.get("resource_metadata", "").startswith(expect + "/"), f"{what}: wrong route:\n{r}"
    assert_not_forwarded(mcp_server, tid, what)


# --- unmatched_hosts: "passthrough" --------------------------------------------------------


@pytest.fixture(scope="module")
def passthrough_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer) -> Iterator[Envoy]:
    port = free_port()
    plugin = attack_plugin(port, free_port(), top={"unmatched_hosts": "passthrough"})
    proxy = start_attack_envoy(tmp_path_factory.mktemp("attack-passthrough"), "envoy-attack-passthrough",
                               mcp_server=mcp_server, plugin=plugin, listen_port=port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_passthrough_mode_lets_unknown_hosts_through_untouched(passthrough_envoy: Envoy, mcp_server: McpServer,
                                                               proto: str) -> None:
    """unmatched_hosts "passthrough": another host's request reaches the MCP
    server as sent, its own Authorization header included."""
    tid = new_test_id()
    headers = [("x-test-id", tid), ("authorization", "Bearer keep-me")]
    if proto == "h1":
        r = http1(passthrough_envoy.listen_port, "GET", "/_debug/headers", [("Host", "other.example"), *headers])
    else:
        r = http2(passthrough_envoy.listen_port, "GET", "/_debug/headers", "other.example", headers)
    assert r.status == 200, str(r)
    seen = r.json()["headers"]
    assert seen.get("host") == "other.example" and seen.get("authorization") == "Bearer keep-me", seen
    assert len(mcp_server.saw_test_id(tid)) == 1


def test_passthrough_mode_still_protects_the_routes(passthrough_envoy: Envoy, mcp_server: McpServer) -> None:
    """In passthrough mode a route's own host still needs a token, and an
    ambiguous spelling of it is still refused, not passed through."""
    port = passthrough_envoy.listen_port
    tid = new_test_id()
    r = post_h1(passthrough_envoy, f"127.0.0.1:{port}", None, tid, ADMIN_BODY)
    assert r.status == 401, str(r)
    assert_not_forwarded(mcp_server, tid, "route host in passthrough mode")
    tid = new_test_id()
    r = post_h1(passthrough_envoy, f"127.0.0.1:0{port}", None, tid, ADMIN_BODY)
    assert r.status == 400, f"a leading-zero port of a route's host must be refused, not passed through:\n{r}"
    assert_not_forwarded(mcp_server, tid, "leading-zero port in passthrough mode")


# --- the same through an ordinary HTTP/2 client (httpx, http2=True) -------------------------

# Authorities httpx can send (it refuses control characters and spaces).
HTTPX_HOSTS = [c for c in HOSTS if c.expect in (UNKNOWN, ROUTE, OTHER_ROUTE)
               or c.name in ("leading-zero port", "empty port", "userinfo", "port 99999")]


@pytest.mark.parametrize("case", HTTPX_HOSTS, ids=[c.name for c in HTTPX_HOSTS])
def test_authority_through_httpx_http2(envoy: Envoy, mcp_server: McpServer, signed: SignedIn,
                                       case: HostCase) -> None:
    """httpx over HTTP/2 (prior knowledge) puts the Host header into
    :authority: the same outcome as the raw HTTP/2 client, with the TE."""
    authority = case.authority(envoy.listen_port)
    tid = new_test_id()
    headers = {"Host": authority, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {signed.te}", "x-test-id": tid}
    with httpx.Client(http2=True, http1=False, trust_env=False, timeout=10.0) as c:
        try:
            r = c.post(envoy.mcp_url, content=ADMIN_BODY, headers=headers)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            r = None  # Envoy's codec refused it: the stream or the connection was reset
    assert r is None or r.http_version == "HTTP/2", r
    status = r.status_code if r is not None else None
    what = f"httpx h2 :authority {authority!r}"
    if case.expect == UNKNOWN:
        assert status == 404 and "route" in r.text.lower(), f"{what}: {status} {r.text if r else ''}"
        assert_not_forwarded(mcp_server, tid, what)
    elif case.expect == BAD:
        assert status in (400, None), f"{what}: {status}"
        assert_not_forwarded(mcp_server, tid, what)
    elif case.expect == OTHER_ROUTE:
        assert status == 401, f"{what}: {status}"
        assert_not_forwarded(mcp_server, tid, what)
    else:
        assert status not in (401, 403, 404), f"{what}: {status} {r.text}"
        assert_forwarded_without_credentials(mcp_server, tid, signed.te)

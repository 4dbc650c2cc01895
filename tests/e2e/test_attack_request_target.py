"""Attack class 2: request-target forms (RFC 9112 3.2) and odd :path values.

What the filter must do: judge a request by the authority and path Envoy
hands it, which for an absolute-form target are the URL's (the Host header
is ignored, RFC 9112 3.2.2), so
  - `POST http://other.example:P/mcp` with the route's Host is a request for
    a host no route serves: refused (400 or 404), never forwarded;
  - `POST http://127.0.0.1:P/mcp` with a wrong Host is the route's request:
    refused without a token (or refused outright with 400), and when a
    valid TE makes it go on, the MCP server sees the route's authority, not
    the wrong Host, and no token;
  - asterisk-form, a path not starting with '/', a fragment, an absolute
    URL in HTTP/2's :path: refused with 400 (Envoy's codec or the filter),
    never forwarded;
  - nothing here reaches the MCP server unauthenticated.
Raw sockets for HTTP/1.1 (client libraries rewrite the target), the h2
library for HTTP/2.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.attack import ADMIN_BODY, SignedIn, assert_not_forwarded, mcp_headers, new_test_id, post_h2, sign_in
from harness.envoy import Envoy
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit
from harness.rawhttp import http1, send_http1


@pytest.fixture(scope="module")
def signed(envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[SignedIn]:
    kit = OAuthKit(envoy, idp, mcp_server)
    try:
        yield sign_in(kit)
    finally:
        kit.close()


TOKENS = ["no-token", "valid-te"]


def _te(signed: SignedIn, token: str) -> str | None:
    return signed.te if token == "valid-te" else None


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("target", ["http://other.example:{P}/mcp", "http://other.example/mcp",
                                    "http://127.0.0.2:{P}/mcp"])
def test_absolute_form_naming_another_host(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, target: str,
                                           token: str) -> None:
    """Absolute-form naming a host no route serves, with the route's Host
    header: the URL's authority counts; refused (400 or 404), not forwarded."""
    port = envoy.listen_port
    tid = new_test_id()
    r = http1(port, "POST", target.replace("{P}", str(port)),
              mcp_headers(_te(signed, token), tid, host=f"127.0.0.1:{port}"), ADMIN_BODY)
    assert r.status in (400, 404), f"absolute-form {target} with the route's Host ({token}):\n{r}"
    assert_not_forwarded(mcp_server, tid, target)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_absolute_form_naming_the_route_with_a_wrong_host_without_token(envoy: Envoy, mcp_server: McpServer,
                                                                        scheme: str) -> None:
    """`POST <scheme>://127.0.0.1:P/mcp` with Host other.example and no
    token: the route's request (401) or refused (400; Envoy itself answers
    403 to an https target on this plaintext listener); never forwarded."""
    port = envoy.listen_port
    tid = new_test_id()
    r = http1(port, "POST", f"{scheme}://127.0.0.1:{port}/mcp", mcp_headers(None, tid, host="other.example"),
              ADMIN_BODY)
    allowed = (400, 401, 403) if scheme == "https" else (400, 401)
    assert r.status in allowed, f"absolute-form to the route with Host other.example:\n{r}"
    assert_not_forwarded(mcp_server, tid, "absolute-form, wrong Host")


def test_absolute_form_naming_the_route_with_a_wrong_host_and_a_te(envoy: Envoy, mcp_server: McpServer,
                                                                   signed: SignedIn) -> None:
    """The same with a valid TE: refused with 400, or forwarded as the
    route's request: then the MCP server sees the route's authority (not
    other.example) and no credentials."""
    port = envoy.listen_port
    tid = new_test_id()
    r = http1(port, "POST", f"http://127.0.0.1:{port}/mcp", mcp_headers(signed.te, tid, host="other.example"),
              ADMIN_BODY)
    assert r.status != 401, f"a valid TE was refused:\n{r}"
    for req in mcp_server.saw_test_id(tid):
        assert req["host"] == f"127.0.0.1:{port}", f"the MCP server saw another Host than the route's: {req}"
        assert req["authorization"] is None, req


@pytest.mark.parametrize("token", TOKENS)
def test_absolute_form_with_userinfo(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, token: str) -> None:
    """`http://other.example@127.0.0.1:P/mcp`: userinfo in the target. Refused
    (400), or (Envoy strips the userinfo) the route's request: 401 without a
    token; never forwarded without one."""
    port = envoy.listen_port
    tid = new_test_id()
    te = _te(signed, token)
    r = http1(port, "POST", f"http://other.example@127.0.0.1:{port}/mcp", mcp_headers(te, tid, host="other.example"),
              ADMIN_BODY)
    if te is None:
        assert r.status in (400, 401), str(r)
        assert_not_forwarded(mcp_server, tid, "userinfo in the target")
    else:
        for req in mcp_server.saw_test_id(tid):
            assert req["host"] == f"127.0.0.1:{port}" and req["authorization"] is None, req


# (case, method, target) -- HTTP/1.1 request lines that are not origin-form
BAD_TARGETS = [
    ("asterisk-form POST", "POST", "*"),
    ("asterisk-form OPTIONS", "OPTIONS", "*"),
    ("no leading slash", "POST", "mcp"),
    ("no leading slash, dot", "POST", "./mcp"),
    ("fragment", "POST", "/mcp#x"),
    ("backslash", "POST", "\\mcp"),
    ("empty path after the authority", "POST", "http://127.0.0.1:{P}"),
    ("space in the path", "POST", "/m cp"),
]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(("case", "method", "target"), BAD_TARGETS, ids=[c[0] for c in BAD_TARGETS])
def test_non_origin_form_targets(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, case: str, method: str,
                                 target: str, token: str) -> None:
    """Refused (400, or Envoy's own 404 for `OPTIONS *`), never forwarded.
    `http://127.0.0.1:P` (empty path) is the route's '/', not its MCP
    endpoint: refused too."""
    port = envoy.listen_port
    tid = new_test_id()
    r = http1(port, method, target.replace("{P}", str(port)),
              mcp_headers(_te(signed, token), tid, host=f"127.0.0.1:{port}"), ADMIN_BODY)
    assert r.status in (400, 401, 404) or r.status is None, f"{case} ({token}):\n{r}"
    if token == "valid-te":
        assert r.status != 200, f"{case}: answered as if it were the MCP endpoint:\n{r}"
    assert_not_forwarded(mcp_server, tid, case)


def test_connect_method(envoy: Envoy, mcp_server: McpServer, signed: SignedIn) -> None:
    """CONNECT to the route's authority: refused (405 or 4xx), not tunnelled."""
    port = envoy.listen_port
    for te in (None, signed.te):
        tid = new_test_id()
        headers = [("Host", f"127.0.0.1:{port}"), ("x-test-id", tid)]
        if te:
            headers.append(("Authorization", f"Bearer {te}"))
        r = http1(port, "CONNECT", f"127.0.0.1:{port}", headers)
        assert r.status is not None and 400 <= r.status < 500, str(r)
        assert_not_forwarded(mcp_server, tid, "CONNECT")


def test_http_1_0_without_host(envoy: Envoy, mcp_server: McpServer) -> None:
    """HTTP/1.0 without Host: Envoy refuses HTTP/1.0 (426) or it has no
    authority (400); never forwarded."""
    tid = new_test_id()
    data = (b"POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\nx-test-id: " + tid.encode() +
            b"\r\nContent-Length: " + str(len(ADMIN_BODY)).encode() + b"\r\n\r\n" + ADMIN_BODY)
    r = send_http1(envoy.listen_port, data)
    assert r.status is not None and 400 <= r.status < 500, str(r)
    assert_not_forwarded(mcp_server, tid, "HTTP/1.0")


# (case, :path) -- HTTP/2
H2_PATHS = [
    ("no leading slash", "mcp"),
    ("asterisk", "*"),
    ("empty", ""),
    ("absolute URL of the route", "http://127.0.0.1:{P}/mcp"),
    ("absolute URL of another host", "http://other.example/mcp"),
    ("fragment", "/mcp#x"),
    ("space", "/m cp"),
]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(("case", "path"), H2_PATHS, ids=[c[0] for c in H2_PATHS])
def test_h2_paths(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, case: str, path: str, token: str) -> None:
    """An HTTP/2 :path that is not an absolute path: refused (400 or a reset
    stream), never forwarded."""
    port = envoy.listen_port
    tid = new_test_id()
    r = post_h2(envoy, f"127.0.0.1:{port}", _te(signed, token), tid, path=path.replace("{P}", str(port)))
    assert r.status in (400, 404) or r.status is None, f"h2 :path {path!r} ({token}):\n{r}"
    assert_not_forwarded(mcp_server, tid, f"h2 :path {path!r}")


@pytest.mark.parametrize("token", TOKENS)
def test_h2_connect(envoy: Envoy, mcp_server: McpServer, signed: SignedIn, token: str) -> None:
    """HTTP/2 CONNECT with a :path (malformed, RFC 9113 8.5) to the route: refused, never forwarded."""
    port = envoy.listen_port
    tid = new_test_id()
    r = post_h2(envoy, f"127.0.0.1:{port}", _te(signed, token), tid, method="CONNECT", body=b"")
    assert r.status is None or 400 <= r.status < 500, str(r)
    assert_not_forwarded(mcp_server, tid, "h2 CONNECT")

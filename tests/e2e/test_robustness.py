"""Header values that are not UTF-8 (HTTP allows obs-text, bytes 0x80-0xFF),
sent over a raw socket since HTTP client libraries refuse to: to a route's
host (with and without a token, in headers the filter reads and in headers it
does not) and to another host. The filter must never panic (the per-test
panic check), and answer sensibly.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import pytest

from harness.envoy import Envoy
from harness.upstream import UpstreamKit

OBS_TEXT = b"\xff\xfe caf\xe9"



@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v.decode("latin-1") for n, v in self.headers if n == name), None)


def raw_request(envoy: Envoy, method: str, path: str, headers: list[tuple[bytes, bytes]],
                body: bytes = b"") -> RawResponse:
    """One HTTP/1.1 request on its own connection, header bytes sent as given.
    The answer is read by its framing (Content-Length or chunked), not until
    the connection closes: Envoy lingers a second (delayed_close_timeout)
    waiting for the client to close first."""
    lines = [f"{method} {path} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", envoy.listen_port), timeout=10) as s:
        s.sendall(data)
        buf = b""

        def more() -> bool:
            nonlocal buf
            chunk = s.recv(65536)
            buf += chunk
            return bool(chunk)

        while b"\r\n\r\n" not in buf:
            assert more(), f"the connection closed before the response headers: {buf!r}"
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        parsed = [(n.decode("latin-1").strip().lower(), v.strip())
                  for n, _, v in (h.partition(b":") for h in header_lines)]
        response = RawResponse(status=int(status_line.split()[1]), headers=parsed, body=b"")
        length = response.header("content-length")
        if length is not None:
            while len(buf) - len(head) - 4 < int(length) and more():
                pass
            response.body = buf[len(head) + 4:][:int(length)]
        elif response.header("transfer-encoding") == "chunked":
            while not buf.endswith(b"0\r\n\r\n") and more():
                pass
            rest, out = buf[len(head) + 4:], b""
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    break
                out, rest = out + rest[:size], rest[size + 2:]
            response.body = out
        else:
            while more():
                pass
            response.body = buf[len(head) + 4:]
    return response


@pytest.fixture(scope="module")
def signed_in(upstream_stack) -> tuple[UpstreamKit, str, str]:
    kit = UpstreamKit(upstream_stack, "gh")
    try:
        _, tokens = kit.sign_in()
        te = tokens["access_token"]
        yield kit, te, kit.open_session(te)
        kit.check_vault()
    finally:
        kit.close()


def _mcp_headers(kit: UpstreamKit, te: str | None, session: str | None = None) -> list[tuple[bytes, bytes]]:
    h = [(b"Host", kit.envoy.base_url.split("//")[1].encode()), (b"Content-Type", b"application/json"),
         (b"Accept", b"application/json, text/event-stream"), (b"MCP-Protocol-Version", b"2025-06-18")]
    if te:
        h.append((b"Authorization", f"Bearer {te}".encode()))
    if session:
        h.append((b"Mcp-Session-Id", session.encode()))
    return h


ECHO = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "hi"}}}).encode()


def test_obs_text_in_an_unrelated_header_without_token(signed_in) -> None:
    kit, _, _ = signed_in
    r = raw_request(kit.envoy, "POST", kit.spec.path, _mcp_headers(kit, None) + [(b"X-Test", OBS_TEXT)], ECHO)
    assert r.status == 401 and "resource_metadata" in (r.header("www-authenticate") or ""), r


def test_obs_text_in_an_unrelated_header_with_token_is_forwarded(signed_in) -> None:
    kit, te, session = signed_in
    tid = kit.test_id()
    r = raw_request(kit.envoy, "POST", kit.spec.path,
                    _mcp_headers(kit, te, session) + [(b"X-Test", OBS_TEXT), (b"x-test-id", tid.encode())], ECHO)
    assert r.status == 200, r
    assert b'"hi"' in r.body, r
    seen = kit.mcp_server.saw_test_id(tid)
    assert len(seen) == 1 and seen[0]["authorization_scheme"] == "Bearer", seen


def test_obs_text_in_the_authorization_header(signed_in) -> None:
    kit, _, _ = signed_in
    r = raw_request(kit.envoy, "POST", kit.spec.path,
                    _mcp_headers(kit, None) + [(b"Authorization", b"Bearer " + OBS_TEXT)], ECHO)
    assert r.status == 401, r
    assert 'error="invalid_token"' in (r.header("www-authenticate") or ""), r


def test_obs_text_in_cookie_and_query_of_the_oauth_endpoints(signed_in) -> None:
    kit, _, _ = signed_in
    host = (b"Host", kit.envoy.base_url.split("//")[1].encode())
    for path in ("/.oauth/authorize?client_id=x", "/.oauth/consent?request=x", "/.oauth/upstream/callback?state=x"):
        r = raw_request(kit.envoy, "GET", path, [host, (b"Cookie", b"mcpof_session=" + OBS_TEXT)])
        assert 400 <= r.status < 500, (path, r)


def test_obs_text_in_mirrored_mcp_headers(signed_in) -> None:
    """Mcp-Method / Mcp-Name that are not text can't mirror the body: refused
    (a header present is checked, MCP 2026-07-28), never forwarded unchecked."""
    kit, te, session = signed_in
    for name in (b"Mcp-Name", b"Mcp-Method"):
        tid = kit.test_id()
        r = raw_request(kit.envoy, "POST", kit.spec.path,
                        _mcp_headers(kit, te, session) + [(name, OBS_TEXT), (b"x-test-id", tid.encode())], ECHO)
        assert r.status == 400 and b"-32020" in r.body, (name, r)
        assert not kit.mcp_server.saw_test_id(tid), f"{name!r} with obs-text was forwarded unchecked"


def test_repeated_mirrored_mcp_headers(signed_in) -> None:
    """Two Mcp-Name headers (echo, admin_reset) with an echo body: a server or
    proxy behind the filter reading the second would see a name policy never
    judged; refused, never forwarded."""
    kit, te, session = signed_in
    tid = kit.test_id()
    r = raw_request(kit.envoy, "POST", kit.spec.path,
                    _mcp_headers(kit, te, session) + [(b"Mcp-Method", b"tools/call"), (b"Mcp-Name", b"echo"),
                                                      (b"Mcp-Name", b"admin_reset"), (b"x-test-id", tid.encode())],
                    ECHO)
    assert r.status == 400 and b"-32020" in r.body, r
    assert not kit.mcp_server.saw_test_id(tid), "a request with two Mcp-Name headers was forwarded unchecked"


def test_obs_text_to_another_host_is_refused_not_crashed_on(envoy: Envoy, mcp_server, test_id: str) -> None:
    """A non-UTF-8 header on a host no route serves: the filter reads the
    headers without panicking and refuses the host (404)."""
    r = raw_request(envoy, "GET", "/_debug/headers", [(b"Host", b"other.example"), (b"X-Test", OBS_TEXT),
                                                      (b"x-test-id", test_id.encode())])
    assert r.status == 404, r
    assert not mcp_server.saw_test_id(test_id)
    r = raw_request(envoy, "GET", "/.well-known/oauth-protected-resource/mcp", [
        (b"Host", f"127.0.0.1:{envoy.listen_port}".encode()), (b"X-Test", OBS_TEXT)])
    assert r.status == 200, r


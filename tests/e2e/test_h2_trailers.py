"""HTTP/2 requests whose body ends with trailers: Envoy then never reports
the body's end to the filter, which must judge it in its trailers callback
(found in review: a denied tools/call used to reach the MCP server this way).
A hand-written HTTP/2 client, since httpx can't send request trailers."""
from __future__ import annotations
import json, socket, struct
from urllib.parse import urlsplit
import pytest
from harness.idp import ALICE
from harness.upstream import UpstreamKit, UpstreamStack


def _int(v: int, prefix: int, first: int = 0) -> bytes:
    mx = (1 << prefix) - 1
    if v < mx:
        return bytes([first | v])
    out = [first | mx]; v -= mx
    while v >= 128:
        out.append((v & 127) | 128); v >>= 7
    out.append(v)
    return bytes(out)


def _hpack(headers) -> bytes:
    out = b""
    for n, v in headers:
        n, v = n.encode(), v.encode()
        out += b"\x00" + _int(len(n), 7) + n + _int(len(v), 7) + v
    return out


def _frame(t: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload


def h2_post(url: str, headers: dict[str, str], body: bytes, trailers: bool) -> bytes:
    u = urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    hs = [(":method", "POST"), (":scheme", "http"), (":path", u.path), (":authority", u.netloc)]
    hs += [(k.lower(), v) for k, v in headers.items()]
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")
    out += _frame(1, 0x4, 1, _hpack(hs))
    out += _frame(0, 0 if trailers else 0x1, 1, body)
    if trailers:
        out += _frame(1, 0x5, 1, _hpack([("x-review-trailer", "1")]))
    s.sendall(out)
    buf, data = b"", b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9:
            ln = int.from_bytes(buf[:3], "big"); t, fl = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            if len(buf) < 9 + ln:
                break
            payload, buf = buf[9:9 + ln], buf[9 + ln:]
            if t == 4 and not fl & 1:
                s.sendall(_frame(4, 1, 0, b""))
            if t == 0 and sid == 1:
                data += payload
            if sid == 1 and fl & 1 and t in (0, 1):
                s.close(); return data
            if t == 3 and sid == 1:
                s.close(); return b"RST " + data
    s.close()
    return data


@pytest.mark.parametrize("trailers", [False, True])
def test_denied_call_is_refused_with_or_without_trailers(upstream_stack: UpstreamStack, trailers: bool) -> None:
    kit = UpstreamKit(upstream_stack, "policy", user=ALICE["email"], upstream_login="octo-alice")
    try:
        _, tokens = kit.sign_in()
        te = tokens["access_token"]
        session = kit.open_session(te)
        msg = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "admin_reset", "arguments": {}}}
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-06-18", "authorization": f"Bearer {te}", "mcp-session-id": session}
        tid = kit.test_id()
        answer = h2_post(kit.mcp_server_url, {**headers, "x-test-id": tid}, json.dumps(msg).encode(), trailers=trailers)
        assert b"-32003" in answer and b"admin_reset" in answer, answer[:300]
        assert not kit.mcp_server.saw_test_id(tid), "the denied admin_reset reached the MCP server"
    finally:
        kit.close()

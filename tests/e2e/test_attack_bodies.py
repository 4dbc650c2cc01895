"""Attack class 10: smuggling a denied tool call past the policy in a POST /mcp body.

The route is the upstream stack's `policy` (seed policy: company.com users
may call every tool except those starting with admin_), with a valid TE of
a company.com user and an open MCP session. What the filter must do: judge
the body exactly as the MCP server will read it, or refuse it:
  - duplicate JSON keys (also spelled with escapes), a body that is not one
    JSON value (BOM, trailing garbage, two objects), a tool name outside the
    MCP alphabet (full-width or Cyrillic look-alikes, zero-width or control
    characters, spaces): 400 with the JSON-RPC error, not forwarded;
  - a tool name that differs from admin_* only by ASCII case or JSON
    escapes is that tool: -32003 policy denial;
  - a batch with a denied message is answered whole and nothing of it is
    forwarded;
  - a body that is not application/json (text/plain, none, multipart, a
    form) is 415, a compressed body (Content-Encoding: gzip) is refused;
  - HTTP/1.1 chunked bodies, with trailers or not, HTTP/2 bodies with
    trailers or split into 1-byte DATA frames, pipelined requests: each
    judged whole, the denied ones never forwarded;
  - Mcp-Method / Mcp-Name headers that disagree with the body, are repeated
    or are not text: 400 -32020; headers that agree with a denied call do
    not make it allowed.
Every case checks the MCP server's own request log for its x-test-id.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest

from harness.attack import ADMIN_TOOL, assert_not_forwarded, dumps, rpc_call
from harness.http import PROTOCOL_VERSION
from harness.oauth import describe
from harness.rawhttp import RawResponse, build_http1, http1, http2, send_http1, send_http1_pipelined
from harness.upstream import UpstreamKit, UpstreamStack, rpc_messages

DENIED = -32003
MISMATCH = -32020


@pytest.fixture(scope="module")
def user(upstream_stack: UpstreamStack) -> Iterator[tuple[UpstreamKit, str, str]]:
    """A company.com user signed in on route `policy`: (kit, TE, MCP session id)."""
    kit = UpstreamKit(upstream_stack, "policy")
    try:
        _, tokens = kit.sign_in()
        te = tokens["access_token"]
        yield kit, te, kit.open_session(te)
    finally:
        kit.close()


def _rpc_error(r: Any) -> dict[str, Any] | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def _b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


ECHO = rpc_call("echo", arguments={"text": "hi"})

# (case, raw body, extra headers, status, JSON-RPC error code (None: any refusal))
REFUSED: list[tuple[str, bytes, dict[str, str], int | tuple[int, ...], int | None]] = [
    ("duplicate name, admin last",
     b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","name":"admin_reset"}}', {}, 400, -32700),
    ("duplicate name, admin first",
     b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"admin_reset","name":"echo"}}', {}, 400, -32700),
    ("duplicate name spelled with an escape",
     b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","na\\u006de":"admin_reset"}}', {}, 400,
     -32700),
    ("duplicate method",
     b'{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"admin_reset"}}', {}, 400,
     -32700),
    ("duplicate params",
     b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"},"params":{"name":"admin_reset"}}', {},
     400, -32700),
    ("full-width look-alike", dumps(rpc_call("\uff41\uff44\uff4d\uff49\uff4e_reset")), {}, 400, -32600),
    ("Cyrillic a", dumps(rpc_call("\u0430dmin_reset")), {}, 400, -32600),
    ("zero-width space", dumps(rpc_call("admin\u200b_reset")), {}, 400, -32600),
    ("NUL after the name", dumps(rpc_call("admin_reset\u0000")), {}, 400, -32600),
    ("trailing space", dumps(rpc_call("admin_reset ")), {}, 400, -32600),
    ("name is a number", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":42}}', {}, 400, -32600),
    ("UTF-8 BOM before the JSON", b"\xef\xbb\xbf" + dumps(rpc_call(ADMIN_TOOL)), {}, 400, None),
    ("trailing garbage", dumps(ECHO) + b"x", {}, 400, -32700),
    ("two JSON values", dumps(ECHO) + dumps(rpc_call(ADMIN_TOOL)), {}, 400, -32700),
    ("text/plain", dumps(rpc_call(ADMIN_TOOL)), {"Content-Type": "text/plain"}, 415, -32600),
    ("application/x-www-form-urlencoded", dumps(rpc_call(ADMIN_TOOL)),
     {"Content-Type": "application/x-www-form-urlencoded"}, 415, -32600),
    ("multipart/form-data", b'--b\r\nContent-Type: application/json\r\n\r\n' + dumps(rpc_call(ADMIN_TOOL)) +
     b"\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, 415, -32600),
    ("application/json-seq", dumps(rpc_call(ADMIN_TOOL)), {"Content-Type": "application/json-seq"}, 415, -32600),
    ("gzip-compressed", gzip.compress(dumps(rpc_call(ADMIN_TOOL))), {"Content-Encoding": "gzip"}, (400, 415), None),
    ("gzip-compressed echo", gzip.compress(dumps(ECHO)), {"Content-Encoding": "gzip"}, (400, 415), None),
    ("Mcp-Name says echo", dumps(rpc_call(ADMIN_TOOL)), {"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 400,
     MISMATCH),
    ("Mcp-Name base64 echo", dumps(rpc_call(ADMIN_TOOL)), {"Mcp-Method": "tools/call", "Mcp-Name": _b64("echo")},
     400, MISMATCH),
    ("Mcp-Method says tools/list", dumps(rpc_call(ADMIN_TOOL)), {"Mcp-Method": "tools/list"}, 400, MISMATCH),
    ("Mcp-Name on a batch", dumps([rpc_call(ADMIN_TOOL)]), {"Mcp-Method": "tools/call", "Mcp-Name": ADMIN_TOOL}, 400,
     MISMATCH),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_bodies(user, case: str, body: bytes, headers: dict[str, str], status: int | tuple[int, ...],
                        code: int | None) -> None:
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, None, raw=body, session=session, test_id=tid, headers=headers)
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, f"{case}:\n{describe(r)}"
    if code is not None:
        error = _rpc_error(r)
        assert error is not None and error.get("code") == code, f"{case}: expected JSON-RPC {code}:\n{describe(r)}"
    assert_not_forwarded(kit.mcp_server, tid, case)


def test_missing_content_type(user) -> None:
    """No Content-Type at all (raw, so no client adds one): 415, not forwarded."""
    kit, te, session = user
    tid = kit.test_id()
    port = kit.envoy.listen_port
    r = http1(port, "POST", kit.spec.path, [("Host", f"127.0.0.1:{port}"), ("Authorization", f"Bearer {te}"),
                                             ("Accept", "application/json, text/event-stream"),
                                             ("Mcp-Session-Id", session), ("x-test-id", tid)],
              dumps(rpc_call(ADMIN_TOOL)))
    assert r.status == 415, str(r)
    assert_not_forwarded(kit.mcp_server, tid, "no Content-Type")


DENIED_SPELLINGS = [
    ("upper case", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ADMIN_RESET"}}'),
    ("mixed case", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"Admin_Reset"}}'),
    ("escaped first letter", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"\\u0061dmin_reset"}}'),
    ("escaped key", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"\\u006eame":"admin_reset"}}'),
    ("escaped method", b'{"jsonrpc":"2.0","id":7,"method":"tools\\/call","params":{"name":"admin_reset"}}'),
    ("another admin_ tool", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"admin_wipe"}}'),
    ("with whitespace around", b' \n\t{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"admin_reset"}}\n'),
]


@pytest.mark.parametrize(("case", "body"), DENIED_SPELLINGS, ids=[c[0] for c in DENIED_SPELLINGS])
def test_other_spellings_of_a_denied_tool_are_denied(user, case: str, body: bytes) -> None:
    """The same tool for the MCP server (ASCII case-insensitive in policy, JSON escapes decoded): -32003."""
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, None, raw=body, session=session, test_id=tid)
    assert r.status_code == 200, describe(r)
    error = _rpc_error(r)
    assert error is not None and error["code"] == DENIED, f"{case}: expected the policy denial:\n{describe(r)}"
    assert_not_forwarded(kit.mcp_server, tid, case)


def test_agreeing_headers_do_not_allow_a_denied_call(user) -> None:
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, rpc_call(ADMIN_TOOL), session=session, test_id=tid,
                 headers={"Mcp-Method": "tools/call", "Mcp-Name": ADMIN_TOOL})
    error = _rpc_error(r)
    assert r.status_code == 200 and error is not None and error["code"] == DENIED, describe(r)
    assert_not_forwarded(kit.mcp_server, tid, "agreeing headers")


BATCHES = [
    ("allowed then denied", [ECHO | {"id": 1}, rpc_call(ADMIN_TOOL, 2)]),
    ("denied then allowed", [rpc_call(ADMIN_TOOL, 1), ECHO | {"id": 2}]),
    ("denied only", [rpc_call(ADMIN_TOOL, 1)]),
    ("denied as a notification", [ECHO | {"id": 1}, {"jsonrpc": "2.0", "method": "tools/call",
                                                      "params": {"name": ADMIN_TOOL, "arguments": {}}}]),
    ("fifty allowed and one denied", [ECHO | {"id": i} for i in range(50)] + [rpc_call(ADMIN_TOOL, 99)]),
    ("upper-case denied in a batch", [ECHO | {"id": 1}, rpc_call("ADMIN_RESET", 2)]),
]


@pytest.mark.parametrize(("case", "batch"), BATCHES, ids=[c[0] for c in BATCHES])
def test_batch_with_a_denied_message_is_not_forwarded(user, case: str, batch: list[dict[str, Any]]) -> None:
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, batch, session=session, test_id=tid)
    assert r.status_code == 200, describe(r)
    answers = r.json()
    assert isinstance(answers, list) and answers, describe(r)
    assert all("error" in a and a["error"]["code"] == DENIED for a in answers), f"{case}:\n{describe(r)}"
    assert_not_forwarded(kit.mcp_server, tid, case)


def test_nested_batch(user) -> None:
    """[[admin_reset]] is no valid batch: refused, never forwarded."""
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, [[rpc_call(ADMIN_TOOL)]], session=session, test_id=tid)
    assert r.status_code in (200, 400), describe(r)
    assert_not_forwarded(kit.mcp_server, tid, "nested batch")


def test_allowed_call_is_forwarded(user) -> None:
    """Control: echo is allowed, forwarded with the upstream token, answered."""
    kit, te, session = user
    tid = kit.test_id()
    r = kit.post(te, ECHO, session=session, test_id=tid)
    assert r.status_code == 200 and rpc_messages(r)[0]["result"]["content"][0]["text"] == "hi", describe(r)
    [req] = kit.mcp_server.saw_test_id(tid)
    assert req["rpc"] == [{"method": "tools/call", "name": "echo"}] and req["authorization_scheme"] == "Bearer", req


# --- transfer framing ------------------------------------------------------------------


def _raw_headers(kit: UpstreamKit, te: str, session: str, tid: str, *, h2: bool = False) -> list[tuple[str, str]]:
    h = [("content-type", "application/json"), ("accept", "application/json, text/event-stream"),
         ("mcp-protocol-version", PROTOCOL_VERSION), ("authorization", f"Bearer {te}"), ("mcp-session-id", session),
         ("x-test-id", tid)]
    return h if h2 else [("Host", f"127.0.0.1:{kit.envoy.listen_port}"), *h]


def _assert_denied_raw(kit: UpstreamKit, r: RawResponse, tid: str, what: str) -> None:
    assert r.status == 200, f"{what}:\n{r}"
    body = r.json()
    errors = body if isinstance(body, list) else [body]
    assert all(e.get("error", {}).get("code") == DENIED for e in errors), f"{what}: expected the denial:\n{r}"
    assert_not_forwarded(kit.mcp_server, tid, what)


@pytest.mark.parametrize("trailers", [[], [("x-trailer", "1")], [("mcp-name", "echo")]],
                         ids=["no trailers", "a trailer", "an Mcp-Name trailer"])
@pytest.mark.parametrize("chunk_size", [1, 16, 4096])
def test_h1_chunked_body(user, trailers: list[tuple[str, str]], chunk_size: int) -> None:
    """Transfer-Encoding: chunked, in chunks of chunk_size bytes, maybe with trailers: judged whole, denied."""
    kit, te, session = user
    tid = kit.test_id()
    r = http1(kit.envoy.listen_port, "POST", kit.spec.path, _raw_headers(kit, te, session, tid),
              dumps(rpc_call(ADMIN_TOOL)), chunked=True, chunk_size=chunk_size, trailers=trailers)
    _assert_denied_raw(kit, r, tid, f"chunked ({chunk_size}) with {trailers}")


def test_h1_content_length_and_chunked(user) -> None:
    """Both Content-Length and Transfer-Encoding (RFC 9112 6.1, request smuggling): refused, not forwarded."""
    kit, te, session = user
    tid = kit.test_id()
    body = dumps(rpc_call(ADMIN_TOOL))
    data = build_http1("POST", kit.spec.path, [*_raw_headers(kit, te, session, tid), ("Content-Length", "5")], body,
                       chunked=True)
    r = send_http1(kit.envoy.listen_port, data)
    assert r.status == 400 or (r.status == 200 and (_rpc_error(r) or {}).get("code") == DENIED), str(r)
    assert_not_forwarded(kit.mcp_server, tid, "CL + TE")


def test_h1_pipelined_requests_are_judged_each(user) -> None:
    """An allowed call and a denied one pipelined on one connection: the
    second is judged like the first; only the allowed one arrives."""
    kit, te, session = user
    allowed, denied = kit.test_id(), kit.test_id()
    first = build_http1("POST", kit.spec.path, _raw_headers(kit, te, session, allowed), dumps(ECHO), close=False)
    second = build_http1("POST", kit.spec.path, _raw_headers(kit, te, session, denied), dumps(rpc_call(ADMIN_TOOL)))
    answers = send_http1_pipelined(kit.envoy.listen_port, first + second, 2, what="pipelined echo + admin_reset")
    assert [a.status for a in answers] == [200, 200], [str(a) for a in answers]
    assert "result" in answers[0].json(), str(answers[0])
    assert answers[1].json()["error"]["code"] == DENIED, str(answers[1])
    assert kit.mcp_server.saw_test_id(allowed), "the first pipelined request never arrived"
    assert_not_forwarded(kit.mcp_server, denied, "the second pipelined request")


@pytest.mark.parametrize(("trailers", "frame_size"), [([], None), ([("x-trailer", "1")], None), ([], 1),
                                                      ([("x-trailer", "1")], 1)],
                         ids=["plain", "trailers", "1-byte frames", "1-byte frames and trailers"])
def test_h2_body(user, trailers: list[tuple[str, str]], frame_size: int | None) -> None:
    """HTTP/2: with trailers (Envoy then never reports the body's end with
    the data) or in 1-byte DATA frames: judged whole, denied."""
    kit, te, session = user
    tid = kit.test_id()
    r = http2(kit.envoy.listen_port, "POST", kit.spec.path, f"127.0.0.1:{kit.envoy.listen_port}",
              _raw_headers(kit, te, session, tid, h2=True), dumps(rpc_call(ADMIN_TOOL)), trailers=trailers,
              frame_size=frame_size)
    _assert_denied_raw(kit, r, tid, f"h2 trailers={trailers} frame_size={frame_size}")


def test_h2_batch_with_trailers(user) -> None:
    kit, te, session = user
    tid = kit.test_id()
    r = http2(kit.envoy.listen_port, "POST", kit.spec.path, f"127.0.0.1:{kit.envoy.listen_port}",
              _raw_headers(kit, te, session, tid, h2=True), dumps([ECHO, rpc_call(ADMIN_TOOL, 8)]),
              trailers=[("x-trailer", "1")])
    _assert_denied_raw(kit, r, tid, "h2 batch with trailers")


def test_repeated_mcp_name_headers(user) -> None:
    """Mcp-Name twice (echo, admin_reset) with an admin_reset body: -32020, not forwarded."""
    kit, te, session = user
    tid = kit.test_id()
    r = http1(kit.envoy.listen_port, "POST", kit.spec.path,
              _raw_headers(kit, te, session, tid) + [("Mcp-Method", "tools/call"), ("Mcp-Name", "echo"),
                                                     ("Mcp-Name", ADMIN_TOOL)], dumps(rpc_call(ADMIN_TOOL)))
    assert r.status == 400 and (_rpc_error(r) or {}).get("code") == MISMATCH, str(r)
    assert_not_forwarded(kit.mcp_server, tid, "two Mcp-Name headers")


def test_mcp_name_with_a_control_character(user) -> None:
    kit, te, session = user
    tid = kit.test_id()
    r = http1(kit.envoy.listen_port, "POST", kit.spec.path,
              _raw_headers(kit, te, session, tid) + [("Mcp-Method", "tools/call"), ("Mcp-Name", "echo\x01")],
              dumps(rpc_call("echo")))
    assert r.status == 400, str(r)
    assert_not_forwarded(kit.mcp_server, tid, "Mcp-Name with a control character")


def test_json_escapes_in_arguments_are_no_problem(user) -> None:
    """Control: an allowed call whose arguments hold escapes and a nested
    "name": forwarded, the tool judged is echo."""
    kit, te, session = user
    tid = kit.test_id()
    body = json.dumps(rpc_call("echo", arguments={"text": "admin_reset \u0000 \"name\": \"admin_reset\""})).encode()
    r = kit.post(te, None, raw=body, session=session, test_id=tid)
    assert r.status_code == 200 and "result" in rpc_messages(r)[0], describe(r)
    [req] = kit.mcp_server.saw_test_id(tid)
    assert req["rpc"] == [{"method": "tools/call", "name": "echo"}], req

"""Policy on MCP messages (issue 5) through a real Envoy: routes `policy`
(MCP server answering JSON) and `policy-sse` (answering event streams), both
with the seed policy

    allow: domain is company.com;  deny: mcp_tool starts_with admin_

and an upstream GitHub app (so whoami names the upstream user, as in the
demo). alice@company.com may use both but never an admin_ tool, and does not
even see one in tools/list; bob@other.example is admitted for nothing and is
told so after sign-in. Every POST body is judged whole before anything
reaches the MCP server (the buffer filter after the wasm filter holds the
headers from the router): malformed, oversize and mismatched messages are
refused with their JSON-RPC error, a denied message gets -32003, a batch with
a denied message is not executed at all. One audit record per message lands
in Envoy's log.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import McpError

from harness.http import media_type
from harness.idp import ALICE, BOB
from harness.oauth import describe
from harness.procs import free_port
from harness.sdk import sdk_client, text_of
from harness.upstream import UpstreamKit, UpstreamStack, rpc_messages

TIMEOUT_S = 45.0
DENIED = -32003


@pytest.fixture(scope="module")
def alice(upstream_stack: UpstreamStack) -> Iterator[tuple[UpstreamKit, str, str]]:
    """alice@company.com signed in on route `policy`: (kit, TE, MCP session id)."""
    kit = UpstreamKit(upstream_stack, "policy", user=ALICE["email"], upstream_login="octo-alice")
    try:
        _, tokens = kit.sign_in()
        te = tokens["access_token"]
        yield kit, te, kit.open_session(te)
        kit.check_vault()
    finally:
        kit.close()


def _denial(tool: str, who: str = ALICE["email"]) -> str:
    return f'Policy denied tools/call of tool "{tool}" for {who}'


@pytest.mark.parametrize("route", ["policy", "policy-sse"])
def test_sdk_alice_uses_allowed_tools_and_is_denied_admin_reset(upstream, route: str, test_id: str) -> None:
    kit: UpstreamKit = upstream.kit(route, user=ALICE["email"], upstream_login="octo-alice")
    kit.test_ids.append(test_id)
    audit_before = len(kit.audit())
    out: dict[str, Any] = {}

    async def main() -> None:
        with anyio.fail_after(TIMEOUT_S):
            redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
            async with sdk_client(kit, test_id, redirect_uri=redirect_uri, login=kit.user) as c:
                out["tools"] = sorted(t.name for t in (await c.session.list_tools()).tools)
                out["whoami"] = json.loads(text_of(await c.session.call_tool("whoami", {})))
                out["echo"] = text_of(await c.session.call_tool("echo", {"text": "hello"}))
                with pytest.raises(McpError) as denied:
                    await c.session.call_tool("admin_reset", {})
                out["denied"] = denied.value.error
                # The session goes on after a denial.
                out["echo_after"] = text_of(await c.session.call_tool("echo", {"text": "still here"}))
                kit.tes.extend(t.access_token for t in c.storage.tokens)

    anyio.run(main)
    assert out["tools"] == ["echo", "whoami"], "tools/list shows alice a tool she may not call"
    assert out["whoami"]["login"] == "octo-alice", out["whoami"]
    assert out["echo"] == "hello" and out["echo_after"] == "still here"
    assert out["denied"].code == DENIED and out["denied"].message == _denial("admin_reset"), out["denied"]
    # What the MCP server received: no admin_reset, and tools/list as the SDK sent it.
    calls = [m for r in kit.seen() for m in (r["rpc"] or [])]
    assert {"method": "tools/call", "name": "admin_reset"} not in calls, calls
    assert {"method": "tools/call", "name": "whoami"} in calls and {"method": "tools/list", "name": None} in calls
    # The MCP server's answers to POSTs came as event streams on policy-sse
    # only (tools/list was filtered in that format), as JSON bodies on policy.
    posts = [text for line, text in kit.transcript.entries
             if line.startswith("POST ") and line.split("?")[0].endswith(kit.spec.path) and text.startswith("200")]
    streamed = [text for text in posts if "content-type: text/event-stream" in text]
    assert bool(streamed) == (route == "policy-sse"), posts
    # One audit record per message, with the decision and the rule.
    records = kit.audit()[audit_before:]
    decided = [(a["method"], a["tool"], a["decision"], a["rule"], a["route"]) for a in records]
    assert ("tools/call", "admin_reset", "deny", "policy[0].deny", route) in decided, decided
    for tool in ("whoami", "echo"):
        assert ("tools/call", tool, "allow", "policy[0].allow", route) in decided, decided
    assert ("tools/list", None, "allow", "policy[0].allow", route) in decided, decided
    assert ("initialize", None, "allow", "policy[0].allow", route) in decided, decided
    assert all(a["user"] == {"sub": ALICE["sub"], "email": ALICE["email"]} for a in records), records
    assert all(set(a) == {"audit", "route", "user", "method", "tool", "decision", "rule", "_thread"}
               for a in records), records


def test_bob_is_told_he_may_not_use_the_server(upstream) -> None:
    """A user the route admits for no message: after sign-in, a 403 page
    saying so; no code, no sign-in loop, no upstream consent."""
    kit: UpstreamKit = upstream.kit("policy", user=BOB["email"])
    client = kit.register_client()
    auth = kit.authorize(client, login=kit.user, stop_at_error=True)
    page = auth.final
    assert page is not None and page.status_code == 403, auth.browser.trail()
    assert media_type(page.headers.get("content-type")) == "text/html", describe(page)
    assert f"{BOB['email']} is not allowed to use the MCP server policy" in page.text, page.text
    assert not auth.params, auth.params
    assert kit.upstream_pages == [], kit.upstream_pages
    idp_logins = [h for h in auth.browser.history if h.url.startswith(kit.idp.issuer) and h.method == "POST"]
    assert len(idp_logins) == 1, auth.browser.trail()


@pytest.mark.parametrize("route", ["policy", "policy-sse"])
def test_tools_list_is_filtered_raw(upstream, route: str) -> None:
    """The answer as the client gets it: filtered in its own format, and well-formed."""
    kit: UpstreamKit = upstream.kit(route)
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    r = kit.post(te, kit.message("tools/list"), session=kit.open_session(te))
    assert r.status_code == 200, describe(r)
    expected = "text/event-stream" if route == "policy-sse" else "application/json"
    assert media_type(r.headers.get("content-type")) == expected, describe(r)
    [answer] = rpc_messages(r)
    assert sorted(t["name"] for t in answer["result"]["tools"]) == ["echo", "whoami"], answer
    assert all(t.get("inputSchema") for t in answer["result"]["tools"]), answer
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(r.content), describe(r)


def test_denied_message_answer_and_nothing_forwarded(alice) -> None:
    kit, te, session = alice
    tid = kit.test_id()
    msg = kit.message("tools/call", {"name": "admin_reset", "arguments": {}})
    r = kit.post(te, msg, session=session, test_id=tid)
    assert r.status_code == 200, describe(r)
    assert r.json() == {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": DENIED, "message": _denial("admin_reset")}}
    assert not kit.mcp_server.saw_test_id(tid), "a denied message reached the MCP server"


def test_batch_with_a_denied_message_is_not_executed(alice) -> None:
    kit, te, session = alice
    tid = kit.test_id()
    batch = [
        kit.message("tools/call", {"name": "echo", "arguments": {"text": "a"}}),
        kit.message("tools/call", {"name": "admin_reset", "arguments": {}}),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        kit.message("tools/list"),
    ]
    r = kit.post(te, batch, session=session, test_id=tid)
    assert r.status_code == 200, describe(r)
    assert r.json() == [
        {"jsonrpc": "2.0", "id": batch[0]["id"],
         "error": {"code": DENIED, "message": "Not executed: the batch contains a message policy denied"}},
        {"jsonrpc": "2.0", "id": batch[1]["id"], "error": {"code": DENIED, "message": _denial("admin_reset")}},
        {"jsonrpc": "2.0", "id": batch[3]["id"],
         "error": {"code": DENIED, "message": "Not executed: the batch contains a message policy denied"}},
    ], describe(r)
    assert not kit.mcp_server.saw_test_id(tid), "part of a denied batch reached the MCP server"


def _call(name: str, mid: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def _b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


# (case, raw body, extra headers, status, JSON-RPC error code or None for a non-JSON-RPC answer)
REFUSALS = [
    ("oversize (filter, 256 KiB limit)", json.dumps({**_call("echo"), "params": {
        "name": "echo", "arguments": {"text": "x" * 300_000}}}).encode(), {}, 413, -32600),
    ("oversize (buffer filter, 1 MiB)", json.dumps({**_call("echo"), "params": {
        "name": "echo", "arguments": {"text": "x" * 1_200_000}}}).encode(), {}, 413, None),
    ("duplicate keys", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","name":"admin_reset"}}',
     {}, 400, -32700),
    ("not JSON", b'{"jsonrpc":"2.0","id":7,"method":', {}, 400, -32700),
    ("non-string method", json.dumps({"jsonrpc": "2.0", "id": 7, "method": 42}).encode(), {}, 400, -32600),
    ("bad jsonrpc", json.dumps({"jsonrpc": "1.0", "id": 7, "method": "tools/list"}).encode(), {}, 400, -32600),
    ("tool name with a space", json.dumps(_call("admin_reset ")).encode(), {}, 400, -32600),
    ("full-width tool name", json.dumps(_call("ａｄｍｉｎ_reset")).encode(), {}, 400, -32600),
    ("text/plain", json.dumps(_call("echo")).encode(), {"Content-Type": "text/plain"}, 415, -32600),
    ("Mcp-Name mismatch", json.dumps(_call("admin_reset")).encode(),
     {"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 400, -32020),
    ("Mcp-Name base64 mismatch", json.dumps(_call("admin_reset")).encode(),
     {"Mcp-Method": "tools/call", "Mcp-Name": _b64("echo")}, 400, -32020),
    ("Mcp-Method mismatch", json.dumps(_call("echo")).encode(), {"Mcp-Method": "tools/list"}, 400, -32020),
    ("2026-07-28 without Mcp-Method", json.dumps(_call("echo")).encode(),
     {"MCP-Protocol-Version": "2026-07-28"}, 400, -32020),
    ("Mcp-Name on a batch", json.dumps([_call("echo")]).encode(),
     {"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, 400, -32020),
]


@pytest.mark.parametrize("case,body,headers,status,code", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_bodies(alice, case: str, body: bytes, headers: dict[str, str], status: int,
                        code: int | None) -> None:
    kit, te, session = alice
    tid = kit.test_id()
    r = kit.post(te, None, raw=body, session=session, test_id=tid, headers=headers)
    assert r.status_code == status, describe(r)
    if code is not None:
        answer = r.json()
        assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code, describe(r)
        assert answer["id"] in (7, None), describe(r)
        if code == -32020:
            assert answer["error"]["message"].startswith("HeaderMismatch: "), describe(r)
    assert not kit.mcp_server.saw_test_id(tid), f"{case}: the refused request reached the MCP server"


def test_mirrored_headers_that_match_pass(alice) -> None:
    """Mcp-Method and Mcp-Name (plain or =?base64?...?=) agreeing with the body: forwarded."""
    kit, te, session = alice
    for name in ("echo", _b64("echo")):
        tid = kit.test_id()
        r = kit.post(te, _call("echo") | {"params": {"name": "echo", "arguments": {"text": "hi"}}}, session=session,
                     test_id=tid, headers={"Mcp-Method": "tools/call", "Mcp-Name": name})
        assert r.status_code == 200, describe(r)
        assert rpc_messages(r)[0]["result"]["content"][0]["text"] == "hi", describe(r)
        assert [m["name"] for s in kit.mcp_server.saw_test_id(tid) for m in s["rpc"]] == ["echo"]


def test_audit_records_name_the_decision_and_hold_no_token(alice) -> None:
    kit, te, session = alice
    before = len(kit.audit())
    kit.post(te, _call("echo") | {"params": {"name": "echo", "arguments": {"text": "secret-argument"}}},
             session=session)
    kit.post(te, _call("admin_wipe"), session=session)
    records = kit.audit()[before:]
    assert [(a["method"], a["tool"], a["decision"], a["rule"]) for a in records] == [
        ("tools/call", "echo", "allow", "policy[0].allow"), ("tools/call", "admin_wipe", "deny", "policy[0].deny")]
    assert "secret-argument" not in kit.envoy.log(), "arguments were logged without include_arguments"
    assert te not in kit.envoy.log()


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_empty_post_body_is_refused_by_the_filter(alice, content_type: str) -> None:
    """Content-Length: 0 (HTTP/1.1), or HEADERS with END_STREAM (HTTP/2): the
    filter's body callback never runs, so the judgement must happen on the
    headers. Not JSON (-32700) or not application/json (415), and not forwarded."""
    kit, te, session = alice
    tid = kit.test_id()
    r = kit.post(te, None, raw=b"", session=session, test_id=tid, headers={"Content-Type": content_type})
    expected = 415 if content_type == "text/plain" else 400
    assert r.status_code == expected, describe(r)
    assert not kit.mcp_server.saw_test_id(tid), "an empty MCP POST reached the MCP server unjudged"

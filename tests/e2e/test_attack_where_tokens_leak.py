"""Attack class 13: where tokens may leak.

Two tokens, never crossed: the upstream token (TI) may only ever go to the
MCP server, the filter's token (TE) only ever between the client and the
filter. harness/leakwatch.py records every answer the client side gets
from any Envoy of the run (httpx hooks on every client, the raw HTTP/1.1
and HTTP/2 clients) and, after every module, checks them for every token
the upstream providers issued, checks every MCP server's own request log
for every TE the token endpoints issued (and every token the tests forged),
and every answer for injected or split headers. This module (run after the
other attack modules: its name sorts last among them):
  - shows that the watch works (its recorders and detectors, on planted
    tokens that no real check sees);
  - drives the exchanges most likely to leak a TI through Envoy: sign-in
    (the upstream consent and callback), the token answer, tools/list,
    whoami (the MCP server calls the upstream API with the TI), the MCP
    server refusing the TI, another path of the host, error answers;
  - checks the run so far: no TI on the client side, no TE at any MCP
    server, no injected header.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from harness import leakwatch
from harness.attack import new_test_id, post_h1, post_h2, rpc_call
from harness.envoy import Envoy
from harness.leakwatch import Received, Watch, filter_token_findings, header_findings, upstream_token_findings
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit, describe
from harness.rawhttp import http1
from harness.upstream import UpstreamKit, UpstreamStack, rpc_messages


# --- the watch itself --------------------------------------------------------------


def test_the_watch_records_httpx_raw_and_h2_answers(envoy: Envoy, leak_watch: Watch) -> None:
    start = len(leak_watch.received)
    with httpx.Client(trust_env=False) as c:
        c.get(f"{envoy.base_url}/.well-known/oauth-protected-resource/mcp")
    post_h1(envoy, f"127.0.0.1:{envoy.listen_port}", None, new_test_id())
    post_h2(envoy, f"127.0.0.1:{envoy.listen_port}", None, new_test_id())
    got = leak_watch.entries_since(start)
    assert [e.status for e in got] == [200, 401, 401], [(e.where, e.status) for e in got]
    assert "authorization_servers" in got[0].body


def test_the_watch_learns_the_filter_tokens(oauth: OAuthKit, leak_watch: Watch) -> None:
    _, tokens = oauth.get_te()
    assert tokens["access_token"] in leak_watch.filter_tokens
    assert tokens["refresh_token"] in leak_watch.filter_tokens


def test_the_watch_would_see_an_upstream_token_on_the_client_side() -> None:
    planted = secrets.token_urlsafe(24)
    entries = [Received(0, "GET http://x/", 1, 200, [("x-echo", planted)], ""),
               Received(1, "GET http://x/", 1, 200, [], f'{{"authorization": "Bearer {planted}"}}')]
    assert len(upstream_token_findings(entries, {planted})) == 2


def test_the_watch_would_see_an_injected_or_split_header() -> None:
    mark = leakwatch.INJECTION_MARK
    entries = [Received(0, "GET http://x/", 1, 302, [("set-cookie", f"{mark}=1")], ""),
               Received(1, "GET http://x/", 1, 302, [], "", head=b"HTTP/1.1 302 Found\r\nLocation: /a\nX: y")]
    assert len(header_findings(entries)) == 2


def test_the_watch_would_see_a_te_at_the_mcp_server(mcp_server: McpServer) -> None:
    """A planted 'TE' sent straight to the MCP server (not through Envoy):
    a watch that knows it finds it in the server's own log."""
    planted = f"planted.{secrets.token_urlsafe(24)}.te"
    httpx.get(f"{mcp_server.base_url}/healthz", headers={"Authorization": f"Bearer {planted}"}, trust_env=False)
    assert filter_token_findings({planted: "the planted token"}, [mcp_server])
    assert not filter_token_findings({"never-sent": "x"}, [mcp_server])


# --- the exchanges most likely to leak a TI (upstream stack, route gh) ------------------


@pytest.fixture
def gh_kit(upstream_stack: UpstreamStack) -> Iterator[UpstreamKit]:
    kit = UpstreamKit(upstream_stack, "gh")
    try:
        yield kit
        kit.check_vault()
    finally:
        kit.close()


def _tis(kit: UpstreamKit) -> list[str]:
    return [t for i in kit.my_issued() for t in (i["access_token"], i["refresh_token"]) if t]


def _assert_no_ti(kit: UpstreamKit, text: str, what: str) -> None:
    for ti in _tis(kit):
        assert ti not in text, f"{what}: an upstream token reached the client side"


def test_sign_in_and_token_answer_carry_no_ti(gh_kit: UpstreamKit) -> None:
    """Through the upstream consent and the filter's upstream callback to the
    token answer: no hop the browser or client saw holds the TI."""
    _, tokens = gh_kit.sign_in()
    assert _tis(gh_kit), "no upstream token was issued"
    for line, text in gh_kit.transcript.entries:
        _assert_no_ti(gh_kit, text, line)
    assert tokens["access_token"] not in _tis(gh_kit), "the TE is an upstream token"


def test_mcp_answers_carry_no_ti(gh_kit: UpstreamKit) -> None:
    """initialize, tools/list, whoami (the MCP server used the TI against the
    upstream API), a denied or failing call: no TI in any answer."""
    _, tokens = gh_kit.sign_in()
    te = tokens["access_token"]
    session = gh_kit.open_session(te)
    answers = [gh_kit.post(te, gh_kit.message("tools/list"), session=session),
               gh_kit.call(te, session, "whoami"),
               gh_kit.call(te, session, "no_such_tool"),
               gh_kit.post(te, None, raw=b"{not json", session=session)]
    assert rpc_messages(answers[1])[0]["result"], describe(answers[1])
    for r in answers:
        _assert_no_ti(gh_kit, describe(r, body_chars=100_000), r.request.url.path)


def test_the_mcp_server_refusing_the_ti_leaks_nothing(gh_kit: UpstreamKit) -> None:
    """The MCP server answers 401 to the TI (its upstream API stopped
    accepting it), with a WWW-Authenticate of its own: the client gets the
    filter's challenge, with no TI and nothing of the server's challenge."""
    _, tokens = gh_kit.sign_in()
    te = tokens["access_token"]
    session = gh_kit.open_session(te)
    ti = gh_kit.latest_ti()["access_token"]
    gh_kit.mcp_server.refuse(ti, 401, 'Bearer realm="upstream", error="invalid_token"')
    r = gh_kit.call(te, session, "whoami")
    assert r.status_code == 401, describe(r)
    _assert_no_ti(gh_kit, describe(r), "the relayed refusal")
    assert 'realm="upstream"' not in r.headers.get("www-authenticate", ""), describe(r)


def test_other_paths_of_the_upstream_host_leak_no_ti(gh_kit: UpstreamKit) -> None:
    """/_debug/headers echoes what the MCP server got: with the gh TE, refused
    before it; no TI comes back."""
    _, tokens = gh_kit.sign_in()
    for path in ("/_debug/headers", "/gh/_debug/headers", "/gh/mcp/../../_debug/headers"):
        tid = gh_kit.test_id()
        port = gh_kit.envoy.listen_port
        r = http1(port, "GET", path, [("Host", f"127.0.0.1:{port}"), ("Authorization",
                                                                      f"Bearer {tokens['access_token']}"),
                                      ("x-test-id", tid)])
        assert r.status in (400, 404), f"{path}:\n{r}"
        _assert_no_ti(gh_kit, str(r), path)


def test_a_denied_call_leaks_nothing(upstream_stack: UpstreamStack) -> None:
    kit = UpstreamKit(upstream_stack, "policy")
    try:
        _, tokens = kit.sign_in()
        te = tokens["access_token"]
        r = kit.post(te, rpc_call("admin_reset"), session=kit.open_session(te))
        assert r.json()["error"]["code"] == -32003, describe(r)
        _assert_no_ti(kit, describe(r), "the denial")
        assert te not in r.text
        kit.check_vault()
    finally:
        kit.close()


# --- the run so far ----------------------------------------------------------------


def test_no_upstream_token_reached_the_client_side_so_far(leak_watch: Watch) -> None:
    """Every answer any Envoy of this run gave the client side so far, against
    every token the upstream providers of the run issued."""
    leak_watch.refresh_upstream_tokens()
    findings = upstream_token_findings(leak_watch.entries_since(0), leak_watch.upstream_tokens)
    assert not findings, "\n".join(findings[:30])


def test_no_filter_token_reached_an_mcp_server_so_far(leak_watch: Watch) -> None:
    """Every MCP server of the run, its own request log, against every TE
    and refresh token the token endpoints issued and every forged token."""
    assert leak_watch.filter_tokens, "the watch saw no token answer: it is not recording"
    findings = leak_watch.server_side_findings()
    assert not findings, "\n".join(findings[:30])


def test_no_injected_or_split_header_so_far(leak_watch: Watch) -> None:
    findings = header_findings(leak_watch.entries_since(0))
    assert not findings, "\n".join(findings[:30])

"""The upstream token vault (issue 4) against a real OAuth2 server: route
`op`, whose upstream is oidc-provider with 5-second access tokens and
refresh tokens that rotate on every use (reuse revokes the grant), and whose
MCP server's whoami asks that provider's userinfo (/me) with the token the
filter injected. The client is the real MCP SDK where it can be.

After every test the `upstream` fixture checks that the MCP server never got
a TE, got only upstream tokens (TI) current on arrival, and that the client
side never got a TI (UpstreamKit.check_vault).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio

from harness.browser import query
from harness.oauth import describe
from harness.procs import free_port
from harness.sdk import sdk_client, text_of
from harness.mcp_server import fingerprint
from harness.upstream import UPSTREAM_CALLBACK, UpstreamKit, spread_over_workers, whoami_burst
from harness.www_authenticate import bearer

TIMEOUT_S = 55.0


def _redirect_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/callback"


def test_sdk_whoami_is_the_upstream_user_across_expiries(upstream, test_id: str) -> None:
    """The SDK signs in (IdP, consent, then the upstream's login and consent
    pages); whoami answers with the upstream identity, and keeps doing so for
    15 s: three or more 5-second upstream tokens, each refreshed in time."""
    kit: UpstreamKit = upstream.kit("op")
    kit.test_ids.append(test_id)
    answers: list[dict[str, Any]] = []

    async def main() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_S):
            async with sdk_client(kit, test_id, redirect_uri=_redirect_uri(), login=kit.user) as c:
                tools = sorted(t.name for t in (await c.session.list_tools()).tools)
                started = time.monotonic()
                while time.monotonic() - started < 15.0:
                    answers.append(json.loads(text_of(await c.session.call_tool("whoami", {}))))
                    await anyio.sleep(0.7)
                kit.tes.extend(t.access_token for t in c.storage.tokens)
                return {"tools": tools, "user": c.user}

    started_at = time.time()
    result = anyio.run(main)
    assert result["tools"] == ["admin_reset", "echo", "whoami"]
    assert answers and all(a["sub"] == kit.upstream_login for a in answers), answers
    assert answers[0]["user_api"] == f"{kit.stack.op.issuer}/me"
    # The browser went through the provider's login and consent pages once.
    assert [kind for kind, _ in kit.upstream_pages] == ["op login", "op consent"], kit.upstream_pages
    assert len(result["user"].authorize_urls) == 1, "the SDK had to authorize again"
    # The filter's authorization request at the provider (RFC 6749 4.1.1, RFC 7636).
    hops = [h for b in result["user"].browsers for h in b.history if h.url.startswith(f"{kit.stack.op.issuer}/auth?")]
    asked = query(hops[0].url)
    assert asked["response_type"] == "code" and asked["client_id"] == "mcp-upstream", asked
    assert asked["redirect_uri"] == f"{kit.issuer}{UPSTREAM_CALLBACK}", asked
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43, asked
    assert asked["scope"] == "openid profile" and asked["state"], asked
    # Several upstream tokens, each obtained by one refresh, none refused.
    mine = kit.my_issued()
    refreshes = [t for t in mine if t["at"] > started_at and t is not mine[0]]
    assert len(refreshes) >= 3, f"{len(refreshes)} refreshes in 15 s of 5-second tokens"
    refused = [r for r in kit.stack.op.token_requests() if r["at"] >= started_at and r["status"] != 200]
    assert not refused, f"the provider refused token requests: {refused}"
    # The MCP server saw each of them in turn.
    used = {r["authorization_sha256"] for r in kit.seen() if r["method"] == "POST"}
    assert len(used) >= 4, f"only {len(used)} distinct upstream tokens reached the MCP server"


def test_concurrent_calls_on_an_expired_token_make_one_refresh(upstream) -> None:
    """8 whoami calls at once, on 8 connections spread over both Envoy
    workers, when the upstream token has expired: one refresh at the
    provider, every call answered with the new token."""
    kit: UpstreamKit = upstream.kit("op")
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    pinned = kit.pinned_clients(te, session, 12)
    clients = spread_over_workers(pinned, 8)
    workers = {w for c, w in pinned if c in clients}
    assert len(workers) == 2, pinned
    # The token that expires is the one current before the sleep: read after
    # it, the latest may already be the maintenance tick's refresh.
    expired = fingerprint(kit.latest_ti()["access_token"])
    kit.sleep_until_expired()
    burst = whoami_burst(kit, te, session, clients)
    assert all(a["sub"] == kit.upstream_login for a in burst.answers), burst.answers
    # (Other tests' users' tokens are refreshed by the maintenance tick meanwhile.)
    during = [r for r in kit.stack.op.token_requests("refresh_token")
              if r["at"] >= burst.started and r.get("account") == kit.upstream_login]
    # One refresh, or none when the maintenance tick refreshed the token in
    # use just before the burst; never one per request.
    assert len(during) <= 1, f"{len(during)} refresh calls for 8 concurrent requests: {during}"
    assert all(r["status"] == 200 for r in during), during
    # Both workers took part in the burst.
    calls = [a for a in kit.audit() if a.get("tool") == "whoami"]
    assert {a["_thread"] for a in calls[-8:]} == workers, calls[-8:]
    # Every call went out with the one new token.
    arrived = [r for r in kit.seen() if r["x-test-id"] in set(burst.test_ids)]
    assert len(arrived) == 8, arrived
    # (The tick may refresh it again after the burst, so "new" is "issued to
    # this user, and not the expired one", not "the latest".)
    sent = {r["authorization_sha256"] for r in arrived}
    assert len(sent) == 1 and expired not in sent, arrived
    assert sent <= {fingerprint(t["access_token"]) for t in kit.my_issued()}, arrived
    assert len(burst.holds) == 8, "the access log lacks the burst's requests"
    print(f"\n[measured] route op (oidc-provider), 8 concurrent calls on an expired token over workers "
          f"{sorted(workers)}: 1 refresh; {burst.summary()}")
    for c, _ in pinned:
        c.close()


def test_revoked_upstream_grant_sends_the_sdk_through_upstream_consent_again(upstream, test_id: str) -> None:
    """The user's grant is revoked at the provider: the next refresh is
    refused (invalid_grant), the SDK gets the 401 challenge, authorizes again
    (through the provider's login and consent again), and whoami works."""
    kit: UpstreamKit = upstream.kit("op")
    kit.test_ids.append(test_id)

    async def main() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_S):
            async with sdk_client(kit, test_id, redirect_uri=_redirect_uri(), login=kit.user) as c:
                before = json.loads(text_of(await c.session.call_tool("whoami", {})))
                assert kit.stack.op.revoke_account(kit.upstream_login) == 1
                revoked_at = time.time()
                await anyio.to_thread.run_sync(kit.sleep_until_expired)
                after = json.loads(text_of(await c.session.call_tool("whoami", {})))
                kit.tes.extend(t.access_token for t in c.storage.tokens)
                return {"before": before, "after": after, "user": c.user, "revoked_at": revoked_at}

    result = anyio.run(main)
    assert result["before"]["sub"] == result["after"]["sub"] == kit.upstream_login
    user = result["user"]
    assert len(user.authorize_urls) == 2, f"the SDK authorized {len(user.authorize_urls)} times"
    assert [kind for kind, _ in kit.upstream_pages] == ["op login", "op consent"] * 2, kit.upstream_pages
    # The refresh the revocation made fail, and the challenge the SDK got for it.
    # (Other tests' users' tokens are refreshed by the maintenance tick meanwhile.)
    refused = [r for r in kit.stack.op.token_requests("refresh_token")
               if r["at"] >= result["revoked_at"] and r.get("account") in (None, kit.upstream_login)]
    assert [r["status"] for r in refused] == [400], refused
    # (The SDK's first, tokenless request got a 401 too, without error=.)
    challenges = [t for t in kit.transcript_responses(kit.spec.path, 401) if "invalid_token" in t]
    assert len(challenges) == 1, challenges
    header = next(line.split(": ", 1)[1] for line in challenges[0].splitlines()
                  if line.lower().startswith("www-authenticate: "))
    challenge = bearer(header)
    assert challenge.params["error"] == "invalid_token", header
    assert challenge.params["resource_metadata"] == f"{kit.issuer}/.well-known/oauth-protected-resource/mcp", header


def test_revoked_grant_raw_answer_and_token_forgotten(upstream) -> None:
    """The same with raw HTTP, to see the answers exactly: 401 with the
    challenge; the upstream token is forgotten (the next request is refused
    without calling the provider); authorizing again restores service."""
    kit: UpstreamKit = upstream.kit("op")
    client, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    kit.stack.op.revoke_account(kit.upstream_login)
    kit.sleep_until_expired()
    r = kit.call(te, session, "whoami")
    assert r.status_code == 401, describe(r)
    challenge = bearer(r.headers["www-authenticate"])
    assert challenge.params["error"] == "invalid_token", describe(r)
    assert challenge.params["resource_metadata"] == f"{kit.issuer}/.well-known/oauth-protected-resource/mcp"
    def mine() -> int:
        return sum(1 for r in kit.stack.op.token_requests() if r.get("account") in (None, kit.upstream_login))

    calls = mine()
    again = kit.call(te, session, "whoami")
    assert again.status_code == 401, describe(again)
    assert mine() == calls, "the provider was called for a forgotten token"
    # Authorize again: the filter remembers the consent, but not the upstream token.
    _, tokens = kit.sign_in(client)
    assert [kind for kind, _ in kit.upstream_pages] == ["op login", "op consent"] * 2, kit.upstream_pages
    te2 = tokens["access_token"]
    assert kit.whoami(te2, kit.open_session(te2))["sub"] == kit.upstream_login


def test_user_refusing_at_the_provider_is_access_denied(upstream) -> None:
    """Deny on the provider's consent page: the client's redirect_uri gets error=access_denied."""
    kit: UpstreamKit = upstream.kit("op")
    kit.upstream_decision = "deny"
    client = kit.register_client()
    auth = kit.authorize(client, login=kit.user)
    assert auth.params.get("error") == "access_denied", auth.params
    assert auth.params.get("state") == auth.state and "code" not in auth.params, auth.params
    assert auth.params.get("iss") == kit.issuer, auth.params

"""The upstream token vault (issue 4) against providers that bend RFC 6749:
GitHub (form-encoded answers, errors as HTTP 200, comma-separated scopes,
lower-case "bearer", expiring ghu_ tokens with single-use ghr_ refresh
tokens, classic tokens that never expire), Google (authorization_url_params,
refresh answers without a new refresh token), Notion (client credentials in
the Basic header only), and a body-only endpoint for auth_style auto; plus
the user refusing at the provider, a refused code exchange, a route without
upstream_oauth2, and the MCP server refusing the upstream token.

Each route of the stack has its own fake GitHub app with that behaviour
(harness.upstream.ROUTES); tokens there live 3 s and the filter refreshes
them 1 s before they expire. After every test the `upstream` fixture checks
that TE and TI never crossed (UpstreamKit.check_vault).
"""

from __future__ import annotations

import json
import time

from harness.oauth import describe
from harness.mcp_server import fingerprint
from harness.upstream import UPSTREAM_CALLBACK, UpstreamKit, rpc_messages
from harness.www_authenticate import bearer


def _assert_challenge(kit: UpstreamKit, r) -> None:
    """401 with the filter's challenge: error=invalid_token and the route's metadata."""
    assert r.status_code == 401, describe(r)
    values = r.headers.get_list("www-authenticate")
    assert len(values) == 1, describe(r)
    challenge = bearer(values[0])
    assert challenge.params.get("error") == "invalid_token", describe(r)
    assert challenge.params.get("resource_metadata") == (
        f"{kit.issuer}/.well-known/oauth-protected-resource{kit.spec.path}"), describe(r)


def test_authorization_request_and_code_exchange(upstream) -> None:
    kit: UpstreamKit = upstream.kit("gh")
    t0 = time.time()
    _, tokens = kit.sign_in()
    app = kit.stack.gh.state(kit.spec.client_id)
    asked = app["authorize_log"][-1]["params"]
    assert asked["response_type"] == "code" and asked["client_id"] == "app-gh", asked
    assert asked["redirect_uri"] == f"{kit.issuer}{UPSTREAM_CALLBACK}", asked
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43, asked
    assert asked["scope"] == "repo read:user" and len(asked["state"]) >= 22, asked
    [exchange] = kit.my_token_log(t0)
    assert exchange["grant_type"] == "authorization_code" and exchange["outcome"] == "ok", exchange
    assert exchange["accept"] == "application/json", exchange
    assert exchange["content_type"].startswith("application/x-www-form-urlencoded"), exchange
    assert exchange["auth"] == "basic", "auth_style auto tries the Basic header first"
    assert exchange["code_verifier"] and exchange["redirect_uri"] == asked["redirect_uri"], exchange
    te = tokens["access_token"]
    who = kit.whoami(te, kit.open_session(te))
    assert who["login"] == kit.upstream_login and who["user_api"] == kit.stack.gh.user_url, who


def test_form_encoded_answers(upstream) -> None:
    """The app answers form-encoded whatever Accept says, as GitHub does by
    default: the code exchange and the refresh are read all the same."""
    kit: UpstreamKit = upstream.kit("gh-form")
    t0 = time.time()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    kit.sleep_until_expired()
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    log = [(e["grant_type"], e["answered"], e["outcome"]) for e in kit.my_token_log(t0)]
    # (The maintenance tick may refresh the token in use once more.)
    assert log[0] == ("authorization_code", "form", "ok") and len(log) >= 2, log
    assert set(log[1:]) == {("refresh_token", "form", "ok")}, log
    assert len({r["authorization_sha256"] for r in kit.seen() if r["rpc"] and r["rpc"][0]["name"] == "whoami"}) == 2


def test_rotating_single_use_refresh_tokens(upstream) -> None:
    """Three expiries: each refresh presents the refresh token of the answer
    before (a spent one would get bad_refresh_token)."""
    kit: UpstreamKit = upstream.kit("gh")
    t0 = time.time()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    reuse_before = kit.stack.gh.state(kit.spec.client_id)["refresh_reuse"]
    for _ in range(3):
        kit.sleep_until_expired()
        assert kit.whoami(te, session)["login"] == kit.upstream_login
    refreshes = [e for e in kit.my_token_log(t0) if e["grant_type"] == "refresh_token"]
    assert [e["outcome"] for e in refreshes] == ["ok"] * 3, refreshes
    issued = kit.my_issued()
    assert [e["refresh_token_sha256"] for e in refreshes] == [fingerprint(t["refresh_token"]) for t in issued[:3]]
    assert kit.stack.gh.state(kit.spec.client_id)["refresh_reuse"] == reuse_before


def test_bad_refresh_token_as_http_200_means_authorize_again(upstream) -> None:
    """GitHub refuses a refresh with HTTP 200 and error=bad_refresh_token:
    the client gets the 401 challenge, the token is forgotten, and
    authorizing again (through GitHub's page again) restores service."""
    kit: UpstreamKit = upstream.kit("gh")
    client, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    # (The maintenance tick may have refreshed the token in use before: only
    # what follows the revocation counts.)
    revoked_at = time.time()
    assert kit.stack.gh.revoke(kit.spec.client_id, kit.upstream_login) >= 2
    kit.sleep_until_expired()
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    refused = [e for e in kit.my_token_log(revoked_at) if e["grant_type"] == "refresh_token"]
    assert [(e["outcome"], e["answered"]) for e in refused] == [("bad_refresh_token", "json")], refused
    seen = len(kit.seen())
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    assert len(kit.my_token_log(revoked_at)) == 1, "the provider was called again for a forgotten token"
    assert len(kit.seen()) == seen, "a request without an upstream token reached the MCP server"
    _, tokens = kit.sign_in(client)
    assert [kind for kind, _ in kit.upstream_pages] == ["gh authorize"] * 2, kit.upstream_pages
    te2 = tokens["access_token"]
    assert kit.whoami(te2, kit.open_session(te2))["login"] == kit.upstream_login


def test_classic_tokens_never_expire(upstream) -> None:
    """A GitHub OAuth App token: no expires_in, no refresh token; used as is, never refreshed."""
    kit: UpstreamKit = upstream.kit("gh-classic")
    t0 = time.time()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    [token] = kit.my_issued()
    assert token["access_token"].startswith("gho_") and token["expires_at"] is None and token["refresh_token"] is None
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    time.sleep(2.0)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    assert [e["grant_type"] for e in kit.my_token_log(t0)] == ["authorization_code"]
    assert {r["authorization_sha256"] for r in kit.seen()} == {fingerprint(token["access_token"])}


def test_google_style_parameters_and_refresh_without_a_new_refresh_token(upstream) -> None:
    """authorization_url_params reach the provider's authorize URL; a refresh
    answer without refresh_token keeps the first one, which keeps working."""
    kit: UpstreamKit = upstream.kit("google")
    t0 = time.time()
    _, tokens = kit.sign_in()
    asked = kit.stack.gh.state(kit.spec.client_id)["authorize_log"][-1]["params"]
    assert asked["access_type"] == "offline" and asked["prompt"] == "consent", asked
    assert asked["scope"] == "https://www.googleapis.com/auth/drive.readonly", asked
    assert asked["response_type"] == "code" and asked["code_challenge_method"] == "S256", asked
    te = tokens["access_token"]
    session = kit.open_session(te)
    for _ in range(2):
        kit.sleep_until_expired()
        assert kit.whoami(te, session)["login"] == kit.upstream_login
    issued = kit.my_issued()
    assert issued[0]["refresh_token"] and [t["refresh_token"] for t in issued[1:]] == [None, None], issued
    refreshes = [e for e in kit.my_token_log(t0) if e["grant_type"] == "refresh_token"]
    assert [(e["outcome"], e["refresh_token_sha256"]) for e in refreshes] == [
        ("ok", fingerprint(issued[0]["refresh_token"]))] * 2, refreshes


def test_notion_style_basic_only_with_auth_style_header(upstream) -> None:
    kit: UpstreamKit = upstream.kit("notion")
    t0 = time.time()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    kit.sleep_until_expired()
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    log = kit.my_token_log(t0)
    assert [(e["grant_type"], e["auth"], e["outcome"]) for e in log] == [
        ("authorization_code", "basic", "ok"), ("refresh_token", "basic", "ok")], log


def test_auth_style_auto_falls_back_to_the_body_and_remembers(upstream) -> None:
    """Against an endpoint refusing Basic credentials (401 invalid_client):
    the code exchange is retried with the credentials in the body; the
    refresh afterwards goes straight to the body."""
    kit: UpstreamKit = upstream.kit("auto")
    t0 = time.time()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    kit.sleep_until_expired()
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    log = kit.my_token_log(t0)
    assert [(e["grant_type"], e["auth"], e["outcome"]) for e in log] == [
        ("authorization_code", "basic", "invalid_client"), ("authorization_code", "body", "ok"),
        ("refresh_token", "body", "ok")], log


def test_user_cancelling_at_the_provider_is_access_denied(upstream) -> None:
    kit: UpstreamKit = upstream.kit("gh")
    kit.upstream_decision = "deny"
    client = kit.register_client()
    auth = kit.authorize(client, login=kit.user)
    assert auth.params.get("error") == "access_denied" and "code" not in auth.params, auth.params
    assert auth.params.get("state") == auth.state and auth.params.get("iss") == kit.issuer, auth.params
    assert "refused" in auth.params.get("error_description", ""), auth.params


def test_refused_code_exchange_is_access_denied(upstream) -> None:
    """The provider answers the code exchange with error=bad_verification_code (HTTP 200)."""
    kit: UpstreamKit = upstream.kit("refusing")
    t0 = time.time()
    client = kit.register_client()
    auth = kit.authorize(client, login=kit.user)
    assert auth.params.get("error") == "access_denied" and "code" not in auth.params, auth.params
    assert auth.params.get("state") == auth.state, auth.params
    assert [e["outcome"] for e in kit.my_token_log(t0)] == ["bad_verification_code"]


def test_route_without_upstream_oauth2_forwards_no_authorization(upstream) -> None:
    """No upstream consent, and the MCP server gets no Authorization header at all."""
    kit: UpstreamKit = upstream.kit("plain")
    _, tokens = kit.sign_in()
    assert kit.upstream_pages == [], kit.upstream_pages
    te = tokens["access_token"]
    session = kit.open_session(te)
    r = kit.call(te, session, "whoami")
    result = rpc_messages(r)[0]["result"]
    assert result["isError"] and "no upstream token received" in result["content"][0]["text"], result
    seen = kit.seen()
    assert seen and all(req["authorization"] is None for req in seen), seen


def test_mcp_server_refusing_the_upstream_token(upstream) -> None:
    """The MCP server answers 401 (its upstream API stopped taking the token):
    the client gets the filter's challenge, the token is forgotten, and
    authorizing again gets a new one."""
    kit: UpstreamKit = upstream.kit("reactive")
    client, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    ti = kit.latest_ti()["access_token"]
    kit.mcp_server.refuse(ti, 401, 'Bearer error="invalid_token"')
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    seen = len(kit.seen())
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    assert len(kit.seen()) == seen, "forwarded although the upstream token was forgotten"
    _, tokens = kit.sign_in(client)
    assert [kind for kind, _ in kit.upstream_pages] == ["gh authorize"] * 2
    te2 = tokens["access_token"]
    assert kit.latest_ti()["access_token"] != ti
    assert kit.whoami(te2, kit.open_session(te2))["login"] == kit.upstream_login


def test_mcp_server_403_insufficient_scope_and_plain_403(upstream) -> None:
    """403 with insufficient_scope is a challenge like 401; a plain 403 passes as is (token kept)."""
    kit: UpstreamKit = upstream.kit("reactive")
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    ti = kit.latest_ti()["access_token"]
    kit.mcp_server.refuse(ti, 403, None)
    r = kit.call(te, session, "whoami")
    assert r.status_code == 403 and "www-authenticate" not in r.headers, describe(r)
    assert json.loads(r.text) == {"error": "the upstream token was refused"}, describe(r)
    kit.mcp_server.refuse(ti, 403, 'Bearer error="insufficient_scope", scope="repo admin:org"')
    seen = len(kit.seen())
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    assert len(kit.seen()) == seen + 1, "the plain 403 made the filter forget the token"
    _assert_challenge(kit, kit.call(te, session, "whoami"))
    assert len(kit.seen()) == seen + 1, "forwarded although the upstream token was forgotten"


def test_upstream_token_is_per_user_and_route_not_per_client(upstream) -> None:
    """A second client of the same user on the same route: sign-in and consent
    for that client, but no second upstream consent: the stored token serves
    both. The same browser and client again: only the consent page."""
    kit: UpstreamKit = upstream.kit("gh")
    first, tokens = kit.sign_in()
    te1 = tokens["access_token"]
    second, tokens = kit.sign_in()
    te2 = tokens["access_token"]
    assert [kind for kind, _ in kit.upstream_pages] == ["gh authorize"], kit.upstream_pages
    assert len(kit.my_issued()) == 1
    assert kit.whoami(te1, kit.open_session(te1))["login"] == kit.upstream_login
    assert kit.whoami(te2, kit.open_session(te2))["login"] == kit.upstream_login
    # Same client, same browser: no sign-in, the consent page again (a
    # registered client's consent is not remembered), no upstream consent.
    auth = kit.authorize(first, login=kit.user)
    browser = auth.browser
    again = kit.authorize(first, browser=browser)
    assert again.params.get("code") and again.consent_page is not None, browser.trail()
    assert [kind for kind, _ in kit.upstream_pages] == ["gh authorize"], kit.upstream_pages
    kit.tokens(again)


def test_replayed_upstream_callback_is_refused(upstream) -> None:
    """The provider's redirect back (code and state) works once: a replay gets
    an error page, and the provider is not asked to exchange the code again."""
    kit: UpstreamKit = upstream.kit("gh")
    t0 = time.time()
    client = kit.register_client()
    auth = kit.authorize(client, login=kit.user)
    kit.tokens(auth)
    [callback] = auth.browser.hops_to(UPSTREAM_CALLBACK)
    assert callback.status in (302, 303) and callback.location.startswith(client.redirect_uri), callback
    replay = auth.browser.request("GET", callback.url)
    assert replay.status_code == 400 and "text/html" in replay.headers["content-type"], describe(replay)
    assert "location" not in replay.headers, describe(replay)
    assert [e["grant_type"] for e in kit.my_token_log(t0)] == ["authorization_code"]

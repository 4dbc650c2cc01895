"""The upstream providers themselves, without the filter in the way: the fake
GitHub (envoy-demo/fake_github.py) and oidc-provider as an upstream
(envoy-demo/idp.mjs with ROTATE_REFRESH_TOKENS, ALWAYS_REFRESH_TOKEN,
CONSENT_PAGE). When an upstream test fails, these say whether the fixture or
the filter is at fault.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from urllib.parse import parse_qsl, quote_plus, urlencode

import httpx
import pytest

from harness.browser import Browser, forms_of, query, same_endpoint
from harness.oauth import describe, pkce_pair
from harness.upstream import OP_AT_TTL_S, UPSTREAM_CALLBACK, UpstreamStack


def _gh_app(stack: UpstreamStack, **settings) -> tuple[str, str]:
    client_id = f"fixture-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(12)
    stack.gh.configure(client_id, client_secret=secret, **settings)
    return client_id, secret


def _gh_code(stack: UpstreamStack, client_id: str, login: str, *, scope: str = "repo read:user",
             decision: int = 0) -> tuple[dict[str, str], str]:
    """Through the authorize page as a person: (the redirect's query, code_verifier)."""
    redirect_uri = f"http://127.0.0.1:{stack.envoy.listen_port}{UPSTREAM_CALLBACK}"
    verifier, challenge = pkce_pair()
    url = f"{stack.gh.base_url}/login/oauth/authorize?" + urlencode({
        "client_id": client_id, "redirect_uri": redirect_uri, "state": "st", "scope": scope,
        "code_challenge": challenge, "code_challenge_method": "S256", "response_type": "code"})
    with Browser() as browser:
        page = browser.go("GET", url, stop=lambda t: same_endpoint(t, redirect_uri))
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], describe(page)
        final = browser.submit(page, forms_of(page)[0], button=decision, overrides={"login": login},
                               stop=lambda t: same_endpoint(t, redirect_uri))
    assert final.status_code == 302, describe(final)
    return query(final.headers["location"]), verifier


def _gh_token(stack: UpstreamStack, data: dict[str, str], *, auth: tuple[str, str] | None = None,
              accept: str | None = "application/json") -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.post(f"{stack.gh.base_url}/login/oauth/access_token", data=data, auth=auth, headers=headers,
                      trust_env=False, timeout=10.0)


def _gh_user(stack: UpstreamStack, token: str) -> httpx.Response:
    return httpx.get(stack.gh.user_url, headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def test_fake_github_flow_and_quirks(upstream_stack: UpstreamStack) -> None:
    stack = upstream_stack
    client_id, secret = _gh_app(stack, expires_in=2)
    params, verifier = _gh_code(stack, client_id, "mona")
    assert params["state"] == "st" and params["code"], params
    redirect_uri = f"http://127.0.0.1:{stack.envoy.listen_port}{UPSTREAM_CALLBACK}"
    # Form-encoded unless JSON is asked for.
    r = _gh_token(stack, {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
                          "code_verifier": verifier}, auth=(client_id, secret), accept=None)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-www-form-urlencoded"), \
        describe(r)
    answer = dict(parse_qsl(r.text))
    assert answer["token_type"] == "bearer" and answer["scope"] == "repo,read:user", answer
    assert answer["access_token"].startswith("ghu_") and answer["refresh_token"].startswith("ghr_"), answer
    assert _gh_user(stack, answer["access_token"]).json()["login"] == "mona"
    # The code is single use; errors are HTTP 200.
    again = _gh_token(stack, {"code": params["code"], "code_verifier": verifier}, auth=(client_id, secret))
    assert again.status_code == 200 and again.json()["error"] == "bad_verification_code", describe(again)
    # Refresh tokens are single use and rotate.
    r1 = _gh_token(stack, {"grant_type": "refresh_token", "refresh_token": answer["refresh_token"]},
                   auth=(client_id, secret))
    assert r1.status_code == 200 and r1.json()["refresh_token"] != answer["refresh_token"], describe(r1)
    reused = _gh_token(stack, {"grant_type": "refresh_token", "refresh_token": answer["refresh_token"]},
                       auth=(client_id, secret))
    assert reused.status_code == 200 and reused.json()["error"] == "bad_refresh_token", describe(reused)
    assert stack.gh.state(client_id)["refresh_reuse"] == 1
    # Access tokens expire; /user says so.
    time.sleep(2.1)
    expired = _gh_user(stack, r1.json()["access_token"])
    assert expired.status_code == 401 and expired.json()["message"] == "Bad credentials", describe(expired)


def test_fake_github_cancel_classic_tokens_and_client_auth(upstream_stack: UpstreamStack) -> None:
    stack = upstream_stack
    client_id, secret = _gh_app(stack, expires_in=0, client_auth="body")
    params, _ = _gh_code(stack, client_id, "mona", decision=1)
    assert params == {"error": "access_denied", "error_description": "The user has denied your application access.",
                      "error_uri": params["error_uri"], "state": "st"}, params
    params, verifier = _gh_code(stack, client_id, "mona")
    basic = _gh_token(stack, {"code": params["code"], "code_verifier": verifier}, auth=(client_id, secret))
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client", describe(basic)
    body = _gh_token(stack, {"code": params["code"], "code_verifier": verifier, "client_id": client_id,
                             "client_secret": secret})
    token = body.json()
    assert token["access_token"].startswith("gho_") and "refresh_token" not in token and "expires_in" not in token, \
        token
    stack.gh.configure(client_id, outage="503")
    down = _gh_token(stack, {"grant_type": "refresh_token", "refresh_token": "x"}, auth=(client_id, secret))
    assert down.status_code == 503, describe(down)
    stack.gh.configure(client_id, outage="reset")
    with pytest.raises(httpx.TransportError):
        _gh_token(stack, {"grant_type": "refresh_token", "refresh_token": "x"}, auth=(client_id, secret))


def _op_sign_in(stack: UpstreamStack, login: str) -> tuple[dict, Browser]:
    """The authorization-code flow at the upstream oidc-provider as the filter runs it."""
    op = stack.op
    redirect_uri = f"http://127.0.0.1:{stack.envoy.listen_port}{UPSTREAM_CALLBACK}"
    verifier, challenge = pkce_pair()
    url = f"{op.issuer}/auth?" + urlencode({
        "response_type": "code", "client_id": op.client_id, "redirect_uri": redirect_uri, "scope": "openid profile",
        "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"})
    stop = lambda target: same_endpoint(target, redirect_uri)  # noqa: E731
    browser = Browser()
    page = browser.go("GET", url, stop=stop)
    login_form = forms_of(page)[0]
    assert login_form.action.endswith("/login"), describe(page)
    page = browser.submit(page, login_form, overrides={"login": login}, stop=stop)
    assert page.status_code == 200 and "allow access" in page.text, describe(page)
    consent = [f for f in forms_of(page) if f.action.endswith("/consent")]
    final = browser.submit(page, consent[0], stop=stop)
    params = query(final.headers["location"])
    assert params.get("code"), f"{describe(final)}\n{browser.trail()}"
    r = httpx.post(f"{op.issuer}/token", auth=(op.client_id, op.client_secret), trust_env=False, data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
        "code_verifier": verifier})
    assert r.status_code == 200, describe(r)
    return r.json(), browser


def _op_refresh(stack: UpstreamStack, rt: str) -> httpx.Response:
    return httpx.post(f"{stack.op.issuer}/token", auth=(stack.op.client_id, stack.op.client_secret), trust_env=False,
                      data={"grant_type": "refresh_token", "refresh_token": rt})


def _op_me(stack: UpstreamStack, token: str) -> httpx.Response:
    return httpx.get(f"{stack.op.issuer}/me", headers={"Authorization": f"Bearer {token}"}, trust_env=False)


def test_upstream_op_short_tokens_rotation_and_reuse_detection(upstream_stack: UpstreamStack) -> None:
    stack = upstream_stack
    login = f"fixture-{uuid.uuid4().hex[:8]}@upstream.example"
    tokens, _ = _op_sign_in(stack, login)
    assert tokens["expires_in"] == OP_AT_TTL_S and tokens.get("refresh_token"), tokens
    assert _op_me(stack, tokens["access_token"]).json()["sub"] == login
    r1 = _op_refresh(stack, tokens["refresh_token"])
    assert r1.status_code == 200 and r1.json()["refresh_token"] != tokens["refresh_token"], describe(r1)
    # Reusing the spent refresh token revokes the grant: the rotated one dies too.
    reused = _op_refresh(stack, tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", describe(reused)
    dead = _op_refresh(stack, r1.json()["refresh_token"])
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant", describe(dead)
    assert [r["grant_type"] for r in stack.op.token_requests()][-3:] == ["refresh_token"] * 3
    # Access tokens expire after 5 s (clockTolerance 0); userinfo refuses them then.
    second, _ = _op_sign_in(stack, login)
    assert _op_me(stack, second["access_token"]).status_code == 200
    time.sleep(OP_AT_TTL_S + 0.3)
    assert _op_me(stack, second["access_token"]).status_code == 401
    # /_debug/revoke: the grant and its tokens are gone.
    assert stack.op.revoke_account(login) >= 1
    gone = _op_refresh(stack, second["refresh_token"])
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_grant", describe(gone)


def test_upstream_op_consent_page_can_be_denied(upstream_stack: UpstreamStack) -> None:
    stack = upstream_stack
    op = stack.op
    redirect_uri = f"http://127.0.0.1:{stack.envoy.listen_port}{UPSTREAM_CALLBACK}"
    _, challenge = pkce_pair()
    url = f"{op.issuer}/auth?" + urlencode({
        "response_type": "code", "client_id": op.client_id, "redirect_uri": redirect_uri, "scope": "openid",
        "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"})
    stop = lambda target: same_endpoint(target, redirect_uri)  # noqa: E731
    with Browser() as browser:
        page = browser.go("GET", url, stop=stop)
        page = browser.submit(page, forms_of(page)[0], overrides={"login": "denier@upstream.example"}, stop=stop)
        deny = [f for f in forms_of(page) if f.action.endswith("/abort")]
        final = browser.submit(page, deny[0], stop=stop)
    params = query(final.headers["location"])
    assert params.get("error") == "access_denied" and params.get("state") == "st", params


def test_basic_credentials_are_form_encoded_by_the_fake(upstream_stack: UpstreamStack) -> None:
    """RFC 6749 2.3.1: the fake decodes Basic credentials as the filter encodes them."""
    stack = upstream_stack
    client_id, secret = _gh_app(stack, expires_in=0)
    secret_with_symbols = secret + "+/:%"
    stack.gh.configure(client_id, client_secret=secret_with_symbols)
    params, verifier = _gh_code(stack, client_id, "mona")
    creds = base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret_with_symbols)}".encode()).decode()
    r = httpx.post(f"{stack.gh.base_url}/login/oauth/access_token", trust_env=False,
                   data={"code": params["code"], "code_verifier": verifier},
                   headers={"Authorization": f"Basic {creds}", "Accept": "application/json"})
    assert r.json().get("access_token", "").startswith("gho_"), describe(r)

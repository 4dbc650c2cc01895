"""What the authorization server must refuse, and how (raw HTTP).

/authorize: errors that make the redirect_uri untrustworthy are shown to the
user (400 HTML, no redirect, RFC 6749 4.1.2.1); the others go back to the
client with error, state and iss (RFC 9207). /token: RFC 6749 5.2 JSON.
The MCP endpoint: 401 with Bearer error="invalid_token".
"""

from __future__ import annotations

import time

import pytest

from harness.browser import forms_of, query
from harness.http import media_type
from harness.oauth import CONSENT_PATH, Client, OAuthKit, describe, jwt_parts, oauth_error, pkce_pair, tamper


def _assert_error_page(r, what: str) -> None:
    assert r.status_code == 400, f"{what}: expected a 400 error page:\n{describe(r)}"
    assert "location" not in r.headers, f"{what}: must not redirect:\n{describe(r)}"
    assert media_type(r.headers.get("content-type")) == "text/html", describe(r)


def _assert_error_redirect(oauth: OAuthKit, params: dict[str, str], state: str, error: str, trail: str) -> None:
    assert params.get("error") == error, f"expected error={error} at the redirect_uri, got {params}\n{trail}"
    assert params.get("state") == state, params
    assert params.get("iss") == oauth.issuer, params
    assert "code" not in params, params


# --- /authorize -------------------------------------------------------------


def test_authorize_unknown_client_is_an_error_page(oauth: OAuthKit) -> None:
    _, challenge = pkce_pair()
    stranger = Client(client_id="no-such-client", redirect_uri="http://127.0.0.1:5555/callback")
    url = oauth.authorize_url(stranger, challenge=challenge, state="s", resource=oauth.resource)
    _assert_error_page(oauth.browser().request("GET", url), "unknown client_id")


def test_authorize_redirect_uri_mismatch_is_an_error_page(oauth: OAuthKit) -> None:
    client = oauth.register_client(redirect_uri="https://app.example.com/callback")
    _, challenge = pkce_pair()
    for wrong in ("https://evil.example/callback", "https://app.example.com/callback/other",
                  "http://127.0.0.1:5555/callback"):
        url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource,
                                  redirect_uri=wrong)
        _assert_error_page(oauth.browser().request("GET", url), f"redirect_uri {wrong}")


@pytest.mark.parametrize(("case", "challenge_kind", "method"), [
    ("missing PKCE", None, None),
    ("plain PKCE", "plain", "plain"),
    ("no method", "s256", None),
])
def test_authorize_without_s256_pkce_is_invalid_request(oauth: OAuthKit, case: str, challenge_kind: str | None,
                                                       method: str | None) -> None:
    client = oauth.register_client()
    verifier, challenge = pkce_pair()
    value = {None: None, "plain": verifier, "s256": challenge}[challenge_kind]
    state = f"state-{case.replace(' ', '-')}"
    browser = oauth.browser()
    url = oauth.authorize_url(client, challenge=value, state=state, resource=oauth.resource, method=method)
    final, _ = oauth.drive(browser, url, client.redirect_uri)
    params = query(str(final.url.join(final.headers["location"])))
    _assert_error_redirect(oauth, params, state, "invalid_request", browser.trail())


def test_authorize_resource_of_another_route_is_invalid_target(oauth: OAuthKit) -> None:
    client = oauth.register_client()
    auth = oauth.authorize(client, resource=oauth.other_resource)
    _assert_error_redirect(oauth, auth.params, auth.state, "invalid_target", auth.browser.trail())


# --- consent ----------------------------------------------------------------


def test_consent_deny_is_access_denied(oauth: OAuthKit) -> None:
    client = oauth.register_client()
    auth = oauth.authorize(client, decision="deny")
    assert auth.consent_page is not None, auth.browser.trail()
    _assert_error_redirect(oauth, auth.params, auth.state, "access_denied", auth.browser.trail())


@pytest.mark.parametrize("csrf", [None, "wrong", ""])
def test_consent_post_without_the_right_csrf_token_is_403(oauth: OAuthKit, csrf: str | None) -> None:
    client = oauth.register_client()
    auth = oauth.authorize(client, decision=None)
    page = auth.consent_page
    assert page is not None, auth.browser.trail()
    form = forms_of(page)[0]
    data = {"request": form.get("request") or "", "decision": "approve"}
    if csrf is not None:
        data["csrf"] = csrf
    r = auth.browser.request("POST", str(page.url.join(CONSENT_PATH)), data=data)
    assert r.status_code == 403, describe(r)
    assert "location" not in r.headers, describe(r)


# --- /token -------------------------------------------------------------------


def test_wrong_pkce_verifier_is_invalid_grant(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    wrong, _ = pkce_pair()
    r = oauth.exchange(auth, code_verifier=wrong)
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] == "invalid_grant", describe(r)


def test_missing_pkce_verifier_is_refused(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    r = oauth.exchange(auth, code_verifier=None)
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] in ("invalid_grant", "invalid_request"), describe(r)


def test_reused_code_is_invalid_grant_and_revokes_its_tokens(oauth: OAuthKit, test_id: str) -> None:
    client = oauth.register_client()
    auth = oauth.authorize(client)
    tokens = oauth.tokens(auth)
    oauth.assert_accepted(tokens["access_token"], test_id + "-before")
    again = oauth.exchange(auth)
    assert again.status_code == 400, describe(again)
    assert oauth_error(again)["error"] == "invalid_grant", describe(again)
    # RFC 6749 4.1.2 / OAuth 2.1 4.1.3: tokens issued from a reused code are revoked.
    oauth.assert_refused(tokens["access_token"], test_id)
    refreshed = oauth.refresh(client, tokens["refresh_token"])
    assert refreshed.status_code == 400 and oauth_error(refreshed)["error"] == "invalid_grant", describe(refreshed)
    oauth.assert_no_leaks(tokens["access_token"])


def test_redirect_uri_differing_from_authorize_is_invalid_grant(oauth: OAuthKit) -> None:
    metadata = oauth.client_metadata()
    metadata["redirect_uris"] = ["https://app.example.com/one", "https://app.example.com/two"]
    r = oauth.register(metadata)
    assert r.status_code == 201, describe(r)
    client = Client(client_id=r.json()["client_id"], redirect_uri="https://app.example.com/one")
    auth = oauth.authorize(client)
    wrong = oauth.exchange(auth, redirect_uri="https://app.example.com/two")
    assert wrong.status_code == 400, describe(wrong)
    assert oauth_error(wrong)["error"] == "invalid_grant", describe(wrong)


def test_token_for_another_routes_resource_is_invalid_target(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    r = oauth.exchange(auth, resource=oauth.other_resource)
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] == "invalid_target", describe(r)


def test_code_of_another_client_is_invalid_grant(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    auth.client = oauth.register_client()
    r = oauth.exchange(auth)
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] in ("invalid_grant", "invalid_client"), describe(r)


def test_unsupported_grant_type(oauth: OAuthKit) -> None:
    client = oauth.register_client()
    r = oauth.token_request(client, {"grant_type": "password", "username": "alice", "password": "x"})
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] in ("unsupported_grant_type", "unauthorized_client"), describe(r)


# --- refresh tokens -----------------------------------------------------------


def test_refresh_token_reuse_revokes_the_family(oauth: OAuthKit, test_id: str) -> None:
    """refresh_reuse_grace_seconds is 0 on this Envoy: a rotated refresh token
    presented again means it leaked (OAuth 2.1 4.3.1), so the whole family goes."""
    client, tokens = oauth.get_te()
    rotated = oauth.assert_token_response(oauth.refresh(client, tokens["refresh_token"]))
    oauth.assert_accepted(rotated["access_token"], test_id + "-before")
    reuse = oauth.refresh(client, tokens["refresh_token"])
    assert reuse.status_code == 400, describe(reuse)
    assert oauth_error(reuse)["error"] == "invalid_grant", describe(reuse)
    newest = oauth.refresh(client, rotated["refresh_token"])
    assert newest.status_code == 400, f"the newest refresh token of a revoked family still works:\n{describe(newest)}"
    assert oauth_error(newest)["error"] == "invalid_grant", describe(newest)
    oauth.assert_refused(rotated["access_token"], test_id)
    oauth.assert_no_leaks(tokens["access_token"], rotated["access_token"])


def test_refresh_token_of_another_client_is_refused(oauth: OAuthKit) -> None:
    _, tokens = oauth.get_te()
    r = oauth.refresh(oauth.register_client(), tokens["refresh_token"])
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] in ("invalid_grant", "invalid_client"), describe(r)
    oauth.assert_no_leaks(tokens["access_token"])


# --- the TE on the MCP endpoint -------------------------------------------------


def test_tampered_te_is_refused(oauth: OAuthKit, test_id: str) -> None:
    _, tokens = oauth.get_te()
    te = tokens["access_token"]
    oauth.assert_refused(tamper(te), test_id + "-claims")
    header, payload, signature = te.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    oauth.assert_refused(f"{header}.{payload}.{flipped}", test_id + "-signature")
    oauth.assert_accepted(te, test_id)
    oauth.assert_no_leaks(te)


def test_te_of_this_route_is_refused_on_another_route(oauth: OAuthKit, test_id: str) -> None:
    _, tokens = oauth.get_te()
    te = tokens["access_token"]
    oauth.assert_refused(te, test_id + "-other", origin=oauth.other_origin)
    oauth.assert_accepted(te, test_id)
    oauth.assert_no_leaks(te)


def test_te_from_another_envoy_is_refused(oauth: OAuthKit, oauth_short_ttl: OAuthKit, test_id: str) -> None:
    """Another deployment (other keys, other issuer) issued it."""
    _, tokens = oauth_short_ttl.get_te()
    oauth.assert_refused(tokens["access_token"], test_id)
    oauth_short_ttl.assert_no_leaks(tokens["access_token"])


def test_expired_te_is_refused_and_refresh_gets_a_working_one(oauth_short_ttl: OAuthKit, test_id: str) -> None:
    oauth = oauth_short_ttl  # access_token_ttl_seconds: 3
    client, tokens = oauth.get_te()
    te = tokens["access_token"]
    assert tokens["expires_in"] <= 3, tokens
    oauth.assert_accepted(te, test_id + "-fresh")
    _, claims = jwt_parts(te)
    time.sleep(max(0.0, claims["exp"] - time.time()) + 1.2)
    challenge = oauth.assert_refused(te, test_id + "-expired")
    assert challenge.params.get("error") == "invalid_token"
    refreshed = oauth.assert_token_response(oauth.refresh(client, tokens["refresh_token"]))
    oauth.assert_accepted(refreshed["access_token"], test_id)
    oauth.assert_no_leaks(te, refreshed["access_token"])

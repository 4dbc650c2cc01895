"""Attack class 5: every identifier an attacker can read, tried as a credential.

Readable without any secret: the TE's payload (grant id `gid`, `jti`,
`client_id`, `sub`), the client_id, the PKCE code_challenge, the pending
request id in the consent URL, the OIDC `state` the filter sends to the
IdP and the one it sends to the upstream provider, the session cookie's value. What the filter must do:
  - POST /.oauth/revoke with token=<gid>.<anything> (or any other readable
    identifier) and the public client_id: 200 (RFC 7009 2.2: an unknown
    token is a no-op) and NOTHING revoked: the user's TE keeps working and
    the refresh token still refreshes. Revocation checks the token exactly
    as /token does: the real refresh token or the real access token revokes
    (the TE then gets 401), but only for the client it was issued to;
  - /.oauth/token: none of them is a code or a refresh token;
  - /mcp: none of them is a bearer token (401, not forwarded);
  - /.oauth/consent: none of them is a pending request or a CSRF token.
Each case signs a user in of its own, so no case depends on another.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from harness.attack import SignedIn, assert_error_json, new_test_id, sign_in
from harness.browser import forms_of, query
from harness.oauth import CONSENT_PATH, SESSION_COOKIE, Authorization, OAuthKit, describe, oauth_error
from harness.upstream import UpstreamKit, UpstreamStack

# Identifiers taken from a signed-in user's TE (SignedIn) -> the string tried.
READABLE: dict[str, Callable[[SignedIn], str]] = {
    "gid.random": lambda s: f"{s.gid}.{secrets.token_urlsafe(32)}",
    "gid.jti": lambda s: f"{s.gid}.{s.claims['jti']}",
    "gid.x": lambda s: f"{s.gid}.x",
    "gid.": lambda s: f"{s.gid}.",
    "gid": lambda s: s.gid,
    "gid.gid": lambda s: f"{s.gid}.{s.gid}",
    "jti": lambda s: s.claims["jti"],
    "client_id": lambda s: s.client.client_id,
    "sub": lambda s: s.claims["sub"],
    "TE payload": lambda s: s.te.split(".")[1],
    "TE header.payload": lambda s: ".".join(s.te.split(".")[:2]),
    "refresh token's gid part with the TE signature": lambda s: f"{s.gid}.{s.te.split('.')[2]}",
}


def _assert_te_works(kit: OAuthKit, te: str, what: str) -> None:
    tid = new_test_id()
    r = kit.mcp_post(te, tid)
    assert r.status_code == 200, f"{what}: the user's TE stopped working:\n{describe(r)}"


def _assert_refresh_works(kit: OAuthKit, signed: SignedIn, what: str) -> None:
    r = kit.refresh(signed.client, signed.refresh_token)
    assert r.status_code == 200, f"{what}: the user's refresh token stopped working:\n{describe(r)}"


@pytest.mark.parametrize("ident", list(READABLE))
def test_revoke_with_a_readable_identifier_revokes_nothing(oauth: OAuthKit, ident: str) -> None:
    """POST /.oauth/revoke token=<identifier> client_id=<the public client>:
    200, and the grant stands: TE and refresh token still work."""
    signed = sign_in(oauth)
    token = READABLE[ident](signed)
    for hint in (None, "refresh_token", "access_token"):
        r = oauth.revoke(signed.client, token, hint=hint)
        assert r.status_code == 200, f"revoke {ident} (hint {hint}): RFC 7009 answers 200:\n{describe(r)}"
    _assert_te_works(oauth, signed.te, f"revoke with {ident}")
    _assert_refresh_works(oauth, signed, f"revoke with {ident}")


def test_revoke_with_the_refresh_token_revokes_the_grant(oauth: OAuthKit, test_id: str) -> None:
    signed = sign_in(oauth)
    r = oauth.revoke(signed.client, signed.refresh_token, hint="refresh_token")
    assert r.status_code == 200, describe(r)
    oauth.assert_refused(signed.te, test_id)
    refreshed = oauth.refresh(signed.client, signed.refresh_token)
    assert refreshed.status_code == 400 and oauth_error(refreshed)["error"] == "invalid_grant", describe(refreshed)


def test_revoke_with_the_access_token_revokes_the_grant(oauth: OAuthKit, test_id: str) -> None:
    signed = sign_in(oauth)
    r = oauth.revoke(signed.client, signed.te, hint="access_token")
    assert r.status_code == 200, describe(r)
    oauth.assert_refused(signed.te, test_id)


def test_revoke_with_a_wrong_hint_still_revokes(oauth: OAuthKit, test_id: str) -> None:
    """A hint is only a hint (RFC 7009 2.1): the access token sent as a refresh token still revokes."""
    signed = sign_in(oauth)
    assert oauth.revoke(signed.client, signed.te, hint="refresh_token").status_code == 200
    oauth.assert_refused(signed.te, test_id)


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revoke_by_another_client_revokes_nothing(oauth: OAuthKit, which: str) -> None:
    """The real token, presented by another (public) client: 200, nothing revoked (RFC 7009 2.1)."""
    signed = sign_in(oauth)
    other = oauth.register_client()
    r = oauth.revoke(other, signed.refresh_token if which == "refresh_token" else signed.te)
    assert r.status_code == 200, describe(r)
    _assert_te_works(oauth, signed.te, f"revoke {which} by another client")
    _assert_refresh_works(oauth, signed, f"revoke {which} by another client")


@pytest.mark.parametrize("token", ["garbage", "a.b", "a.b.c", "..", ".", "x" * 2000],
                         ids=["garbage", "a.b", "a.b.c", "dots", "dot", "2000 chars"])
def test_revoke_of_an_unknown_token_is_a_no_op(oauth: OAuthKit, token: str) -> None:
    """RFC 7009 2.2: 200 with an empty body, no error."""
    client = oauth.register_client()
    r = oauth.revoke(client, token)
    assert r.status_code == 200 and not r.content.strip(), describe(r)


def test_revoke_needs_a_known_client(oauth: OAuthKit) -> None:
    """An unknown client_id is a client authentication failure (RFC 7009 2.2.1), and revokes nothing."""
    signed = sign_in(oauth)
    r = oauth.http.post(oauth.endpoint("revoke"), data={"token": signed.refresh_token, "client_id": "mcp_nobody"})
    assert_error_json(r, 401, "invalid_client")
    _assert_te_works(oauth, signed.te, "revoke by an unknown client")


@pytest.mark.parametrize("ident", ["gid.random", "gid", "jti", "client_id", "TE payload"])
def test_readable_identifier_is_no_refresh_token(oauth: OAuthKit, ident: str) -> None:
    """grant_type=refresh_token with an identifier: invalid_grant, and no side
    effect (the real refresh token still works)."""
    signed = sign_in(oauth)
    r = oauth.refresh(signed.client, READABLE[ident](signed))
    assert r.status_code == 400 and oauth_error(r)["error"] == "invalid_grant", describe(r)
    _assert_refresh_works(oauth, signed, f"refresh with {ident}")


def test_the_te_is_no_refresh_token(oauth: OAuthKit) -> None:
    signed = sign_in(oauth)
    r = oauth.refresh(signed.client, signed.te)
    assert r.status_code == 400 and oauth_error(r)["error"] == "invalid_grant", describe(r)
    _assert_te_works(oauth, signed.te, "refresh with the TE")


def _pending(oauth: OAuthKit) -> tuple[Authorization, str, str]:
    """A user at the consent page: (authorization, pending request id, csrf)."""
    auth = oauth.authorize(oauth.register_client(), decision=None)
    page = auth.consent_page
    assert page is not None, auth.browser.trail()
    form = forms_of(page)[0]
    return auth, form.get("request") or "", form.get("csrf") or ""


def test_identifiers_are_no_authorization_code(oauth: OAuthKit) -> None:
    """code=<pending request id | gid | jti | code_challenge | csrf | session cookie>: invalid_grant."""
    signed = sign_in(oauth)
    auth, request_id, csrf = _pending(oauth)
    cookie = auth.browser.http.cookies.get(SESSION_COOKIE) or ""
    candidates = {"pending request": request_id, "gid": signed.gid, "jti": signed.claims["jti"], "csrf": csrf,
                  "session cookie": cookie, "refresh token": signed.refresh_token}
    for what, value in candidates.items():
        r = oauth.token_request(auth.client, {"grant_type": "authorization_code", "code": value,
                                              "redirect_uri": auth.redirect_uri, "code_verifier": auth.verifier})
        assert r.status_code == 400 and oauth_error(r)["error"] == "invalid_grant", f"code={what}:\n{describe(r)}"


def test_identifiers_are_no_bearer_token(oauth: OAuthKit) -> None:
    """Bearer <gid | jti | client_id | refresh token | session cookie | pending request | csrf | code_challenge>
    at /mcp: 401 invalid_token, never forwarded."""
    signed = sign_in(oauth)
    auth, request_id, csrf = _pending(oauth)
    cookie = auth.browser.http.cookies.get(SESSION_COOKIE) or ""
    challenge = query(str(auth.browser.history[0].url)).get("code_challenge", "")
    candidates = {"gid": signed.gid, "jti": signed.claims["jti"], "client_id": signed.client.client_id,
                  "refresh token": signed.refresh_token, "session cookie": cookie, "pending request": request_id,
                  "csrf": csrf, "code_challenge": challenge}
    for what, value in candidates.items():
        assert value, f"{what} is empty: the test could not read it"
        oauth.assert_refused(value, new_test_id())


def test_identifiers_are_no_consent_request(oauth: OAuthKit) -> None:
    """POST /.oauth/consent with request=<gid | jti | csrf> and the browser's
    own session: refused (400/403), no redirect with a code."""
    signed = sign_in(oauth)
    auth, request_id, csrf = _pending(oauth)
    consent = str(auth.consent_page.url.join(CONSENT_PATH))
    for what, value in {"gid": signed.gid, "jti": signed.claims["jti"], "csrf": csrf}.items():
        r = auth.browser.request("POST", consent, data={"request": value, "csrf": csrf, "decision": "approve"})
        assert r.status_code in (400, 403) and "location" not in r.headers, f"request={what}:\n{describe(r)}"


def test_idp_state_is_no_credential(oauth: OAuthKit) -> None:
    """The sealed sign-in state the filter sends to the IdP (readable in the
    IdP redirect's URL), replayed as an IdP callback from another browser
    (no login cookie): refused, no session, no code."""
    client = oauth.register_client()
    auth = oauth.authorize(client)
    to_idp = next(h for h in auth.browser.history if h.location and urlsplit(h.location).port == oauth.idp.port)
    state = query(to_idp.location)["state"]
    stranger = oauth.browser()
    r = stranger.request("GET", f"{oauth.issuer}/.oauth/callback?code=x&state={state}")
    assert r.status_code in (400, 403) and "location" not in r.headers, describe(r)
    assert SESSION_COOKIE not in r.headers.get("set-cookie", ""), describe(r)
    r = oauth.token_request(client, {"grant_type": "authorization_code", "code": state,
                                     "redirect_uri": client.redirect_uri, "code_verifier": auth.verifier})
    assert r.status_code == 400 and oauth_error(r)["error"] == "invalid_grant", describe(r)


def test_upstream_login_state_is_no_credential(upstream_stack: UpstreamStack) -> None:
    """The state the filter sends to the upstream provider (readable in the
    provider's authorize URL), replayed at /.oauth/upstream/callback from
    another browser and from the same one after use, and tried as a bearer
    token: refused every time, no code for the client."""
    kit = UpstreamKit(upstream_stack, "gh")
    try:
        client = kit.register_client()
        auth = kit.authorize(client, login=kit.user)
        kit.tokens(auth)
        hop = next(h for h in auth.browser.history
                   if h.url.startswith(f"{upstream_stack.gh.base_url}/login/oauth/authorize"))
        state = query(hop.url)["state"]
        callback = f"{kit.issuer}/.oauth/upstream/callback?code=attacker-code&state={state}"
        for browser in (kit.browser(), auth.browser):
            r = browser.request("GET", callback)
            assert 400 <= r.status_code < 500, describe(r)
            assert not r.headers.get("location", "").startswith(client.redirect_uri), describe(r)
        kit.assert_refused(state, kit.test_id())
        kit.check_vault()
    finally:
        kit.close()

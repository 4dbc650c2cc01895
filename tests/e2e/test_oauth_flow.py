"""The authorization flow with raw HTTP, every answer checked: registration,
/authorize, sign-in at the OpenID provider (its login form), the filter's
callback and session cookie, the consent page, the code, the token endpoint,
refresh-token rotation, revocation, and the TE on the MCP endpoint.

Each test holding a TE also checks that the MCP server never received it and
that nothing the client side received carries the IdP's tokens or the
filter's secrets (OAuthKit.assert_no_leaks).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import pytest

from harness.browser import forms_of, query
from harness.cimd import CimdServer
from harness.http import media_type
from harness.idp import ALICE, BOB
from harness.oauth import CALLBACK_PATH, CONSENT_PATH, SESSION_COOKIE, Client, OAuthKit, describe, oauth_error


def _cookie_attributes(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-cased names) of one Set-Cookie value."""
    first, *attrs = [part.strip() for part in set_cookie.split(";")]
    name, _, value = first.partition("=")
    out = {}
    for attr in attrs:
        k, _, v = attr.partition("=")
        out[k.strip().lower()] = v.strip()
    return name, value, out


def test_full_flow(oauth: OAuthKit, test_id: str) -> None:
    idp_requests_before = len(oauth.idp.requests())
    client = oauth.register_client()
    auth = oauth.authorize(client)
    hops = auth.browser.history

    # 1. /authorize without a session sends the browser to the IdP, with PKCE and a nonce.
    first = hops[0]
    assert urlsplit(first.url).path == "/.oauth/authorize" and first.status in (302, 303), auth.browser.trail()
    assert first.location and first.location.startswith(f"{oauth.idp.issuer}/auth?"), auth.browser.trail()
    to_idp = query(first.location)
    assert to_idp["client_id"] == "mcp-oauth-filter", to_idp
    assert to_idp["redirect_uri"] == f"{oauth.issuer}{CALLBACK_PATH}", to_idp
    assert to_idp["response_type"] == "code", to_idp
    assert "openid" in to_idp["scope"].split(), to_idp
    assert to_idp.get("code_challenge_method") == "S256" and to_idp.get("code_challenge"), to_idp
    assert to_idp.get("state") and to_idp.get("nonce"), to_idp

    # 2. The IdP's callback: a session cookie, then the consent page.
    callbacks = auth.browser.hops_to(CALLBACK_PATH)
    assert len(callbacks) == 1, auth.browser.trail()
    callback = callbacks[0]
    assert callback.status in (302, 303), describe(callback.response)
    assert callback.location and urlsplit(callback.location).path == CONSENT_PATH, describe(callback.response)
    assert query(callback.location).get("request"), describe(callback.response)
    cookies = [_cookie_attributes(v) for v in callback.response.headers.get_list("set-cookie")]
    session = [c for c in cookies if c[0] == SESSION_COOKIE]
    assert len(session) == 1, f"no {SESSION_COOKIE} cookie:\n{describe(callback.response)}"
    _, value, attrs = session[0]
    assert value, describe(callback.response)
    assert "httponly" in attrs, describe(callback.response)
    assert attrs.get("samesite", "").lower() == "lax", describe(callback.response)
    assert attrs.get("path") == "/", describe(callback.response)
    assert "domain" not in attrs, describe(callback.response)

    # 3. The consent page, approved as served: back to the client with code, state and iss.
    assert auth.consent_page is not None, auth.browser.trail()
    # The ID token carries only sub: an email on the page came from userinfo.
    assert ALICE["email"] in auth.consent_page.text, f"the signed-in user is not named:\n{auth.consent_page.text}"
    assert auth.params.get("code"), auth.params
    assert auth.params.get("state") == auth.state, auth.params
    assert auth.params.get("iss") == oauth.issuer, auth.params
    assert "error" not in auth.params, auth.params

    # 4. The token endpoint.
    tokens = oauth.tokens(auth)
    te = tokens["access_token"]
    claims = oauth.assert_te(te)
    assert claims.get("client_id", client.client_id) == client.client_id, claims

    # The filter verified the ID token and, since it carries only sub, asked userinfo for the email.
    idp_requests = oauth.idp.requests()[idp_requests_before:]
    assert ("POST", "/token") in idp_requests, idp_requests
    assert any(path == "/me" for _, path in idp_requests), f"the filter never called userinfo: {idp_requests}"

    # 5. The TE opens the MCP endpoint; the MCP server never sees it.
    r = oauth.assert_accepted(te, test_id)
    assert r.headers.get("mcp-session-id"), describe(r)
    oauth.assert_no_leaks(te)


def test_consent_page(oauth: OAuthKit) -> None:
    client = oauth.register_client(name="Consent Page Test Client")
    auth = oauth.authorize(client, decision=None)
    page = auth.consent_page
    assert page is not None and page.status_code == 200, auth.browser.trail()
    assert media_type(page.headers.get("content-type")) == "text/html", describe(page)
    csp = page.headers.get("content-security-policy", "")
    assert re.search(r"frame-ancestors\s+'none'", csp), describe(page)
    assert page.headers.get("x-frame-options", "").upper() == "DENY", describe(page)
    assert "no-store" in page.headers.get("cache-control", "").lower(), describe(page)
    text = page.text
    assert "Consent Page Test Client" in text, text
    assert urlsplit(client.redirect_uri).hostname in text, f"the redirect host is not named:\n{text}"
    assert oauth.resource in text, f"the route is not named:\n{text}"
    assert "mcp" in text, text
    forms = forms_of(page)
    assert len(forms) >= 2, text
    approve, deny = forms[0], forms[1]
    for form in (approve, deny):
        assert form.method == "POST" and form.action == CONSENT_PATH, form
        assert form.get("request") and form.get("csrf"), form
    assert approve.buttons[0] == ("decision", "approve"), approve
    assert ("decision", "deny") in deny.buttons, deny


def test_consent_csp_lets_the_browser_follow_the_redirect(oauth: OAuthKit) -> None:
    """Chromium and Safari apply the consent page's CSP `form-action` to the
    redirects that follow the form's POST too (Firefox does not; the spec
    question is w3c/webappsec-csp#8): if form-action does not allow the
    client's redirect_uri, a real browser stops after "Allow" and the client
    never gets its code. The headless browser here would not notice, so the
    rule is checked on the header."""
    client = oauth.register_client()
    auth = oauth.authorize(client, decision=None)
    csp = auth.consent_page.headers.get("content-security-policy", "") if auth.consent_page else ""
    directives = {d.strip().split()[0].lower(): d.strip().split()[1:] for d in csp.split(";") if d.strip()}
    if "form-action" not in directives:
        return
    sources = directives["form-action"]
    redirect_origin = "{0.scheme}://{0.netloc}".format(urlsplit(client.redirect_uri))
    allowed = ("*" in sources or redirect_origin in sources or f"{urlsplit(client.redirect_uri).scheme}:" in sources)
    assert allowed, (
        f"Content-Security-Policy form-action {sources} blocks the redirect to {client.redirect_uri} "
        f"after the consent form is posted (CSP: {csp!r})")


def test_a_registered_client_sees_the_consent_page_every_time(oauth: OAuthKit, test_id: str) -> None:
    """Anyone can register a known client's public metadata and get the same
    client_id, so remembered consent does not apply to registered clients
    (MCP Security Best Practices, confused deputy): the session is reused
    (no second sign-in), the consent page is shown again."""
    client = oauth.register_client()
    first = oauth.authorize(client)
    assert first.consent_page is not None
    browser = first.browser
    hops_before = len(browser.history)
    second = oauth.authorize(client, browser=browser)
    new_hops = browser.history[hops_before:]
    assert second.consent_page is not None, f"a registered client got a code without consent:\n{browser.trail()}"
    assert not any(urlsplit(h.url).port == oauth.idp.port for h in new_hops), (
        f"signed in again although the session cookie was sent:\n{browser.trail()}")
    assert second.params.get("code") and second.params.get("state") == second.state, second.params
    assert second.params["code"] != first.params["code"]
    tokens = oauth.tokens(second)
    oauth.assert_accepted(tokens["access_token"], test_id)
    oauth.assert_no_leaks(tokens["access_token"])


def test_consent_is_remembered_for_a_metadata_document_client(oauth: OAuthKit, cimd_server: CimdServer,
                                                             test_id: str) -> None:
    """A client whose identity its metadata document proves: the second
    authorization of the same browser goes straight back with a code."""
    path = f"/clients/{uuid.uuid4().hex}.json"
    # Not a loopback URI: consent is never remembered for those (any local
    # program can listen on a loopback port).
    redirect_uri = "https://client.example/callback"
    url = cimd_server.publish(path, {"client_id": cimd_server.url(path), "client_name": "Remembered",
                                     "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
                                     "grant_types": ["authorization_code", "refresh_token"]})
    client = Client(client_id=url, redirect_uri=redirect_uri)
    first = oauth.authorize(client)
    assert first.consent_page is not None
    second = oauth.authorize(client, browser=first.browser)
    assert second.consent_page is None, f"the consent page was shown again:\n{first.browser.trail()}"
    assert second.params.get("code") and second.params.get("iss") == oauth.issuer, second.params
    tokens = oauth.tokens(second)
    oauth.assert_accepted(tokens["access_token"], test_id)


def test_session_is_reused_but_another_client_needs_consent(oauth: OAuthKit) -> None:
    first = oauth.authorize(oauth.register_client())
    browser = first.browser
    hops_before = len(browser.history)
    second = oauth.authorize(oauth.register_client(), browser=browser)
    new_hops = browser.history[hops_before:]
    assert not any(urlsplit(h.url).port == oauth.idp.port for h in new_hops), browser.trail()
    assert second.consent_page is not None, f"a new client got a code without consent:\n{browser.trail()}"
    assert second.params.get("code"), second.params


def test_loopback_redirect_uri_matches_on_any_port(oauth: OAuthKit, test_id: str) -> None:
    """RFC 8252 7.3: a native client's loopback port is chosen at run time."""
    client = oauth.register_client(redirect_uri="http://127.0.0.1/callback")
    auth = oauth.authorize(client, redirect_uri="http://127.0.0.1:54321/callback")
    assert auth.params.get("code"), auth.params
    tokens = oauth.tokens(auth)
    oauth.assert_accepted(tokens["access_token"], test_id)
    oauth.assert_no_leaks(tokens["access_token"])


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_client(oauth: OAuthKit, test_id: str, method: str) -> None:
    client = oauth.register_client(auth_method=method)
    auth = oauth.authorize(client)
    tokens = oauth.tokens(auth)
    oauth.assert_accepted(tokens["access_token"], test_id)
    refreshed = oauth.assert_token_response(oauth.refresh(client, tokens["refresh_token"]))
    oauth.assert_no_leaks(tokens["access_token"], refreshed["access_token"])


def test_confidential_client_with_a_wrong_secret(oauth: OAuthKit) -> None:
    client = oauth.register_client(auth_method="client_secret_post")
    auth = oauth.authorize(client)
    client.client_secret = client.client_secret + "x"
    r = oauth.exchange(auth)
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] == "invalid_client", describe(r)


def test_refresh_token_rotates(oauth: OAuthKit, test_id: str) -> None:
    client, tokens = oauth.get_te()
    refreshed = oauth.assert_token_response(oauth.refresh(client, tokens["refresh_token"]))
    assert refreshed["refresh_token"] != tokens["refresh_token"], "the refresh token did not rotate"
    assert refreshed["access_token"] != tokens["access_token"]
    oauth.assert_accepted(refreshed["access_token"], test_id)
    again = oauth.assert_token_response(oauth.refresh(client, refreshed["refresh_token"]))
    assert again["refresh_token"] not in (tokens["refresh_token"], refreshed["refresh_token"])
    oauth.assert_no_leaks(tokens["access_token"], refreshed["access_token"], again["access_token"])


def test_revoked_refresh_token_family_stops_working(oauth: OAuthKit, test_id: str) -> None:
    client, tokens = oauth.get_te()
    r = oauth.revoke(client, tokens["refresh_token"], hint="refresh_token")
    assert r.status_code == 200, describe(r)
    again = oauth.refresh(client, tokens["refresh_token"])
    assert again.status_code == 400, describe(again)
    assert oauth_error(again)["error"] == "invalid_grant", describe(again)
    oauth.assert_refused(tokens["access_token"], test_id)
    oauth.assert_no_leaks(tokens["access_token"])


def test_revoking_an_unknown_token_is_200(oauth: OAuthKit) -> None:
    """RFC 7009 2.2: invalid tokens do not cause an error response."""
    client = oauth.register_client()
    r = oauth.revoke(client, "not-a-token-this-server-issued")
    assert r.status_code == 200, describe(r)


def test_full_flow_es256_as_bob(oauth_short_ttl: OAuthKit, test_id: str) -> None:
    """The other ID token algorithm, and the other user (typed into the login form)."""
    oauth = oauth_short_ttl
    assert oauth.idp.id_token_alg == "ES256"
    client = oauth.register_client()
    auth = oauth.authorize(client, login="bob")
    assert auth.consent_page is not None and BOB["email"] in auth.consent_page.text, auth.browser.trail()
    tokens = oauth.tokens(auth)
    oauth.assert_te(tokens["access_token"])
    oauth.assert_accepted(tokens["access_token"], test_id)
    oauth.assert_no_leaks(tokens["access_token"])


def test_oauth_endpoint_requests_never_reach_the_mcp_server(oauth: OAuthKit) -> None:
    """The filter answers its endpoints itself, POST bodies included (the
    buffer filter ahead of it hands it the whole body): not even the request
    line of a registration, token, revocation or consent POST may reach the
    MCP server."""
    before = len(oauth.route_requests_at_mcp_server())
    client = oauth.register_client(auth_method="client_secret_basic")
    auth = oauth.authorize(client)
    tokens = oauth.tokens(auth)
    refreshed = oauth.refresh(client, tokens["refresh_token"])
    oauth.revoke(client, refreshed.json().get("refresh_token", "x"))
    oauth.http.get(f"{oauth.issuer}/.well-known/oauth-authorization-server")
    oauth.assert_no_leaks(tokens["access_token"])
    seen = oauth.route_requests_at_mcp_server()[before:]
    assert not seen, (
        f"{len(seen)} request(s) for the filter's own endpoints reached the MCP server: {seen}")

"""Attack class 9: consent CSRF and session misuse, and remembered consent.

What the filter must do with the consent page (GET /.oauth/consent) and
its answer (POST /.oauth/consent):
  - approve only on a POST that carries the pending request, the CSRF token
    bound to that request and to the browser session, and the cookie of
    the session the request belongs to: a missing, empty, wrong or another
    request's CSRF token, another session's cookie or no cookie is 403,
    with no redirect and no code;
  - answer a pending request once: replaying an answered form (approve or
    deny) is refused, no second code;
  - never approve on a GET (the page is shown again), nor on a cross-site
    POST (no CSRF token; the session cookie is SameSite and HttpOnly);
  - the page may not be framed (clickjacking);
  - remember a user's consent by default only for a client verified
    through its Client ID Metadata Document: a dynamically registered
    client (whose public metadata anyone can register again and get the
    same client_id) gets the consent page EVERY time, even after approval;
    `authorization_server.remember_consent_for_registered_clients: true`
    restores remembering (a dedicated Envoy).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.attack import attack_plugin, start_attack_envoy
from harness.browser import Browser, forms_of
from harness.cimd import CimdServer
from harness.envoy import Envoy
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import CONSENT_PATH, SESSION_COOKIE, Authorization, Client, OAuthKit, describe


def _at_consent(oauth: OAuthKit, client: Client | None = None, browser: Browser | None = None,
                login: str | None = None) -> tuple[Authorization, str, str, str]:
    """Authorize up to the consent page: (authorization, consent URL, request id, csrf)."""
    auth = oauth.authorize(client or oauth.register_client(), browser=browser, decision=None, login=login)
    page = auth.consent_page
    assert page is not None, f"no consent page:\n{auth.browser.trail()}"
    form = forms_of(page)[0]
    return auth, str(page.url.join(CONSENT_PATH)), form.get("request") or "", form.get("csrf") or ""


def _refused(r: httpx.Response, what: str, statuses: tuple[int, ...] = (403,)) -> None:
    assert r.status_code in statuses, f"{what}: expected {statuses}:\n{describe(r)}"
    assert "location" not in r.headers, f"{what}: must not redirect (no code):\n{describe(r)}"


@pytest.mark.parametrize("csrf", ["missing", "empty", "wrong", "another request's", "the request id"])
def test_consent_post_with_a_bad_csrf_token(oauth: OAuthKit, csrf: str) -> None:
    auth, url, request_id, good = _at_consent(oauth)
    value = {"missing": None, "empty": "", "wrong": good[:-2] + "xx", "the request id": request_id}.get(csrf)
    if csrf == "another request's":
        _, _, _, value = _at_consent(oauth, browser=auth.browser)
    data = {"request": request_id, "decision": "approve"}
    if value is not None:
        data["csrf"] = value
    _refused(auth.browser.request("POST", url, data=data), f"csrf {csrf}")


def test_consent_post_with_another_sessions_cookie(oauth: OAuthKit) -> None:
    """Another signed-in browser (another user) posts the victim's request and CSRF token."""
    victim, url, request_id, csrf = _at_consent(oauth)
    attacker, _, _, _ = _at_consent(oauth, login=f"attacker-{uuid.uuid4().hex[:8]}@company.com")
    r = attacker.browser.request("POST", url, data={"request": request_id, "csrf": csrf, "decision": "approve"})
    _refused(r, "another session's cookie")


def test_consent_post_without_a_cookie(oauth: OAuthKit) -> None:
    _, url, request_id, csrf = _at_consent(oauth)
    r = oauth.browser().request("POST", url, data={"request": request_id, "csrf": csrf, "decision": "approve"})
    _refused(r, "no session cookie")


def test_consent_get_of_another_sessions_request(oauth: OAuthKit) -> None:
    """The consent page of a request that belongs to another session: 403, not shown."""
    _, url, request_id, _ = _at_consent(oauth)
    attacker, _, _, _ = _at_consent(oauth, login=f"attacker-{uuid.uuid4().hex[:8]}@company.com")
    _refused(attacker.browser.request("GET", f"{url}?request={request_id}"), "another session's consent page")


@pytest.mark.parametrize("first", ["approve", "deny"])
def test_replaying_an_answered_consent(oauth: OAuthKit, first: str) -> None:
    """Answer once (approve or deny), then post the approval again: refused, no second code."""
    auth, url, request_id, csrf = _at_consent(oauth)
    first_answer = auth.browser.request("POST", url, data={"request": request_id, "csrf": csrf, "decision": first})
    assert first_answer.status_code == 302 and first_answer.headers["location"].startswith(auth.redirect_uri), (
        describe(first_answer))
    again = auth.browser.request("POST", url, data={"request": request_id, "csrf": csrf, "decision": "approve"})
    _refused(again, f"replay after {first}", (400, 403))


def test_get_with_approval_parameters_does_not_approve(oauth: OAuthKit) -> None:
    """GET /.oauth/consent?request=..&csrf=..&decision=approve: the page again, no code."""
    auth, url, request_id, csrf = _at_consent(oauth)
    r = auth.browser.request("GET", f"{url}?request={request_id}&csrf={csrf}&decision=approve")
    assert r.status_code == 200 and "location" not in r.headers, describe(r)
    assert forms_of(r), "expected the consent page again"
    # The request is still pending: the real form still works.
    ok = auth.browser.request("POST", url, data={"request": request_id, "csrf": csrf, "decision": "approve"})
    assert ok.status_code == 302 and "code=" in ok.headers["location"], describe(ok)


def test_cross_site_post_without_the_csrf_token(oauth: OAuthKit) -> None:
    """A page on another site posts the approval with the victim's cookie
    (as a browser would for a top-level POST if the cookie were not
    SameSite) but cannot know the CSRF token: 403."""
    auth, url, request_id, _ = _at_consent(oauth)
    r = auth.browser.request("POST", url, data={"request": request_id, "decision": "approve"},
                             headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x",
                                      "Sec-Fetch-Site": "cross-site"})
    _refused(r, "cross-site POST")


def test_session_cookie_is_httponly_and_samesite(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client(), decision=None)
    cookies = [h.response.headers.get_list("set-cookie") for h in auth.browser.history]
    session = [c for group in cookies for c in group if c.startswith(f"{SESSION_COOKIE}=")]
    assert session, f"no session cookie was set:\n{auth.browser.trail()}"
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in session[0].split(";")[1:]}
    assert "httponly" in attrs, session[0]
    assert attrs.get("samesite", "").lower() in ("samesite=lax", "samesite=strict"), session[0]


def test_consent_page_may_not_be_framed(oauth: OAuthKit) -> None:
    auth, _, _, _ = _at_consent(oauth)
    page = auth.consent_page
    csp = page.headers.get("content-security-policy", "")
    assert page.headers.get("x-frame-options", "").upper() == "DENY" or "frame-ancestors 'none'" in csp, describe(page)
    assert "no-store" in page.headers.get("cache-control", ""), describe(page)


# --- remembered consent ------------------------------------------------------------------


def test_registered_client_sees_the_consent_page_every_time(oauth: OAuthKit) -> None:
    """A dynamically registered client, approved once by the user: the
    next authorization (same browser, signed in) shows the page again."""
    client = oauth.register_client()
    first = oauth.authorize(client)
    assert first.consent_page is not None and first.params.get("code"), first.browser.trail()
    assert "not verified" in first.consent_page.text, "the page should say the client's name is not verified"
    second = oauth.authorize(client, browser=first.browser)
    assert second.consent_page is not None, (
        f"the consent page was skipped for a dynamically registered client:\n{second.browser.trail()}")
    assert second.params.get("code"), second.params


def test_look_alike_registration_gets_no_silent_consent(oauth: OAuthKit) -> None:
    """Anyone registering the same public metadata gets the same client_id;
    the user approved the real one once; the look-alike's authorization
    (from another browser, signed in as the same user) shows the page."""
    metadata = oauth.client_metadata(redirect_uri="http://127.0.0.1/callback", name="Trusted App")
    real = oauth.register(metadata)
    look_alike = oauth.register(metadata)
    assert real.status_code == look_alike.status_code == 201, describe(look_alike)
    assert real.json()["client_id"] == look_alike.json()["client_id"], "public registration is not idempotent"
    client = Client(client_id=real.json()["client_id"], redirect_uri="http://127.0.0.1:41000/callback")
    login = f"victim-{uuid.uuid4().hex[:8]}@company.com"
    first = oauth.authorize(client, login=login)
    assert first.consent_page is not None and first.params.get("code"), first.browser.trail()
    attacker_side = Client(client_id=client.client_id, redirect_uri="http://127.0.0.1:41999/callback")
    second = oauth.authorize(attacker_side, login=login)
    assert second.consent_page is not None, f"silent consent for a look-alike registration:\n{second.browser.trail()}"


def _document_client(cimd_server: CimdServer, redirect_uri: str = "https://verified.example/callback") -> Client:
    path = f"/clients/{uuid.uuid4().hex}.json"
    url = cimd_server.url(path)
    cimd_server.publish(path, {"client_id": url, "client_name": "Verified App", "redirect_uris": [redirect_uri],
                               "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                               "token_endpoint_auth_method": "none"})
    return Client(client_id=url, redirect_uri=redirect_uri)


def test_metadata_document_client_consent_is_remembered(oauth: OAuthKit, cimd_server: CimdServer) -> None:
    """Control: a client verified through its metadata document, approved
    once: the next authorization in the same browser goes straight back with a code."""
    client = _document_client(cimd_server)
    first = oauth.authorize(client)
    assert first.consent_page is not None and first.params.get("code"), first.browser.trail()
    second = oauth.authorize(client, browser=first.browser)
    assert second.consent_page is None and second.params.get("code"), second.browser.trail()


def test_metadata_document_client_with_a_loopback_redirect_sees_consent_again(oauth: OAuthKit,
                                                                             cimd_server: CimdServer) -> None:
    """A verified client whose redirect URI is loopback: any local program can
    listen there and take the code, so consent is never remembered."""
    client = _document_client(cimd_server, "http://127.0.0.1:47200/callback")
    first = oauth.authorize(client)
    assert first.consent_page is not None and first.params.get("code"), first.browser.trail()
    second = oauth.authorize(client, browser=first.browser)
    assert second.consent_page is not None and second.params.get("code"), second.browser.trail()


@pytest.fixture(scope="module")
def remembering_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer, idp: Idp,
                      listen_ports: dict[str, int]) -> Iterator[Envoy]:
    port = listen_ports["attack_consent"]
    plugin = attack_plugin(port, idp.port, authorization_server={"remember_consent_for_registered_clients": True})
    proxy = start_attack_envoy(Path(tmp_path_factory.mktemp("attack-consent")), "envoy-attack-consent",
                               mcp_server=mcp_server, plugin=plugin, listen_port=port, idp=idp)
    try:
        yield proxy
    finally:
        proxy.stop()


def test_remember_consent_for_registered_clients_restores_remembering(remembering_envoy: Envoy, idp: Idp,
                                                                      mcp_server: McpServer) -> None:
    kit = OAuthKit(remembering_envoy, idp, mcp_server)
    try:
        client = kit.register_client(redirect_uri="https://client.example/callback")
        first = kit.authorize(client)
        assert first.consent_page is not None and first.params.get("code"), first.browser.trail()
        second = kit.authorize(client, browser=first.browser)
        assert second.consent_page is None and second.params.get("code"), second.browser.trail()
        # Never for a loopback redirect URI: any local program can listen there.
        local = kit.register_client(redirect_uri="http://127.0.0.1/callback")
        first = kit.authorize(local, browser=first.browser)
        again = kit.authorize(local, browser=first.browser)
        assert again.consent_page is not None and again.params.get("code"), again.browser.trail()
    finally:
        kit.close()

"""The OAuth fixtures themselves, without the filter in the way: the OpenID
provider's login-form flow as a relying party sees it, and Envoy's clusters
to the IdP and to the client-metadata-document server (TLS, test CA).

When an OAuth test fails, these say whether the fixture or the filter is at fault.
"""

from __future__ import annotations

import secrets
import ssl
import uuid
from urllib.parse import urlencode

import httpx
import pytest

from harness.browser import Browser, forms_of, query, same_endpoint
from harness.cimd import CimdServer
from harness.envoy import PROBE_HOSTS, Envoy, callback_urls
from harness.idp import ALICE, BOB, CLIENT_ID, CLIENT_SECRET, Idp
from harness.oauth import describe, jwt_parts, pkce_pair


def _sign_in_as_rp(idp: Idp, redirect_uri: str, login: str | None) -> tuple[dict, dict, Browser]:
    """The authorization-code flow against the IdP, as the filter runs it:
    returns (token response, userinfo, browser)."""
    browser = Browser()
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    url = f"{idp.issuer}/auth?" + urlencode({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri,
        "scope": "openid email profile", "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    stop = lambda target: same_endpoint(target, redirect_uri)  # noqa: E731
    page = browser.go("GET", url, stop=stop)
    assert page.status_code == 200 and "/interaction/" in str(page.url), describe(page)
    assert page.headers.get("content-type", "").startswith("text/html"), describe(page)
    forms = forms_of(page)
    assert forms and forms[0].method == "POST", describe(page)
    assert forms[0].action.endswith("/login") and forms[0].get("login") == ALICE["email"], forms[0]
    final = browser.submit(page, forms[0], overrides={"login": login} if login else None, stop=stop)
    assert final.status_code in (302, 303), f"{describe(final)}\n{browser.trail()}"
    params = query(str(final.url.join(final.headers["location"])))
    assert params.get("state") == state and params.get("iss") == idp.issuer, params
    tokens = httpx.post(f"{idp.issuer}/token", auth=(CLIENT_ID, CLIENT_SECRET), trust_env=False, data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    })
    assert tokens.status_code == 200, describe(tokens)
    body = tokens.json()
    _, claims = jwt_parts(body["id_token"])
    assert claims["nonce"] == nonce
    userinfo = httpx.get(f"{idp.issuer}/me", headers={"Authorization": f"Bearer {body['access_token']}"},
                         trust_env=False)
    assert userinfo.status_code == 200, describe(userinfo)
    return body, userinfo.json(), browser


@pytest.mark.parametrize("which", ["idp", "idp_es256"])
def test_idp_login_form_signs_in_alice(request: pytest.FixtureRequest, listen_ports: dict[str, int],
                                       which: str) -> None:
    idp: Idp = request.getfixturevalue(which)
    redirect_uri = callback_urls(listen_ports["main"])[0]
    tokens, userinfo, browser = _sign_in_as_rp(idp, redirect_uri, login=None)
    header, claims = jwt_parts(tokens["id_token"])
    assert header["alg"] == idp.id_token_alg
    assert claims["sub"] == ALICE["sub"] and claims["iss"] == idp.issuer and claims["aud"] == CLIENT_ID
    # Only sub: the filter has to ask userinfo for the email.
    assert "email" not in claims and "groups" not in claims, claims
    assert userinfo["email"] == ALICE["email"] and userinfo["groups"] == ALICE["groups"], userinfo
    paths = [hop.url.split("?")[0] for hop in browser.history]
    assert any(p.endswith("/login") for p in paths), browser.trail()


def test_idp_login_form_signs_in_bob_when_typed(idp: Idp, listen_ports: dict[str, int]) -> None:
    _, userinfo, _ = _sign_in_as_rp(idp, callback_urls(listen_ports["short_ttl"])[1], login="bob")
    assert userinfo["sub"] == BOB["sub"] and userinfo["email"] == BOB["email"], userinfo


def test_idp_refuses_unregistered_redirect_uri(idp: Idp) -> None:
    _, challenge = pkce_pair()
    r = httpx.get(f"{idp.issuer}/auth", trust_env=False, params={
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1:1/elsewhere",
        "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256",
    })
    assert r.status_code == 400 and "location" not in r.headers, describe(r)


def test_idp_debug_log_records_tokens_and_userinfo(idp: Idp, listen_ports: dict[str, int]) -> None:
    tokens, _, _ = _sign_in_as_rp(idp, callback_urls(listen_ports["main"])[0], login="alice")
    issued = idp.issued_tokens()
    assert tokens["access_token"] in issued and tokens["id_token"] in issued
    assert ("GET", "/me") in idp.requests()


def test_envoy_reaches_the_idp_cluster(envoy: Envoy, idp: Idp) -> None:
    r = httpx.get(f"{envoy.base_url}/.well-known/openid-configuration", headers={"Host": PROBE_HOSTS["idp"]},
                  trust_env=False)
    assert r.status_code == 200, describe(r)
    assert r.json()["issuer"] == idp.issuer


def test_envoy_reaches_the_cimd_server_over_tls(envoy: Envoy, cimd_server: CimdServer) -> None:
    """Cluster `cimd`: TLS with SNI localhost, the test CA trusted."""
    path = f"/probe-{uuid.uuid4().hex}.json"
    cimd_server.publish(path, {"client_id": cimd_server.url(path)})
    r = httpx.get(f"{envoy.base_url}{path}", headers={"Host": PROBE_HOSTS["cimd"]}, trust_env=False)
    assert r.status_code == 200, describe(r)
    assert r.json() == {"client_id": cimd_server.url(path)}
    assert len(cimd_server.requests_for(path)) == 1


def test_cimd_server_certificate_names_localhost(cimd_server: CimdServer) -> None:
    path = f"/direct-{uuid.uuid4().hex}.json"
    cimd_server.publish(path, {"ok": True})
    r = httpx.get(cimd_server.url(path), verify=ssl.create_default_context(cafile=str(cimd_server.certs.ca_pem)),
                  trust_env=False)
    assert r.status_code == 200 and r.json() == {"ok": True}

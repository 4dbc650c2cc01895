"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
MCP 2025-11-25): a client_id that is an https URL names a JSON document the
filter fetches (through Envoy cluster `cimd`, TLS, here to the test's HTTPS
server for https://localhost:<port>) when its host is in allowed_hosts."""

from __future__ import annotations

import uuid

from harness.cimd import CimdServer
from harness.oauth import Client, OAuthKit, describe, pkce_pair
from harness.http import media_type


def _document(url: str, redirect_uri: str, **extra) -> dict:
    return {
        "client_id": url,
        "client_name": "CIMD Test Client",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **extra,
    }


def _path() -> str:
    return f"/clients/{uuid.uuid4().hex}.json"


def _authorize_page(oauth: OAuthKit, client: Client):
    _, challenge = pkce_pair()
    url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource)
    return oauth.browser().request("GET", url)


def _assert_error_page(r) -> None:
    assert r.status_code == 400, f"expected a 400 error page:\n{describe(r)}"
    assert "location" not in r.headers, f"must not redirect:\n{describe(r)}"
    assert media_type(r.headers.get("content-type")) == "text/html", describe(r)


def test_metadata_document_client(oauth: OAuthKit, cimd_server: CimdServer, test_id: str) -> None:
    path = _path()
    redirect_uri = "http://127.0.0.1:47011/callback"
    url = cimd_server.publish(path, _document(cimd_server.url(path), redirect_uri))
    client = Client(client_id=url, redirect_uri=redirect_uri)
    auth = oauth.authorize(client)
    fetches = cimd_server.requests_for(path)
    assert fetches, "the filter never fetched the client metadata document"
    assert fetches[0]["host"] in (f"localhost:{cimd_server.port}", "localhost"), fetches
    assert auth.consent_page is not None and "CIMD Test Client" in auth.consent_page.text, auth.browser.trail()
    assert auth.params.get("code") and auth.params.get("iss") == oauth.issuer, auth.params
    tokens = oauth.tokens(auth)
    oauth.assert_accepted(tokens["access_token"], test_id)
    refreshed = oauth.assert_token_response(oauth.refresh(client, tokens["refresh_token"]))
    oauth.assert_no_leaks(tokens["access_token"], refreshed["access_token"])


def test_document_whose_client_id_differs_is_refused(oauth: OAuthKit, cimd_server: CimdServer) -> None:
    path = _path()
    redirect_uri = "http://127.0.0.1:47012/callback"
    url = cimd_server.publish(path, _document(cimd_server.url("/clients/someone-else.json"), redirect_uri))
    r = _authorize_page(oauth, Client(client_id=url, redirect_uri=redirect_uri))
    _assert_error_page(r)
    assert cimd_server.requests_for(path), "the document was never fetched: the refusal is not about its content"


def test_document_without_the_redirect_uri_is_refused(oauth: OAuthKit, cimd_server: CimdServer) -> None:
    path = _path()
    url = cimd_server.publish(path, _document(cimd_server.url(path), "http://127.0.0.1:47013/callback"))
    r = _authorize_page(oauth, Client(client_id=url, redirect_uri="https://evil.example/callback"))
    _assert_error_page(r)


def test_missing_document_is_refused(oauth: OAuthKit, cimd_server: CimdServer) -> None:
    url = cimd_server.url(_path())  # never published: 404
    _assert_error_page(_authorize_page(oauth, Client(client_id=url, redirect_uri="http://127.0.0.1:47014/cb")))


def test_host_not_in_allowed_hosts_is_not_fetched(oauth: OAuthKit, cimd_server: CimdServer) -> None:
    path = _path()
    url = f"https://127.0.0.1:{cimd_server.port}{path}"  # same server, but 127.0.0.1 is not an allowed host
    cimd_server.publish(path, _document(url, "http://127.0.0.1:47015/callback"))
    r = _authorize_page(oauth, Client(client_id=url, redirect_uri="http://127.0.0.1:47015/callback"))
    _assert_error_page(r)
    assert not cimd_server.requests_for(path), "a document on a host outside allowed_hosts was fetched"

"""Authorization server metadata (RFC 8414 and the OpenID alias) and dynamic
client registration (RFC 7591), as the filter serves them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.envoy import Envoy, oauth_plugin_config, panic_lines, start_envoy
from harness.http import media_type
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit, describe, oauth_error
from harness.procs import free_port

METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_authorization_server_metadata(oauth: OAuthKit, path: str) -> None:
    origin = oauth.issuer
    r = oauth.http.get(f"{origin}{path}")
    assert r.status_code == 200, describe(r)
    assert media_type(r.headers.get("content-type")) == "application/json", describe(r)
    doc = r.json()
    prm = oauth.http.get(f"{origin}/.well-known/oauth-protected-resource/mcp").json()
    # RFC 8414 3.3 / RFC 9728 3.3: the issuer is exactly what the resource names.
    assert doc["issuer"] == prm["authorization_servers"][0] == origin, (doc, prm)
    assert doc["authorization_endpoint"] == f"{origin}/.oauth/authorize"
    assert doc["token_endpoint"] == f"{origin}/.oauth/token"
    assert doc["registration_endpoint"] == f"{origin}/.oauth/register"
    assert doc["revocation_endpoint"] == f"{origin}/.oauth/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"]), doc
    assert {"none", "client_secret_basic", "client_secret_post"} <= set(
        doc["token_endpoint_auth_methods_supported"]), doc
    assert doc["client_id_metadata_document_supported"] is True, doc
    assert doc["authorization_response_iss_parameter_supported"] is True, doc
    assert doc["scopes_supported"] == ["mcp"], doc


def test_each_route_is_its_own_issuer(oauth: OAuthKit) -> None:
    r = oauth.http.get(f"{oauth.envoy.base_url}/.well-known/oauth-authorization-server",
                       headers={"Host": f"localhost:{oauth.envoy.listen_port}"})
    assert r.status_code == 200, describe(r)
    assert r.json()["issuer"] == oauth.other_origin
    assert r.json()["token_endpoint"] == f"{oauth.other_origin}/.oauth/token"


def test_register_public_client(oauth: OAuthKit) -> None:
    metadata = oauth.client_metadata(auth_method="none")
    r = oauth.register(metadata)
    assert r.status_code == 201, describe(r)
    assert media_type(r.headers.get("content-type")) == "application/json", describe(r)
    body = r.json()
    assert isinstance(body.get("client_id"), str) and body["client_id"], describe(r)
    assert not body.get("client_secret"), f"a public client gets no secret:\n{describe(r)}"
    assert body.get("redirect_uris") == metadata["redirect_uris"], describe(r)
    assert body.get("token_endpoint_auth_method") == "none", describe(r)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_register_confidential_client(oauth: OAuthKit, method: str) -> None:
    client = oauth.register_client(auth_method=method)
    assert client.client_secret
    assert client.registration.get("token_endpoint_auth_method") == method, client.registration


def test_identical_metadata_gets_the_same_client_id(oauth: OAuthKit) -> None:
    metadata = oauth.client_metadata(auth_method="none", name=f"same {uuid.uuid4().hex}")
    first, second = oauth.register(metadata), oauth.register(metadata)
    assert first.status_code == 201 and second.status_code == 201, (describe(first), describe(second))
    assert first.json()["client_id"] == second.json()["client_id"]
    other = oauth.register({**metadata, "client_name": metadata["client_name"] + " (other)"})
    assert other.status_code == 201 and other.json()["client_id"] != first.json()["client_id"], describe(other)


@pytest.mark.parametrize("uri", [
    "http://app.example.com/callback",   # plain http, not loopback
    "https://app.example.com/cb#frag",   # fragment (RFC 6749 3.1.2)
    "javascript:alert(1)",
    "/relative/callback",
])
def test_registration_refuses_bad_redirect_uris(oauth: OAuthKit, uri: str) -> None:
    r = oauth.register({**oauth.client_metadata(), "redirect_uris": [uri]})
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] == "invalid_redirect_uri", describe(r)


@pytest.mark.parametrize("uri", ["https://app.example.com/callback", "http://localhost:8123/cb", "http://[::1]/cb"])
def test_registration_accepts_https_and_loopback(oauth: OAuthKit, uri: str) -> None:
    r = oauth.register({**oauth.client_metadata(), "redirect_uris": [uri]})
    assert r.status_code == 201, describe(r)


def test_registration_without_redirect_uris_is_refused(oauth: OAuthKit) -> None:
    metadata = oauth.client_metadata()
    del metadata["redirect_uris"]
    r = oauth.register(metadata)
    assert r.status_code == 400, describe(r)
    assert oauth_error(r)["error"] in ("invalid_redirect_uri", "invalid_client_metadata"), describe(r)


QUOTA = 3


@pytest.fixture
def quota_envoy(tmp_path: Path, mcp_server: McpServer, idp: Idp) -> Iterator[Envoy]:
    """An Envoy of its own: the quota is the filter's, shared by every test on an Envoy."""
    port = free_port()
    plugin = oauth_plugin_config(port, idp.port, {"registration": {"dynamic": {"max_per_window": QUOTA}}})
    proxy = start_envoy(tmp_path, mcp_port=mcp_server.port, plugin=plugin, listen_port=port, idp_port=idp.port,
                        name="envoy-quota")
    try:
        yield proxy
    finally:
        proxy.stop()
    panics = panic_lines(proxy.log())
    assert not panics, f"{proxy.proc.log_path} shows wasm panics or traps:\n" + "\n".join(panics)


def test_registration_over_quota_is_429(quota_envoy: Envoy, oauth: OAuthKit) -> None:
    base = quota_envoy.base_url
    answers = [oauth.register(oauth.client_metadata(), base_url=base) for _ in range(QUOTA + 1)]
    for r in answers[:QUOTA]:
        assert r.status_code == 201, describe(r)
    over = answers[QUOTA]
    assert over.status_code == 429, describe(over)
    assert oauth_error(over)["error"] == "temporarily_unavailable", describe(over)

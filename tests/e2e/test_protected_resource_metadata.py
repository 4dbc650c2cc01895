"""OAuth 2.0 Protected Resource Metadata (RFC 9728) served by the filter."""

from __future__ import annotations

import httpx
import pytest

from harness.envoy import Envoy
from harness.http import media_type
from harness.mcp_server import McpServer


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_metadata_document(client: httpx.Client, envoy: Envoy, mcp_server: McpServer, test_id: str,
                           path: str) -> None:
    r = client.get(path, headers={"x-test-id": test_id})
    assert r.status_code == 200, r.text
    assert media_type(r.headers.get("content-type")) == "application/json", r.headers
    doc = r.json()
    assert doc["resource"] == envoy.mcp_url
    assert doc["authorization_servers"] == [envoy.base_url]
    assert "header" in doc["bearer_methods_supported"]
    scopes = doc["scopes_supported"]
    assert isinstance(scopes, list) and scopes and all(isinstance(s, str) and s for s in scopes), scopes
    assert not mcp_server.saw_test_id(test_id), "the filter must answer this itself"


def test_metadata_needs_no_token(client: httpx.Client, envoy: Envoy) -> None:
    r = client.get("/.well-known/oauth-protected-resource/mcp", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 200, r.text
    assert r.json()["resource"] == envoy.mcp_url

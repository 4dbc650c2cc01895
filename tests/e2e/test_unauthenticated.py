"""Requests to the MCP endpoint without a valid token are challenged (RFC 6750,
RFC 9728 section 5.1, MCP 2025-06-18 Authorization) and never reach the server."""

from __future__ import annotations

import httpx
import pytest

from harness import www_authenticate
from harness.envoy import Envoy
from harness.http import GET_HEADERS, INITIALIZE_BODY, POST_HEADERS, header_list
from harness.mcp_server import McpServer


def resource_metadata_url(envoy: Envoy) -> str:
    return f"{envoy.base_url}/.well-known/oauth-protected-resource/mcp"


def assert_challenge(response: httpx.Response, envoy: Envoy, error: str | None) -> www_authenticate.Challenge:
    assert response.status_code == 401, response.text
    headers = response.headers.get_list("www-authenticate")
    assert len(headers) == 1, f"expected one WWW-Authenticate header, got {headers}"
    challenge = www_authenticate.bearer(headers[0])
    assert challenge.scheme == "Bearer", headers[0]
    assert challenge.params.get("resource_metadata") == resource_metadata_url(envoy), headers[0]
    if error is None:
        # RFC 6750 section 3.1: no error code when the request had no credentials.
        assert "error" not in challenge.params, headers[0]
    else:
        assert challenge.params.get("error") == error, headers[0]
    return challenge


def assert_not_forwarded(mcp_server: McpServer, test_id: str) -> None:
    seen = mcp_server.saw_test_id(test_id)
    assert not seen, f"the MCP server received the request: {seen}"


def test_post_without_token_is_challenged(client: httpx.Client, envoy: Envoy, mcp_server: McpServer,
                                          test_id: str) -> None:
    r = client.post("/mcp", content=INITIALIZE_BODY, headers={**POST_HEADERS, "x-test-id": test_id})
    assert_challenge(r, envoy, error=None)
    assert_not_forwarded(mcp_server, test_id)


def test_get_without_token_is_challenged(client: httpx.Client, envoy: Envoy, mcp_server: McpServer,
                                         test_id: str) -> None:
    r = client.get("/mcp", headers={**GET_HEADERS, "x-test-id": test_id})
    assert_challenge(r, envoy, error=None)
    assert_not_forwarded(mcp_server, test_id)


def test_unknown_token_is_invalid_token(client: httpx.Client, envoy: Envoy, mcp_server: McpServer,
                                        test_id: str) -> None:
    r = client.post("/mcp", content=INITIALIZE_BODY,
                    headers={**POST_HEADERS, "Authorization": "Bearer garbage", "x-test-id": test_id})
    assert_challenge(r, envoy, error="invalid_token")
    assert_not_forwarded(mcp_server, test_id)


@pytest.mark.parametrize("token", ["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 4096])
def test_malformed_tokens_are_invalid_token(client: httpx.Client, envoy: Envoy, mcp_server: McpServer,
                                            test_id: str, token: str) -> None:
    r = client.post("/mcp", content=INITIALIZE_BODY,
                    headers={**POST_HEADERS, "Authorization": f"Bearer {token}", "x-test-id": test_id})
    assert_challenge(r, envoy, error="invalid_token")
    assert_not_forwarded(mcp_server, test_id)


def test_challenge_is_readable_by_browser_clients(client: httpx.Client, envoy: Envoy) -> None:
    origin = "http://localhost:6274"
    r = client.post("/mcp", content=INITIALIZE_BODY, headers={**POST_HEADERS, "Origin": origin})
    assert_challenge(r, envoy, error=None)
    # Without Access-Control-Allow-Origin a browser hides the whole response;
    # without the expose header, a script cannot read the challenge.
    assert r.headers.get("access-control-allow-origin") in ("*", origin), dict(r.headers)
    assert "www-authenticate" in header_list(r.headers.get("access-control-expose-headers")), dict(r.headers)


def test_challenge_metadata_url_serves_the_metadata(client: httpx.Client, envoy: Envoy) -> None:
    """What an MCP client does next: fetch resource_metadata from the challenge."""
    r = client.post("/mcp", content=INITIALIZE_BODY, headers=POST_HEADERS)
    challenge = assert_challenge(r, envoy, error=None)
    metadata = httpx.get(challenge.params["resource_metadata"], timeout=10.0, trust_env=False)
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["resource"] == envoy.mcp_url
    assert metadata.json() == client.get("/.well-known/oauth-protected-resource/mcp").json()

"""Requests for hosts that no route names pass through untouched."""

from __future__ import annotations

import json

import httpx

from harness.http import INITIALIZE_BODY, POST_HEADERS, media_type
from harness.mcp_server import McpServer

OTHER_HOST = "other.example"


def test_other_host_keeps_authorization(client: httpx.Client, mcp_server: McpServer) -> None:
    r = client.get("/_debug/headers", headers={"Host": OTHER_HOST, "Authorization": "Bearer keep-me"})
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen.get("host") == OTHER_HOST
    assert seen.get("authorization") == "Bearer keep-me"


def test_other_host_metadata_is_not_answered_by_the_filter(client: httpx.Client, mcp_server: McpServer,
                                                          test_id: str) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        r = client.get(path, headers={"Host": OTHER_HOST, "x-test-id": test_id})
        assert r.status_code == 404, (path, r.status_code, r.text)
    paths = [req["path"] for req in mcp_server.saw_test_id(test_id)]
    assert paths == ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"], paths


def test_other_host_mcp_reaches_the_server(client: httpx.Client, mcp_server: McpServer, test_id: str) -> None:
    """An unprotected host's MCP traffic, streamed answer included, passes unchanged."""
    r = client.post("/mcp", content=INITIALIZE_BODY,
                    headers={**POST_HEADERS, "Host": OTHER_HOST, "x-test-id": test_id})
    assert r.status_code == 200, r.text
    assert r.headers.get("mcp-session-id"), dict(r.headers)
    assert media_type(r.headers.get("content-type")) == "text/event-stream"
    data = [line[len("data:"):].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert data and json.loads(data[0])["result"]["serverInfo"]["name"] == "mcp-oauth-filter demo"
    assert [req["method"] for req in mcp_server.saw_test_id(test_id)] == ["POST"]

"""Requests for hosts that no route names: refused with 404 by default
(`unmatched_hosts: "deny"`), passed through untouched with
`unmatched_hosts: "passthrough"` (issue 8, defect 1).

The harness's Envoy sends every host to the MCP server (`domains: ["*"]`), so
these tests see what the filter alone does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from harness.envoy import Envoy, panic_lines, plugin_config, start_envoy
from harness.http import INITIALIZE_BODY, POST_HEADERS, media_type
from harness.mcp_server import McpServer
from harness.procs import free_port

OTHER_HOST = "other.example"


def test_other_host_is_refused_by_default(client: httpx.Client, mcp_server: McpServer, test_id: str) -> None:
    for path in ("/_debug/headers", "/mcp", "/.well-known/oauth-protected-resource"):
        r = client.get(path, headers={"Host": OTHER_HOST, "Authorization": "Bearer keep-me", "x-test-id": test_id})
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.text == "No MCP route serves this host.\n", r.text
    assert not mcp_server.saw_test_id(test_id), "a request for a host no route serves reached the MCP server"


@pytest.fixture(scope="module")
def passthrough_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer) -> Iterator[Envoy]:
    port = free_port()
    plugin = plugin_config(port)
    plugin["unmatched_hosts"] = "passthrough"
    proxy = start_envoy(tmp_path_factory.mktemp("passthrough"), mcp_port=mcp_server.port, plugin=plugin,
                        listen_port=port, name="envoy-passthrough")
    try:
        yield proxy
    finally:
        proxy.stop()
    panics = panic_lines(proxy.log())
    assert not panics, f"{proxy.proc.log_path} shows wasm panics or traps:\n" + "\n".join(panics)


@pytest.fixture
def pass_client(passthrough_envoy: Envoy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=passthrough_envoy.base_url, timeout=10.0, trust_env=False) as c:
        yield c


def test_other_host_keeps_authorization(pass_client: httpx.Client, mcp_server: McpServer) -> None:
    r = pass_client.get("/_debug/headers", headers={"Host": OTHER_HOST, "Authorization": "Bearer keep-me"})
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen.get("host") == OTHER_HOST
    assert seen.get("authorization") == "Bearer keep-me"


def test_other_host_metadata_is_not_answered_by_the_filter(pass_client: httpx.Client, mcp_server: McpServer,
                                                          test_id: str) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        r = pass_client.get(path, headers={"Host": OTHER_HOST, "x-test-id": test_id})
        assert r.status_code == 404, (path, r.status_code, r.text)
    paths = [req["path"] for req in mcp_server.saw_test_id(test_id)]
    assert paths == ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"], paths


def test_other_host_mcp_reaches_the_server(pass_client: httpx.Client, mcp_server: McpServer, test_id: str) -> None:
    """An unprotected host's MCP traffic, streamed answer included, passes unchanged."""
    r = pass_client.post("/mcp", content=INITIALIZE_BODY,
                         headers={**POST_HEADERS, "Host": OTHER_HOST, "x-test-id": test_id})
    assert r.status_code == 200, r.text
    assert r.headers.get("mcp-session-id"), dict(r.headers)
    assert media_type(r.headers.get("content-type")) == "text/event-stream"
    data = [line[len("data:"):].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert data and json.loads(data[0])["result"]["serverInfo"]["name"] == "mcp-oauth-filter demo"
    assert [req["method"] for req in mcp_server.saw_test_id(test_id)] == ["POST"]


def test_passthrough_never_lets_the_route_host_through(pass_client: httpx.Client, passthrough_envoy: Envoy,
                                                       mcp_server: McpServer, test_id: str) -> None:
    """Passthrough is for other hosts only: the route's own host, however
    spelled, still needs a token; an ambiguous spelling is refused."""
    route_host = f"127.0.0.1:{passthrough_envoy.listen_port}"
    for host, status in [(route_host, 401), (route_host.upper(), 401), (f"127.0.0.1:0{passthrough_envoy.listen_port}", 400)]:
        r = pass_client.post("/mcp", content=INITIALIZE_BODY,
                             headers={**POST_HEADERS, "Host": host, "x-test-id": test_id})
        assert r.status_code == status, (host, r.status_code, r.text)
    assert not mcp_server.saw_test_id(test_id)

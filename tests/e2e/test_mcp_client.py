"""A real MCP client (PyPI `mcp`, streamable HTTP) against the demo server,
directly and through Envoy."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from harness.envoy import Envoy
from harness.mcp_server import McpServer

TIMEOUT_S = 20.0


def _status_errors(exc: BaseException) -> list[httpx.HTTPStatusError]:
    """HTTP status errors anywhere in exc (exception groups and causes included)."""
    found: list[httpx.HTTPStatusError] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, httpx.HTTPStatusError):
            found.append(e)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        for linked in (e.__cause__, e.__context__):
            if linked is not None and linked not in stack:
                stack.append(linked)
    return found


async def _initialize_and_use(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(10.0, read=30.0)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                echoed = await session.call_tool("echo", {"text": "hello"})
                whoami = await session.call_tool("whoami", {})
                return {
                    "tools": ",".join(sorted(t.name for t in tools.tools)),
                    "echo": echoed.content[0].text,
                    "whoami": whoami.content[0].text,
                    "whoami_is_error": whoami.isError,
                }


def test_demo_server_works_with_the_sdk_client(mcp_server: McpServer) -> None:
    """Control: the client and server work together without Envoy in between."""

    async def main() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_S):
            return await _initialize_and_use(mcp_server.mcp_url)

    result = anyio.run(main)
    assert result["tools"] == "admin_reset,echo,whoami"
    assert result["echo"] == "hello"
    # No gateway in between, so no upstream token: a tool error that says so.
    assert result["whoami_is_error"] and "no upstream token received" in result["whoami"], result


def test_sdk_client_without_auth_gets_401(envoy: Envoy) -> None:
    """No silent pass: the client's first request fails with the challenge."""
    error: BaseException | None = None

    async def main() -> None:
        nonlocal error
        with anyio.fail_after(TIMEOUT_S):
            try:
                await _initialize_and_use(envoy.mcp_url)
            except Exception as e:  # ExceptionGroup from the transport's task group
                error = e

    anyio.run(main)
    assert error is not None, "the MCP client connected through Envoy without authorization"
    statuses = [e.response.status_code for e in _status_errors(error)]
    assert 401 in statuses, f"expected an HTTP 401 error, got {error!r}"

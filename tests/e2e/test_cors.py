"""CORS preflight for browser-based MCP clients (e.g. the MCP Inspector on :6274)."""

from __future__ import annotations

import httpx

from harness.http import header_list

ORIGIN = "http://localhost:6274"


def test_preflight_for_mcp_endpoint(client: httpx.Client) -> None:
    requested = ["authorization", "content-type", "mcp-protocol-version"]
    r = client.options("/mcp", headers={
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": ", ".join(requested),
    })
    # A preflight carries no credentials, so it must not be challenged.
    assert 200 <= r.status_code < 300, (r.status_code, r.text)
    assert r.headers.get("access-control-allow-origin") in ("*", ORIGIN), dict(r.headers)
    assert "POST" in [m.upper() for m in header_list(r.headers.get("access-control-allow-methods"))], dict(r.headers)
    allowed = header_list(r.headers.get("access-control-allow-headers"))
    # "*" would not do: the Fetch standard never lets the wildcard cover Authorization.
    missing = [h for h in requested if h not in allowed]
    assert not missing, f"Access-Control-Allow-Headers lacks {missing}: {dict(r.headers)}"

"""Requests an MCP client sends, for tests that speak HTTP directly."""

from __future__ import annotations

import json

PROTOCOL_VERSION = "2025-06-18"

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcp-oauth-filter-e2e", "version": "0"},
    },
}
INITIALIZE_BODY = json.dumps(INITIALIZE)

# Streamable HTTP (MCP 2025-06-18 "Transports"): a POST accepts both answers.
POST_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
GET_HEADERS = {"Accept": "text/event-stream"}


def header_list(value: str | None) -> list[str]:
    """A comma-separated header value as a list of lower-cased items."""
    if not value:
        return []
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()

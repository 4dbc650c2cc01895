"""The demo MCP server (envoy-demo/mcp_server.py) as a test process."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .envoy import REPO_ROOT
from .procs import ManagedProcess, free_port, wait_until

SERVER_SCRIPT = REPO_ROOT / "envoy-demo" / "mcp_server.py"


@dataclass
class McpServer:
    proc: ManagedProcess
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def requests_seen(self) -> list[dict[str, Any]]:
        """Every request the server received so far: method, path, host, x-test-id,
        header names, and authorization / authorization_scheme /
        authorization_sha256 (a fingerprint of the credentials, never the token)."""
        r = httpx.get(f"{self.base_url}/_debug/requests", timeout=5.0, trust_env=False)
        r.raise_for_status()
        return r.json()["requests"]

    def saw_test_id(self, test_id: str) -> list[dict[str, Any]]:
        return [req for req in self.requests_seen() if req.get("x-test-id") == test_id]

    def requests_with_token(self, token: str) -> list[dict[str, Any]]:
        """The requests that arrived carrying `token` as their Authorization credentials."""
        digest = fingerprint(token)
        return [req for req in self.requests_seen() if req.get("authorization_sha256") == digest]

    def stop(self) -> None:
        self.proc.stop()


def fingerprint(token: str) -> str:
    """As envoy-demo/mcp_server.py logs an Authorization header's credentials."""
    return hashlib.sha256(token.encode("latin-1")).hexdigest()


def start_mcp_server(workdir: Path, timeout: float = 30.0) -> McpServer:
    port = free_port()
    proc = ManagedProcess(
        "mcp_server", [sys.executable, SERVER_SCRIPT, "--port", str(port)], workdir / "mcp_server.log",
        cwd=REPO_ROOT,
    )
    server = McpServer(proc=proc, port=port)
    try:
        wait_until(
            f"MCP server health on port {port}",
            lambda: httpx.get(f"{server.base_url}/healthz", timeout=1.0, trust_env=False).status_code == 200,
            timeout,
            proc=proc,
        )
    except BaseException:
        proc.stop()
        raise
    return server

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

# Every MCP server start_mcp_server started and that is not stopped yet
# (harness.leakwatch reads their request logs).
RUNNING: list[McpServer] = []


@dataclass
class McpServer:
    proc: ManagedProcess
    port: int
    upstream_user_url: str | None = None
    json_response: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def requests_seen(self) -> list[dict[str, Any]]:
        """Every request the server received so far: time (arrival, Unix
        seconds), method, path, host, x-test-id, header names, rpc (the
        JSON-RPC messages of a POST: [{method, name}], None if not JSON), and
        authorization / authorization_scheme / authorization_sha256 (a
        fingerprint of the credentials, never the token)."""
        r = httpx.get(f"{self.base_url}/_debug/requests", timeout=5.0, trust_env=False)
        r.raise_for_status()
        return r.json()["requests"]

    def saw_test_id(self, test_id: str) -> list[dict[str, Any]]:
        return [req for req in self.requests_seen() if req.get("x-test-id") == test_id]

    def requests_with_token(self, token: str) -> list[dict[str, Any]]:
        """The requests that arrived carrying `token` as their Authorization credentials."""
        digest = fingerprint(token)
        return [req for req in self.requests_seen() if req.get("authorization_sha256") == digest]

    def refuse(self, token: str, status: int = 401, www_authenticate: str | None = None) -> None:
        """From now on, answer requests carrying `token` with `status` (as a
        server does whose upstream API stopped accepting it)."""
        r = httpx.post(f"{self.base_url}/_debug/refuse", timeout=5.0, trust_env=False,
                       json={"sha256": fingerprint(token), "status": status, "www_authenticate": www_authenticate})
        r.raise_for_status()

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        self.proc.stop()


def fingerprint(token: str) -> str:
    """As envoy-demo/mcp_server.py logs an Authorization header's credentials."""
    return hashlib.sha256(token.encode("latin-1")).hexdigest()


def start_mcp_server(workdir: Path, timeout: float = 30.0, *, name: str = "mcp_server",
                     upstream_user_url: str | None = None, json_response: bool = False) -> McpServer:
    """Start envoy-demo/mcp_server.py on a free port; whoami asks upstream_user_url
    (if any) who the token it received belongs to."""
    port = free_port()
    argv = [sys.executable, SERVER_SCRIPT, "--port", str(port)]
    if upstream_user_url:
        argv += ["--upstream-user-url", upstream_user_url]
    if json_response:
        argv.append("--json-response")
    proc = ManagedProcess(name, argv, workdir / f"{name}.log", cwd=REPO_ROOT)
    server = McpServer(proc=proc, port=port, upstream_user_url=upstream_user_url, json_response=json_response)
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
    RUNNING.append(server)
    return server

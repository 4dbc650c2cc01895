"""The demo stack (envoy-demo/stack.py) checked end to end, as a user sees it:
the real MCP SDK client signs in as alice@company.com at the demo IdP,
approves the consent page, authorizes the app at the GitHub-like upstream
(as octocat), and then whoami names the upstream user, also after the
upstream token has expired (and been refreshed) several times; alice sees no
admin_ tool and is denied admin_reset; bob@other.example is told he may not
use the server.

Used by tests/e2e/test_demo_stack.py (its own stack on free ports, 4-second
upstream tokens) and, against a running `make demo-up`, from the command line:

    make demo-check      # or: cd tests/e2e && ../../.venv/bin/python -m harness.demo [--seconds 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp.shared.exceptions import McpError

from .envoy import Envoy
from .idp import ALICE, BOB, Idp
from .mcp_server import McpServer
from .oauth import OAuthKit
from .procs import free_port
from .sdk import sdk_client, text_of
from .upstream import GitHubPages


@dataclass
class DemoPorts:
    listen: int = 10000
    mcp: int = 9100
    admin: int = 9901
    idp: int = 9400
    upstream: int = 9500


class DemoKit(OAuthKit):
    """OAuthKit for a demo stack that runs elsewhere (no process handles)."""

    def __init__(self, ports: DemoPorts) -> None:
        envoy = Envoy(proc=None, workdir=Path("."), listen_port=ports.listen, admin_port=ports.admin,  # type: ignore[arg-type]
                      base_id=0, plugin={}, access_log=Path("/nonexistent"))
        super().__init__(envoy, Idp(proc=None, port=ports.idp, id_token_alg="RS256"),  # type: ignore[arg-type]
                         McpServer(proc=None, port=ports.mcp))  # type: ignore[arg-type]
        self.ports = ports
        self.upstream_login = "octocat"
        self.upstream_decision = "approve"
        self.upstream_pages: list[tuple[str, str]] = []
        self.provider_pages = [GitHubPages(self, ports.upstream)]

    def upstream_state(self) -> dict[str, Any]:
        """The demo upstream's only app (gh-client by default)."""
        r = httpx.get(f"http://127.0.0.1:{self.ports.upstream}/_test/state", timeout=5.0, trust_env=False)
        r.raise_for_status()
        [app] = r.json()["apps"].values()
        return app


@dataclass
class DemoReport:
    tools: list[str] = field(default_factory=list)
    whoami: list[dict[str, Any]] = field(default_factory=list)
    denied: Any = None
    refreshes: int = 0
    distinct_upstream_tokens: int = 0
    bob_page: str = ""
    upstream_pages: list[tuple[str, str]] = field(default_factory=list)


def check_demo(ports: DemoPorts, seconds: float, interval: float = 2.0, log=print) -> DemoReport:
    """Everything the demo promises, asserted; the report of what was seen."""
    kit = DemoKit(ports)
    report = DemoReport()
    test_id = f"demo-check-{int(time.time())}"
    before = kit.upstream_state()["refreshes"]
    try:
        async def alice() -> None:
            redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
            async with sdk_client(kit, test_id, redirect_uri=redirect_uri, login=ALICE["email"]) as c:
                report.tools = sorted(t.name for t in (await c.session.list_tools()).tools)
                log(f"alice signed in; tools/list: {report.tools}")
                try:
                    await c.session.call_tool("admin_reset", {})
                except McpError as e:
                    report.denied = e.error
                log(f"admin_reset: {report.denied}")
                started = time.monotonic()
                while True:
                    who = json.loads(text_of(await c.session.call_tool("whoami", {})))
                    report.whoami.append(who)
                    state = kit.upstream_state()
                    log(f"t+{time.monotonic() - started:5.1f}s whoami: {who['login']}  "
                        f"(upstream refreshes so far: {state['refreshes'] - before})")
                    if time.monotonic() - started >= seconds:
                        break
                    await anyio.sleep(interval)

        anyio.run(alice)
        state = kit.upstream_state()
        report.refreshes = state["refreshes"] - before
        seen = {r["authorization_sha256"] for r in kit.mcp_server.requests_seen() if r.get("x-test-id") == test_id}
        report.distinct_upstream_tokens = len(seen - {None})
        report.upstream_pages = list(kit.upstream_pages)
        # bob: signed in, then refused with a page.
        client = kit.register_client()
        auth = kit.authorize(client, login=BOB["email"], stop_at_error=True)
        report.bob_page = auth.final.text if auth.final is not None else ""
        log(f"bob: HTTP {auth.final.status_code if auth.final is not None else '?'}")
    finally:
        kit.close()
    assert report.tools == ["echo", "whoami"], report.tools
    assert report.denied is not None and report.denied.code == -32003, report.denied
    assert report.denied.message == f'Policy denied tools/call of tool "admin_reset" for {ALICE["email"]}'
    assert report.whoami and all(w["login"] == "octocat" for w in report.whoami), report.whoami
    assert [kind for kind, _ in report.upstream_pages] == ["gh authorize"], report.upstream_pages
    assert f"{BOB['email']} is not allowed to use the MCP server demo" in report.bob_page, report.bob_page
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=150.0, help="how long to keep calling whoami")
    parser.add_argument("--interval", type=float, default=5.0)
    defaults = DemoPorts()
    for name in ("listen", "mcp", "admin", "idp", "upstream"):
        parser.add_argument(f"--{name}-port", type=int, default=getattr(defaults, name))
    args = parser.parse_args()
    ports = DemoPorts(listen=args.listen_port, mcp=args.mcp_port, admin=args.admin_port, idp=args.idp_port,
                      upstream=args.upstream_port)
    report = check_demo(ports, args.seconds, args.interval)
    print(f"OK: {len(report.whoami)} whoami calls as octocat, {report.refreshes} upstream refreshes, "
          f"{report.distinct_upstream_tokens} distinct upstream tokens reached the MCP server; admin_reset denied; "
          f"bob refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())

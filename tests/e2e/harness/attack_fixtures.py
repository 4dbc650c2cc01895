"""Session fixtures of the attack suite (a pytest plugin, loaded by conftest):
its dedicated Envoys that more than one attack module uses, each started on
first use and stopped at the end of the run. Envoys a single module needs
are that module's own fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .attack import attack_plugin, start_attack_envoy
from .envoy import Envoy, panic_lines
from .idp import Idp
from .mcp_server import McpServer


def _stop_checked(proxy: Envoy) -> None:
    proxy.stop()
    panics = panic_lines(proxy.log())
    assert not panics, f"Envoy log ({proxy.proc.log_path}) shows wasm panics or traps:\n" + "\n".join(panics)


@pytest.fixture(scope="session")
def attack_misc_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer, idp: Idp,
                      listen_ports: dict[str, int]) -> Iterator[Envoy]:
    """Routes http://127.0.0.1:P, http://localhost:P, http://localhost (the
    default port) and http://[::1]:P in front of the session MCP server;
    authorization codes live 1 s."""
    port = listen_ports["attack_misc"]
    routes = [
        {"from": "http://localhost", "name": "misc-localhost-80", "mcp": {"server": {"path": "/mcp"}},
         "allow_any_authenticated_user": True},
        {"from": f"http://[::1]:{port}", "name": "misc-v6", "mcp": {"server": {"path": "/mcp"}},
         "allow_any_authenticated_user": True},
    ]
    plugin = attack_plugin(port, idp.port, authorization_server={"authorization_code_ttl_seconds": 1},
                           more_routes=routes)
    proxy = start_attack_envoy(tmp_path_factory.mktemp("attack-misc"), "envoy-attack-misc", mcp_server=mcp_server,
                               plugin=plugin, listen_port=port, idp=idp)
    try:
        yield proxy
    finally:
        _stop_checked(proxy)

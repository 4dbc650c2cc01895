"""The audit settings (`mcp.audit.enabled`, `mcp.audit.include_arguments`),
each on an Envoy of its own with the seed policy on its one route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.envoy import audit_lines, panic_lines, plugin_config, start_envoy
from harness.idp import ALICE, Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit, describe
from harness.upstream import SEED_POLICY

ECHO = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "argument-value-1234"}}}
ADMIN = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "admin_reset", "arguments": {}}}


def _run(tmp_path: Path, idp: Idp, mcp_server: McpServer, port: int, audit: dict, test_id: str) -> list[dict]:
    plugin = plugin_config(port, idp.port)
    plugin["routes"][0]["policy"] = SEED_POLICY
    plugin["mcp"] = {"audit": audit}
    envoy = start_envoy(tmp_path, name="envoy-audit", mcp_port=mcp_server.port, plugin=plugin, listen_port=port,
                        idp_port=idp.port)
    kit = OAuthKit(envoy, idp, mcp_server)
    try:
        _, tokens = kit.get_te(login=ALICE["email"])
        te = tokens["access_token"]
        allowed = kit.mcp_post(te, test_id, body=json.dumps(ECHO))
        assert allowed.status_code in (200, 400), describe(allowed)  # 400: the server wants a session
        denied = kit.mcp_post(te, test_id + "-denied", body=json.dumps(ADMIN))
        assert denied.status_code == 200 and denied.json()["error"]["code"] == -32003, describe(denied)
        kit.assert_no_leaks(te)
        return audit_lines(envoy.log())
    finally:
        kit.close()
        envoy.stop()
        panics = panic_lines(envoy.log())
        assert not panics, "wasm panics or traps:\n" + "\n".join(panics)


def test_audit_disabled_logs_no_record(tmp_path: Path, idp: Idp, mcp_server: McpServer,
                                       listen_ports: dict[str, int], test_id: str) -> None:
    records = _run(tmp_path, idp, mcp_server, listen_ports["audit_off"], {"enabled": False}, test_id)
    assert records == [], records


def test_audit_include_arguments(tmp_path: Path, idp: Idp, mcp_server: McpServer,
                                 listen_ports: dict[str, int], test_id: str) -> None:
    records = _run(tmp_path, idp, mcp_server, listen_ports["audit_arguments"], {"include_arguments": True}, test_id)
    echo = [a for a in records if a.get("tool") == "echo"]
    assert echo and echo[0]["arguments"] == {"text": "argument-value-1234"}, records
    assert echo[0]["decision"] == "allow" and echo[0]["rule"] == "policy[0].allow", echo
    admin = [a for a in records if a.get("tool") == "admin_reset"]
    assert admin and admin[0]["decision"] == "deny" and admin[0]["rule"] == "policy[0].deny", records
